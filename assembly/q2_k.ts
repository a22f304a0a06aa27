// Q2_K: super-blocks of 256 values, 2-bit codes q (0..3), per 16 values a 4-bit scale sc and a 4-bit min m, and f16
// d, dmin per super-block: value = d·sc·q − dmin·m. Activations are Q8_K (quantize_q8_k): int8 codes x, one f32 scale xd
// per 256 and the code sums bsum per 16. As llama.cpp computes it, a super-block contributes
//   xd·d·Σ_j sc_j·(q·x)_j − xd·dmin·Σ_j m_j·bsum_j
// with both sums exact in i32 (at most 16·15·16·3·127 and 16·15·16·127), so one float step per super-block.
//
// Repacked layout (the host writes it at load): rows in groups of 4, the last group padded with zero rows, the rows in
// the lanes as in Q6_K (q6_k.ts says why): per group and sub-block 16 bytes, byte 4·row + e holding the row's values
// 4k + e (k = 0..3) at bits 2k, so one load and a shift by 2k give code vector k, [a0..a3 b0..b3 c0..c3 d0..d3] of
// values 4k..4k+3. Apart, 96 bytes of scales per group and super-block: d and dmin as f32 [4 rows] each, then the
// scale/min bytes as ggml stores them (scale in the low nibble, min in the high) as [16 sub-blocks][4 rows]. 2.75 bits
// per weight (ggml: 2.625).
//
// A relaxed dot against 4 broadcast activations gives i16 lanes [a,a,b,b,c,c,d,d] of at most 2·3·127, so a
// sub-block's 4 dots add in i16 and meet its scales in one pmaddwd, where the row-at-a-time layout before it took a
// pmaddwd, an add and a horizontal sum per row and 16 values (5632 × 2048, relaxed: decode 21.6 → 30.7 GMAC/s,
// prefill 28.0 → 39.3; SIMD128 13.3 / 18.6 → 17.1 / 21.7). The SIMD128 build widens the codes and multiplies as i16, lane for lane the same sums. Every output is
// the same sequence of f32 operations (acc + (d·xd·isum − dmin·xd·msum) per super-block, in order), so decode,
// prefill and both builds agree bit for bit.

import { k_pair_lo, kdot4_rows, kpair_bsums_rows4, PREFETCH, store_rows4, store_tile4 } from './common';

const CODES: usize = 256;
const SCALES: usize = 96;

/** Code vector k (constant) of a sub-block's 16 bytes. */
// @ts-ignore: decorator
@inline function codes(q: v128, k: i32): v128 {
  return k == 0 ? v128.and(q, i8x16.splat(3)) : v128.and(i16x8.shr_u(q, 2 * k), i8x16.splat(3)); // i16 shift: see q4_0.ts
}

/** A sub-block's scales [a,a,b,b,c,c,d,d] from its scale/min bytes at sp (the low nibbles). */
// @ts-ignore: decorator
@inline function scales4(sp: usize): v128 {
  return k_pair_lo(v128.and(v128.load8x8_u(sp), i16x8.splat(0x0f)));
}

/** One token's sub-block (4 code vectors; activations broadcast in x0..x3) times its scales, added into acc [a,b,c,d]. */
// @ts-ignore: decorator
@inline function token_sub(acc: v128, q: v128, s4: v128, x0: v128, x1: v128, x2: v128, x3: v128): v128 {
  const sum = i16x8.add(i16x8.add(kdot4_rows(codes(q, 0), x0), kdot4_rows(codes(q, 1), x1)), i16x8.add(kdot4_rows(codes(q, 2), x2), kdot4_rows(codes(q, 3), x3)));
  return i32x4.add(acc, i32x4.dot_i16x8_s(sum, s4));
}

/** token_sub with the token's 16 activations at x loaded once and broadcast by shuffles (prefill: see q6_k.ts). */
// @ts-ignore: decorator
@inline function token_sub_shuffles(acc: v128, q: v128, s4: v128, x: usize): v128 {
  const v = v128.load(x);
  return token_sub(acc, q, s4, i32x4.shuffle(v, v, 0, 0, 0, 0), i32x4.shuffle(v, v, 1, 1, 1, 1), i32x4.shuffle(v, v, 2, 2, 2, 2), i32x4.shuffle(v, v, 3, 3, 3, 3));
}

/** Σ_j m_j·bsum_j for the 4 rows of one super-block (scale/min bytes at sc + 32) and one token's code sums at ks. */
// @ts-ignore: decorator
@inline function mins_rows4(sc: usize, ks: usize): v128 {
  let m = i32x4.splat(0);
  for (let p: usize = 0; p < 8; p++) m = i32x4.add(m, kpair_bsums_rows4(i16x8.shr_u(v128.load8x8_u(sc + 32 + (p << 3)), 4), ks + (p << 2)));
  return m;
}

