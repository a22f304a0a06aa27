// Q8_0: blocks of 32 int8 codes with one scale, value = q·d.
// Repacked layout (the host writes it at load): rows in groups of 4, the last group padded with zero rows; for each group
// and block, the 4 rows' 32 codes back to back (128 bytes); scales apart as f32 [groups][blocks][4]. See q4_0.ts for why.
// Activations use the same block format (quantize_q8_0), so a dot product is integer within a block and f32 across blocks.

import { hsum4_i32x4, hsum_i32x4, PREFETCH, round_to_f16, scale_add, signed_block_sums4, store_rows4, store_tile4 } from './common';

/**
 * Quantize ntok activation vectors of n floats (n a multiple of 32) to int8 codes xq [ntok][n] and f32 scales
 * xd [ntok][n/32], plus per block two i16 code sums xs [ntok][n/32][2]: Σx (Q4_0, Q4_1, Q5_0, Q5_1 need it) and
 * Σ_{x<0} |x| (Q8_0's relaxed kernel). Follows ggml's quantize_row_q8_0 on x86 (d = amax/127 stored as f16, codes =
 * round-to-nearest-even of x·127/amax, so in −127..127), so a matmul sees the same integers as llama.cpp.
 */
export function quantize_q8_0(x: usize, n: i32, ntok: i32, xq: usize, xd: usize, xs: usize): void {
  const nb = n >> 5;
  const total = nb * ntok;
  for (let b = 0; b < total; b++) {
    const src = x + (<usize>b << 7);
    const v0 = v128.load(src);
    const v1 = v128.load(src, 16);
    const v2 = v128.load(src, 32);
    const v3 = v128.load(src, 48);
    const v4 = v128.load(src, 64);
    const v5 = v128.load(src, 80);
    const v6 = v128.load(src, 96);
    const v7 = v128.load(src, 112);
    let m = f32x4.max(f32x4.max(f32x4.abs(v0), f32x4.abs(v1)), f32x4.max(f32x4.abs(v2), f32x4.abs(v3)));
    m = f32x4.max(m, f32x4.max(f32x4.max(f32x4.abs(v4), f32x4.abs(v5)), f32x4.max(f32x4.abs(v6), f32x4.abs(v7))));
    const amax = max(max(f32x4.extract_lane(m, 0), f32x4.extract_lane(m, 1)), max(f32x4.extract_lane(m, 2), f32x4.extract_lane(m, 3)));
    store<f32>(xd + (<usize>b << 2), round_to_f16(amax / 127.0));
    const id = f32x4.splat(amax != 0 ? <f32>127.0 / amax : 0);
    const q0 = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v0, id)));
    const q1 = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v1, id)));
    const q2 = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v2, id)));
    const q3 = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v3, id)));
    const q4 = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v4, id)));
    const q5 = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v5, id)));
    const q6 = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v6, id)));
    const q7 = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v7, id)));
    const dst = xq + (<usize>b << 5);
    v128.store(dst, i8x16.narrow_i16x8_s(i16x8.narrow_i32x4_s(q0, q1), i16x8.narrow_i32x4_s(q2, q3)));
    v128.store(dst, i8x16.narrow_i16x8_s(i16x8.narrow_i32x4_s(q4, q5), i16x8.narrow_i32x4_s(q6, q7)), 16);
    const sum = i32x4.add(i32x4.add(i32x4.add(q0, q1), i32x4.add(q2, q3)), i32x4.add(i32x4.add(q4, q5), i32x4.add(q6, q7)));
    const abs = i32x4.add(
      i32x4.add(i32x4.add(i32x4.abs(q0), i32x4.abs(q1)), i32x4.add(i32x4.abs(q2), i32x4.abs(q3))),
      i32x4.add(i32x4.add(i32x4.abs(q4), i32x4.abs(q5)), i32x4.add(i32x4.abs(q6), i32x4.abs(q7))),
    );
    const s = hsum_i32x4(sum);
    store<i16>(xs + (<usize>b << 2), <i16>s);
    store<i16>(xs + (<usize>b << 2), <i16>((hsum_i32x4(abs) - s) >> 1), 2);
  }
}

/**
 * SIMD128: Σ w·x over one row's block, spread over four i32 lanes: codes widened to i16, then i32x4.dot_i16x8_s (one
 * multiply-add instruction per 8 pairs on x86 and Arm). The activations arrive already widened (xl0..xh1).
 */
// @ts-ignore: decorator
@inline function dot_row(w: usize, xl0: v128, xh0: v128, xl1: v128, xh1: v128): v128 {
  const w0 = v128.load(w);
  const w1 = v128.load(w, 16);
  const a = i32x4.add(i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_s(w0), xl0), i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_s(w0), xh0));
  const b = i32x4.add(i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_s(w1), xl1), i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_s(w1), xh1));
  return i32x4.add(a, b);
}

/**
 * One token's block against a group's 4 rows (w = their 128 code bytes), added into that token's 4 accumulators;
 * xs holds the block's two code sums (see quantize_q8_0).
 */
