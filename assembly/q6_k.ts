// Q6_K: super-blocks of 256 values, 16 sub-blocks of 16 with int8 scales sc and one f16 d; value = d·sc·(q − 32),
// q in 0..63. Activations are Q8_K.
//
// Repacked layout: rows in groups of 4, the last group padded with zero rows.
// - Codes, 768 bytes per group and super-block, 96 per pair of sub-blocks (32 values): the 4 rows' 16 bytes V back to
//   back, then W for rows a,b (16 bytes) and for rows c,d (16). V byte l holds element l's whole code in bits 0..5 and
//   the low 2 bits of element l+16 in bits 6..7; W byte l holds the top 4 bits of element l+16 of the first row of its
//   pair in its low nibble, of the second in its high nibble. 24 bytes per row and 32 values: exactly 6 bits.
// - Scales, 80 bytes per group and super-block: d [4] as f32, then the int8 sub-block scales as [16 sub-blocks][4 rows].
//   6.625 bits per weight in all (ggml: 6.5625).
//
// Codes stay unsigned (0..63), the 7-bit operand of relaxed_dot in the relaxed build (the SIMD128 build multiplies the
// same unsigned codes as i16); the offset comes off as 32·Σ_j sc_j·bsum_j, with bsum_j the Q8_K code sum of
// sub-block j. Per row and super-block Σ_j sc_j·Σ (q−32)·x is one exact i32, then acc + (d·kd)·sumi.

import { k_pair_hi, k_pair_lo, kdot16, kscale_rows4, PREFETCH, scale_add, store_rows4 } from './common';

const CODES: usize = 768;
const SCALES: usize = 80;

/** Elements 0..15 of a row's pair of sub-blocks. */
// @ts-ignore: decorator
@inline function codes_lo(v: v128): v128 {
  return v128.and(v, i8x16.splat(0x3f));
}

/** Elements 16..31 of the first (second = false) or second row of a W pair. */
// @ts-ignore: decorator
@inline function codes_hi(v: v128, w: v128, second: bool): v128 {
  const low2 = v128.and(i16x8.shr_u(v, 6), i8x16.splat(0x03));
  return v128.or(low2, v128.and(second ? i16x8.shr_u(w, 2) : i16x8.shl(w, 2), i8x16.splat(0x3c)));
}

/**
 * The pair's offset correction for 4 rows, 32·[a_j,a_j+1,b_j,b_j+1,...] as i16 from the pair's scales
 * v = [a_j,b_j,c_j,d_j,a_j+1,...] (|32·sc| ≤ 4096), ready for i32x4.dot_i16x8_s against (bsum_j, bsum_j+1).
 */
// @ts-ignore: decorator
@inline function offset_pair(v: v128): v128 {
  const h = i32x4.shuffle(v, v, 2, 3, 2, 3);
  return i16x8.shl(i8x16.shuffle(v, h, 0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23), 5);
}

/**
 * One token's pair of sub-blocks (32 activations at x, their two code sums at ks) against a group's 4 unpacked rows:
 * Σ sc·Σ q·x − 32·Σ sc·bsum, added to the token's i32 accumulator. Each row's i16 lanes hold 2 products (≤ 16002).
 */
// @ts-ignore: decorator
@inline function token_pair(
  acc: v128, la: v128, ha: v128, lb: v128, hb: v128, lc: v128, hc: v128, ld: v128, hd: v128,
  s4lo: v128, s4hi: v128, off: v128, x: usize, ks: usize,
): v128 {
  const x0 = v128.load(x), x1 = v128.load(x, 16);
  // unused (and dropped by the optimizer) in the relaxed build
  const xl0 = i16x8.extend_low_i8x16_s(x0), xh0 = i16x8.extend_high_i8x16_s(x0);
  const xl1 = i16x8.extend_low_i8x16_s(x1), xh1 = i16x8.extend_high_i8x16_s(x1);
  const lo = kscale_rows4(kdot16(la, x0, xl0, xh0), kdot16(lb, x0, xl0, xh0), kdot16(lc, x0, xl0, xh0), kdot16(ld, x0, xl0, xh0), s4lo);
  const hi = kscale_rows4(kdot16(ha, x1, xl1, xh1), kdot16(hb, x1, xl1, xh1), kdot16(hc, x1, xl1, xh1), kdot16(hd, x1, xl1, xh1), s4hi);
  return i32x4.sub(i32x4.add(acc, i32x4.add(lo, hi)), i32x4.dot_i16x8_s(off, v128.load32_splat(ks)));
}

