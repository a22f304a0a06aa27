// F32 weights: row-major [rows][cols], used as stored in the GGUF.

import { hsum_f32x4 } from './common';

/** y[t][r] = Σ_c w[r][c] · x[t][c] for ntok tokens. */
export function matmul_f32(w: usize, x: usize, y: usize, rows: i32, cols: i32, ntok: i32): void {
  const rowBytes = <usize>cols << 2;
  for (let r = 0; r < rows; r++) {
    const wr = w + <usize>r * rowBytes;
    for (let t = 0; t < ntok; t++) {
      const xt = x + <usize>t * rowBytes;
      let acc0 = f32x4.splat(0);
      let acc1 = f32x4.splat(0);
      let c = 0;
      for (; c + 8 <= cols; c += 8) {
        const o = <usize>c << 2;
        acc0 = f32x4.add(acc0, f32x4.mul(v128.load(wr + o), v128.load(xt + o)));
        acc1 = f32x4.add(acc1, f32x4.mul(v128.load(wr + o, 16), v128.load(xt + o, 16)));
      }
      let sum = hsum_f32x4(f32x4.add(acc0, acc1));
      for (; c < cols; c++) sum += load<f32>(wr + (<usize>c << 2)) * load<f32>(xt + (<usize>c << 2));
      store<f32>(y + ((<usize>t * rows + r) << 2), sum);
    }
  }
}

export function dequant_row_f32(w: usize, row: i32, cols: i32, out: usize): void {
  memory.copy(out, w + ((<usize>row * cols) << 2), <usize>cols << 2);
}
