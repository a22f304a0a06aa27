// Q2_K: super-blocks of 256 values, 2-bit codes q (0..3), per 16 values a 4-bit scale sc and a 4-bit min m, and f16
// d, dmin per super-block: value = d·sc·q − dmin·m. Activations are Q8_K (quantize_q8_k): int8 codes x, one f32 scale xd
// per 256 and the code sums bsum per 16. As llama.cpp computes it, a super-block contributes
//   xd·d·Σ_j sc_j·(q·x)_j − xd·dmin·Σ_j m_j·bsum_j
// with both sums exact in i32 (at most 16·15·16·3·127 and 16·15·16·127), so one float step per super-block.
//
// Repacked layout (the host writes it at load): rows in groups of 4, the last group padded with zero rows. For each
// group and super-block, 256 bytes of codes: the 4 rows' 64 code bytes back to back, in ggml's order (byte 32h + l holds
// elements 128h + 32p + l at bits 2p, 2p+1, so one 16-byte load and a shift by 2p give 16 values of sub-block
// 8h + 2p + (l ≥ 16)). Apart, 96 bytes of scales: the 4 rows' 16 scale/min bytes as ggml stores them (scale in the low
// nibble, min in the high), then d as f32 [4 rows], then dmin as f32 [4 rows]. 2.75 bits per weight (ggml: 2.625).
//
// The two builds:
// - relaxed: the codes (0..3) are the relaxed dot's 7-bit operand as they are; the sub-block's i16 pair sums (at most
//   2·3·127) meet its scale in one pmaddwd. (Scaling the codes first, sc·q ≤ 45 as bytes, then adding two sub-blocks
//   in i16 before widening, measured 4% slower: the multiply is per row, the pmaddwd it saves per token.)
// - SIMD128: each sub-block's codes are multiplied by its scale once, as bytes (one i16 multiply scales 16 codes:
//   every byte's product stays below 256, so none carries into its neighbour), widened to i16 and multiplied with the
//   widened activations by pmaddwd.
//
// Decode is 4 rows × 1 token per weight load, with the 4 rows' sums in the lanes of one i32x4; prefill is 1 row ×
// 4 tokens (the tokens in the lanes), row by row through the group. Every output is the same sequence of f32
// operations either way (acc + (d·xd·isum − dmin·xd·msum) per super-block, in order), so decode, prefill and both
// builds agree bit for bit.

import { hsum4_i32x4, PREFETCH, store_rows4 } from './common';

/** The i16 lanes of one scale byte's low nibble (load8_splat repeats the byte; the mask keeps the low lane byte's nibble). */
// @ts-ignore: decorator
@inline function scale16(p: usize): v128 {
  return v128.and(v128.load8_splat(p), i16x8.splat(0x0f));
}

/** The codes at bits 2p, 2p+1 of each byte of q (p constant). */
// @ts-ignore: decorator
@inline function codes2(q: v128, p: i32): v128 {
  return p == 0 ? v128.and(q, i8x16.splat(3)) : v128.and(i16x8.shr_u(q, 2 * p), i8x16.splat(3));
}

/** SIMD128: codes at bits 2p.. of q times the scale at sp, as bytes (at most 45). */
// @ts-ignore: decorator
@inline function scaled(q: v128, p: i32, sp: usize): v128 {
  return i16x8.mul(codes2(q, p), scale16(sp));
}

/** relaxed: acc + sc·Σ q·x over one sub-block (sc as i16 lanes). */
// @ts-ignore: decorator
@inline function sub_r1(acc: v128, q: v128, sc: v128, x: usize): v128 {
  return i32x4.add(acc, i32x4.dot_i16x8_s(i16x8.relaxed_dot_i8x16_i7x16_s(v128.load(x), q), sc));
}

/** SIMD128: Σ w·x over one sub-block, its scaled codes widened to i16 (lo: values 0..7, hi: 8..15). */
// @ts-ignore: decorator
@inline function sub_simd(acc: v128, lo: v128, hi: v128, x: usize): v128 {
  return i32x4.add(acc, i32x4.add(i32x4.dot_i16x8_s(lo, v128.load8x8_s(x)), i32x4.dot_i16x8_s(hi, v128.load8x8_s(x, 8))));
}

