// Q3_K: super-blocks of 256 values, 3-bit codes (2 low bits and a high bit), per 16 values a 6-bit scale, one f16 d:
// value = d·sc·(q − 4) with q = low + 4·high (0..7) and sc = scale − 32 (−32..31). Activations are Q8_K
// (quantize_q8_k): int8 codes x, one f32 scale xd per 256, code sums bsum per 16. A super-block contributes
//   xd·d·(Σ_j sc_j·(q·x)_j − 4·Σ_j sc_j·bsum_j)
// with the integer part exact in i32 (at most 256·7·127·32 + 4·16·32·16·127), so one float step per super-block.
// The codes stay unsigned (0..7) in both builds and the −4 offset comes off through the bsums, once per super-block.
//
// Repacked layout (the host writes it at load): rows in groups of 4, the last group padded with zero rows, the rows in
// the lanes as in Q6_K (q6_k.ts says why): every code vector holds 4 consecutive values of each of the 4 rows.
// - Codes, 48 bytes per group and pair of sub-blocks (384 per super-block): A, B, C, whose bytes pack the 8 code
//   vectors c0..c7 of the pair's 32 values (c0..c3 the first sub-block): A = c0 | c1 << 3 | (c6 & 3) << 6,
//   B = c2 | c3 << 3 | (c7 & 3) << 6, C = c4 | c5 << 3 | (c6 >> 2) << 6 | (c7 >> 2) << 7. 19 operations unpack 8
//   vectors, 3 bits per code exactly.
// - Scales, 80 bytes per group and super-block: d [4] as f32, then the signed sub-block scales as [16 sub-blocks][4
//   rows], Q6_K's order. 3.625 bits per weight (ggml: 3.4375).
//
// A relaxed dot against 4 broadcast activations gives i16 lanes [a,a,b,b,c,c,d,d] of at most 2·7·127, so a
// sub-block's 4 dots add in i16 and meet its scales in one pmaddwd, where the row-at-a-time layout before it took a
// pmaddwd, an add and a horizontal sum per row and 16 values (5632 × 2048, relaxed: decode 15.2 → 24.8 GMAC/s,
// prefill 23.2 → 36.3; SIMD128 10.2 / 17.4 → 12.5 / 17.5). Every output is acc + d·xd·isum per super-block, in order, so decode, prefill and both builds agree bit
// for bit.

import { k_pair_hi, k_pair_lo, kdot4_rows, koffset_rows4, PREFETCH, scale_add, store_rows4, store_tile4 } from './common';

const CODES: usize = 384;
const SCALES: usize = 80;

// The pair's 8 code vectors from A, B, C at w. i16 shifts: V8 rebuilds a byte mask for i8x16 shifts, and the masks
// drop what crosses from the neighbouring byte.
// @ts-ignore: decorator
@inline function low3(v: v128): v128 {
  return v128.and(v, i8x16.splat(7));
}

// @ts-ignore: decorator
@inline function mid3(v: v128): v128 {
  return v128.and(i16x8.shr_u(v, 3), i8x16.splat(7));
}

/** c6 (from A, C bit 6) or c7 (from B, C bit 7). */
// @ts-ignore: decorator
@inline function top3(ab: v128, c: v128, bit: i32): v128 {
  return v128.or(v128.and(i16x8.shr_u(ab, 6), i8x16.splat(3)), v128.and(i16x8.shr_u(c, bit - 2), i8x16.splat(4)));
}

/**
 * One token's pair of sub-blocks (8 code vectors; 32 activations, broadcast 4 at a time in x0..x7), times the rows'
 * scales (s0: the first sub-block's [a,a,b,b,c,c,d,d], s1: the second's), added to the token's accumulator [a,b,c,d].
 */
// @ts-ignore: decorator
@inline function token_pair(
  acc: v128, c0: v128, c1: v128, c2: v128, c3: v128, c4: v128, c5: v128, c6: v128, c7: v128, s0: v128, s1: v128,
  x0: v128, x1: v128, x2: v128, x3: v128, x4: v128, x5: v128, x6: v128, x7: v128,
): v128 {
  const e = i16x8.add(i16x8.add(kdot4_rows(c0, x0), kdot4_rows(c1, x1)), i16x8.add(kdot4_rows(c2, x2), kdot4_rows(c3, x3)));
  const o = i16x8.add(i16x8.add(kdot4_rows(c4, x4), kdot4_rows(c5, x5)), i16x8.add(kdot4_rows(c6, x6), kdot4_rows(c7, x7)));
  return i32x4.add(acc, i32x4.add(i32x4.dot_i16x8_s(e, s0), i32x4.dot_i16x8_s(o, s1)));
}

