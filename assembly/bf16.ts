// BF16 weights: row-major [rows][cols] of bfloat16 bits (the top half of an f32), as stored in the GGUF. Widened to f32
// in registers, which is exact and takes one instruction per 4 values (an interleave with zero: i16x8 unpack), so the
// activations stay f32, as for F16. llama.cpp rounds the activations to bf16 for its bf16 dot; keeping them f32 costs
// nothing, is closer to the exact product and keeps BF16 the same arithmetic as the F16 and F32 kernels (see
// docs/kernels.md for the measured effect on agreement with llama.cpp). With several tokens (prefill), each widened
// weight vector serves 4 tokens.
//
// Every output is the same lane-wise f32 sum over columns in order, then hsum_f32x4 and the scalar tail, so decode,
// prefill and both builds agree bit for bit.

import { hsum_f32x4, PREFETCH } from './common';

/** Elements 0..3 and 4..7 of 8 bf16 values as f32x4: each value moves to the top half of a zeroed 32-bit lane. */
// @ts-ignore: decorator
@inline function bf16_lo(h: v128): v128 {
  return i8x16.shuffle(f32x4.splat(0), h, 0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23);
}

// @ts-ignore: decorator
@inline function bf16_hi(h: v128): v128 {
  return i8x16.shuffle(f32x4.splat(0), h, 8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31);
}

// @ts-ignore: decorator
@inline function bf16_to_f32(h: u32): f32 {
  return reinterpret<f32>(h << 16);
}

/** a + (w·x over 8 columns), 8 bf16 weights h against 8 f32 at xc: the one step every path repeats. */
// @ts-ignore: decorator
@inline function step(a: v128, lo: v128, hi: v128, xc: usize): v128 {
  return f32x4.add(a, f32x4.add(f32x4.mul(lo, v128.load(xc)), f32x4.mul(hi, v128.load(xc, 16))));
}

/**
 * y[t][r] = Σ_c w[r][c] · x[t][c]. Each (row, token) sums in one f32x4 accumulator over the columns in order, whatever
 * the path; what changes is how many independent sums run at once, so the add latency of one sum is hidden: 1 row × 4
 * tokens in prefill, 4 rows × 1 token in decode.
 */
export function matmul_bf16(w: usize, x: usize, y: usize, rows: i32, cols: i32, ntok: i32): void {
  const body = cols & ~7;
  const xStride = <usize>cols << 2;
  const wStride = <usize>cols << 1;
  const rowBytes = <usize>rows << 2;
  // prefill: 4 tokens per widened weight vector, row by row, so a row stays in L1 for all its token groups
  const groups = ntok >> 2;
  for (let r = 0; r < rows; r++) {
    const wr = w + <usize>r * wStride;
    for (let g = 0; g < groups; g++) {
      const x0 = x + <usize>(g << 2) * xStride;
      const x1 = x0 + xStride;
      const x2 = x1 + xStride;
      const x3 = x2 + xStride;
      let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
      for (let c = 0; c < body; c += 8) {
        const wc = wr + (<usize>c << 1);
        load<u8>(wc, PREFETCH); // see PREFETCH
        const h = v128.load(wc);
        const lo = bf16_lo(h), hi = bf16_hi(h);
        const o = <usize>c << 2;
        a0 = step(a0, lo, hi, x0 + o);
        a1 = step(a1, lo, hi, x1 + o);
        a2 = step(a2, lo, hi, x2 + o);
        a3 = step(a3, lo, hi, x3 + o);
      }
      const yr = y + <usize>(g << 2) * rowBytes + (<usize>r << 2);
      store<f32>(yr, hsum_f32x4(a0) + tail(wr, x0, body, cols));
      store<f32>(yr + rowBytes, hsum_f32x4(a1) + tail(wr, x1, body, cols));
      store<f32>(yr + 2 * rowBytes, hsum_f32x4(a2) + tail(wr, x2, body, cols));
      store<f32>(yr + 3 * rowBytes, hsum_f32x4(a3) + tail(wr, x3, body, cols));
    }
  }
  let t = groups << 2;
  // decode, and the prefill remainder: one token, 4 rows at a time
  for (; t < ntok; t++) {
    const xt = x + <usize>t * xStride;
    const yt = y + <usize>t * rowBytes;
    let r = 0;
    for (; r + 4 <= rows; r += 4) {
      const w0 = w + <usize>r * wStride;
      const w1 = w0 + wStride;
      const w2 = w1 + wStride;
      const w3 = w2 + wStride;
      let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
      for (let c = 0; c < body; c += 8) {
        const wc = <usize>c << 1;
        load<u8>(w0 + wc, PREFETCH); // see PREFETCH
        load<u8>(w1 + wc, PREFETCH);
        load<u8>(w2 + wc, PREFETCH);
        load<u8>(w3 + wc, PREFETCH);
        const xc = xt + (<usize>c << 2);
        const h0 = v128.load(w0 + wc), h1 = v128.load(w1 + wc), h2 = v128.load(w2 + wc), h3 = v128.load(w3 + wc);
        a0 = step(a0, bf16_lo(h0), bf16_hi(h0), xc);
        a1 = step(a1, bf16_lo(h1), bf16_hi(h1), xc);
        a2 = step(a2, bf16_lo(h2), bf16_hi(h2), xc);
        a3 = step(a3, bf16_lo(h3), bf16_hi(h3), xc);
      }
      const yr = yt + (<usize>r << 2);
      store<f32>(yr, hsum_f32x4(a0) + tail(w0, xt, body, cols));
      store<f32>(yr, hsum_f32x4(a1) + tail(w1, xt, body, cols), 4);
      store<f32>(yr, hsum_f32x4(a2) + tail(w2, xt, body, cols), 8);
      store<f32>(yr, hsum_f32x4(a3) + tail(w3, xt, body, cols), 12);
    }
    for (; r < rows; r++) {
      const wr = w + <usize>r * wStride;
      let a = f32x4.splat(0);
      for (let c = 0; c < body; c += 8) {
        const wc = wr + (<usize>c << 1);
        const h = v128.load(wc);
        a = step(a, bf16_lo(h), bf16_hi(h), xt + (<usize>c << 2));
      }
      store<f32>(yt + (<usize>r << 2), hsum_f32x4(a) + tail(wr, xt, body, cols));
    }
  }
}

/** The columns past the last whole 8, scalar (only odd shapes have any). */
// @ts-ignore: decorator
@inline function tail(wr: usize, xt: usize, from: i32, cols: i32): f32 {
  let s: f32 = 0;
  for (let c = from; c < cols; c++) s += bf16_to_f32(load<u16>(wr + (<usize>c << 1))) * load<f32>(xt + (<usize>c << 2));
  return s;
}

export function dequant_row_bf16(w: usize, row: i32, cols: i32, out: usize): void {
  const wr = w + ((<usize>row * cols) << 1);
  let c = 0;
  for (; c + 8 <= cols; c += 8) {
    const h = v128.load(wr + (<usize>c << 1));
    v128.store(out + (<usize>c << 2), bf16_lo(h));
    v128.store(out + (<usize>c << 2), bf16_hi(h), 16);
  }
  for (; c < cols; c++) store<f32>(out + (<usize>c << 2), bf16_to_f32(load<u16>(wr + (<usize>c << 1))));
}
