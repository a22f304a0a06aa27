// Q5_0: blocks of 32 5-bit codes with one scale, value = (code − 16)·d. The fifth bits come from a 32-bit field per block
// (qh). Activations are Q8_0 (quantize_q8_0), as llama.cpp pairs them.
//
// Repacked layout (the host writes it at load): rows in groups of 4, the last group padded with zero rows. For each group
// and block, 80 bytes, the size of the GGUF codes: the 4 rows' 16 code bytes back to back (64 bytes), byte j of a row
// holding element j's whole 5-bit code in its low bits and bits 0..2 of element j+16's in its top 3; then 16 bytes
// shared by the 4 rows, byte j holding bits 3..4 of element j+16's code of row r at bits 2r..2r+1. Unpacking is then
// one mask for elements 0..15 and two shifts, two masks and an or for 16..31: 24 operations a group block against 35
// for Q4_0-style nibbles plus fifth-bit planes (decode 15 → 20 GMAC/s), where ggml spreads qh bit by bit. Scales apart
// as f32 [groups][blocks][4].
//
// Codes stay unsigned (0..31) in both builds: the relaxed dot takes them as its 7-bit operand as they are, the SIMD128
// one widens them, and 16·Σx per block (computed once per activation vector by quantize_q8_0) comes off the exact
// integer sum. Every output is `acc += wd·xd·sumi` over blocks in order, so decode, prefill and both builds agree bit
// for bit.

import { PREFETCH, scale_add, store_rows4, store_tile4 } from './common';
import { block_sums4_u, dot_row_u, rows4_u } from './q4_1';

/** A row's 5-bit codes of elements 0..15: the low 5 bits of its code bytes a. Shared with Q5_1. */
// @ts-ignore: decorator
@inline export function q5_lo(a: v128): v128 {
  return v128.and(a, i8x16.splat(0x1f));
}

/**
 * Row r's 5-bit codes of elements 16..31: bits 0..2 from the top of its code bytes a, bits 3..4 from bits 2r..2r+1 of
 * the group's shared bytes hb (r is a constant after inlining, so one shift each).
 */
// @ts-ignore: decorator
@inline export function q5_hi(a: v128, hb: v128, r: i32): v128 {
  const top = r < 2 ? i16x8.shl(hb, 3 - 2 * r) : i16x8.shr_u(hb, 2 * r - 3);
  return v128.or(v128.and(i16x8.shr_u(a, 5), i8x16.splat(0x07)), v128.and(top, i8x16.splat(0x18)));
}

/**
 * Decode: the exact integer dots of one token's block against a group's 4 rows (code bytes at w, shared top bits hb),
 * each row unpacked right before its dots, so few vectors are live at once (with all 8 code vectors live, as the
 * prefill tile needs them, V8 spilled the accumulator on every block). Shared with Q5_1.
 */
// @ts-ignore: decorator
@inline export function q5_block_sums4(w: usize, hb: v128, x: usize): v128 {
  const x0 = v128.load(x);
  const x1 = v128.load(x, 16);
  const xl0 = i16x8.extend_low_i8x16_s(x0), xh0 = i16x8.extend_high_i8x16_s(x0);
  const xl1 = i16x8.extend_low_i8x16_s(x1), xh1 = i16x8.extend_high_i8x16_s(x1);
  return rows4_u(
    q5_dot_row(v128.load(w), hb, 0, x0, x1, xl0, xh0, xl1, xh1),
    q5_dot_row(v128.load(w, 16), hb, 1, x0, x1, xl0, xh0, xl1, xh1),
    q5_dot_row(v128.load(w, 32), hb, 2, x0, x1, xl0, xh0, xl1, xh1),
    q5_dot_row(v128.load(w, 48), hb, 3, x0, x1, xl0, xh0, xl1, xh1),
  );
}

// @ts-ignore: decorator
@inline function q5_dot_row(b: v128, hb: v128, r: i32, x0: v128, x1: v128, xl0: v128, xh0: v128, xl1: v128, xh1: v128): v128 {
  return dot_row_u(q5_lo(b), q5_hi(b, hb, r), x0, x1, xl0, xh0, xl1, xh1);
}

/** One token's block against a group's 4 unpacked rows, added into that token's 4 row accumulators. */
// @ts-ignore: decorator
@inline function token_block(
  acc: v128, l0: v128, h0: v128, l1: v128, h1: v128, l2: v128, h2: v128, l3: v128, h3: v128,
  wd4: v128, x: usize, xd: usize, xs: usize,
): v128 {
  const sumi = i32x4.sub(block_sums4_u(l0, h0, l1, h1, l2, h2, l3, h3, x), i32x4.splat(<i32>load<i16>(xs) << 4));
  return scale_add(acc, wd4, load<f32>(xd), sumi);
}

