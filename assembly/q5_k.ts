// Q5_K: as Q4_K (q4_k.ts) with 5-bit codes q in 0..31: value = d·sc·q − dmin·m. Activations are Q8_K.
//
// Repacked layout: rows in groups of 4, the last group padded with zero rows.
// - Codes, 640 bytes per group and super-block, 80 per sub-block j (32 values): the 4 rows' 16 bytes V back to back,
//   then 16 bytes W shared by the 4 rows. V byte l holds element l's whole code in bits 0..4 and the low 3 bits of
//   element l+16 in bits 5..7; W byte l holds the top 2 bits of element l+16 of row r in bits 2r, 2r+1. So elements
//   0..15 come out with one mask, and 16..31 with two masks, two shifts and an or: 20 bytes per row and sub-block,
//   exactly 5 bits per weight.
// - Scales, 96 bytes per group and super-block, as Q4_K. 5.75 bits per weight in all (ggml: 5.5).
//
// The arithmetic is Q4_K's: per super-block an exact i32 Σ_j sc_j·Σ q·x per row (the i16 lanes now hold up to
// 4·31·127 = 15748, so the rows are folded once, not twice, before the scale multiply), the mins term, one float step.

import { k_pair_lo, kdot16, kmins_rows4, kscale_add_min, kscale_rows4, PREFETCH, store_rows4, store_tile4 } from './common';

const CODES: usize = 640;
const SCALES: usize = 96;

/** Elements 0..15 of one row's sub-block. */
// @ts-ignore: decorator
@inline function codes_lo(v: v128): v128 {
  return v128.and(v, i8x16.splat(0x1f));
}

/** Elements 16..31 of row `r` (a constant, so the shift folds): 3 bits from V, 2 from W. */
// @ts-ignore: decorator
@inline function codes_hi(v: v128, w: v128, r: i32): v128 {
  const low3 = v128.and(i16x8.shr_u(v, 5), i8x16.splat(0x07));
  const bits = r == 0 ? i16x8.shl(w, 3) : r == 1 ? i16x8.shl(w, 1) : r == 2 ? i16x8.shr_u(w, 1) : i16x8.shr_u(w, 3);
  return v128.or(low3, v128.and(bits, i8x16.splat(0x18)));
}

// @ts-ignore: decorator
@inline function token_sub(
  acc: v128, la: v128, ha: v128, lb: v128, hb: v128, lc: v128, hc: v128, ld: v128, hd: v128, s4: v128, x: usize,
): v128 {
  const x0 = v128.load(x), x1 = v128.load(x, 16);
  // unused (and dropped by the optimizer) in the relaxed build
  const xl0 = i16x8.extend_low_i8x16_s(x0), xh0 = i16x8.extend_high_i8x16_s(x0);
  const xl1 = i16x8.extend_low_i8x16_s(x1), xh1 = i16x8.extend_high_i8x16_s(x1);
  return i32x4.add(acc, kscale_rows4(
    i16x8.add(kdot16(la, x0, xl0, xh0), kdot16(ha, x1, xl1, xh1)),
    i16x8.add(kdot16(lb, x0, xl0, xh0), kdot16(hb, x1, xl1, xh1)),
    i16x8.add(kdot16(lc, x0, xl0, xh0), kdot16(hc, x1, xl1, xh1)),
    i16x8.add(kdot16(ld, x0, xl0, xh0), kdot16(hd, x1, xl1, xh1)),
    s4,
  ));
}

/** As matmul_q4_k (which says why one sub-block per iteration), for Q5_K codes. */
export function matmul_q5_k(wq: usize, ws: usize, kq: usize, kd: usize, ks: usize, y: usize, rows: i32, cols: i32, ntok: i32): void {
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
        let sj = sc + 32;
        for (let j = 0; j < 8; j++) {
          load<u8>(w, PREFETCH);
          load<u8>(w, PREFETCH + 64);
          const s4 = k_pair_lo(v128.load8x8_u(sj)); // sub-block j's scales (and j+1's, unused)
          const v0 = v128.load(w), v1 = v128.load(w, 16), v2 = v128.load(w, 32), v3 = v128.load(w, 48);
          const hw = v128.load(w, 64);
          const la = codes_lo(v0), ha = codes_hi(v0, hw, 0), lb = codes_lo(v1), hb = codes_hi(v1, hw, 1);
          const lc = codes_lo(v2), hc = codes_hi(v2, hw, 2), ld = codes_lo(v3), hd = codes_hi(v3, hw, 3);
          i0 = token_sub(i0, la, ha, lb, hb, lc, hc, ld, hd, s4, x);
          i1 = token_sub(i1, la, ha, lb, hb, lc, hc, ld, hd, s4, x + xStride);
          i2 = token_sub(i2, la, ha, lb, hb, lc, hc, ld, hd, s4, x + 2 * xStride);
          i3 = token_sub(i3, la, ha, lb, hb, lc, hc, ld, hd, s4, x + 3 * xStride);
          w += 80;
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
          load<u8>(w, PREFETCH + 64);
          const v0 = v128.load(w), v1 = v128.load(w, 16), v2 = v128.load(w, 32), v3 = v128.load(w, 48);
          const hw = v128.load(w, 64);
          acc = token_sub(
            acc, codes_lo(v0), codes_hi(v0, hw, 0), codes_lo(v1), codes_hi(v1, hw, 1),
            codes_lo(v2), codes_hi(v2, hw, 2), codes_lo(v3), codes_hi(v3, hw, 3), k_pair_lo(v128.load8x8_u(sj)), x,
          );
          w += 80;
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

/** Row `row` as f32: (d·sc)·q − dmin·m, as ggml's dequantize_row_q5_K. */
export function dequant_row_q5_k(wq: usize, ws: usize, row: i32, cols: i32, out: usize): void {
  const nsb = cols >> 8;
  const lane = <usize>(row & 3);
  const shift = <i32>lane << 1;
  const q = wq + <usize>(row >> 2) * nsb * CODES;
  const sg = ws + <usize>(row >> 2) * nsb * SCALES;
  for (let sb = 0; sb < nsb; sb++) {
    const sc = sg + <usize>sb * SCALES;
    const d = load<f32>(sc + (lane << 2));
    const dmin = load<f32>(sc + 16 + (lane << 2));
    for (let j = 0; j < 8; j++) {
      const d1 = d * <f32>load<u8>(sc + 32 + (<usize>j << 2) + lane);
      const m1 = dmin * <f32>load<u8>(sc + 64 + (<usize>(j >> 1) << 3) + (lane << 1) + <usize>(j & 1));
      const src = q + <usize>sb * CODES + <usize>j * 80;
      const o = out + (<usize>(sb * 256 + j * 32) << 2);
      for (let l = 0; l < 16; l++) {
        const v = <i32>load<u8>(src + (lane << 4) + l);
        const hi = (v >> 5) | (((<i32>load<u8>(src + 64 + l) >> shift) & 3) << 3);
        store<f32>(o + (<usize>l << 2), d1 * <f32>(v & 0x1f) - m1);
        store<f32>(o + (<usize>(l + 16) << 2), d1 * <f32>hi - m1);
      }
    }
  }
}
