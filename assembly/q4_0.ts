// Q4_0: blocks of 32 4-bit codes with one scale, value = (code − 8)·d. Activations are Q8_0 (quantize_q8_0).
//
// Repacked layout (the host writes it at load): rows in groups of 4, the last group padded with zero rows. For each group
// and block, the 4 rows' 16 code bytes lie back to back (64 bytes), in ggml's in-block order (byte j: element j in the
// low nibble, element j+16 in the high nibble, so one mask and one shift give elements 0..15 and 16..31). Scales lie
// apart as f32 [groups][blocks][4], one aligned load per group and block.
//
// One weight load serves 4 rows of one token (decode) or 4 rows × 4 tokens (prefill). Every output is the same
// `acc += wd·xd·sumi` over blocks in order, with an exact integer sumi, so decode, prefill and both builds agree bit for bit.

import { hsum4_i32x4, kscale_rows4_narrow, PREFETCH, scale_add, store_rows4, store_tile4 } from './common';

/**
 * Codes of elements 0..15 (lo) and 16..31 (hi) of one row's block. The relaxed build keeps them unsigned (0..15): they
 * are the 7-bit operand of relaxed_dot, and 8·Σx comes off afterwards. The SIMD128 build shifts them to −8..7 here.
 * The shift is an i16x8 one plus the shared mask: an i8x16 shift makes V8 build its own mask on every use.
 */
// @ts-ignore: decorator
@inline function codes_lo(b: v128): v128 {
  const lo = v128.and(b, i8x16.splat(0x0f));
  return ASC_FEATURE_RELAXED_SIMD ? lo : i8x16.sub(lo, i8x16.splat(8));
}

// @ts-ignore: decorator
@inline function codes_hi(b: v128): v128 {
  const hi = v128.and(i16x8.shr_u(b, 4), i8x16.splat(0x0f));
  return ASC_FEATURE_RELAXED_SIMD ? hi : i8x16.sub(hi, i8x16.splat(8));
}

/**
 * SIMD128: Σ code·x over one row's block, spread over four i32 lanes, with the activations widened to i16 (xl0..xh1).
 */
// @ts-ignore: decorator
@inline function dot_row(lo: v128, hi: v128, xl0: v128, xh0: v128, xl1: v128, xh1: v128): v128 {
  const a = i32x4.add(i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_s(lo), xl0), i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_s(lo), xh0));
  const b = i32x4.add(i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_s(hi), xl1), i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_s(hi), xh1));
  return i32x4.add(a, b);
}

/**
 * relaxed: Σ code·x over one row's block in i16 lanes, each two code·x pairs from each half (at most 4·15·127 = 7620),
 * so four rows fold in i16 before one widening (kscale_rows4_narrow with unit scales).
 */
// @ts-ignore: decorator
@inline function dot_row_i16(lo: v128, hi: v128, x0: v128, x1: v128): v128 {
  return i16x8.add(i16x8.relaxed_dot_i8x16_i7x16_s(x0, lo), i16x8.relaxed_dot_i8x16_i7x16_s(x1, hi));
}

/** One token's block against a group's 4 unpacked rows, added into that token's 4 row accumulators. */
// @ts-ignore: decorator
@inline function token_block(
  acc: v128, l0: v128, h0: v128, l1: v128, h1: v128, l2: v128, h2: v128, l3: v128, h3: v128,
  wd4: v128, x: usize, xd: usize, xs: usize,
): v128 {
  const x0 = v128.load(x);
  const x1 = v128.load(x, 16);
  let sumi: v128;
  if (ASC_FEATURE_RELAXED_SIMD) {
    const rows4 = kscale_rows4_narrow(
      dot_row_i16(l0, h0, x0, x1), dot_row_i16(l1, h1, x0, x1), dot_row_i16(l2, h2, x0, x1), dot_row_i16(l3, h3, x0, x1),
      i16x8.splat(1),
    );
    sumi = i32x4.sub(rows4, i32x4.splat(<i32>load<i16>(xs) << 3));
  } else {
    const xl0 = i16x8.extend_low_i8x16_s(x0), xh0 = i16x8.extend_high_i8x16_s(x0);
    const xl1 = i16x8.extend_low_i8x16_s(x1), xh1 = i16x8.extend_high_i8x16_s(x1);
    sumi = hsum4_i32x4(
      dot_row(l0, h0, xl0, xh0, xl1, xh1),
      dot_row(l1, h1, xl0, xh0, xl1, xh1),
      dot_row(l2, h2, xl0, xh0, xl1, xh1),
      dot_row(l3, h3, xl0, xh0, xl1, xh1),
    );
  }
  return scale_add(acc, wd4, load<f32>(xd), sumi);
}