/** acc + (d·xd·isum − dmin·xd·msum) for 4 rows (d at sc, dmin at sc + 16). */
// @ts-ignore: decorator
@inline function step(acc: v128, sc: usize, xd: f32, isum: v128, msum: v128): v128 {
  const x = f32x4.splat(xd);
  const dd = f32x4.mul(v128.load(sc), x), dm = f32x4.mul(v128.load(sc, 16), x);
  return f32x4.add(acc, f32x4.sub(f32x4.mul(dd, f32x4.convert_i32x4_s(isum)), f32x4.mul(dm, f32x4.convert_i32x4_s(msum))));
}

/**
 * y[t][r] for ntok activation vectors quantized by quantize_q8_k (codes kq, scales kd, sums ks); rows × cols weights
 * in the layout above (codes wq, scales ws), cols a multiple of 256. One sub-block per iteration.
 */
export function matmul_q2_k(wq: usize, ws: usize, kq: usize, kd: usize, ks: usize, y: usize, rows: i32, cols: i32, ntok: i32): void {
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
    // prefill: 4 tokens per unpacked sub-block
    for (; t + 4 <= ntok; t += 4) {
      let f0 = f32x4.splat(0), f1 = f32x4.splat(0), f2 = f32x4.splat(0), f3 = f32x4.splat(0);
      let w = wg, sc = sg, x = kq + <usize>t * xStride, d = kd + <usize>t * dStride, s = ks + <usize>t * sStride;
      for (let sb = 0; sb < nsb; sb++) {
        load<u8>(sc, PREFETCH / 4); // see PREFETCH
        let i0 = i32x4.splat(0), i1 = i32x4.splat(0), i2 = i32x4.splat(0), i3 = i32x4.splat(0);
        for (let sp = sc + 32, end = sc + 96; sp < end; sp += 4) {
          load<u8>(w, PREFETCH);
          const q = v128.load(w), s4 = scales4(sp);
          i0 = token_sub_shuffles(i0, q, s4, x);
          i1 = token_sub_shuffles(i1, q, s4, x + xStride);
          i2 = token_sub_shuffles(i2, q, s4, x + 2 * xStride);
          i3 = token_sub_shuffles(i3, q, s4, x + 3 * xStride);
          w += 16;
          x += 16;
        }
        f0 = step(f0, sc, load<f32>(d), i0, mins_rows4(sc, s));
        f1 = step(f1, sc, load<f32>(d + dStride), i1, mins_rows4(sc, s + sStride));
        f2 = step(f2, sc, load<f32>(d + 2 * dStride), i2, mins_rows4(sc, s + 2 * sStride));
        f3 = step(f3, sc, load<f32>(d + 3 * dStride), i3, mins_rows4(sc, s + 3 * sStride));
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
        for (let sp = sc + 32, end = sc + 96; sp < end; sp += 4) {
          load<u8>(w, PREFETCH);
          acc = token_sub(acc, v128.load(w), scales4(sp), v128.load32_splat(x), v128.load32_splat(x, 4), v128.load32_splat(x, 8), v128.load32_splat(x, 12));
          w += 16;
          x += 16;
        }
        f = step(f, sc, load<f32>(d), acc, mins_rows4(sc, s));
        sc += SCALES;
        d += 4;
        s += 32;
      }
      store_rows4(y + <usize>t * rowBytes + (<usize>r << 2), f, r, rows);
    }
  }
}

/** Row `row` as f32 (token embeddings): d·sc·q − dmin·m, in ggml's dequantize_row_q2_K's float operations. */
export function dequant_row_q2_k(wq: usize, ws: usize, row: i32, cols: i32, out: usize): void {
  const nsb = cols >> 8;
  const lane = <usize>(row & 3);
  const q = wq + <usize>(row >> 2) * nsb * CODES + (lane << 2);
  const sg = ws + <usize>(row >> 2) * nsb * SCALES;
  for (let sb = 0; sb < nsb; sb++) {
    const sc = sg + <usize>sb * SCALES;
    const d = load<f32>(sc + (lane << 2));
    const dmin = load<f32>(sc + 16 + (lane << 2));
    for (let j = 0; j < 16; j++) {
      const b = <u32>load<u8>(sc + 32 + (<usize>j << 2) + lane);
      const dl = d * <f32>(b & 0xf);
      const ml = dmin * <f32>(b >> 4);
      const src = q + <usize>(sb * 16 + j) * 16;
      const o = out + (<usize>(sb * 256 + j * 16) << 2);
      for (let e: usize = 0; e < 4; e++) {
        const byte = <u32>load<u8>(src + e);
        for (let k: u32 = 0; k < 4; k++) store<f32>(o + ((<usize>(4 * k) + e) << 2), dl * <f32>((byte >> (2 * k)) & 3) - ml);
      }
    }
  }
}
