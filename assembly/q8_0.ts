// Q8_0: blocks of 32 int8 codes with one scale, value = q·d.
// Repacked layout (the host writes it at load): codes row-major [rows][cols] int8, scales apart as f32 [rows][cols/32].
// Activations use the same format (quantize_q8_0), so a dot product is integer within a block and f32 across blocks.

import { hsum_i32x4, round_to_f16 } from './common';

/**
 * Quantize ntok activation vectors of n floats (n a multiple of 32) to int8 codes xq [ntok][n] and f32 scales
 * xd [ntok][n/32]. Follows ggml's quantize_row_q8_0 on x86 (d = amax/127 stored as f16, codes = round-to-nearest-even
 * of x·127/amax), so a matmul sees the same integers as llama.cpp.
 */
export function quantize_q8_0(x: usize, n: i32, ntok: i32, xq: usize, xd: usize): void {
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
  }
}

/** Integer dot of 32 int8 weights with 32 int8 activations. |w·x| ≤ 128·127, so a pair sum fits i16. */
// @ts-ignore: decorator
@inline function dot_block_q8(w: usize, x: usize): i32 {
  const w0 = v128.load(w);
  const w1 = v128.load(w, 16);
  const x0 = v128.load(x);
  const x1 = v128.load(x, 16);
  const p0 = i16x8.add(i16x8.extmul_low_i8x16_s(w0, x0), i16x8.extmul_high_i8x16_s(w0, x0));
  const p1 = i16x8.add(i16x8.extmul_low_i8x16_s(w1, x1), i16x8.extmul_high_i8x16_s(w1, x1));
  return hsum_i32x4(i32x4.add(i32x4.extadd_pairwise_i16x8_s(p0), i32x4.extadd_pairwise_i16x8_s(p1)));
}

/** y[t][r] = Σ_blocks wd·xd·(Σ wq·xq) over ntok quantized activation vectors. */
export function matmul_q8_0(wq: usize, wd: usize, xq: usize, xd: usize, y: usize, rows: i32, cols: i32, ntok: i32): void {
  const nb = cols >> 5;
  for (let r = 0; r < rows; r++) {
    const wqr = wq + <usize>r * cols;
    const wdr = wd + ((<usize>r * nb) << 2);
    for (let t = 0; t < ntok; t++) {
      const xqt = xq + <usize>t * cols;
      const xdt = xd + ((<usize>t * nb) << 2);
      let acc: f32 = 0;
      for (let b = 0; b < nb; b++) {
        const sumi = dot_block_q8(wqr + (<usize>b << 5), xqt + (<usize>b << 5));
        acc += load<f32>(wdr + (<usize>b << 2)) * load<f32>(xdt + (<usize>b << 2)) * <f32>sumi;
      }
      store<f32>(y + ((<usize>t * rows + r) << 2), acc);
    }
  }
}

export function dequant_row_q8_0(wq: usize, wd: usize, row: i32, cols: i32, out: usize): void {
  const nb = cols >> 5;
  const q = wq + <usize>row * cols;
  const d = wd + ((<usize>row * nb) << 2);
  for (let b = 0; b < nb; b++) {
    const s = f32x4.splat(load<f32>(d + (<usize>b << 2)));
    for (let j = 0; j < 32; j += 8) {
      const v = i16x8.extend_low_i8x16_s(v128.load64_zero(q + (<usize>b << 5) + j));
      const o = out + ((<usize>(b * 32 + j)) << 2);
      v128.store(o, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(v)), s));
      v128.store(o, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(v)), s), 16);
    }
  }
}
