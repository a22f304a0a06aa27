// Q4_K: super-blocks of 256 values, 8 sub-blocks of 32 with 6-bit integer scales sc and mins m, f16 d and dmin;
// value = d·sc·q − dmin·m, q in 0..15. Activations are Q8_K (quantize_q8_k), as llama.cpp does for the K-quants.
//
// Repacked layout (the host writes it at load, model/weight-types-k.ts): rows in groups of 4, the last group padded
// with zero rows.
// - Codes, 512 bytes per group and super-block: per sub-block j, the 4 rows' 16 bytes back to back (64 bytes), each in
//   Q4_0's in-block order (byte l: element l in the low nibble, element l+16 in the high one).
// - Scales, 96 bytes per group and super-block: d [4] and dmin [4] as f32 (16 bytes each), then the sub-block scales
//   as bytes [8 sub-blocks][4 rows] (32), then the mins as bytes, per pair of sub-blocks (j, j+1) [a_j,a_j+1,b_j,...]
//   (32). That is 4.75 bits per weight (ggml: 4.5).
//
// Per token and super-block, each row's Σ_j sc_j·(Σ q·x) is one exact i32 (sub-block dots in i16, folded across the 4
// rows and multiplied by the scales with i32x4.dot_i16x8_s), the mins term Σ_j m_j·bsum_j another; then one float step
// acc + (d·kd)·sumi − (dmin·kd)·summ. Decode, prefill and both builds compute the same integers, so the same bits.

import { k_pair_lo, kdot16, kmins_rows4, kscale_add_min, kscale_rows4_narrow, PREFETCH, store_rows4, store_tile4 } from './common';

const CODES: usize = 512; // code bytes per group and super-block
const SCALES: usize = 96; // scale bytes per group and super-block

/** Elements 0..15 (lo) and 16..31 (hi) of one row's sub-block: codes 0..15, unsigned as relaxed_dot wants them. */
// @ts-ignore: decorator
@inline function codes_lo(b: v128): v128 {
  return v128.and(b, i8x16.splat(0x0f));
}

// @ts-ignore: decorator
@inline function codes_hi(b: v128): v128 {
  return v128.and(i16x8.shr_u(b, 4), i8x16.splat(0x0f)); // an i16 shift: V8 rebuilds a byte mask for i8x16.shr_u
}

/**
 * One token's sub-block (32 activations at x) against a group's 4 unpacked rows, scaled by the rows' sub-block
 * scales s4 and added to the token's i32 accumulator. Each row's i16 lanes hold 4 products (≤ 4·15·127 = 7620).
 */
// @ts-ignore: decorator
@inline function token_sub(
  acc: v128, la: v128, ha: v128, lb: v128, hb: v128, lc: v128, hc: v128, ld: v128, hd: v128, s4: v128, x: usize,
): v128 {
  const x0 = v128.load(x), x1 = v128.load(x, 16);
  // unused (and dropped by the optimizer) in the relaxed build
  const xl0 = i16x8.extend_low_i8x16_s(x0), xh0 = i16x8.extend_high_i8x16_s(x0);
  const xl1 = i16x8.extend_low_i8x16_s(x1), xh1 = i16x8.extend_high_i8x16_s(x1);
  return i32x4.add(acc, kscale_rows4_narrow(
    i16x8.add(kdot16(la, x0, xl0, xh0), kdot16(ha, x1, xl1, xh1)),
    i16x8.add(kdot16(lb, x0, xl0, xh0), kdot16(hb, x1, xl1, xh1)),
    i16x8.add(kdot16(lc, x0, xl0, xh0), kdot16(hc, x1, xl1, xh1)),
    i16x8.add(kdot16(ld, x0, xl0, xh0), kdot16(hd, x1, xl1, xh1)),
    s4,
  ));
}

/**
 * y[t][r] for ntok activation vectors quantized by quantize_q8_k (codes kq, scales kd, code sums ks): over the
 * super-blocks in order, acc = acc + (d·kd)·Σ_j sc_j·Σ q·xq − (dmin·kd)·Σ_j m_j·bsum_j.
 *
 * Both loops take one sub-block per iteration: V8 issues all of an iteration's loads before its arithmetic, so with two
 * sub-blocks per iteration their codes no longer fit the 16 registers (V8 spilled, and decode measured ~20% slower).
 */
