// Q3_K: super-blocks of 256 values, 3-bit codes (2 low bits and a high bit), per 16 values a 6-bit scale, one f16 d:
// value = d·sc·(q − 4) with q = low + 4·high (0..7) and sc = scale − 32 (−32..31). Activations are Q8_K
// (quantize_q8_k): int8 codes x, one f32 scale xd per 256, code sums bsum per 16. A super-block contributes
//   xd·d·(Σ_j sc_j·(q·x)_j − 4·Σ_j sc_j·bsum_j)
// with the integer part exact in i32 (at most 256·7·127·32 + 4·16·32·16·127), so one float step per super-block.
// The codes stay unsigned (0..7) in both builds and the −4 offset comes off through the bsums, exactly:
// - relaxed: the codes are the relaxed dot's 7-bit operand as they are; its i16 pair sums (at most 2·7·127) meet the
//   sub-block's scale in one pmaddwd per token;
// - SIMD128: the codes times the scale, widened to i16 once per row (|q·sc| ≤ 7·32), then pmaddwd with the widened
//   activations per token.
//
// Repacked layout (the host writes it at load): rows in groups of 4, the last group padded with zero rows. For each
// group and super-block, 384 bytes of codes: per row 96 bytes, ggml's qs (64: byte 32h + l holds the low bits of
// elements 128h + 32p + l at bits 2p, 2p+1) then ggml's hmask (32: byte l holds the high bits of elements 32k + l at
// bit k). A 16-byte load of each gives 4 sub-blocks' codes with a shift and a mask per plane; a 16-byte hmask load
// holds the high bits of both halves of the super-block (bits 0..3 and 4..7). Apart, 80 bytes of scales: the 4 rows' 16 scales as signed bytes (sc), then d as
// f32 [4 rows]. 3.625 bits per weight (ggml: 3.4375).
//
// Decode is 4 rows × 1 token per weight load (the rows' sums in the lanes of one i32x4); prefill is 1 row × 4 tokens
// (the tokens in the lanes), row by row through the group. Every output is acc + d·xd·isum per super-block, in order,
// so decode, prefill and both builds agree bit for bit.

import { hsum4_i32x4, PREFETCH, scale_add, store_rows4 } from './common';

/** One signed scale byte as i16 lanes: load8_splat repeats it, the arithmetic shift sign-extends the high copy. */
// @ts-ignore: decorator
@inline function scale16(p: usize): v128 {
  return i16x8.shr_s(v128.load8_splat(p), 8);
}

/** Codes 0..7 of one sub-block: low bits at 2p.. of q's bytes, the high bit at bit k of h's bytes (k constant). */
// @ts-ignore: decorator
@inline function codes(q: v128, h: v128, p: i32, k: i32): v128 {
  const low = p == 0 ? v128.and(q, i8x16.splat(3)) : v128.and(i16x8.shr_u(q, 2 * p), i8x16.splat(3));
  // i16 shifts: bits crossing into the neighbouring byte land outside bit 2, which the mask keeps
  const hb = k < 2 ? i16x8.shl(h, 2 - k) : k == 2 ? h : i16x8.shr_u(h, k - 2);
  return v128.or(low, v128.and(hb, i8x16.splat(4)));
}

/** relaxed: acc + sc·Σ code·x over one sub-block (per i16 lane 2 products ≤ 7·127, times |sc| ≤ 32 in pmaddwd). */
// @ts-ignore: decorator
@inline function sub_relaxed(acc: v128, code: v128, sc: v128, x: usize): v128 {
  return i32x4.add(acc, i32x4.dot_i16x8_s(i16x8.relaxed_dot_i8x16_i7x16_s(v128.load(x), code), sc));
}

/** SIMD128: acc + Σ w·x over one sub-block, w = code·sc widened to i16 (lo: values 0..7, hi: 8..15). */
// @ts-ignore: decorator
@inline function sub_simd(acc: v128, lo: v128, hi: v128, x: usize): v128 {
  return i32x4.add(acc, i32x4.add(i32x4.dot_i16x8_s(lo, v128.load8x8_s(x)), i32x4.dot_i16x8_s(hi, v128.load8x8_s(x, 8))));
}

