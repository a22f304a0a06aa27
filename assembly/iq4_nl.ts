// IQ4_NL: blocks of 32 4-bit indices into ggml's fixed non-linear table kvalues_iq4nl (int8, −127..113) with one f16
// scale, value = d·table[code]. Activations are Q8_0 (quantize_q8_0), as llama.cpp pairs them.
//
// Repacked layout: exactly Q4_0's (rows in groups of 4; per group and block the 4 rows' 16 index bytes back to back, in
// ggml's in-block order; scales apart as f32 [groups][blocks][4]), so the host's common 32-block repack writes it.
//
// One swizzle maps 16 indices to their int8 table values. Those are signed and span 241 values, so they do not fit the
// relaxed dot's 7-bit operand. The relaxed build takes Q8_0's way (common.ts, signed_block_sums4): the activations'
// magnitudes as the 7-bit operand and their signs moved onto the looked-up values, with Σ_{x<0} |x| per block from
// quantize_q8_0; it also gets the cheaper relaxed_swizzle (indices are 0..15, where it is exact). The SIMD128 build
// multiplies in i16 with dot_i16x8_s. Every output is `acc += wd·xd·sumi` over blocks in order, so decode, prefill
// and both builds agree bit for bit.

import { hsum4_i32x4, PREFETCH, scale_add, signed_block_sums4, store_rows4, store_tile4 } from './common';

/** kvalues_iq4nl as one v128 (bytes, little-endian lanes). */
// @ts-ignore: decorator
@inline function table(): v128 {
  return i8x16(-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113);
}

// @ts-ignore: decorator
@inline function lookup(idx: v128): v128 {
  return ASC_FEATURE_RELAXED_SIMD ? i8x16.relaxed_swizzle(table(), idx) : i8x16.swizzle(table(), idx);
}

/** Table values of elements 0..15 (lo) and 16..31 (hi) of one row's block. */
// @ts-ignore: decorator
@inline function values_lo(b: v128): v128 {
  return lookup(v128.and(b, i8x16.splat(0x0f)));
}

// @ts-ignore: decorator
@inline function values_hi(b: v128): v128 {
  // an i16x8 shift plus the shared mask: an i8x16 shift makes V8 build its own mask on every use
  return lookup(v128.and(i16x8.shr_u(b, 4), i8x16.splat(0x0f)));
}

/** Σ value·x over one row's block, spread over four i32 lanes; x arrives widened to i16 (xl0..xh1). */
// @ts-ignore: decorator
@inline function dot_row(lo: v128, hi: v128, xl0: v128, xh0: v128, xl1: v128, xh1: v128): v128 {
  const a = i32x4.add(i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_s(lo), xl0), i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_s(lo), xh0));
  const b = i32x4.add(i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_s(hi), xl1), i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_s(hi), xh1));
  return i32x4.add(a, b);
}

/**
 * Decode: the exact integer dots of one token's block against a group's 4 rows of indices at w. The SIMD128 path looks
 * each row up right before its dots, so few of its widened vectors are live at once; the relaxed one needs no widening
 * and takes the 4 rows together (signed_block_sums4).
 */
// @ts-ignore: decorator
@inline function block_sums4_rows(w: usize, x: usize, xs: usize): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) {
    const w0 = v128.load(w), w1 = v128.load(w, 16), w2 = v128.load(w, 32), w3 = v128.load(w, 48);
    return signed_block_sums4(
      values_lo(w0), values_hi(w0), values_lo(w1), values_hi(w1), values_lo(w2), values_hi(w2), values_lo(w3), values_hi(w3), x, xs,
    );
  }
  const x0 = v128.load(x);
  const x1 = v128.load(x, 16);
  const xl0 = i16x8.extend_low_i8x16_s(x0), xh0 = i16x8.extend_high_i8x16_s(x0);
  const xl1 = i16x8.extend_low_i8x16_s(x1), xh1 = i16x8.extend_high_i8x16_s(x1);
  return hsum4_i32x4(
    dot_row_idx(v128.load(w), xl0, xh0, xl1, xh1),
    dot_row_idx(v128.load(w, 16), xl0, xh0, xl1, xh1),
    dot_row_idx(v128.load(w, 32), xl0, xh0, xl1, xh1),
    dot_row_idx(v128.load(w, 48), xl0, xh0, xl1, xh1),
  );
}

// @ts-ignore: decorator
@inline function dot_row_idx(b: v128, xl0: v128, xh0: v128, xl1: v128, xh1: v128): v128 {
  return dot_row(values_lo(b), values_hi(b), xl0, xh0, xl1, xh1);
}