/**
 * y[t][r] = Σ_blocks wd·xd·(Σ (code−16)·xq) for ntok activation vectors quantized by quantize_q8_0 (codes xq, scales xd,
 * code sums xs).
 */
export function matmul_q5_0(wq: usize, wd: usize, xq: usize, xd: usize, xs: usize, y: usize, rows: i32, cols: i32, ntok: i32): void {
  const nb = cols >> 5;
  const groups = (rows + 3) >> 2;
  const rowBytes = <usize>rows << 2;
  const xStride = <usize>cols;
  const dStride = <usize>nb << 2;
  for (let g = 0; g < groups; g++) {
    const wg = wq + <usize>g * nb * 80;
    const dg = wd + <usize>g * nb * 16;
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
        load<u8>(w, PREFETCH); // see PREFETCH; two loads, as a block no longer fits one cache line
        load<u8>(w, PREFETCH + 64);
        load<u8>(dg + (<usize>b << 4), PREFETCH / 5);
        const hb = v128.load(w, 64);
        const w0 = v128.load(w), w1 = v128.load(w, 16), w2 = v128.load(w, 32), w3 = v128.load(w, 48);
        const l0 = q5_lo(w0), h0 = q5_hi(w0, hb, 0), l1 = q5_lo(w1), h1 = q5_hi(w1, hb, 1);
        const l2 = q5_lo(w2), h2 = q5_hi(w2, hb, 2), l3 = q5_lo(w3), h3 = q5_hi(w3, hb, 3);
        const wd4 = v128.load(dg + (<usize>b << 4));
        const xb = x + (<usize>b << 5);
        const db = d + (<usize>b << 2);
        const sb = s + (<usize>b << 2);
        a0 = token_block(a0, l0, h0, l1, h1, l2, h2, l3, h3, wd4, xb, db, sb);
        a1 = token_block(a1, l0, h0, l1, h1, l2, h2, l3, h3, wd4, xb + xStride, db + dStride, sb + dStride);
        a2 = token_block(a2, l0, h0, l1, h1, l2, h2, l3, h3, wd4, xb + 2 * xStride, db + 2 * dStride, sb + 2 * dStride);
        a3 = token_block(a3, l0, h0, l1, h1, l2, h2, l3, h3, wd4, xb + 3 * xStride, db + 3 * dStride, sb + 3 * dStride);
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
        load<u8>(w, PREFETCH); // see PREFETCH
        load<u8>(w, PREFETCH + 64);
        load<u8>(dg + (<usize>b << 4), PREFETCH / 5);
        const sumi = i32x4.sub(q5_block_sums4(w, v128.load(w, 64), x + (<usize>b << 5)), i32x4.splat(<i32>load<i16>(s + (<usize>b << 2)) << 4));
        a = scale_add(a, v128.load(dg + (<usize>b << 4)), load<f32>(d + (<usize>b << 2)), sumi);
      }
      store_rows4(y + <usize>t * rowBytes + (<usize>r << 2), a, r, rows);
    }
  }
}

/** Row `lane`'s 5-bit code of element j (0..31) of the block at q (its group's 80 bytes). */
// @ts-ignore: decorator
@inline export function q5_code(q: usize, lane: usize, j: i32): i32 {
  const byte = <i32>load<u8>(q + (lane << 4) + <usize>(j & 15));
  if (j < 16) return byte & 0x1f;
  const top = (<i32>load<u8>(q + 64 + <usize>(j & 15)) >> (<i32>lane << 1)) & 3;
  return (byte >> 5) | (top << 3);
}

/** Row `row` as f32 (token embeddings): (code − 16)·d, as ggml's dequantize_row_q5_0. */
export function dequant_row_q5_0(wq: usize, wd: usize, row: i32, cols: i32, out: usize): void {
  const nb = cols >> 5;
  const lane = <usize>(row & 3);
  const q = wq + <usize>(row >> 2) * nb * 80;
  const sc = wd + <usize>(row >> 2) * nb * 16 + (lane << 2);
  for (let b = 0; b < nb; b++) {
    const d = load<f32>(sc + (<usize>b << 4));
    const qb = q + <usize>b * 80;
    const o = out + ((<usize>b * 32) << 2);
    for (let j = 0; j < 32; j++) store<f32>(o + (<usize>j << 2), <f32>(q5_code(qb, lane, j) - 16) * d);
  }
}