/**
 * y[t][r] = Σ_blocks wd·xd·(Σ (code−8)·xq) for ntok activation vectors quantized by quantize_q8_0 (codes xq, scales xd,
 * code sums xs).
 */
export function matmul_q4_0(wq: usize, wd: usize, xq: usize, xd: usize, xs: usize, y: usize, rows: i32, cols: i32, ntok: i32): void {
  const nb = cols >> 5;
  const groups = (rows + 3) >> 2;
  const rowBytes = <usize>rows << 2;
  for (let g = 0; g < groups; g++) {
    const wg = wq + <usize>g * nb * 64;
    const dg = wd + <usize>g * nb * 16;
    const r = g << 2;
    let t = 0;
    // prefill: 4 tokens per unpacked weight block
    for (; t + 4 <= ntok; t += 4) {
      let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
      const x = xq + <usize>t * cols;
      const d = xd + ((<usize>t * nb) << 2);
      const s = xs + ((<usize>t * nb) << 2);
      const xStride = <usize>cols;
      const dStride = <usize>nb << 2;
      for (let b = 0; b < nb; b++) {
        const w = wg + (<usize>b << 6);
        load<u8>(w, PREFETCH); // see PREFETCH
        load<u8>(dg + (<usize>b << 4), PREFETCH / 4);
        const w0 = v128.load(w), w1 = v128.load(w, 16), w2 = v128.load(w, 32), w3 = v128.load(w, 48);
        const l0 = codes_lo(w0), h0 = codes_hi(w0), l1 = codes_lo(w1), h1 = codes_hi(w1);
        const l2 = codes_lo(w2), h2 = codes_hi(w2), l3 = codes_lo(w3), h3 = codes_hi(w3);
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
      const x = xq + <usize>t * cols;
      const d = xd + ((<usize>t * nb) << 2);
      const s = xs + ((<usize>t * nb) << 2);
      for (let b = 0; b < nb; b++) {
        const w = wg + (<usize>b << 6);
        load<u8>(w, PREFETCH); // see PREFETCH
        load<u8>(dg + (<usize>b << 4), PREFETCH / 4);
        const w0 = v128.load(w), w1 = v128.load(w, 16), w2 = v128.load(w, 32), w3 = v128.load(w, 48);
        a = token_block(
          a, codes_lo(w0), codes_hi(w0), codes_lo(w1), codes_hi(w1), codes_lo(w2), codes_hi(w2), codes_lo(w3), codes_hi(w3),
          v128.load(dg + (<usize>b << 4)), x + (<usize>b << 5), d + (<usize>b << 2), s + (<usize>b << 2),
        );
      }
      store_rows4(y + <usize>t * rowBytes + (<usize>r << 2), a, r, rows);
    }
  }
}

/** Row `row` as f32 (used for token embeddings). */
export function dequant_row_q4_0(wq: usize, wd: usize, row: i32, cols: i32, out: usize): void {
  const nb = cols >> 5;
  const lane = <usize>(row & 3);
  const q = wq + <usize>(row >> 2) * nb * 64 + (lane << 4);
  const d = wd + <usize>(row >> 2) * nb * 16 + (lane << 2);
  for (let b = 0; b < nb; b++) {
    const s = load<f32>(d + (<usize>b << 4));
    const src = q + (<usize>b << 6);
    const o = out + ((<usize>b * 32) << 2);
    for (let j = 0; j < 16; j++) {
      const byte = <i32>load<u8>(src + j);
      store<f32>(o + (<usize>j << 2), <f32>((byte & 0x0f) - 8) * s);
      store<f32>(o + (<usize>(j + 16) << 2), <f32>((byte >> 4) - 8) * s);
    }
  }
}
