// What the KV page types share: the page summary, the KIVI quantization rule, and the query side of the integer Q·K.
//
// A page holds P tokens of one layer and one KV head. Its summary (kmin[D], kmax[D]: per channel, the min and max over
// the page's keys) is written for every type: the host scores pages with it (quest_scores), and the quantized types
// take their key parameters from it.
//
// Quantization (KIVI: keys per channel within the page, values per token), L = 255 (int8) or 15 (int4):
//   step = (max − min) · (1/L)       1/L is an f32 constant: a multiply, because attention recomputes the key steps
//                                    for every page and head, and a quotient would cost a division per channel there.
//   code = clamp(nearest((x − min) / step), 0, L), 0 where step == 0
//                                    a true division (sealing is once per page), ties to even
//   x ≈ min + step·code
// Every step comes from key_step/value_step below, so sealing and attention dequantize with the same bits.

import { hmax_f32x4, hsum_f32x4, hsum_i32x4, hsum4_i32x4 } from './common';

/**
 * The query's integer range (prep_query): |qi| ≤ 32767, not 127. The SIMD128 dot widens codes to i16 anyway, so an
 * i16 query costs nothing, and one shared scale over all channels leaves an int8 query few levels wherever an outlier
 * channel's step dominates max|q'|: measured on the test's data, int8 qi made the output error 3× the cache's own
 * quantization error (7.9% vs 2.6% of max|out| on int8 pages), i16 qi adds 0.07%. Capped per call so that
 * Σ|qi|·L over D channels stays below 2^31 (D ≤ 257 for int8 keeps the full range).
 */
export const QI_MAX: i32 = 32767;

export const INV_255: f32 = <f32>1.0 / <f32>255.0;
export const INV_15: f32 = <f32>1.0 / <f32>15.0;

/** Per-channel quantization step of four key channels. */
// @ts-ignore: decorator
@inline export function key_step(kmin: v128, kmax: v128, invL: f32): v128 {
  return f32x4.mul(f32x4.sub(kmax, kmin), f32x4.splat(invL));
}

/** Per-token quantization step of a value row (scalar f32: the same IEEE operations as a lane of key_step). */
// @ts-ignore: decorator
@inline export function value_step(vmin: f32, vmax: f32, invL: f32): f32 {
  return (vmax - vmin) * invL;
}

/** Codes of four values as i32x4, by the rule above (NaN from 0/0 where step == 0 is masked to code 0). */
// @ts-ignore: decorator
@inline export function quantize4(x: v128, lo: v128, step: v128, L: f32): v128 {
  const y = f32x4.nearest(f32x4.div(f32x4.sub(x, lo), step));
  const c = f32x4.min(f32x4.max(y, f32x4.splat(0)), f32x4.splat(L));
  return i32x4.trunc_sat_f32x4_u(v128.and(c, f32x4.ne(step, f32x4.splat(0))));
}

/** kmin[D] then kmax[D] over the P keys of an f32 [P][D] page (exact: min/max do not round). */
export function page_summary(k: usize, P: i32, D: i32, summary: usize): void {
  const rowBytes = <usize>D << 2;
  for (let c = 0; c < D; c += 4) {
    const o = <usize>c << 2;
    let lo = v128.load(k + o);
    let hi = lo;
    for (let t = 1; t < P; t++) {
      const x = v128.load(k + <usize>t * rowBytes + o);
      lo = f32x4.min(lo, x);
      hi = f32x4.max(hi, x);
    }
    v128.store(summary + o, lo);
    v128.store(summary + rowBytes + o, hi);
  }
}

/** min and max over one value row of D f32, as lanes 0 and 1. */
export function row_min_max(v: usize, D: i32): v128 {
  let lo = v128.load(v);
  let hi = lo;
  for (let c = 4; c < D; c += 4) {
    const x = v128.load(v + (<usize>c << 2));
    lo = f32x4.min(lo, x);
    hi = f32x4.max(hi, x);
  }
  // exact reductions in any order
  lo = f32x4.min(lo, i8x16.shuffle(lo, lo, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7));
  hi = f32x4.max(hi, i8x16.shuffle(hi, hi, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7));
  lo = f32x4.min(lo, i8x16.shuffle(lo, lo, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11));
  hi = f32x4.max(hi, i8x16.shuffle(hi, hi, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11));
  return i32x4.shuffle(lo, hi, 0, 4, 0, 4);
}

