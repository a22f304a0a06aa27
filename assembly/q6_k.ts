// Q6_K: super-blocks of 256 values, 16 sub-blocks of 16 with int8 scales sc and one f16 d; value = d·sc·(q − 32),
// q in 0..63. Activations are Q8_K.
//
// Repacked layout: rows in groups of 4, the last group padded with zero rows, the rows in the lanes (ggml's 4×4
// interleave): every 16-byte code vector holds 4 consecutive values of each of the 4 rows, [a0..a3 b0..b3 c0..c3
// d0..d3], so one relaxed dot against the 4 activations broadcast gives i16 lanes [a,a,b,b,c,c,d,d] and the
// sub-block scales meet them as they are, with no folding of rows.
// - Codes, 48 bytes per group and sub-block (768 per super-block): V0, V1, W. Sub-block values 0..3 are V0's bits
//   0..5, values 4..7 V1's; values 8..11 take their low 2 bits from V0's bits 6..7 and their high 4 from W's low
//   nibble, values 12..15 from V1's bits 6..7 and W's high nibble. 6 bits per code, exactly.
// - Scales, 80 bytes per group and super-block: d [4] as f32, then the int8 sub-block scales as [16 sub-blocks][4 rows]
//   (one punpcklwd makes a sub-block's [a,a,b,b,c,c,d,d]). 6.625 bits per weight in all (ggml: 6.5625).
//
// Codes stay unsigned (0..63), the 7-bit operand of relaxed_dot in the relaxed build; the SIMD128 build widens them and
// multiplies as i16, lane for lane the same sums. The offset comes off as 32·Σ_j sc_j·bsum_j, with bsum_j the Q8_K code
// sum of sub-block j. Per row and super-block Σ_j sc_j·Σ (q−32)·x is one exact i32, then acc + (d·kd)·sumi.
//
// Per 64 products (4 rows × 16 values, one token) that is 4 dots, 2 i16 adds, 2 pmaddwd and 12 operations to unpack
// the 6-bit codes. The row-per-vector layout before it folded the 4 rows' lanes together instead (11 shuffles and adds
// per 64 products): 5632 × 2048, relaxed, decode 20.3 → 25.7 GMAC/s, prefill 31.8 → 37.0; SIMD128 11.7 → 15.4 and
// 17.2 → 20.1 (docs/kernels.md).

import { k_pair_lo, kdot4_rows, koffset_rows4, PREFETCH, scale_add, store_rows4, store_tile4 } from './common';

const CODES: usize = 768;
const SCALES: usize = 80;

/** The 16 values of one sub-block of 4 rows, 4 vectors of codes (0..63) from its 48 bytes at w. */
// @ts-ignore: decorator
@inline function codes_0(w: usize): v128 {
  return v128.and(v128.load(w), i8x16.splat(0x3f));
}

// @ts-ignore: decorator
@inline function codes_1(w: usize): v128 {
  return v128.and(v128.load(w, 16), i8x16.splat(0x3f));
}

// i16 shifts: V8 rebuilds a byte mask for i8x16 shifts, and the masks drop what crosses from the neighbouring byte
// @ts-ignore: decorator
@inline function codes_2(w: usize): v128 {
  const low2 = v128.and(i16x8.shr_u(v128.load(w), 6), i8x16.splat(0x03));
  return v128.or(low2, v128.and(i16x8.shl(v128.load(w, 32), 2), i8x16.splat(0x3c)));
}

// @ts-ignore: decorator
@inline function codes_3(w: usize): v128 {
  const low2 = v128.and(i16x8.shr_u(v128.load(w, 16), 6), i8x16.splat(0x03));
  return v128.or(low2, v128.and(i16x8.shr_u(v128.load(w, 32), 2), i8x16.splat(0x3c)));
}

/**
 * One token's sub-block (16 activations, broadcast 4 at a time in x0..x3) against a group's 4 unpacked rows (c0..c3),
 * times the rows' scales s4 ([a,a,b,b,c,c,d,d]), added to the token's i32 accumulator [a,b,c,d]. Two dots' lanes add in
 * i16 (≤ 32004) before each pmaddwd.
 */
// @ts-ignore: decorator
@inline function token_sub(acc: v128, c0: v128, c1: v128, c2: v128, c3: v128, s4: v128, x0: v128, x1: v128, x2: v128, x3: v128): v128 {
  return i32x4.add(acc, i32x4.add(
    i32x4.dot_i16x8_s(i16x8.add(kdot4_rows(c0, x0), kdot4_rows(c1, x1)), s4),
    i32x4.dot_i16x8_s(i16x8.add(kdot4_rows(c2, x2), kdot4_rows(c3, x3)), s4),
  ));
}

/** token_sub with the activations at x broadcast by loads (decode: few values live, so loads are cheapest). */
// @ts-ignore: decorator
@inline function token_sub_loads(acc: v128, c0: v128, c1: v128, c2: v128, c3: v128, s4: v128, x: usize): v128 {
  return token_sub(acc, c0, c1, c2, c3, s4, v128.load32_splat(x), v128.load32_splat(x, 4), v128.load32_splat(x, 8), v128.load32_splat(x, 12));
}

/**
 * token_sub with the activations at x loaded once and broadcast by shuffles (prefill: V8 issues all of an iteration's
 * loads before its arithmetic, and 4 tokens' 16 broadcast loads spilled).
 */
