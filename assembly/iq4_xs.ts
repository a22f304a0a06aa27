// IQ4_XS: super-blocks of 256 values, 4-bit indices into ggml's kvalues_iq4nl table (−127..113), per 32 values a 6-bit
// scale ls, one f16 d: value = d·(ls − 32)·kvalues[index]. Activations are Q8_K (quantize_q8_k): int8 codes x, one f32
// scale xd per 256. A super-block contributes xd·d·Σ_ib (ls_ib − 32)·(v·x)_ib, the integer sum exact in i32 (at most
// 256·127·127·32 < 2^31), so one float step per super-block, as llama.cpp's AVX2 kernel.
//
// The table values v are signed, so they cannot be the relaxed dot's 7-bit operand as they are. The builds:
// - relaxed: |v| (1..127) is the 7-bit operand and the sign moves to the activations: x ⊕ m with m = −1 where v < 0
//   (both looked up by the index, once per row, from 16-byte tables). x ⊕ −1 = −x − 1, so (x ⊕ m)·|v| = v·x − |v| on
//   those lanes: the dot is Σ v·x − Σ_{v<0} |v|, and that second sum, times the sub-block scales, is a constant of the
//   weights (`corr`, computed at load). x ⊕ m is any int8 and |v| ≤ 127, so a pair is at most 2·128·127 = 32512 in
//   magnitude: exact i16 lanes on every implementation, which meet the sub-block's scale in one pmaddwd. One relaxed
//   dot and one xor per 16 values (the split into v⁺ − v⁻ before this took two dots and a subtraction).
// - SIMD128: the i16 path: v widened to i16 times the scale (|v·sc| ≤ 127·32) once per row, then pmaddwd with the
//   widened activations per token.
// Measured (5632 × 2048, 1 thread, relaxed build, `npm run bench:kernels`): decode 19.6 and prefill 25.6 GMAC/s in
// this form, 18.7 and 23.6 with the v⁺ − v⁻ split, 12.8 and 18.8 with the i16 path (docs/kernels.md).
//
// Repacked layout (the host writes it at load): rows in groups of 4, the last group padded with zero rows. For each
// group and super-block, 512 bytes of indices: the 4 rows' 128 bytes back to back, in ggml's order (per 32 values,
// 16 bytes: element j in the low nibble, element j+16 in the high). Apart, 64 bytes of scales: the 4 rows' 8 scales
// as signed bytes (ls − 32), then d as f32 [4 rows], then corr = Σ_ib (ls_ib − 32)·Σ_{v<0} |v| as i32 [4 rows].
// 4.5 bits per weight (ggml: 4.25).
//
// Decode is 4 rows × 1 token per weight load (the rows' sums in the lanes of one i32x4); prefill is 1 row × 4 tokens
// (the tokens in the lanes), row by row through the group. Every output is acc + d·xd·isum per super-block, in order,
// so decode, prefill and both builds agree bit for bit.

import { hsum4_i32x4, PREFETCH, scale_add, store_rows4 } from './common';

const SCALES: usize = 64; // scale bytes per group and super-block

/** ggml's kvalues_iq4nl */
// @ts-ignore: decorator
@inline function kvalues(): v128 {
  return i8x16(-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113);
}

/** SIMD128: the table values of 16 indices. */
// @ts-ignore: decorator
@inline function lookup(idx: v128): v128 {
  return i8x16.swizzle(kvalues(), idx);
}

/** One signed scale byte as i16 lanes: load8_splat repeats it, the arithmetic shift sign-extends the high copy. */
// @ts-ignore: decorator
@inline function scale16(p: usize): v128 {
  return i16x8.shr_s(v128.load8_splat(p), 8);
}

/** acc + Σ w·x over 16 values: w0 (values 0..7) and w1 (8..15) scaled table values, x the 16 int8 activations. */
// @ts-ignore: decorator
@inline function dot16(acc: v128, w0: v128, w1: v128, x: usize): v128 {
  return i32x4.add(acc, i32x4.add(i32x4.dot_i16x8_s(w0, v128.load8x8_s(x)), i32x4.dot_i16x8_s(w1, v128.load8x8_s(x, 8))));
}

/** |v| for each index: the relaxed dot's 7-bit operand. */
// @ts-ignore: decorator
@inline function kv_abs(): v128 {
  return i8x16(127, 104, 83, 65, 49, 35, 22, 10, 1, 13, 25, 38, 53, 69, 89, 113);
}

/** −1 for the indices whose value is negative (0..7), 0 for the others. */
// @ts-ignore: decorator
@inline function kv_sign(): v128 {
  return i8x16(-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0);
}