// @ts-ignore: decorator
@inline function scaled_lo(code: v128, sc: v128): v128 {
  return i16x8.mul(i16x8.extend_low_i8x16_u(code), sc);
}

// @ts-ignore: decorator
@inline function scaled_hi(code: v128, sc: v128): v128 {
  return i16x8.mul(i16x8.extend_high_i8x16_u(code), sc);
}

/**
 * One sub-block of one token into acc: the relaxed build reads the codes and the scale, the SIMD128 build the codes
 * times the scale widened to i16 (lo, hi), which the relaxed build never computes (the optimizer drops them).
 */
// @ts-ignore: decorator
@inline function upd(acc: v128, code: v128, sc: v128, lo: v128, hi: v128, x: usize): v128 {
  return ASC_FEATURE_RELAXED_SIMD ? sub_relaxed(acc, code, sc, x) : sub_simd(acc, lo, hi, x);
}

/** 4·Σ_j sc_j·bsum_j for one token's bsums at bs; lo/hi are the row's 16 scales widened to i16. */
// @ts-ignore: decorator
@inline function offset4(lo: v128, hi: v128, bs: usize): v128 {
  return i32x4.shl(i32x4.add(i32x4.dot_i16x8_s(lo, v128.load(bs)), i32x4.dot_i16x8_s(hi, v128.load(bs, 16))), 2);
}

/**
 * Σ_j sc_j·(q·x)_j over one half (constant: 0 or 1) of a row's super-block for 4 tokens (activations at x + t·xs), as an
 * i32x4 with the tokens in the lanes. Round c1 (0, 1) takes qs bytes 32·half + 16·c1.. (sub-blocks 8·half + c1 + 2p,
 * low bits at 2p) and hmask bytes 16·c1.. (high bits at 4·half + p). Halves are separate so every shift is a constant.
 */
// @ts-ignore: decorator
@inline function half_tok4(w: usize, s: usize, x: usize, xs: usize, half: i32): v128 {
  let a0 = i32x4.splat(0), a1 = i32x4.splat(0), a2 = i32x4.splat(0), a3 = i32x4.splat(0);
  const k = half << 2;
  for (let c1: usize = 0; c1 < 2; c1++) {
    const h = v128.load(w + 64 + (c1 << 4));
    const q = v128.load(w + (<usize>half << 5) + (c1 << 4));
    const jb = (<usize>half << 3) | c1;
    const sj = s + jb;
    const xj = x + (jb << 4);
    let code = codes(q, h, 0, k), sc = scale16(sj);
    let lo = scaled_lo(code, sc), hi = scaled_hi(code, sc);
    a0 = upd(a0, code, sc, lo, hi, xj); a1 = upd(a1, code, sc, lo, hi, xj + xs);
    a2 = upd(a2, code, sc, lo, hi, xj + 2 * xs); a3 = upd(a3, code, sc, lo, hi, xj + 3 * xs);
    code = codes(q, h, 1, k + 1); sc = scale16(sj + 2);
    lo = scaled_lo(code, sc); hi = scaled_hi(code, sc);
    a0 = upd(a0, code, sc, lo, hi, xj + 32); a1 = upd(a1, code, sc, lo, hi, xj + xs + 32);
    a2 = upd(a2, code, sc, lo, hi, xj + 2 * xs + 32); a3 = upd(a3, code, sc, lo, hi, xj + 3 * xs + 32);
    code = codes(q, h, 2, k + 2); sc = scale16(sj + 4);
    lo = scaled_lo(code, sc); hi = scaled_hi(code, sc);
    a0 = upd(a0, code, sc, lo, hi, xj + 64); a1 = upd(a1, code, sc, lo, hi, xj + xs + 64);
    a2 = upd(a2, code, sc, lo, hi, xj + 2 * xs + 64); a3 = upd(a3, code, sc, lo, hi, xj + 3 * xs + 64);
    code = codes(q, h, 3, k + 3); sc = scale16(sj + 6);
    lo = scaled_lo(code, sc); hi = scaled_hi(code, sc);
    a0 = upd(a0, code, sc, lo, hi, xj + 96); a1 = upd(a1, code, sc, lo, hi, xj + xs + 96);
    a2 = upd(a2, code, sc, lo, hi, xj + 2 * xs + 96); a3 = upd(a3, code, sc, lo, hi, xj + 3 * xs + 96);
  }
  return hsum4_i32x4(a0, a1, a2, a3);
}