/**
 * One row's code sums over one super-block for 4 tokens (activations at x + t·xs), as an i32x4 with the tokens in
 * the lanes. Code load c (bytes 16c..16c+15) holds sub-blocks jb, jb+2, jb+4, jb+6 with jb = 8·(c/2) + c%2.
 */
// @ts-ignore: decorator
@inline function row_tok4(w: usize, s: usize, x: usize, xs: usize): v128 {
  let a0 = i32x4.splat(0), a1 = i32x4.splat(0), a2 = i32x4.splat(0), a3 = i32x4.splat(0);
  for (let c: usize = 0; c < 4; c++) {
    const q = v128.load(w + (c << 4));
    const jb = ((c >> 1) << 3) | (c & 1);
    const sj = s + jb;
    const xj = x + (jb << 4);
    if (ASC_FEATURE_RELAXED_SIMD) {
      let k = codes2(q, 0), sc = scale16(sj);
      a0 = sub_r1(a0, k, sc, xj); a1 = sub_r1(a1, k, sc, xj + xs); a2 = sub_r1(a2, k, sc, xj + 2 * xs); a3 = sub_r1(a3, k, sc, xj + 3 * xs);
      k = codes2(q, 1); sc = scale16(sj + 2);
      a0 = sub_r1(a0, k, sc, xj + 32); a1 = sub_r1(a1, k, sc, xj + xs + 32);
      a2 = sub_r1(a2, k, sc, xj + 2 * xs + 32); a3 = sub_r1(a3, k, sc, xj + 3 * xs + 32);
      k = codes2(q, 2); sc = scale16(sj + 4);
      a0 = sub_r1(a0, k, sc, xj + 64); a1 = sub_r1(a1, k, sc, xj + xs + 64);
      a2 = sub_r1(a2, k, sc, xj + 2 * xs + 64); a3 = sub_r1(a3, k, sc, xj + 3 * xs + 64);
      k = codes2(q, 3); sc = scale16(sj + 6);
      a0 = sub_r1(a0, k, sc, xj + 96); a1 = sub_r1(a1, k, sc, xj + xs + 96);
      a2 = sub_r1(a2, k, sc, xj + 2 * xs + 96); a3 = sub_r1(a3, k, sc, xj + 3 * xs + 96);
    } else {
      const w0 = scaled(q, 0, sj), w1 = scaled(q, 1, sj + 2), w2 = scaled(q, 2, sj + 4), w3 = scaled(q, 3, sj + 6);
      // two sub-blocks at a time keep the widened codes in registers
      let l0 = i16x8.extend_low_i8x16_u(w0), h0 = i16x8.extend_high_i8x16_u(w0);
      let l1 = i16x8.extend_low_i8x16_u(w1), h1 = i16x8.extend_high_i8x16_u(w1);
      a0 = sub_simd(sub_simd(a0, l0, h0, xj), l1, h1, xj + 32);
      a1 = sub_simd(sub_simd(a1, l0, h0, xj + xs), l1, h1, xj + xs + 32);
      a2 = sub_simd(sub_simd(a2, l0, h0, xj + 2 * xs), l1, h1, xj + 2 * xs + 32);
      a3 = sub_simd(sub_simd(a3, l0, h0, xj + 3 * xs), l1, h1, xj + 3 * xs + 32);
      l0 = i16x8.extend_low_i8x16_u(w2); h0 = i16x8.extend_high_i8x16_u(w2);
      l1 = i16x8.extend_low_i8x16_u(w3); h1 = i16x8.extend_high_i8x16_u(w3);
      a0 = sub_simd(sub_simd(a0, l0, h0, xj + 64), l1, h1, xj + 96);
      a1 = sub_simd(sub_simd(a1, l0, h0, xj + xs + 64), l1, h1, xj + xs + 96);
      a2 = sub_simd(sub_simd(a2, l0, h0, xj + 2 * xs + 64), l1, h1, xj + 2 * xs + 96);
      a3 = sub_simd(sub_simd(a3, l0, h0, xj + 3 * xs + 64), l1, h1, xj + 3 * xs + 96);
    }
  }
  return hsum4_i32x4(a0, a1, a2, a3);
}

