// Q4_0: blocks of 32 4-bit codes with one scale, value = (code − 8)·d.
// Repacked layout: codes [rows][cols/2] keeping ggml's in-block order (byte j: element j in the low nibble, element
// j+16 in the high nibble, so one mask and one shift give elements 0..15 and 16..31), scales apart as f32 [rows][cols/32].
// Activations are Q8_0 (see quantize_q8_0).

import { hsum_i32x4 } from './common';

/** Integer dot of one Q4_0 block with 32 int8 activations; codes are shifted to −8..7 so no correction term is needed. */
// @ts-ignore: decorator
@inline function dot_block_q4(w: usize, x: usize): i32 {
  const b = v128.load(w);
  const eight = i8x16.splat(8);
  const lo = i8x16.sub(v128.and(b, i8x16.splat(0x0f)), eight);
  const hi = i8x16.sub(i8x16.shr_u(b, 4), eight);
  const x0 = v128.load(x);
  const x1 = v128.load(x, 16);
  const p0 = i16x8.add(i16x8.extmul_low_i8x16_s(lo, x0), i16x8.extmul_high_i8x16_s(lo, x0));
  const p1 = i16x8.add(i16x8.extmul_low_i8x16_s(hi, x1), i16x8.extmul_high_i8x16_s(hi, x1));
  return hsum_i32x4(i32x4.add(i32x4.extadd_pairwise_i16x8_s(p0), i32x4.extadd_pairwise_i16x8_s(p1)));
}

export function matmul_q4_0(wq: usize, wd: usize, xq: usize, xd: usize, y: usize, rows: i32, cols: i32, ntok: i32): void {
  const nb = cols >> 5;
  for (let r = 0; r < rows; r++) {
    const wqr = wq + ((<usize>r * cols) >> 1);
    const wdr = wd + ((<usize>r * nb) << 2);
    for (let t = 0; t < ntok; t++) {
      const xqt = xq + <usize>t * cols;
      const xdt = xd + ((<usize>t * nb) << 2);
      let acc: f32 = 0;
      for (let b = 0; b < nb; b++) {
        const sumi = dot_block_q4(wqr + (<usize>b << 4), xqt + (<usize>b << 5));
        acc += load<f32>(wdr + (<usize>b << 2)) * load<f32>(xdt + (<usize>b << 2)) * <f32>sumi;
      }
      store<f32>(y + ((<usize>t * rows + r) << 2), acc);
    }
  }
}

export function dequant_row_q4_0(wq: usize, wd: usize, row: i32, cols: i32, out: usize): void {
  const nb = cols >> 5;
  const q = wq + ((<usize>row * cols) >> 1);
  const d = wd + ((<usize>row * nb) << 2);
  for (let b = 0; b < nb; b++) {
    const s = load<f32>(d + (<usize>b << 2));
    const src = q + (<usize>b << 4);
    const o = out + ((<usize>b * 32) << 2);
    for (let j = 0; j < 16; j++) {
      const byte = <i32>load<u8>(src + j);
      store<f32>(o + (<usize>j << 2), <f32>((byte & 0x0f) - 8) * s);
      store<f32>(o + (<usize>(j + 16) << 2), <f32>((byte >> 4) - 8) * s);
    }
  }
}