/** One row's integer sum over one super-block for 4 tokens (bsums at bs + t·bss), the tokens in the lanes. */
// @ts-ignore: decorator
@inline function row_tok4(w: usize, s: usize, x: usize, xs: usize, bs: usize, bss: usize): v128 {
  const sv = v128.load(s);
  const slo = i16x8.extend_low_i8x16_s(sv), shi = i16x8.extend_high_i8x16_s(sv);
  const off = hsum4_i32x4(offset4(slo, shi, bs), offset4(slo, shi, bs + bss), offset4(slo, shi, bs + 2 * bss), offset4(slo, shi, bs + 3 * bss));
  return i32x4.sub(i32x4.add(half_tok4(w, s, x, xs, 0), half_tok4(w, s, x, xs, 1)), off);
}

/** One half of a row's super-block for one token into acc (as half_tok4). */
// @ts-ignore: decorator
@inline function half_tok1(acc: v128, w: usize, s: usize, x: usize, half: i32): v128 {
  let a = acc;
  const k = half << 2;
  for (let c1: usize = 0; c1 < 2; c1++) {
    const h = v128.load(w + 64 + (c1 << 4));
    const q = v128.load(w + (<usize>half << 5) + (c1 << 4));
    const jb = (<usize>half << 3) | c1;
    const sj = s + jb;
    const xj = x + (jb << 4);
    let code = codes(q, h, 0, k), sc = scale16(sj);
    a = upd(a, code, sc, scaled_lo(code, sc), scaled_hi(code, sc), xj);
    code = codes(q, h, 1, k + 1); sc = scale16(sj + 2);
    a = upd(a, code, sc, scaled_lo(code, sc), scaled_hi(code, sc), xj + 32);
    code = codes(q, h, 2, k + 2); sc = scale16(sj + 4);
    a = upd(a, code, sc, scaled_lo(code, sc), scaled_hi(code, sc), xj + 64);
    code = codes(q, h, 3, k + 3); sc = scale16(sj + 6);
    a = upd(a, code, sc, scaled_lo(code, sc), scaled_hi(code, sc), xj + 96);
  }
  return a;
}

/** One row's integer sum over one super-block for one token, spread over the 4 lanes. */
// @ts-ignore: decorator
@inline function row_tok1(w: usize, s: usize, x: usize, bs: usize): v128 {
  load<u8>(w, PREFETCH); // see PREFETCH: one touch per 64-byte line of codes
  load<u8>(w + 64, PREFETCH);
  const sv = v128.load(s);
  const a = i32x4.sub(i32x4.splat(0), offset4(i16x8.extend_low_i8x16_s(sv), i16x8.extend_high_i8x16_s(sv), bs));
  return half_tok1(half_tok1(a, w, s, x, 0), w, s, x, 1);
}

/**
 * y[t][r] for ntok activation vectors quantized by quantize_q8_k (codes kq, scales kd, sums ks); rows × cols weights
 * in the layout above (codes wq, scales ws), cols a multiple of 256.
 */