export function matmul_q4_k(wq: usize, ws: usize, kq: usize, kd: usize, ks: usize, y: usize, rows: i32, cols: i32, ntok: i32): void {
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
      // running pointers: codes, scales, activations, their scales and sums (pointer bumps, not index arithmetic)
      let w = wg, sc = sg, x = kq + <usize>t * xStride, d = kd + <usize>t * dStride, s = ks + <usize>t * sStride;
      for (let sb = 0; sb < nsb; sb++) {
        load<u8>(sc, PREFETCH / 4); // see PREFETCH
        load<u8>(sc, PREFETCH / 4 + 64);
        let i0 = i32x4.splat(0), i1 = i32x4.splat(0), i2 = i32x4.splat(0), i3 = i32x4.splat(0);
        let sj = sc + 32;
        for (let j = 0; j < 8; j++) {
          load<u8>(w, PREFETCH);
          const s4 = k_pair_lo(v128.load8x8_u(sj)); // sub-block j's scales (and j+1's, unused)
          const w0 = v128.load(w), w1 = v128.load(w, 16), w2 = v128.load(w, 32), w3 = v128.load(w, 48);
          const la = codes_lo(w0), ha = codes_hi(w0), lb = codes_lo(w1), hb = codes_hi(w1);
          const lc = codes_lo(w2), hc = codes_hi(w2), ld = codes_lo(w3), hd = codes_hi(w3);
          i0 = token_sub(i0, la, ha, lb, hb, lc, hc, ld, hd, s4, x);
          i1 = token_sub(i1, la, ha, lb, hb, lc, hc, ld, hd, s4, x + xStride);
          i2 = token_sub(i2, la, ha, lb, hb, lc, hc, ld, hd, s4, x + 2 * xStride);
          i3 = token_sub(i3, la, ha, lb, hb, lc, hc, ld, hd, s4, x + 3 * xStride);
          w += 64;
          x += 32;
          sj += 4;
        }
        const d4 = v128.load(sc), m4 = v128.load(sc, 16);
        f0 = kscale_add_min(f0, d4, m4, load<f32>(d), i0, kmins_rows4(sc + 64, s));
        f1 = kscale_add_min(f1, d4, m4, load<f32>(d + dStride), i1, kmins_rows4(sc + 64, s + sStride));
        f2 = kscale_add_min(f2, d4, m4, load<f32>(d + 2 * dStride), i2, kmins_rows4(sc + 64, s + 2 * sStride));
        f3 = kscale_add_min(f3, d4, m4, load<f32>(d + 3 * dStride), i3, kmins_rows4(sc + 64, s + 3 * sStride));
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
        let sj = sc + 32;
        for (let j = 0; j < 8; j++) {
          load<u8>(w, PREFETCH);
          const w0 = v128.load(w), w1 = v128.load(w, 16), w2 = v128.load(w, 32), w3 = v128.load(w, 48);
          acc = token_sub(
            acc, codes_lo(w0), codes_hi(w0), codes_lo(w1), codes_hi(w1), codes_lo(w2), codes_hi(w2), codes_lo(w3), codes_hi(w3),
            k_pair_lo(v128.load8x8_u(sj)), x,
          );
          w += 64;
          x += 32;
          sj += 4;
        }
        f = kscale_add_min(f, v128.load(sc), v128.load(sc, 16), load<f32>(d), acc, kmins_rows4(sc + 64, s));
        sc += SCALES;
        d += 4;
        s += 32;
      }
      store_rows4(y + <usize>t * rowBytes + (<usize>r << 2), f, r, rows);
    }
  }
}

/** Row `row` as f32 (token embeddings): (d·sc)·q − dmin·m, each product rounded to f32 first, as ggml's dequantize_row_q4_K. */
export function dequant_row_q4_k(wq: usize, ws: usize, row: i32, cols: i32, out: usize): void {
  const nsb = cols >> 8;
  const lane = <usize>(row & 3);
  const q = wq + <usize>(row >> 2) * nsb * CODES + (lane << 4);
  const sg = ws + <usize>(row >> 2) * nsb * SCALES;
  for (let sb = 0; sb < nsb; sb++) {
    const sc = sg + <usize>sb * SCALES;
    const d = load<f32>(sc + (lane << 2));
    const dmin = load<f32>(sc + 16 + (lane << 2));
    for (let j = 0; j < 8; j++) {
      const d1 = d * <f32>load<u8>(sc + 32 + (<usize>j << 2) + lane);
      const m1 = dmin * <f32>load<u8>(sc + 64 + (<usize>(j >> 1) << 3) + (lane << 1) + <usize>(j & 1));
      const src = q + <usize>sb * CODES + (<usize>j << 6);
      const o = out + (<usize>(sb * 256 + j * 32) << 2);
      for (let l = 0; l < 16; l++) {
        const byte = <i32>load<u8>(src + l);
        store<f32>(o + (<usize>l << 2), d1 * <f32>(byte & 0x0f) - m1);
        store<f32>(o + (<usize>(l + 16) << 2), d1 * <f32>(byte >> 4) - m1);
      }
    }
  }
}