/** relaxed: acc + sc·Σ (x ⊕ m)·|v| over 16 values (see the top of the file: Σ v·x less the weights' constant). */
// @ts-ignore: decorator
@inline function dot16_relaxed(acc: v128, k: v128, m: v128, sc: v128, x: usize): v128 {
  return i32x4.add(acc, i32x4.dot_i16x8_s(i16x8.relaxed_dot_i8x16_i7x16_s(v128.xor(v128.load(x), m), k), sc));
}

/**
 * One row's integer sum over one super-block for 4 tokens (activations at x + t·xs), as an i32x4 with the tokens in
 * the lanes.
 */
// @ts-ignore: decorator
@inline function row_tok4(w: usize, s: usize, corr: usize, x: usize, xs: usize): v128 {
  let a0 = i32x4.splat(0), a1 = i32x4.splat(0), a2 = i32x4.splat(0), a3 = i32x4.splat(0);
  for (let ib: usize = 0; ib < 8; ib++) {
    const q = v128.load(w + (ib << 4));
    const sc = scale16(s + ib);
    const il = v128.and(q, i8x16.splat(0x0f)), ih = v128.and(i16x8.shr_u(q, 4), i8x16.splat(0x0f));
    const xb = x + (ib << 5);
    if (ASC_FEATURE_RELAXED_SIMD) {
      const kl = i8x16.relaxed_swizzle(kv_abs(), il), ml = i8x16.relaxed_swizzle(kv_sign(), il);
      const kh = i8x16.relaxed_swizzle(kv_abs(), ih), mh = i8x16.relaxed_swizzle(kv_sign(), ih);
      a0 = dot16_relaxed(dot16_relaxed(a0, kl, ml, sc, xb), kh, mh, sc, xb + 16);
      a1 = dot16_relaxed(dot16_relaxed(a1, kl, ml, sc, xb + xs), kh, mh, sc, xb + xs + 16);
      a2 = dot16_relaxed(dot16_relaxed(a2, kl, ml, sc, xb + 2 * xs), kh, mh, sc, xb + 2 * xs + 16);
      a3 = dot16_relaxed(dot16_relaxed(a3, kl, ml, sc, xb + 3 * xs), kh, mh, sc, xb + 3 * xs + 16);
    } else {
      const vl = lookup(il), vh = lookup(ih);
      let w0 = i16x8.mul(i16x8.extend_low_i8x16_s(vl), sc), w1 = i16x8.mul(i16x8.extend_high_i8x16_s(vl), sc);
      a0 = dot16(a0, w0, w1, xb);
      a1 = dot16(a1, w0, w1, xb + xs);
      a2 = dot16(a2, w0, w1, xb + 2 * xs);
      a3 = dot16(a3, w0, w1, xb + 3 * xs);
      w0 = i16x8.mul(i16x8.extend_low_i8x16_s(vh), sc);
      w1 = i16x8.mul(i16x8.extend_high_i8x16_s(vh), sc);
      a0 = dot16(a0, w0, w1, xb + 16);
      a1 = dot16(a1, w0, w1, xb + xs + 16);
      a2 = dot16(a2, w0, w1, xb + 2 * xs + 16);
      a3 = dot16(a3, w0, w1, xb + 3 * xs + 16);
    }
  }
  const sums = hsum4_i32x4(a0, a1, a2, a3);
  return ASC_FEATURE_RELAXED_SIMD ? i32x4.add(sums, i32x4.splat(load<i32>(corr))) : sums;
}

/** One row's integer sum over one super-block for one token, spread over the 4 lanes (less corr in the relaxed build). */
// @ts-ignore: decorator
@inline function row_tok1(w: usize, s: usize, x: usize): v128 {
  load<u8>(w, PREFETCH); // see PREFETCH: one touch per 64-byte line of codes
  load<u8>(w + 64, PREFETCH);
  let a = i32x4.splat(0);
  for (let ib: usize = 0; ib < 8; ib++) {
    const q = v128.load(w + (ib << 4));
    const sc = scale16(s + ib);
    const il = v128.and(q, i8x16.splat(0x0f)), ih = v128.and(i16x8.shr_u(q, 4), i8x16.splat(0x0f));
    const xb = x + (ib << 5);
    if (ASC_FEATURE_RELAXED_SIMD) {
      a = dot16_relaxed(a, i8x16.relaxed_swizzle(kv_abs(), il), i8x16.relaxed_swizzle(kv_sign(), il), sc, xb);
      a = dot16_relaxed(a, i8x16.relaxed_swizzle(kv_abs(), ih), i8x16.relaxed_swizzle(kv_sign(), ih), sc, xb + 16);
    } else {
      const vl = lookup(il), vh = lookup(ih);
      a = dot16(a, i16x8.mul(i16x8.extend_low_i8x16_s(vl), sc), i16x8.mul(i16x8.extend_high_i8x16_s(vl), sc), xb);
      a = dot16(a, i16x8.mul(i16x8.extend_low_i8x16_s(vh), sc), i16x8.mul(i16x8.extend_high_i8x16_s(vh), sc), xb + 16);
    }
  }
  return a;
}