/**
 * The query side of the integer Q·K over a quantized page: q'_c = q_c·step_c, quantized symmetrically with one scale
 * sq = max|q'|/QMAX, qi = nearest(q'·(QMAX/max|q'|)), QMAX = QI_MAX or less for a large D (a reciprocal multiply:
 * one division per page and head, not one per channel; |qi| ≤ QMAX still, as the largest q' maps to QMAX·(1 ± ε)).
 * Then
 *   q·k_t ≈ Σ q_c·(kmin_c + step_c·code_tc) = base + Σ q'_c·code_tc ≈ base + sq·Σ qi_c·code_tc,  base = Σ q_c·kmin_c.
 * qi is written as i16 (the SIMD128 dot's operand width), zero-padded to whole chunks so the code loops need no
 * channel tail: `nibbles` false: natural order, chunks of 16 channels (int8); true: per 32-channel chunk the 16 even
 * channels then the 16 odd ones, the order in which the low and high nibbles of 16 code bytes unpack (int4).
 * Returns [base, sq] in lanes 0 and 1; sq = 0 (and qi = 0) when every q' is 0.
 */
export function prep_query(q: usize, summary: usize, D: i32, L: i32, qi: usize, nibbles: bool): v128 {
  const invL = L == 255 ? INV_255 : INV_15;
  const kmax = summary + (<usize>D << 2);
  let base4 = f32x4.splat(0);
  let amax4 = f32x4.splat(0);
  for (let c = 0; c < D; c += 4) {
    const o = <usize>c << 2;
    const qv = v128.load(q + o);
    const lo = v128.load(summary + o);
    amax4 = f32x4.pmax(amax4, f32x4.abs(f32x4.mul(qv, key_step(lo, v128.load(kmax + o), invL))));
    base4 = f32x4.add(base4, f32x4.mul(qv, lo));
  }
  const base = hsum_f32x4(base4);
  const amax = hmax_f32x4(amax4);
  const chunk = nibbles ? 32 : 16;
  // (a subnormal max|q'| counts as zero: its reciprocal would overflow, and base alone is then exact to ~1e-36)
  if (!(amax >= <f32>1e-30)) {
    memory.fill(qi, 0, <usize>((D + chunk - 1) & ~(chunk - 1)) << 1);
    return f32x4.replace_lane(f32x4.splat(0), 0, base);
  }
  if (D & (chunk - 1)) {
    // zero the partial last chunk; the loop below overwrites its real channels
    const last = qi + ((<usize>(D & ~(chunk - 1))) << 1);
    const zero = i32x4.splat(0);
    v128.store(last, zero);
    v128.store(last, zero, 16);
    if (nibbles) {
      v128.store(last, zero, 32);
      v128.store(last, zero, 48);
    }
  }
  const qmax = <f32>min(QI_MAX, 0x7fffffff / (D * L));
  const inv = f32x4.splat(qmax / amax);
  for (let c = 0; c < D; c += 4) {
    const o = <usize>c << 2;
    const qp = f32x4.mul(v128.load(q + o), key_step(v128.load(summary + o), v128.load(kmax + o), invL));
    const i = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(qp, inv)));
    const h = i16x8.narrow_i32x4_s(i, i); // [q0 q1 q2 q3 ...] as i16
    if (nibbles) {
      // channel c+l of chunk c>>5 sits at i16 index (w>>1) (even l) or 16 + (w>>1) (odd l), w = c & 31
      const e = i8x16.shuffle(h, h, 0, 1, 4, 5, 2, 3, 6, 7, 0, 1, 0, 1, 0, 1, 0, 1); // [q0 q2 q1 q3]
      const at = qi + (<usize>(c & ~31) << 1) + (<usize>((c & 31) >> 1) << 1);
      v128.store32_lane(at, e, 0);
      v128.store32_lane(at, e, 1, 32);
    } else {
      v128.store64_lane(qi + (<usize>c << 1), h, 0);
    }
  }
  return f32x4.replace_lane(f32x4.replace_lane(f32x4.splat(0), 0, base), 1, amax / qmax);
}

/** The four f32x4 of 16 u8 codes (exact; codes ≤ 255 convert as signed i32). */
// @ts-ignore: decorator
@inline export function u8x16_f32_0(b16l: v128): v128 {
  return f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_u(b16l));
}
// @ts-ignore: decorator
@inline export function u8x16_f32_1(b16l: v128): v128 {
  return f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_u(b16l));
}