/**
 * y[t][r] for ntok Q8_K activation vectors: over the super-blocks in order, acc = acc + (d·kd)·sumi with the exact
 * sumi = Σ_j sc_j·Σ q·xq − 32·Σ_j sc_j·bsum_j. One pair of sub-blocks per iteration (see matmul_q4_k).
 */
export function matmul_q6_k(wq: usize, ws: usize, kq: usize, kd: usize, ks: usize, y: usize, rows: i32, cols: i32, ntok: i32): void {
  const nsb = cols >> 8;
  const groups = (rows + 3) >> 2;
  const rowBytes = <usize>rows << 2;
  const xStride = <usize>cols;
  const dStride = <usize>nsb << 2;
  const sStride = <usize>nsb << 5;
  for (let g = 0; g < groups; g++) {
    const wg = wq + <usize>g * nsb * CODES;
    const sg = ws + <usize>g * nsb * SCALES;
    const r = g << 2;
    let t = 0;
    // prefill: 4 tokens per unpacked weight pair of sub-blocks
    for (; t + 4 <= ntok; t += 4) {
      let f0 = f32x4.splat(0), f1 = f32x4.splat(0), f2 = f32x4.splat(0), f3 = f32x4.splat(0);
      let w = wg, sc = sg, x = kq + <usize>t * xStride, d = kd + <usize>t * dStride, s = ks + <usize>t * sStride;
      for (let sb = 0; sb < nsb; sb++) {
        load<u8>(sc, PREFETCH / 4); // see PREFETCH
        load<u8>(sc, PREFETCH / 4 + 64);
        let i0 = i32x4.splat(0), i1 = i32x4.splat(0), i2 = i32x4.splat(0), i3 = i32x4.splat(0);
        let sp = sc + 16;
        for (let p = 0; p < 8; p++) {
          load<u8>(w, PREFETCH);
          load<u8>(w, PREFETCH + 64);
          const sv = v128.load8x8_s(sp);
          const s4lo = k_pair_lo(sv), s4hi = k_pair_hi(sv), off = offset_pair(sv);
          const v0 = v128.load(w), v1 = v128.load(w, 16), v2 = v128.load(w, 32), v3 = v128.load(w, 48);
          const wab = v128.load(w, 64), wcd = v128.load(w, 80);
          const la = codes_lo(v0), ha = codes_hi(v0, wab, false), lb = codes_lo(v1), hb = codes_hi(v1, wab, true);
          const lc = codes_lo(v2), hc = codes_hi(v2, wcd, false), ld = codes_lo(v3), hd = codes_hi(v3, wcd, true);
          i0 = token_pair(i0, la, ha, lb, hb, lc, hc, ld, hd, s4lo, s4hi, off, x, s);
          i1 = token_pair(i1, la, ha, lb, hb, lc, hc, ld, hd, s4lo, s4hi, off, x + xStride, s + sStride);
          i2 = token_pair(i2, la, ha, lb, hb, lc, hc, ld, hd, s4lo, s4hi, off, x + 2 * xStride, s + 2 * sStride);
          i3 = token_pair(i3, la, ha, lb, hb, lc, hc, ld, hd, s4lo, s4hi, off, x + 3 * xStride, s + 3 * sStride);
          w += 96;
          x += 32;
          s += 4;
          sp += 8;
        }
        const d4 = v128.load(sc);
        f0 = scale_add(f0, d4, load<f32>(d), i0);
        f1 = scale_add(f1, d4, load<f32>(d + dStride), i1);
        f2 = scale_add(f2, d4, load<f32>(d + 2 * dStride), i2);
        f3 = scale_add(f3, d4, load<f32>(d + 3 * dStride), i3);
        sc += SCALES;
        d += 4;
      }
      const yt = y + <usize>t * rowBytes + (<usize>r << 2);
      store_rows4(yt, f0, r, rows);
      store_rows4(yt + rowBytes, f1, r, rows);
      store_rows4(yt + 2 * rowBytes, f2, r, rows);
      store_rows4(yt + 3 * rowBytes, f3, r, rows);
    }
    // decode, and the prefill remainder: one token at a time
    for (; t < ntok; t++) {
      let f = f32x4.splat(0);
      let w = wg, sc = sg, x = kq + <usize>t * xStride, d = kd + <usize>t * dStride, s = ks + <usize>t * sStride;
      for (let sb = 0; sb < nsb; sb++) {
        load<u8>(sc, PREFETCH / 4); // see PREFETCH
        load<u8>(sc, PREFETCH / 4 + 64);
        let acc = i32x4.splat(0);
        let sp = sc + 16;
        for (let p = 0; p < 8; p++) {
          load<u8>(w, PREFETCH);
          load<u8>(w, PREFETCH + 64);
          const sv = v128.load8x8_s(sp);
          const v0 = v128.load(w), v1 = v128.load(w, 16), v2 = v128.load(w, 32), v3 = v128.load(w, 48);
          const wab = v128.load(w, 64), wcd = v128.load(w, 80);
          acc = token_pair(
            acc, codes_lo(v0), codes_hi(v0, wab, false), codes_lo(v1), codes_hi(v1, wab, true),
            codes_lo(v2), codes_hi(v2, wcd, false), codes_lo(v3), codes_hi(v3, wcd, true),
            k_pair_lo(sv), k_pair_hi(sv), offset_pair(sv), x, s,
          );
          w += 96;
          x += 32;
          s += 4;
          sp += 8;
        }
        f = scale_add(f, v128.load(sc), load<f32>(d), acc);
        sc += SCALES;
        d += 4;
      }
      store_rows4(y + <usize>t * rowBytes + (<usize>r << 2), f, r, rows);
    }
  }
}