/**
 * y[t][r] for ntok activation vectors quantized by quantize_q8_k (codes kq, scales kd); rows × cols weights in the
 * layout above (indices wq, scales ws), cols a multiple of 256.
 */
export function matmul_iq4_xs(wq: usize, ws: usize, kq: usize, kd: usize, y: usize, rows: i32, cols: i32, ntok: i32): void {
  const nsb = <usize>(cols >> 8);
  const groups = (rows + 3) >> 2;
  const rowBytes = <usize>rows << 2;
  const xs = <usize>cols;
  const dss = nsb << 2;
  for (let g = 0; g < groups; g++) {
    const wg = wq + <usize>g * nsb * 512;
    const sg = ws + <usize>g * nsb * SCALES;
    const r = g << 2;
    let t = 0;
    for (; t + 4 <= ntok; t += 4) {
      const x = kq + <usize>t * xs;
      const d = kd + <usize>t * dss;
      for (let i = 0; i < 4 && r + i < rows; i++) {
        let acc = f32x4.splat(0);
        const ri = <usize>i;
        for (let b: usize = 0; b < nsb; b++) {
          const w = wg + (b << 9) + (ri << 7);
          const s = sg + b * SCALES;
          load<u8>(w, PREFETCH); // see PREFETCH
          load<u8>(w + 64, PREFETCH);
          const isum = row_tok4(w, s + (ri << 3), s + 48 + (ri << 2), x + (b << 8), xs);
          const db = d + (b << 2);
          let xd4 = f32x4.splat(load<f32>(db));
          xd4 = f32x4.replace_lane(xd4, 1, load<f32>(db + dss));
          xd4 = f32x4.replace_lane(xd4, 2, load<f32>(db + 2 * dss));
          xd4 = f32x4.replace_lane(xd4, 3, load<f32>(db + 3 * dss));
          acc = f32x4.add(acc, f32x4.mul(f32x4.mul(f32x4.splat(load<f32>(s + 32 + (ri << 2))), xd4), f32x4.convert_i32x4_s(isum)));
        }
        const yr = y + <usize>t * rowBytes + (<usize>(r + i) << 2);
        store<f32>(yr, f32x4.extract_lane(acc, 0));
        store<f32>(yr + rowBytes, f32x4.extract_lane(acc, 1));
        store<f32>(yr + 2 * rowBytes, f32x4.extract_lane(acc, 2));
        store<f32>(yr + 3 * rowBytes, f32x4.extract_lane(acc, 3));
      }
    }
    for (; t < ntok; t++) {
      let acc = f32x4.splat(0);
      const x = kq + <usize>t * xs;
      const d = kd + <usize>t * dss;
      for (let b: usize = 0; b < nsb; b++) {
        const w = wg + (b << 9);
        const s = sg + b * SCALES;
        load<u8>(s, PREFETCH / 8);
        const xb = x + (b << 8);
        let isum = hsum4_i32x4(row_tok1(w, s, xb), row_tok1(w + 128, s + 8, xb), row_tok1(w + 256, s + 16, xb), row_tok1(w + 384, s + 24, xb));
        if (ASC_FEATURE_RELAXED_SIMD) isum = i32x4.add(isum, v128.load(s + 48));
        acc = scale_add(acc, v128.load(s + 32), load<f32>(d + (b << 2)), isum);
      }
      store_rows4(y + <usize>t * rowBytes + (<usize>r << 2), acc, r, rows);
    }
  }
}

/** Row `row` as f32 (token embeddings): d·(ls − 32)·kvalues[index], in ggml's dequantize_row_iq4_xs's float operations. */
export function dequant_row_iq4_xs(wq: usize, ws: usize, row: i32, cols: i32, out: usize): void {
  const nsb = <usize>(cols >> 8);
  const lane = <usize>(row & 3);
  const g = <usize>(row >> 2);
  for (let b: usize = 0; b < nsb; b++) {
    const w = wq + (g * nsb + b) * 512 + (lane << 7);
    const s = ws + (g * nsb + b) * SCALES;
    const d = load<f32>(s + 32 + (lane << 2));
    const o = out + (b << 10);
    for (let ib: usize = 0; ib < 8; ib++) {
      const dl = d * <f32>load<i8>(s + (lane << 3) + ib);
      for (let j: usize = 0; j < 16; j++) {
        const q = <i32>load<u8>(w + (ib << 4) + j);
        store<f32>(o + (((ib << 5) + j) << 2), dl * <f32>kvalue(q & 0xf));
        store<f32>(o + (((ib << 5) + j + 16) << 2), dl * <f32>kvalue(q >> 4));
      }
    }
  }
}

function kvalue(i: i32): i32 {
  return i8x16.extract_lane_s(i8x16.swizzle(kvalues(), i8x16.splat(<i8>i)), 0);
}
