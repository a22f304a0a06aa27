// Q4_1: blocks of 32 4-bit codes with a scale d and a minimum m, value = code·d + m. Activations are Q8_0 codes with
// their block sums (quantize_q8_0's xs): llama.cpp pairs Q4_1 with Q8_1, which is the same codes and scale plus
// s = d·Σq, so x·m over a block is m·xd·xs here (see scale_add_min).
//
// Repacked layout (the host writes it at load): rows in groups of 4, the last group padded with zero rows. For each group
// and block, the 4 rows' 16 code bytes back to back (64 bytes), in ggml's in-block order (byte j: element j in the low
// nibble, element j+16 in the high one), as Q4_0. Scales apart as f32 [groups][blocks][8]: the 4 rows' d, then their m,
// so two aligned loads give both per group and block.
//
// Every output is `acc = (acc + (wd·xd)·sumi) + wm·(xd·xs)` over blocks in order, with an exact integer sumi = Σ code·xq,
// so decode, prefill and both builds agree bit for bit.
//
// The unsigned-code helpers below are shared with Q5_0/Q5_1 (codes 0..31), whose kernels differ only in how codes are
// unpacked and how a block's sum is scaled.

import { hsum4_i32x4, kscale_rows4, PREFETCH, scale_add, store_rows4, store_tile4 } from './common';

/** Codes of elements 0..15 (lo) and 16..31 (hi) of one row's block, 0..15 as they are in both builds. */
// @ts-ignore: decorator
@inline export function nibbles_lo(b: v128): v128 {
  return v128.and(b, i8x16.splat(0x0f));
}

// @ts-ignore: decorator
@inline export function nibbles_hi(b: v128): v128 {
  // an i16x8 shift plus the shared mask: an i8x16 shift makes V8 build its own mask on every use
  return v128.and(i16x8.shr_u(b, 4), i8x16.splat(0x0f));
}

/**
 * Σ code·x over one row's block for unsigned codes 0..31, in lanes that rows4_u adds up. The relaxed build uses the
 * codes as they are as the 7-bit operand of relaxed_dot: each i16 lane gets two code·x pairs from each half, at most
 * 4·31·127 = 15748, so the halves add in i16 and four rows fold in i16 before one widening. The SIMD128 build widens
 * the codes to i16 and uses dot_i16x8_s with the activations it gets already widened (xl0..xh1, shared by the group's
 * 4 rows), giving i32 lanes.
 */
// @ts-ignore: decorator
@inline export function dot_row_u(lo: v128, hi: v128, x0: v128, x1: v128, xl0: v128, xh0: v128, xl1: v128, xh1: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) {
    return i16x8.add(i16x8.relaxed_dot_i8x16_i7x16_s(x0, lo), i16x8.relaxed_dot_i8x16_i7x16_s(x1, hi));
  }
  const a = i32x4.add(i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_u(lo), xl0), i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_u(lo), xh0));
  const b = i32x4.add(i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_u(hi), xl1), i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_u(hi), xh1));
  return i32x4.add(a, b);
}

/** Four rows' dot_row_u results as one exact i32x4 of their totals [a, b, c, d]. */
// @ts-ignore: decorator
@inline export function rows4_u(a: v128, b: v128, c: v128, d: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return kscale_rows4(a, b, c, d, i16x8.splat(1));
  return hsum4_i32x4(a, b, c, d);
}

/** The exact integer dots of one token's block (32 int8 activations at x) against a group's 4 unpacked rows. */
// @ts-ignore: decorator
@inline export function block_sums4_u(
  l0: v128, h0: v128, l1: v128, h1: v128, l2: v128, h2: v128, l3: v128, h3: v128, x: usize,
): v128 {
  const x0 = v128.load(x);
  const x1 = v128.load(x, 16);
  // unused (and dropped by the optimizer) in the relaxed build
  const xl0 = i16x8.extend_low_i8x16_s(x0), xh0 = i16x8.extend_high_i8x16_s(x0);
  const xl1 = i16x8.extend_low_i8x16_s(x1), xh1 = i16x8.extend_high_i8x16_s(x1);
  return rows4_u(
    dot_row_u(l0, h0, x0, x1, xl0, xh0, xl1, xh1),
    dot_row_u(l1, h1, x0, x1, xl0, xh0, xl1, xh1),
    dot_row_u(l2, h2, x0, x1, xl0, xh0, xl1, xh1),
    dot_row_u(l3, h3, x0, x1, xl0, xh0, xl1, xh1),
  );
}

/**
 * Decode: the exact integer dots of one token's block against a group's 4 rows of nibbles at w, each row unpacked right
 * before its dots. With all 8 code vectors live at once (as the prefill tile needs them), V8 ran out of registers and
 * spilled the accumulator on every block.
 */