/** 16 int4 codes (8 bytes at p) as u8 in channel order: byte j holds channel 2j (low nibble) and 2j+1 (high). */
// @ts-ignore: decorator
@inline export function unpack_nibbles(b: v128): v128 {
  const lo = v128.and(b, i8x16.splat(0x0f));
  // an i16x8 shift and the shared mask: an i8x16 shift makes V8 build its own mask on every use
  const hi = v128.and(i16x8.shr_u(b, 4), i8x16.splat(0x0f));
  return i8x16.shuffle(lo, hi, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
}

/**
 * acc[c] += w_t·code_tc over t < ntok and the D channels of a page's value codes (u8 per channel, or int4 with
 * `nibbles`: a constant at every call, so the inlined copy keeps one branch). Tokens run inner so a block of 16
 * channels keeps its 4 accumulators in registers; per channel the sum still runs over t in order. Loads never pass
 * the row's last channel. w is f32 [ntok] (p_t·vstep_t).
 */
// @ts-ignore: decorator
@inline export function accum_codes(acc: usize, codes: usize, D: i32, ntok: i32, w: usize, nibbles: bool): void {
  const rowBytes = nibbles ? <usize>D >> 1 : <usize>D;
  let c = 0;
  for (; c + 16 <= D; c += 16) {
    const a = acc + (<usize>c << 2);
    let a0 = v128.load(a), a1 = v128.load(a, 16), a2 = v128.load(a, 32), a3 = v128.load(a, 48);
    let p = codes + (nibbles ? <usize>c >> 1 : <usize>c);
    for (let t = 0; t < ntok; t++) {
      const b = nibbles ? unpack_nibbles(v128.load64_zero(p)) : v128.load(p);
      const wt = v128.load32_splat(w + (<usize>t << 2));
      const l = i16x8.extend_low_i8x16_u(b), h = i16x8.extend_high_i8x16_u(b);
      a0 = f32x4.add(a0, f32x4.mul(wt, u8x16_f32_0(l)));
      a1 = f32x4.add(a1, f32x4.mul(wt, u8x16_f32_1(l)));
      a2 = f32x4.add(a2, f32x4.mul(wt, u8x16_f32_0(h)));
      a3 = f32x4.add(a3, f32x4.mul(wt, u8x16_f32_1(h)));
      p += rowBytes;
    }
    v128.store(a, a0);
    v128.store(a, a1, 16);
    v128.store(a, a2, 32);
    v128.store(a, a3, 48);
  }
  for (; c < D; c += 4) {
    const a = acc + (<usize>c << 2);
    let a0 = v128.load(a);
    let p = codes + (nibbles ? <usize>c >> 1 : <usize>c);
    for (let t = 0; t < ntok; t++) {
      const b = nibbles ? unpack_nibbles(v128.load16_lane(p, i32x4.splat(0), 0)) : v128.load32_zero(p);
      a0 = f32x4.add(a0, f32x4.mul(v128.load32_splat(w + (<usize>t << 2)), u8x16_f32_0(i16x8.extend_low_i8x16_u(b))));
      p += rowBytes;
    }
    v128.store(a, a0);
  }
}

/**
 * For the quantized value types: w_t = p_t·vstep_t in place over t < ntok, and returns Σ p_t·vmin_t (4 lanes, then
 * hsum_f32x4, then the tail tokens). vp is (vmin, vstep) per token.
 */
export function value_weights(p: usize, vp: usize, ntok: i32): f32 {
  let b = f32x4.splat(0);
  let t = 0;
  for (; t + 4 <= ntok; t += 4) {
    const pt = p + (<usize>t << 2);
    const x = v128.load(vp + (<usize>t << 3));
    const y = v128.load(vp + (<usize>t << 3), 16);
    const pv = v128.load(pt);
    b = f32x4.add(b, f32x4.mul(pv, i32x4.shuffle(x, y, 0, 2, 4, 6)));
    v128.store(pt, f32x4.mul(pv, i32x4.shuffle(x, y, 1, 3, 5, 7)));
  }
  let s = hsum_f32x4(b);
  for (; t < ntok; t++) {
    const pt = p + (<usize>t << 2);
    const pv = load<f32>(pt);
    s += pv * load<f32>(vp + (<usize>t << 3));
    store<f32>(pt, pv * load<f32>(vp + (<usize>t << 3), 4));
  }
  return s;
}

/**
 * scores[t] = scale·(base + sq·Σ_c qi_c·code_tc) for t < ntok over a quantized page's key codes, qi as prep_query
 * wrote it (`nibbles` as there, a constant at every call); returns the largest score. The integer dot is exact, so
 * its lane grouping is free and 4 tokens share each qi load. Both builds run the same SIMD128 code: relaxed_dot takes
 * an i8 operand, and qi is i16 (QI_MAX). (Node 20's V8 also returns twice the dot from i32x4.relaxed_dot_i8x16_i7x16_add_s,
 * a reason to keep to the i16x8 form plus extadd wherever relaxed_dot is used.)
 *
 * Code loads are whole chunks (16 bytes), so the last row of a partial chunk reads up to 14 bytes past the key codes:
 * into the value codes that follow in the page, and qi's zero padding cancels them.
 */
// @ts-ignore: decorator
@inline export function score_codes(
  kc: usize, qi: usize, D: i32, ntok: i32, baseSq: v128, scale: f32, out: usize, nibbles: bool,
): f32 {
  const rowBytes = nibbles ? <usize>D >> 1 : <usize>D;
  const nch = nibbles ? (D + 31) >> 5 : (D + 15) >> 4;
  const base = f32x4.extract_lane(baseSq, 0), sq = f32x4.extract_lane(baseSq, 1);
  let mx = f32x4.splat(-Infinity);
  let t = 0;
  for (; t + 4 <= ntok; t += 4) {
    const r0 = kc + <usize>t * rowBytes;
    const r1 = r0 + rowBytes, r2 = r1 + rowBytes, r3 = r2 + rowBytes;
    let a0 = i32x4.splat(0), a1 = i32x4.splat(0), a2 = i32x4.splat(0), a3 = i32x4.splat(0);
    for (let ch = 0; ch < nch; ch++) {
      const o = <usize>ch << 4;
      if (nibbles) {
        const qc = qi + (o << 2);
        const e0 = v128.load(qc), e1 = v128.load(qc, 16), o0 = v128.load(qc, 32), o1 = v128.load(qc, 48);
        a0 = i32x4.add(a0, dot_nibbles(v128.load(r0 + o), e0, e1, o0, o1));
        a1 = i32x4.add(a1, dot_nibbles(v128.load(r1 + o), e0, e1, o0, o1));
        a2 = i32x4.add(a2, dot_nibbles(v128.load(r2 + o), e0, e1, o0, o1));
        a3 = i32x4.add(a3, dot_nibbles(v128.load(r3 + o), e0, e1, o0, o1));
      } else {
        const qc = qi + (o << 1);
        const ql = v128.load(qc), qh = v128.load(qc, 16);
        a0 = i32x4.add(a0, dot_bytes(v128.load(r0 + o), ql, qh));
        a1 = i32x4.add(a1, dot_bytes(v128.load(r1 + o), ql, qh));
        a2 = i32x4.add(a2, dot_bytes(v128.load(r2 + o), ql, qh));
        a3 = i32x4.add(a3, dot_bytes(v128.load(r3 + o), ql, qh));
      }
    }
    const dots = f32x4.convert_i32x4_s(hsum4_i32x4(a0, a1, a2, a3));
    const s = f32x4.mul(f32x4.splat(scale), f32x4.add(f32x4.splat(base), f32x4.mul(f32x4.splat(sq), dots)));
    v128.store(out + (<usize>t << 2), s);
    mx = f32x4.pmax(mx, s);
  }
  let m = hmax_f32x4(mx);
  for (; t < ntok; t++) {
    const r = kc + <usize>t * rowBytes;
    let a = i32x4.splat(0);
    for (let ch = 0; ch < nch; ch++) {
      const o = <usize>ch << 4;
      if (nibbles) {
        const qc = qi + (o << 2);
        a = i32x4.add(a, dot_nibbles(v128.load(r + o), v128.load(qc), v128.load(qc, 16), v128.load(qc, 32), v128.load(qc, 48)));
      } else {
        const qc = qi + (o << 1);
        a = i32x4.add(a, dot_bytes(v128.load(r + o), v128.load(qc), v128.load(qc, 16)));
      }
    }
    const s = scale * (base + sq * <f32>hsum_i32x4(a));
    store<f32>(out + (<usize>t << 2), s);
    m = max(m, s);
  }
  return m;
}

/** Σ code·qi over 16 u8 codes and their i16 qi (low and high 8), in 4 i32 lanes. */
// @ts-ignore: decorator
@inline function dot_bytes(b: v128, ql: v128, qh: v128): v128 {
  return i32x4.add(i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_u(b), ql), i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_u(b), qh));
}

/** Σ code·qi over 16 bytes of int4 codes (32 channels) and their qi in prep_query's nibble order, in 4 i32 lanes. */
// @ts-ignore: decorator
@inline function dot_nibbles(b: v128, e0: v128, e1: v128, o0: v128, o1: v128): v128 {
  const lo = v128.and(b, i8x16.splat(0x0f));
  const hi = v128.and(i16x8.shr_u(b, 4), i8x16.splat(0x0f));
  return i32x4.add(dot_bytes(lo, e0, e1), dot_bytes(hi, o0, o1));
}
