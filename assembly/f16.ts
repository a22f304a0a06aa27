// F16 weights: row-major [rows][cols] of IEEE half bits, as stored in the GGUF. Converted to f32 in registers
// (wasm has no f16 arithmetic), so activations stay f32. With several tokens (prefill), each converted weight vector
// serves 4 tokens, so the conversion is paid once per 4 tokens instead of once per token.

import { f16_to_f32, f16x8_high_to_f32x4, f16x8_low_to_f32x4, hsum_f32x4 } from './common';

/** y[t][r] = Σ_c w[r][c] · x[t][c]. */
export function matmul_f16(w: usize, x: usize, y: usize, rows: i32, cols: i32, ntok: i32): void {
  const body = cols & ~7;
  const xStride = <usize>cols << 2;
  for (let r = 0; r < rows; r++) {
    const wr = w + ((<usize>r * cols) << 1);
    let t = 0;
    for (; t + 4 <= ntok; t += 4) {
      const x0 = x + <usize>t * xStride;
      const x1 = x0 + xStride;
      const x2 = x1 + xStride;
      const x3 = x2 + xStride;
      let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
      for (let c = 0; c < body; c += 8) {
        const h = v128.load(wr + (<usize>c << 1));
        const lo = f16x8_low_to_f32x4(h);
        const hi = f16x8_high_to_f32x4(h);
        const o = <usize>c << 2;
        a0 = f32x4.add(a0, f32x4.add(f32x4.mul(lo, v128.load(x0 + o)), f32x4.mul(hi, v128.load(x0 + o, 16))));
        a1 = f32x4.add(a1, f32x4.add(f32x4.mul(lo, v128.load(x1 + o)), f32x4.mul(hi, v128.load(x1 + o, 16))));
        a2 = f32x4.add(a2, f32x4.add(f32x4.mul(lo, v128.load(x2 + o)), f32x4.mul(hi, v128.load(x2 + o, 16))));
        a3 = f32x4.add(a3, f32x4.add(f32x4.mul(lo, v128.load(x3 + o)), f32x4.mul(hi, v128.load(x3 + o, 16))));
      }
      store<f32>(y + ((<usize>t * rows + r) << 2), hsum_f32x4(a0) + tail(wr, x0, body, cols));
      store<f32>(y + ((<usize>(t + 1) * rows + r) << 2), hsum_f32x4(a1) + tail(wr, x1, body, cols));
      store<f32>(y + ((<usize>(t + 2) * rows + r) << 2), hsum_f32x4(a2) + tail(wr, x2, body, cols));
      store<f32>(y + ((<usize>(t + 3) * rows + r) << 2), hsum_f32x4(a3) + tail(wr, x3, body, cols));
    }
    for (; t < ntok; t++) {
      const xt = x + <usize>t * xStride;
      let a = f32x4.splat(0);
      for (let c = 0; c < body; c += 8) {
        const h = v128.load(wr + (<usize>c << 1));
        const o = <usize>c << 2;
        a = f32x4.add(a, f32x4.add(f32x4.mul(f16x8_low_to_f32x4(h), v128.load(xt + o)), f32x4.mul(f16x8_high_to_f32x4(h), v128.load(xt + o, 16))));
      }
      store<f32>(y + ((<usize>t * rows + r) << 2), hsum_f32x4(a) + tail(wr, xt, body, cols));
    }
  }
}

/** The columns past the last whole 8, scalar (only odd shapes have any). */
// @ts-ignore: decorator
@inline function tail(wr: usize, xt: usize, from: i32, cols: i32): f32 {
  let s: f32 = 0;
  for (let c = from; c < cols; c++) s += f16_to_f32(load<u16>(wr + (<usize>c << 1))) * load<f32>(xt + (<usize>c << 2));
  return s;
}

export function dequant_row_f16(w: usize, row: i32, cols: i32, out: usize): void {
  const wr = w + ((<usize>row * cols) << 1);
  let c = 0;
  for (; c + 8 <= cols; c += 8) {
    const h = v128.load(wr + (<usize>c << 1));
    v128.store(out + (<usize>c << 2), f16x8_low_to_f32x4(h));
    v128.store(out + (<usize>c << 2), f16x8_high_to_f32x4(h), 16);
  }
  for (; c < cols; c++) store<f32>(out + (<usize>c << 2), f16_to_f32(load<u16>(wr + (<usize>c << 1))));
}