/** token_pair with the 32 activations at x loaded twice and broadcast by shuffles (prefill: see q6_k.ts). */
// @ts-ignore: decorator
@inline function token_pair_shuffles(
  acc: v128, c0: v128, c1: v128, c2: v128, c3: v128, c4: v128, c5: v128, c6: v128, c7: v128, s0: v128, s1: v128, x: usize,
): v128 {
  const u = v128.load(x), v = v128.load(x, 16);
  return token_pair(
    acc, c0, c1, c2, c3, c4, c5, c6, c7, s0, s1,
    i32x4.shuffle(u, u, 0, 0, 0, 0), i32x4.shuffle(u, u, 1, 1, 1, 1), i32x4.shuffle(u, u, 2, 2, 2, 2), i32x4.shuffle(u, u, 3, 3, 3, 3),
    i32x4.shuffle(v, v, 0, 0, 0, 0), i32x4.shuffle(v, v, 1, 1, 1, 1), i32x4.shuffle(v, v, 2, 2, 2, 2), i32x4.shuffle(v, v, 3, 3, 3, 3),
  );
}

/**
 * y[t][r] for ntok activation vectors quantized by quantize_q8_k (codes kq, scales kd, sums ks); rows × cols weights
 * in the layout above (codes wq, scales ws), cols a multiple of 256. One pair of sub-blocks per iteration.
 */
export function matmul_q3_k(wq: usize, ws: usize, kq: usize, kd: usize, ks: usize, y: usize, rows: i32, cols: i32, ntok: i32): void {
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
    // prefill: 4 tokens per unpacked pair of sub-blocks
    for (; t + 4 <= ntok; t += 4) {
      let f0 = f32x4.splat(0), f1 = f32x4.splat(0), f2 = f32x4.splat(0), f3 = f32x4.splat(0);
      let w = wg, sc = sg, x = kq + <usize>t * xStride, d = kd + <usize>t * dStride, s = ks + <usize>t * sStride;
      for (let sb = 0; sb < nsb; sb++) {
        load<u8>(sc, PREFETCH / 4); // see PREFETCH
        let i0 = i32x4.splat(0), i1 = i32x4.splat(0), i2 = i32x4.splat(0), i3 = i32x4.splat(0);
        for (let sp = sc + 16, end = sc + 80; sp < end; sp += 8) {
          load<u8>(w, PREFETCH);
          const sv = v128.load8x8_s(sp);
          const s0 = k_pair_lo(sv), s1 = k_pair_hi(sv);
          const a = v128.load(w), b = v128.load(w, 16), c = v128.load(w, 32);
          const c0 = low3(a), c1 = mid3(a), c2 = low3(b), c3 = mid3(b), c4 = low3(c), c5 = mid3(c);
          const c6 = top3(a, c, 6), c7 = top3(b, c, 7);
          i0 = token_pair_shuffles(i0, c0, c1, c2, c3, c4, c5, c6, c7, s0, s1, x);
          i1 = token_pair_shuffles(i1, c0, c1, c2, c3, c4, c5, c6, c7, s0, s1, x + xStride);
          i2 = token_pair_shuffles(i2, c0, c1, c2, c3, c4, c5, c6, c7, s0, s1, x + 2 * xStride);
          i3 = token_pair_shuffles(i3, c0, c1, c2, c3, c4, c5, c6, c7, s0, s1, x + 3 * xStride);
          w += 48;
          x += 32;
        }
        const d4 = v128.load(sc);
        f0 = scale_add(f0, d4, load<f32>(d), i32x4.sub(i0, koffset_rows4(sc, s, 2)));
        f1 = scale_add(f1, d4, load<f32>(d + dStride), i32x4.sub(i1, koffset_rows4(sc, s + sStride, 2)));
        f2 = scale_add(f2, d4, load<f32>(d + 2 * dStride), i32x4.sub(i2, koffset_rows4(sc, s + 2 * sStride, 2)));
        f3 = scale_add(f3, d4, load<f32>(d + 3 * dStride), i32x4.sub(i3, koffset_rows4(sc, s + 3 * sStride, 2)));
        sc += SCALES;
        d += 4;
        s += 32;
      }
      const yt = y + <usize>t * rowBytes + (<usize>r << 2);
      store_tile4(yt, rowBytes, f0, f1, f2, f3, r, rows);
    }
    // decode, and the prefill remainder: one token at a time
    for (; t < ntok; t++) {
      let f = f32x4.splat(0);
      let w = wg, sc = sg, x = kq + <usize>t * xStride, d = kd + <usize>t * dStride, s = ks + <usize>t * sStride;
      for (let sb = 0; sb < nsb; sb++) {
        load<u8>(sc, PREFETCH / 4); // see PREFETCH
        let acc = i32x4.splat(0);
        for (let sp = sc + 16, end = sc + 80; sp < end; sp += 8) {
          load<u8>(w, PREFETCH);
          const sv = v128.load8x8_s(sp);
          const a = v128.load(w), b = v128.load(w, 16), c = v128.load(w, 32);
          acc = token_pair(
            acc, low3(a), mid3(a), low3(b), mid3(b), low3(c), mid3(c), top3(a, c, 6), top3(b, c, 7), k_pair_lo(sv), k_pair_hi(sv),
            v128.load32_splat(x), v128.load32_splat(x, 4), v128.load32_splat(x, 8), v128.load32_splat(x, 12),
            v128.load32_splat(x, 16), v128.load32_splat(x, 20), v128.load32_splat(x, 24), v128.load32_splat(x, 28),
          );
          w += 48;
          x += 32;
        }
        f = scale_add(f, v128.load(sc), load<f32>(d), i32x4.sub(acc, koffset_rows4(sc, s, 2)));
        sc += SCALES;
        d += 4;
        s += 32;
      }
      store_rows4(y + <usize>t * rowBytes + (<usize>r << 2), f, r, rows);
    }
  }
}

