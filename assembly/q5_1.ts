// Q5_1: blocks of 32 5-bit codes with a scale d and a minimum m, value = code·d + m; the fifth bits come from a 32-bit
// field per block (qh). Activations are Q8_0 codes with their block sums, as Q4_1 (llama.cpp: Q8_1).
//
// Repacked layout: the codes as Q5_0 (per group and block, 64 bytes of 4 rows' code bytes, then 16 bytes of the top
// bits of elements 16..31: see q5_0.ts), the scales as Q4_1 (f32 [groups][blocks][8]: the 4 rows' d, then their m).
// Codes 0..31 are the relaxed dot's 7-bit operand as they are. Every output is `acc = (acc + (wd·xd)·sumi) + wm·(xd·xs)`
// over blocks in order, so decode, prefill and both builds agree bit for bit.

import { PREFETCH, store_rows4, store_tile4 } from './common';
import { block_sums4_u, scale_add_min } from './q4_1';
import { q5_block_sums4, q5_code, q5_hi, q5_lo } from './q5_0';

/**
 * y[t][r] = Σ_blocks (wd·xd·Σ code·xq + wm·xd·xs) for ntok activation vectors quantized by quantize_q8_0 (codes xq,
 * scales xd, code sums xs).
 */
export function matmul_q5_1(wq: usize, wd: usize, xq: usize, xd: usize, xs: usize, y: usize, rows: i32, cols: i32, ntok: i32): void {
  const nb = cols >> 5;
  const groups = (rows + 3) >> 2;
  const rowBytes = <usize>rows << 2;
  const xStride = <usize>cols;
  const dStride = <usize>nb << 2;
  for (let g = 0; g < groups; g++) {
    const wg = wq + <usize>g * nb * 80;
    const dg = wd + <usize>g * nb * 32;
    const r = g << 2;
    let t = 0;
    // prefill: 4 tokens per unpacked weight block
    for (; t + 4 <= ntok; t += 4) {
      let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
      const x = xq + <usize>t * xStride;
      const d = xd + <usize>t * dStride;
      const s = xs + <usize>t * dStride;
      for (let b = 0; b < nb; b++) {
        const w = wg + <usize>b * 80;
        const sc = dg + (<usize>b << 5);
        load<u8>(w, PREFETCH); // see PREFETCH; two loads, as a block no longer fits one cache line
        load<u8>(w, PREFETCH + 64);
        load<u8>(sc, PREFETCH * 2 / 5);
        const hb = v128.load(w, 64);
        const w0 = v128.load(w), w1 = v128.load(w, 16), w2 = v128.load(w, 32), w3 = v128.load(w, 48);
        const l0 = q5_lo(w0), h0 = q5_hi(w0, hb, 0), l1 = q5_lo(w1), h1 = q5_hi(w1, hb, 1);
        const l2 = q5_lo(w2), h2 = q5_hi(w2, hb, 2), l3 = q5_lo(w3), h3 = q5_hi(w3, hb, 3);
        const wd4 = v128.load(sc), wm4 = v128.load(sc, 16);
        const xb = x + (<usize>b << 5);
        const db = d + (<usize>b << 2);
        const sb = s + (<usize>b << 2);
        a0 = scale_add_min(a0, wd4, wm4, db, sb, block_sums4_u(l0, h0, l1, h1, l2, h2, l3, h3, xb));
        a1 = scale_add_min(a1, wd4, wm4, db + dStride, sb + dStride, block_sums4_u(l0, h0, l1, h1, l2, h2, l3, h3, xb + xStride));
        a2 = scale_add_min(a2, wd4, wm4, db + 2 * dStride, sb + 2 * dStride, block_sums4_u(l0, h0, l1, h1, l2, h2, l3, h3, xb + 2 * xStride));
        a3 = scale_add_min(a3, wd4, wm4, db + 3 * dStride, sb + 3 * dStride, block_sums4_u(l0, h0, l1, h1, l2, h2, l3, h3, xb + 3 * xStride));
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
        const w = wg + <usize>b * 80;
        const sc = dg + (<usize>b << 5);
        load<u8>(w, PREFETCH); // see PREFETCH
        load<u8>(w, PREFETCH + 64);
        load<u8>(sc, PREFETCH * 2 / 5);
        const sumi = q5_block_sums4(w, v128.load(w, 64), x + (<usize>b << 5));
        a = scale_add_min(a, v128.load(sc), v128.load(sc, 16), d + (<usize>b << 2), s + (<usize>b << 2), sumi);
      }
      store_rows4(y + <usize>t * rowBytes + (<usize>r << 2), a, r, rows);
    }
  }
}

/** Row `row` as f32 (token embeddings): code·d + m, as ggml's dequantize_row_q5_1. */
export function dequant_row_q5_1(wq: usize, wd: usize, row: i32, cols: i32, out: usize): void {
  const nb = cols >> 5;
  const lane = <usize>(row & 3);
  const q = wq + <usize>(row >> 2) * nb * 80;
  const sc = wd + <usize>(row >> 2) * nb * 32 + (lane << 2);
  for (let b = 0; b < nb; b++) {
    const d = load<f32>(sc + (<usize>b << 5));
    const m = load<f32>(sc + (<usize>b << 5), 16);
    const qb = q + <usize>b * 80;
    const o = out + ((<usize>b * 32) << 2);
    for (let j = 0; j < 32; j++) store<f32>(o + (<usize>j << 2), <f32>q5_code(qb, lane, j) * d + m);
  }
}