// @ts-ignore: decorator
@inline export function block_sums4_nibbles(w: usize, x: usize): v128 {
  const x0 = v128.load(x);
  const x1 = v128.load(x, 16);
  const xl0 = i16x8.extend_low_i8x16_s(x0), xh0 = i16x8.extend_high_i8x16_s(x0);
  const xl1 = i16x8.extend_low_i8x16_s(x1), xh1 = i16x8.extend_high_i8x16_s(x1);
  return rows4_u(
    dot_row_nibbles(v128.load(w), x0, x1, xl0, xh0, xl1, xh1),
    dot_row_nibbles(v128.load(w, 16), x0, x1, xl0, xh0, xl1, xh1),
    dot_row_nibbles(v128.load(w, 32), x0, x1, xl0, xh0, xl1, xh1),
    dot_row_nibbles(v128.load(w, 48), x0, x1, xl0, xh0, xl1, xh1),
  );
}

// @ts-ignore: decorator
@inline function dot_row_nibbles(b: v128, x0: v128, x1: v128, xl0: v128, xh0: v128, xl1: v128, xh1: v128): v128 {
  return dot_row_u(nibbles_lo(b), nibbles_hi(b), x0, x1, xl0, xh0, xl1, xh1);
}

/**
 * One block's result added into a token's 4 row accumulators for the types with a minimum (Q4_1, Q5_1):
 * (acc + (wd·xd)·sumi) + wm·(xd·xs), the order of ggml's vec_dot_q4_1_q8_1 (d·sumi, then m·s). llama.cpp's Q8_1 holds
 * s = d·Σq rounded to f16 (d not yet rounded); xd·xs is the exact f32 product of the rounded d instead. Mirroring
 * llama.cpp's f16 s (exactly, or by rounding xd·xs) was tried: on the conformance kit it moved the agreement with
 * llama.cpp only within the run-to-run spread of int8 code flips, and cost 6–11% of Q4_1/Q5_1 speed.
 */
// @ts-ignore: decorator
@inline export function scale_add_min(acc: v128, wd4: v128, wm4: v128, xd: usize, xs: usize, sumi4: v128): v128 {
  const d = load<f32>(xd);
  return f32x4.add(scale_add(acc, wd4, d, sumi4), f32x4.mul(wm4, f32x4.splat(d * <f32>load<i16>(xs))));
}

/**
 * y[t][r] = Σ_blocks (wd·xd·Σ code·xq + wm·xd·xs) for ntok activation vectors quantized by quantize_q8_0 (codes xq,
 * scales xd, code sums xs).
 */
export function matmul_q4_1(wq: usize, wd: usize, xq: usize, xd: usize, xs: usize, y: usize, rows: i32, cols: i32, ntok: i32): void {
  const nb = cols >> 5;
  const groups = (rows + 3) >> 2;
  const rowBytes = <usize>rows << 2;
  const xStride = <usize>cols;
  const dStride = <usize>nb << 2;
  for (let g = 0; g < groups; g++) {
    const wg = wq + <usize>g * nb * 64;
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
        const w = wg + (<usize>b << 6);
        const sc = dg + (<usize>b << 5);
        load<u8>(w, PREFETCH); // see PREFETCH
        load<u8>(sc, PREFETCH / 2);
        const w0 = v128.load(w), w1 = v128.load(w, 16), w2 = v128.load(w, 32), w3 = v128.load(w, 48);
        const l0 = nibbles_lo(w0), h0 = nibbles_hi(w0), l1 = nibbles_lo(w1), h1 = nibbles_hi(w1);
        const l2 = nibbles_lo(w2), h2 = nibbles_hi(w2), l3 = nibbles_lo(w3), h3 = nibbles_hi(w3);
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
        const w = wg + (<usize>b << 6);
        const sc = dg + (<usize>b << 5);
        load<u8>(w, PREFETCH); // see PREFETCH
        load<u8>(sc, PREFETCH / 2);
        const sumi = block_sums4_nibbles(w, x + (<usize>b << 5));
        a = scale_add_min(a, v128.load(sc), v128.load(sc, 16), d + (<usize>b << 2), s + (<usize>b << 2), sumi);
      }
      store_rows4(y + <usize>t * rowBytes + (<usize>r << 2), a, r, rows);
    }
  }
}

/** Row `row` as f32 (token embeddings): code·d + m, as ggml's dequantize_row_q4_1. */
export function dequant_row_q4_1(wq: usize, wd: usize, row: i32, cols: i32, out: usize): void {
  const nb = cols >> 5;
  const lane = <usize>(row & 3);
  const q = wq + <usize>(row >> 2) * nb * 64 + (lane << 4);
  const sc = wd + <usize>(row >> 2) * nb * 32 + (lane << 2);
  for (let b = 0; b < nb; b++) {
    const d = load<f32>(sc + (<usize>b << 5));
    const m = load<f32>(sc + (<usize>b << 5), 16);
    const src = q + (<usize>b << 6);
    const o = out + ((<usize>b * 32) << 2);
    for (let j = 0; j < 16; j++) {
      const byte = <i32>load<u8>(src + j);
      store<f32>(o + (<usize>j << 2), <f32>(byte & 0x0f) * d + m);
      store<f32>(o + (<usize>(j + 16) << 2), <f32>(byte >> 4) * d + m);
    }
  }
}