/** Row `row` as f32 (token embeddings): d·sc·(q − 4), in ggml's dequantize_row_q3_K's float operations. */
export function dequant_row_q3_k(wq: usize, ws: usize, row: i32, cols: i32, out: usize): void {
  const nsb = cols >> 8;
  const lane = <usize>(row & 3);
  const q = wq + <usize>(row >> 2) * nsb * CODES + (lane << 2);
  const sg = ws + <usize>(row >> 2) * nsb * SCALES;
  for (let sb = 0; sb < nsb; sb++) {
    const sc = sg + <usize>sb * SCALES;
    const d = load<f32>(sc + (lane << 2));
    for (let p = 0; p < 8; p++) {
      const src = q + <usize>(sb * 8 + p) * 48;
      const o = out + (<usize>(sb * 256 + p * 32) << 2);
      const d0 = d * <f32>load<i8>(sc + 16 + (<usize>(2 * p) << 2) + lane);
      const d1 = d * <f32>load<i8>(sc + 16 + (<usize>(2 * p + 1) << 2) + lane);
      for (let e: usize = 0; e < 4; e++) {
        const a = <i32>load<u8>(src + e), b = <i32>load<u8>(src + 16 + e), c = <i32>load<u8>(src + 32 + e);
        store<f32>(o + (e << 2), d0 * <f32>((a & 7) - 4));
        store<f32>(o + ((4 + e) << 2), d0 * <f32>(((a >> 3) & 7) - 4));
        store<f32>(o + ((8 + e) << 2), d0 * <f32>((b & 7) - 4));
        store<f32>(o + ((12 + e) << 2), d0 * <f32>(((b >> 3) & 7) - 4));
        store<f32>(o + ((16 + e) << 2), d1 * <f32>((c & 7) - 4));
        store<f32>(o + ((20 + e) << 2), d1 * <f32>(((c >> 3) & 7) - 4));
        store<f32>(o + ((24 + e) << 2), d1 * <f32>(((a >> 6) | (((c >> 6) & 1) << 2)) - 4));
        store<f32>(o + ((28 + e) << 2), d1 * <f32>(((b >> 6) | ((c >> 7) << 2)) - 4));
      }
    }
  }
}