/** One token's block against a group's 4 looked-up rows, added into that token's 4 row accumulators. */
// @ts-ignore: decorator
@inline function token_block(
  acc: v128, l0: v128, h0: v128, l1: v128, h1: v128, l2: v128, h2: v128, l3: v128, h3: v128,
  wd4: v128, x: usize, xd: usize, xs: usize,
): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return scale_add(acc, wd4, load<f32>(xd), signed_block_sums4(l0, h0, l1, h1, l2, h2, l3, h3, x, xs));
  const x0 = v128.load(x);
  const x1 = v128.load(x, 16);
  const xl0 = i16x8.extend_low_i8x16_s(x0), xh0 = i16x8.extend_high_i8x16_s(x0);
  const xl1 = i16x8.extend_low_i8x16_s(x1), xh1 = i16x8.extend_high_i8x16_s(x1);
  const sumi = hsum4_i32x4(
    dot_row(l0, h0, xl0, xh0, xl1, xh1),
    dot_row(l1, h1, xl0, xh0, xl1, xh1),
    dot_row(l2, h2, xl0, xh0, xl1, xh1),
    dot_row(l3, h3, xl0, xh0, xl1, xh1),
  );
  return scale_add(acc, wd4, load<f32>(xd), sumi);
}

/**
 * y[t][r] = Σ_blocks wd·xd·(Σ table[code]·xq) for ntok activation vectors quantized by quantize_q8_0 (codes xq, scales
 * xd, code sums xs).
 */
export function matmul_iq4_nl(wq: usize, wd: usize, xq: usize, xd: usize, xs: usize, y: usize, rows: i32, cols: i32, ntok: i32): void {
  const nb = cols >> 5;
  const groups = (rows + 3) >> 2;
  const rowBytes = <usize>rows << 2;
  const xStride = <usize>cols;
  const dStride = <usize>nb << 2;
  for (let g = 0; g < groups; g++) {
    const wg = wq + <usize>g * nb * 64;
    const dg = wd + <usize>g * nb * 16;
    const r = g << 2;
    let t = 0;
    // prefill: 4 tokens per looked-up weight block
    for (; t + 4 <= ntok; t += 4) {
      let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
      const x = xq + <usize>t * xStride;
      const d = xd + <usize>t * dStride;
      const s = xs + <usize>t * dStride;
      for (let b = 0; b < nb; b++) {
        const w = wg + (<usize>b << 6);
        load<u8>(w, PREFETCH); // see PREFETCH
        load<u8>(dg + (<usize>b << 4), PREFETCH / 4);
        const w0 = v128.load(w), w1 = v128.load(w, 16), w2 = v128.load(w, 32), w3 = v128.load(w, 48);
        const l0 = values_lo(w0), h0 = values_hi(w0), l1 = values_lo(w1), h1 = values_hi(w1);
        const l2 = values_lo(w2), h2 = values_hi(w2), l3 = values_lo(w3), h3 = values_hi(w3);
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
        const w = wg + (<usize>b << 6);
        load<u8>(w, PREFETCH); // see PREFETCH
        load<u8>(dg + (<usize>b << 4), PREFETCH / 4);
        const sumi = block_sums4_rows(w, x + (<usize>b << 5), s + (<usize>b << 2));
        a = scale_add(a, v128.load(dg + (<usize>b << 4)), load<f32>(d + (<usize>b << 2)), sumi);
      }
      store_rows4(y + <usize>t * rowBytes + (<usize>r << 2), a, r, rows);
    }
  }
}

/** Row `row` as f32 (token embeddings): d·table[code], as ggml's dequantize_row_iq4_nl. */
export function dequant_row_iq4_nl(wq: usize, wd: usize, row: i32, cols: i32, out: usize): void {
  const nb = cols >> 5;
  const lane = <usize>(row & 3);
  const q = wq + <usize>(row >> 2) * nb * 64 + (lane << 4);
  const sc = wd + <usize>(row >> 2) * nb * 16 + (lane << 2);
  const t = table();
  for (let b = 0; b < nb; b++) {
    const d = f32x4.splat(load<f32>(sc + (<usize>b << 4)));
    const bytes = v128.load(q + (<usize>b << 6));
    const o = out + ((<usize>b * 32) << 2);
    const lo = i8x16.swizzle(t, v128.and(bytes, i8x16.splat(0x0f)));
    const hi = i8x16.swizzle(t, v128.and(i16x8.shr_u(bytes, 4), i8x16.splat(0x0f)));
    store_i8x16(o, lo, d);
    store_i8x16(o + 64, hi, d);
  }
}

/** 16 int8 values times d as f32 at o. */
// @ts-ignore: decorator
@inline function store_i8x16(o: usize, v: v128, d: v128): void {
  const l = i16x8.extend_low_i8x16_s(v), h = i16x8.extend_high_i8x16_s(v);
  v128.store(o, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(l)), d));
  v128.store(o, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(l)), d), 16);
  v128.store(o, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(h)), d), 32);
  v128.store(o, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(h)), d), 48);
}