export function matmul_q3_k(wq: usize, ws: usize, kq: usize, kd: usize, ks: usize, y: usize, rows: i32, cols: i32, ntok: i32): void {
  const nsb = <usize>(cols >> 8);
  const groups = (rows + 3) >> 2;
  const rowBytes = <usize>rows << 2;
  const xs = <usize>cols;
  const bss = <usize>cols >> 3;
  const dss = nsb << 2;
  for (let g = 0; g < groups; g++) {
    const wg = wq + <usize>g * nsb * 384;
    const sg = ws + <usize>g * nsb * 80;
    const r = g << 2;
    let t = 0;
    for (; t + 4 <= ntok; t += 4) {
      const x = kq + <usize>t * xs;
      const d = kd + <usize>t * dss;
      const bs = ks + <usize>t * bss;
      for (let i = 0; i < 4 && r + i < rows; i++) {
        let acc = f32x4.splat(0);
        const ri = <usize>i;
        for (let b: usize = 0; b < nsb; b++) {
          const w = wg + b * 384 + ri * 96;
          const s = sg + b * 80;
          load<u8>(w, PREFETCH); // see PREFETCH
          load<u8>(w + 64, PREFETCH);
          const isum = row_tok4(w, s + (ri << 4), x + (b << 8), xs, bs + (b << 5), bss);
          const db = d + (b << 2);
          let xd4 = f32x4.splat(load<f32>(db));
          xd4 = f32x4.replace_lane(xd4, 1, load<f32>(db + dss));
          xd4 = f32x4.replace_lane(xd4, 2, load<f32>(db + 2 * dss));
          xd4 = f32x4.replace_lane(xd4, 3, load<f32>(db + 3 * dss));
          acc = f32x4.add(acc, f32x4.mul(f32x4.mul(f32x4.splat(load<f32>(s + 64 + (ri << 2))), xd4), f32x4.convert_i32x4_s(isum)));
        }
        const yr = y + <usize>t * rowBytes + (<usize>(r + i) << 2);
        store<f32>(yr, f32x4.extract_lane(acc, 0));
        store<f32>(yr + rowBytes, f32x4.extract_lane(acc, 1));
        store<f32>(yr + 2 * rowBytes, f32x4.extract_lane(acc, 2));
        store<f32>(yr + 3 * rowBytes, f32x4.extract_lane(acc, 3));
      }
    }
    for (; t < ntok; t++) {
      let acc = f32x4.splat(0);
      const x = kq + <usize>t * xs;
      const d = kd + <usize>t * dss;
      const bs = ks + <usize>t * bss;
      for (let b: usize = 0; b < nsb; b++) {
        const w = wg + b * 384;
        const s = sg + b * 80;
        load<u8>(s, PREFETCH / 4);
        const xb = x + (b << 8);
        const bsb = bs + (b << 5);
        const isum = hsum4_i32x4(row_tok1(w, s, xb, bsb), row_tok1(w + 96, s + 16, xb, bsb), row_tok1(w + 192, s + 32, xb, bsb), row_tok1(w + 288, s + 48, xb, bsb));
        acc = scale_add(acc, v128.load(s + 64), load<f32>(d + (b << 2)), isum);
      }
      store_rows4(y + <usize>t * rowBytes + (<usize>r << 2), acc, r, rows);
    }
  }
}

/** Row `row` as f32 (token embeddings): d·sc·(q − 4), in ggml's dequantize_row_q3_K's float operations. */
export function dequant_row_q3_k(wq: usize, ws: usize, row: i32, cols: i32, out: usize): void {
  const nsb = <usize>(cols >> 8);
  const lane = <usize>(row & 3);
  const g = <usize>(row >> 2);
  for (let b: usize = 0; b < nsb; b++) {
    const w = wq + (g * nsb + b) * 384 + lane * 96;
    const s = ws + (g * nsb + b) * 80;
    const d = load<f32>(s + 64 + (lane << 2));
    const o = out + (b << 10);
    for (let j: usize = 0; j < 16; j++) {
      const dl = d * <f32>load<i8>(s + (lane << 4) + j);
      for (let l: usize = 0; l < 16; l++) {
        const e = (j << 4) + l;
        const low = (<i32>load<u8>(w + ((e >> 7) << 5) + (e & 31)) >> <i32>(((e >> 5) & 3) << 1)) & 3;
        const high = (<i32>load<u8>(w + 64 + (e & 31)) >> <i32>(e >> 5)) & 1;
        store<f32>(o + (e << 2), dl * <f32>(low - (high ? 0 : 4)));
      }
    }
  }
}