/** One row's code sums over one super-block for one token, spread over the 4 lanes. */
// @ts-ignore: decorator
@inline function row_tok1(w: usize, s: usize, x: usize): v128 {
  load<u8>(w, PREFETCH); // see PREFETCH: one touch per 64-byte line of codes
  let a = i32x4.splat(0);
  for (let c: usize = 0; c < 4; c++) {
    const q = v128.load(w + (c << 4));
    const jb = ((c >> 1) << 3) | (c & 1);
    const sj = s + jb;
    const xj = x + (jb << 4);
    if (ASC_FEATURE_RELAXED_SIMD) {
      a = sub_r1(a, codes2(q, 0), scale16(sj), xj);
      a = sub_r1(a, codes2(q, 1), scale16(sj + 2), xj + 32);
      a = sub_r1(a, codes2(q, 2), scale16(sj + 4), xj + 64);
      a = sub_r1(a, codes2(q, 3), scale16(sj + 6), xj + 96);
    } else {
      const w0 = scaled(q, 0, sj), w1 = scaled(q, 1, sj + 2), w2 = scaled(q, 2, sj + 4), w3 = scaled(q, 3, sj + 6);
      a = sub_simd(a, i16x8.extend_low_i8x16_u(w0), i16x8.extend_high_i8x16_u(w0), xj);
      a = sub_simd(a, i16x8.extend_low_i8x16_u(w1), i16x8.extend_high_i8x16_u(w1), xj + 32);
      a = sub_simd(a, i16x8.extend_low_i8x16_u(w2), i16x8.extend_high_i8x16_u(w2), xj + 64);
      a = sub_simd(a, i16x8.extend_low_i8x16_u(w3), i16x8.extend_high_i8x16_u(w3), xj + 96);
    }
  }
  return a;
}

/** A row's 16 mins (high nibbles of its scale bytes at s) as two i16x8: sub-blocks 0..7 and 8..15. */
// @ts-ignore: decorator
@inline function mins_lo(s: usize): v128 {
  return i16x8.extend_low_i8x16_u(v128.and(i16x8.shr_u(v128.load(s), 4), i8x16.splat(0x0f)));
}

// @ts-ignore: decorator
@inline function mins_hi(s: usize): v128 {
  return i16x8.extend_high_i8x16_u(v128.and(i16x8.shr_u(v128.load(s), 4), i8x16.splat(0x0f)));
}

/** Σ_j m_j·bsum_j for one token's 16 bsums at bs, spread over the 4 lanes. */
// @ts-ignore: decorator
@inline function msum(lo: v128, hi: v128, bs: usize): v128 {
  return i32x4.add(i32x4.dot_i16x8_s(lo, v128.load(bs)), i32x4.dot_i16x8_s(hi, v128.load(bs, 16)));
}

/**
 * y[t][r] for ntok activation vectors quantized by quantize_q8_k (codes kq, scales kd, sums ks); rows × cols weights
 * in the layout above (codes wq, scales ws), cols a multiple of 256.
 */