// @ts-ignore: decorator
@inline function token_block(acc: v128, w: usize, wd4: v128, x: usize, xd: usize, xs: usize): v128 {
  let sumi: v128;
  if (ASC_FEATURE_RELAXED_SIMD) {
    sumi = signed_block_sums4(
      v128.load(w), v128.load(w, 16), v128.load(w, 32), v128.load(w, 48),
      v128.load(w, 64), v128.load(w, 80), v128.load(w, 96), v128.load(w, 112), x, xs,
    );
  } else {
    const x0 = v128.load(x);
    const x1 = v128.load(x, 16);
    const xl0 = i16x8.extend_low_i8x16_s(x0), xh0 = i16x8.extend_high_i8x16_s(x0);
    const xl1 = i16x8.extend_low_i8x16_s(x1), xh1 = i16x8.extend_high_i8x16_s(x1);
    sumi = hsum4_i32x4(
      dot_row(w, xl0, xh0, xl1, xh1),
      dot_row(w + 32, xl0, xh0, xl1, xh1),
      dot_row(w + 64, xl0, xh0, xl1, xh1),
      dot_row(w + 96, xl0, xh0, xl1, xh1),
    );
  }
  return scale_add(acc, wd4, load<f32>(xd), sumi);
}

/**
 * y[t][r] = Σ_blocks wd·xd·(Σ wq·xq) over ntok activation vectors quantized by quantize_q8_0 (codes xq, scales xd,
 * code sums xs).
 */
export function matmul_q8_0(wq: usize, wd: usize, xq: usize, xd: usize, xs: usize, y: usize, rows: i32, cols: i32, ntok: i32): void {
  const nb = cols >> 5;
  const groups = (rows + 3) >> 2;
  const rowBytes = <usize>rows << 2;
  const xStride = <usize>cols;
  const dStride = <usize>nb << 2;
  for (let g = 0; g < groups; g++) {
    const wg = wq + <usize>g * nb * 128;
    const dg = wd + <usize>g * nb * 16;
    const r = g << 2;
    let t = 0;
    // prefill: 4 tokens per weight block loaded
    for (; t + 4 <= ntok; t += 4) {
      let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
      const x = xq + <usize>t * xStride;
      const d = xd + <usize>t * dStride;
      const s = xs + <usize>t * dStride;
      for (let b = 0; b < nb; b++) {
        const w = wg + (<usize>b << 7);
        load<u8>(w, PREFETCH); // see PREFETCH
        load<u8>(w, PREFETCH + 64);
        load<u8>(dg + (<usize>b << 4), PREFETCH / 8);
        const wd4 = v128.load(dg + (<usize>b << 4));
        const xb = x + (<usize>b << 5);
        const db = d + (<usize>b << 2);
        const sb = s + (<usize>b << 2);
        a0 = token_block(a0, w, wd4, xb, db, sb);
        a1 = token_block(a1, w, wd4, xb + xStride, db + dStride, sb + dStride);
        a2 = token_block(a2, w, wd4, xb + 2 * xStride, db + 2 * dStride, sb + 2 * dStride);
        a3 = token_block(a3, w, wd4, xb + 3 * xStride, db + 3 * dStride, sb + 3 * dStride);
      }
      const yt = y + <usize>t * rowBytes + (<usize>r << 2);
      store_tile4(yt, rowBytes, a0, a1, a2, a3, r, rows);
    }
    // decode, and the prefill remainder: one token at a time
    for (; t < ntok; t++) {
      let a = f32x4.splat(0);
      const x = xq + <usize>t * xStride;
      const d = xd + <usize>t * dStride;
      const s = xs + <usize>t * dStride;
      for (let b = 0; b < nb; b++) {
        const w = wg + (<usize>b << 7);
        load<u8>(w, PREFETCH); // see PREFETCH
        load<u8>(w, PREFETCH + 64);
        load<u8>(dg + (<usize>b << 4), PREFETCH / 8);
        a = token_block(a, w, v128.load(dg + (<usize>b << 4)), x + (<usize>b << 5), d + (<usize>b << 2), s + (<usize>b << 2));
      }
      store_rows4(y + <usize>t * rowBytes + (<usize>r << 2), a, r, rows);
    }
  }
}

export function dequant_row_q8_0(wq: usize, wd: usize, row: i32, cols: i32, out: usize): void {
  const nb = cols >> 5;
  const lane = <usize>(row & 3);
  const q = wq + <usize>(row >> 2) * nb * 128 + (lane << 5);
  const d = wd + <usize>(row >> 2) * nb * 16 + (lane << 2);
  for (let b = 0; b < nb; b++) {
    const s = f32x4.splat(load<f32>(d + (<usize>b << 4)));
    for (let j = 0; j < 32; j += 8) {
      const v = i16x8.extend_low_i8x16_s(v128.load64_zero(q + (<usize>b << 7) + j));
      const o = out + ((<usize>(b * 32 + j)) << 2);
      v128.store(o, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(v)), s));
      v128.store(o, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(v)), s), 16);
    }
  }
}