// @ts-ignore: decorator
@inline function token_sub_shuffles(acc: v128, c0: v128, c1: v128, c2: v128, c3: v128, s4: v128, x: usize): v128 {
  const v = v128.load(x);
  return token_sub(
    acc, c0, c1, c2, c3, s4,
    i32x4.shuffle(v, v, 0, 0, 0, 0), i32x4.shuffle(v, v, 1, 1, 1, 1), i32x4.shuffle(v, v, 2, 2, 2, 2), i32x4.shuffle(v, v, 3, 3, 3, 3),
  );
}

/**
 * y[t][r] for ntok Q8_K activation vectors: over the super-blocks in order, acc = acc + (d·kd)·sumi with the exact
 * sumi = Σ_j sc_j·Σ q·xq − 32·Σ_j sc_j·bsum_j. One sub-block per iteration: V8 issues all of an iteration's loads before
 * its arithmetic, and a pair's 14 loads (codes and broadcast activations) spilled.
 */
export function matmul_q6_k(wq: usize, ws: usize, kq: usize, kd: usize, ks: usize, y: usize, rows: i32, cols: i32, ntok: i32): void {
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
    // prefill: 4 tokens per unpacked weight sub-block
    for (; t + 4 <= ntok; t += 4) {
      let f0 = f32x4.splat(0), f1 = f32x4.splat(0), f2 = f32x4.splat(0), f3 = f32x4.splat(0);
      let w = wg, sc = sg, x = kq + <usize>t * xStride, d = kd + <usize>t * dStride, s = ks + <usize>t * sStride;
      for (let sb = 0; sb < nsb; sb++) {
        load<u8>(sc, PREFETCH / 4); // see PREFETCH
        load<u8>(sc, PREFETCH / 4 + 64);
        let i0 = i32x4.splat(0), i1 = i32x4.splat(0), i2 = i32x4.splat(0), i3 = i32x4.splat(0);
        let sp = sc + 16;
        for (let j = 0; j < 16; j++) {
          load<u8>(w, PREFETCH);
          const s4 = k_pair_lo(v128.load8x8_s(sp));
          const c0 = codes_0(w), c1 = codes_1(w), c2 = codes_2(w), c3 = codes_3(w);
          i0 = token_sub_shuffles(i0, c0, c1, c2, c3, s4, x);
          i1 = token_sub_shuffles(i1, c0, c1, c2, c3, s4, x + xStride);
          i2 = token_sub_shuffles(i2, c0, c1, c2, c3, s4, x + 2 * xStride);
          i3 = token_sub_shuffles(i3, c0, c1, c2, c3, s4, x + 3 * xStride);
          w += 48;
          x += 16;
          sp += 4;
        }
        const d4 = v128.load(sc);
        f0 = scale_add(f0, d4, load<f32>(d), i32x4.sub(i0, koffset_rows4(sc, s, 5)));
        f1 = scale_add(f1, d4, load<f32>(d + dStride), i32x4.sub(i1, koffset_rows4(sc, s + sStride, 5)));
        f2 = scale_add(f2, d4, load<f32>(d + 2 * dStride), i32x4.sub(i2, koffset_rows4(sc, s + 2 * sStride, 5)));
        f3 = scale_add(f3, d4, load<f32>(d + 3 * dStride), i32x4.sub(i3, koffset_rows4(sc, s + 3 * sStride, 5)));
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
        load<u8>(sc, PREFETCH / 4 + 64);
        let acc = i32x4.splat(0);
        let sp = sc + 16;
        for (let j = 0; j < 16; j++) {
          load<u8>(w, PREFETCH);
          acc = token_sub_loads(acc, codes_0(w), codes_1(w), codes_2(w), codes_3(w), k_pair_lo(v128.load8x8_s(sp)), x);
          w += 48;
          x += 16;
          sp += 4;
        }
        f = scale_add(f, v128.load(sc), load<f32>(d), i32x4.sub(acc, koffset_rows4(sc, s, 5)));
        sc += SCALES;
        d += 4;
        s += 32;
      }
      store_rows4(y + <usize>t * rowBytes + (<usize>r << 2), f, r, rows);
    }
  }
}

/** Row `row` as f32: (d·sc)·(q − 32), the product d·sc rounded to f32 first, as ggml's dequantize_row_q6_K. */
export function dequant_row_q6_k(wq: usize, ws: usize, row: i32, cols: i32, out: usize): void {
  const nsb = cols >> 8;
  const lane = <usize>(row & 3);
  const q = wq + <usize>(row >> 2) * nsb * CODES + (lane << 2);
  const sg = ws + <usize>(row >> 2) * nsb * SCALES;
  for (let sb = 0; sb < nsb; sb++) {
    const sc = sg + <usize>sb * SCALES;
    const d = load<f32>(sc + (lane << 2));
    for (let j = 0; j < 16; j++) {
      const dj = d * <f32>load<i8>(sc + 16 + (<usize>j << 2) + lane);
      const src = q + <usize>(sb * 16 + j) * 48;
      const o = out + (<usize>(sb * 256 + j * 16) << 2);
      for (let e: usize = 0; e < 4; e++) {
        const v0 = <i32>load<u8>(src + e), v1 = <i32>load<u8>(src + 16 + e), w = <i32>load<u8>(src + 32 + e);
        store<f32>(o + (e << 2), dj * <f32>((v0 & 0x3f) - 32));
        store<f32>(o + ((4 + e) << 2), dj * <f32>((v1 & 0x3f) - 32));
        store<f32>(o + ((8 + e) << 2), dj * <f32>(((v0 >> 6) | ((w & 0x0f) << 2)) - 32));
        store<f32>(o + ((12 + e) << 2), dj * <f32>(((v1 >> 6) | ((w >> 4) << 2)) - 32));
      }
    }
  }
}