export function matmul_q2_k(wq: usize, ws: usize, kq: usize, kd: usize, ks: usize, y: usize, rows: i32, cols: i32, ntok: i32): void {
  const nsb = <usize>(cols >> 8);
  const groups = (rows + 3) >> 2;
  const rowBytes = <usize>rows << 2;
  const xs = <usize>cols; // activation bytes per token
  const bss = <usize>cols >> 3; // bsum bytes per token
  const dss = nsb << 2; // scale bytes per token
  for (let g = 0; g < groups; g++) {
    const wg = wq + <usize>g * nsb * 256;
    const sg = ws + <usize>g * nsb * 96;
    const r = g << 2;
    let t = 0;
    // prefill: a row's super-block, unpacked once, against 4 tokens
    for (; t + 4 <= ntok; t += 4) {
      const x = kq + <usize>t * xs;
      const d = kd + <usize>t * dss;
      const bs = ks + <usize>t * bss;
      for (let i = 0; i < 4 && r + i < rows; i++) {
        let acc = f32x4.splat(0);
        const ri = <usize>i;
        for (let b: usize = 0; b < nsb; b++) {
          const w = wg + (b << 8) + (ri << 6);
          const s = sg + b * 96;
          load<u8>(w, PREFETCH); // see PREFETCH
          const isum = row_tok4(w, s + (ri << 4), x + (b << 8), xs);
          const lo = mins_lo(s + (ri << 4)), hi = mins_hi(s + (ri << 4));
          const bsb = bs + (b << 5);
          const mn = hsum4_i32x4(msum(lo, hi, bsb), msum(lo, hi, bsb + bss), msum(lo, hi, bsb + 2 * bss), msum(lo, hi, bsb + 3 * bss));
          const db = d + (b << 2);
          let xd4 = f32x4.splat(load<f32>(db));
          xd4 = f32x4.replace_lane(xd4, 1, load<f32>(db + dss));
          xd4 = f32x4.replace_lane(xd4, 2, load<f32>(db + 2 * dss));
          xd4 = f32x4.replace_lane(xd4, 3, load<f32>(db + 3 * dss));
          const dd = f32x4.mul(f32x4.splat(load<f32>(s + 64 + (ri << 2))), xd4);
          const dm = f32x4.mul(f32x4.splat(load<f32>(s + 80 + (ri << 2))), xd4);
          acc = f32x4.add(acc, f32x4.sub(f32x4.mul(dd, f32x4.convert_i32x4_s(isum)), f32x4.mul(dm, f32x4.convert_i32x4_s(mn))));
        }
        const yr = y + <usize>t * rowBytes + (<usize>(r + i) << 2);
        store<f32>(yr, f32x4.extract_lane(acc, 0));
        store<f32>(yr + rowBytes, f32x4.extract_lane(acc, 1));
        store<f32>(yr + 2 * rowBytes, f32x4.extract_lane(acc, 2));
        store<f32>(yr + 3 * rowBytes, f32x4.extract_lane(acc, 3));
      }
    }
    // decode, and the prefill remainder: 4 rows, one token
    for (; t < ntok; t++) {
      let acc = f32x4.splat(0);
      const x = kq + <usize>t * xs;
      const d = kd + <usize>t * dss;
      const bs = ks + <usize>t * bss;
      for (let b: usize = 0; b < nsb; b++) {
        const w = wg + (b << 8);
        const s = sg + b * 96;
        load<u8>(s, PREFETCH / 2);
        const xb = x + (b << 8);
        const isum = hsum4_i32x4(row_tok1(w, s, xb), row_tok1(w + 64, s + 16, xb), row_tok1(w + 128, s + 32, xb), row_tok1(w + 192, s + 48, xb));
        const bsb = bs + (b << 5);
        const mn = hsum4_i32x4(
          msum(mins_lo(s), mins_hi(s), bsb), msum(mins_lo(s + 16), mins_hi(s + 16), bsb),
          msum(mins_lo(s + 32), mins_hi(s + 32), bsb), msum(mins_lo(s + 48), mins_hi(s + 48), bsb),
        );
        const xd = f32x4.splat(load<f32>(d + (b << 2)));
        const dd = f32x4.mul(v128.load(s + 64), xd);
        const dm = f32x4.mul(v128.load(s + 80), xd);
        acc = f32x4.add(acc, f32x4.sub(f32x4.mul(dd, f32x4.convert_i32x4_s(isum)), f32x4.mul(dm, f32x4.convert_i32x4_s(mn))));
      }
      store_rows4(y + <usize>t * rowBytes + (<usize>r << 2), acc, r, rows);
    }
  }
}

/** Row `row` as f32 (token embeddings): d·sc·q − dmin·m, in ggml's dequantize_row_q2_K's float operations. */
export function dequant_row_q2_k(wq: usize, ws: usize, row: i32, cols: i32, out: usize): void {
  const nsb = <usize>(cols >> 8);
  const lane = <usize>(row & 3);
  const g = <usize>(row >> 2);
  for (let b: usize = 0; b < nsb; b++) {
    const w = wq + (g * nsb + b) * 256 + (lane << 6);
    const s = ws + (g * nsb + b) * 96;
    const d = load<f32>(s + 64 + (lane << 2));
    const dmin = load<f32>(s + 80 + (lane << 2));
    const o = out + (b << 10);
    for (let j: usize = 0; j < 16; j++) {
      const sc = <u32>load<u8>(s + (lane << 4) + j);
      const dl = d * <f32>(sc & 0xf);
      const ml = dmin * <f32>(sc >> 4);
      for (let l: usize = 0; l < 16; l++) {
        const e = (j << 4) + l;
        const q = (<u32>load<u8>(w + ((e >> 7) << 5) + (e & 31)) >> <u32>(((e >> 5) & 3) << 1)) & 3;
        store<f32>(o + (e << 2), dl * <f32>q - ml);
      }
    }
  }
}
