// F16 weights: row-major [rows][cols] of IEEE half bits, as stored in the GGUF. Converted to f32 in registers
// (wasm has no f16 arithmetic), so activations stay f32.

import { f16_to_f32, f16x8_high_to_f32x4, f16x8_low_to_f32x4, hsum_f32x4 } from './common';

/** y[t][r] = Σ_c w[r][c] · x[t][c]. */
export function matmul_f16(w: usize, x: usize, y: usize, rows: i32, cols: i32, ntok: i32): void {
  for (let r = 0; r < rows; r++) {
    const wr = w + ((<usize>r * cols) << 1);
    for (let t = 0; t < ntok; t++) {
      const xt = x + ((<usize>t * cols) << 2);
      let acc0 = f32x4.splat(0);
      let acc1 = f32x4.splat(0);
      let c = 0;
      for (; c + 8 <= cols; c += 8) {
        const h = v128.load(wr + (<usize>c << 1));
        const o = xt + (<usize>c << 2);
        acc0 = f32x4.add(acc0, f32x4.mul(f16x8_low_to_f32x4(h), v128.load(o)));
        acc1 = f32x4.add(acc1, f32x4.mul(f16x8_high_to_f32x4(h), v128.load(o, 16)));
      }
      let sum = hsum_f32x4(f32x4.add(acc0, acc1));
      for (; c < cols; c++) sum += f16_to_f32(load<u16>(wr + (<usize>c << 1))) * load<f32>(xt + (<usize>c << 2));
      store<f32>(y + ((<usize>t * rows + r) << 2), sum);
    }
  }
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