/** Row `row` as f32: (d·sc)·(q − 32), the product d·sc rounded to f32 first, as ggml's dequantize_row_q6_K. */
export function dequant_row_q6_k(wq: usize, ws: usize, row: i32, cols: i32, out: usize): void {
  const nsb = cols >> 8;
  const lane = <usize>(row & 3);
  const wOff: usize = 64 + ((lane >> 1) << 4); // this row's W: rows a,b then c,d
  const wShift = <i32>(lane & 1) << 2;
  const q = wq + <usize>(row >> 2) * nsb * CODES;
  const sg = ws + <usize>(row >> 2) * nsb * SCALES;
  for (let sb = 0; sb < nsb; sb++) {
    const sc = sg + <usize>sb * SCALES;
    const d = load<f32>(sc + (lane << 2));
    for (let p = 0; p < 8; p++) {
      const d1 = d * <f32>load<i8>(sc + 16 + (<usize>p << 3) + lane);
      const d2 = d * <f32>load<i8>(sc + 16 + (<usize>p << 3) + 4 + lane);
      const src = q + <usize>sb * CODES + <usize>p * 96;
      const o = out + (<usize>(sb * 256 + p * 32) << 2);
      for (let l = 0; l < 16; l++) {
        const v = <i32>load<u8>(src + (lane << 4) + l);
        const hi = (v >> 6) | (((<i32>load<u8>(src + wOff + l) >> wShift) & 0x0f) << 2);
        store<f32>(o + (<usize>l << 2), d1 * <f32>((v & 0x3f) - 32));
        store<f32>(o + (<usize>(l + 16) << 2), d2 * <f32>(hi - 32));
      }
    }
  }
}
