/**
 * Weight-type rows (see weight-types.ts) of the 32-blocks beyond Q8_0/Q4_0: Q4_1, Q5_0, Q5_1, IQ4_NL; and BF16.
 * The quantized ones read Q8_0 activations (Q4_1/Q5_1 also their block sums, llama.cpp's Q8_1), BF16 reads f32.
 * Their layouts are Q4_0's idea (rows in groups of ROW_GROUP, a group's codes back to back per block, f16 scales widened
 * to f32 apart); the kernel files in assembly/ describe each.
 */
import { GGMLType } from '../gguf/types.js';
import { f16Table } from '../gguf/f16.js';
import type { Matrix, WeightKernel } from './weight-types.js';
import { repackBlocks32, ROW_GROUP, roundUp } from './repack.js';

/** Blocks (of 32) in one row group's slice of the layout. */
const groupBlocks = (rows: number, cols: number) => (roundUp(rows, ROW_GROUP) / ROW_GROUP) * (cols / 32);

/**
 * The repack of the 32-blocks with an f16 scale d, optionally an f16 minimum m, optionally 4 bytes of fifth bits qh,
 * then 16 nibble bytes (ggml's block_q4_1, block_q5_0, block_q5_1). Row r, block b lands in group g = r/4, slot r%4,
 * group block i = g·nb + b (assembly/q4_1.ts and q5_0.ts say why):
 * - 4-bit: the 16 nibble bytes as they are, at data + i·64 + slot·16;
 * - 5-bit: at data + i·80 + slot·16, byte j = code j | (code j+16 & 7) << 5; at data + i·80 + 64 + j, bits
 *   2·slot..2·slot+1 = code j+16 >> 3 (a byte shared by the group's 4 rows);
 * - d at scales[i·S + slot], m at scales[i·S + 4 + slot] (S = 8 with a minimum, else 4), as f32.
 * A row's bits in a shared byte are cleared before they are set, so repacking in chunks that split a group works.
 */
function repackMinHigh(m: Matrix, heap: Uint8Array, src: Uint8Array, r0: number, nr: number, hasMin: boolean, hasHigh: boolean): void {
  const nb = m.cols / 32;
  const t = f16Table();
  const S = hasMin ? 8 : 4;
  const codeBytes = hasHigh ? 80 : 64;
  const blockBytes = 2 + (hasMin ? 2 : 0) + (hasHigh ? 4 : 0) + 16;
  const qs = blockBytes - 16;
  const scales = new Float32Array(heap.buffer, m.scales, groupBlocks(m.rows, m.cols) * S);
  let s = 0;
  for (let r = r0; r < r0 + nr; r++) {
    const group = Math.floor(r / ROW_GROUP), slot = r % ROW_GROUP;
    for (let b = 0; b < nb; b++, s += blockBytes) {
      const i = group * nb + b;
      scales[i * S + slot] = t[src[s] | (src[s + 1] << 8)];
      if (hasMin) scales[i * S + 4 + slot] = t[src[s + 2] | (src[s + 3] << 8)];
      const base = m.data + i * codeBytes;
      if (!hasHigh) {
        heap.set(src.subarray(s + qs, s + blockBytes), base + slot * 16);
        continue;
      }
      const h = s + (hasMin ? 4 : 2);
      const qh = (src[h] | (src[h + 1] << 8) | (src[h + 2] << 16) | (src[h + 3] << 24)) >>> 0;
      const keep = ~(3 << (2 * slot)) & 0xff;
      for (let j = 0; j < 16; j++) {
        const lo = (src[s + qs + j] & 0x0f) | (((qh >>> j) & 1) << 4);
        const hi = (src[s + qs + j] >>> 4) | (((qh >>> (j + 16)) & 1) << 4);
        heap[base + slot * 16 + j] = lo | ((hi & 7) << 5);
        heap[base + 64 + j] = (heap[base + 64 + j] & keep) | ((hi >>> 3) << (2 * slot));
      }
    }
  }
}

export const LEGACY_WEIGHT_TYPES: WeightKernel[] = [
  {
    type: GGMLType.Q4_1,
    input: 'q8_0',
    layout: (rows, cols) => ({ data: groupBlocks(rows, cols) * 64, scales: groupBlocks(rows, cols) * 32 }),
    repack: (m, heap, src, r0, nr) => repackMinHigh(m, heap, src, r0, nr, true, false),
    matmul: (k, m, a, y, ntok) => k.matmul_q4_1(m.data, m.scales, a.q8_0.q, a.q8_0.d, a.q8_0.s, y, m.rows, m.cols, ntok),
    dequantRow: (k, m, row, out) => k.dequant_row_q4_1(m.data, m.scales, row, m.cols, out),
  },
  {
    type: GGMLType.Q5_0,
    input: 'q8_0',
    layout: (rows, cols) => ({ data: groupBlocks(rows, cols) * 80, scales: groupBlocks(rows, cols) * 16 }),
    repack: (m, heap, src, r0, nr) => repackMinHigh(m, heap, src, r0, nr, false, true),
    matmul: (k, m, a, y, ntok) => k.matmul_q5_0(m.data, m.scales, a.q8_0.q, a.q8_0.d, a.q8_0.s, y, m.rows, m.cols, ntok),
    dequantRow: (k, m, row, out) => k.dequant_row_q5_0(m.data, m.scales, row, m.cols, out),
  },
  {
    type: GGMLType.Q5_1,
    input: 'q8_0',
    layout: (rows, cols) => ({ data: groupBlocks(rows, cols) * 80, scales: groupBlocks(rows, cols) * 32 }),
    repack: (m, heap, src, r0, nr) => repackMinHigh(m, heap, src, r0, nr, true, true),
    matmul: (k, m, a, y, ntok) => k.matmul_q5_1(m.data, m.scales, a.q8_0.q, a.q8_0.d, a.q8_0.s, y, m.rows, m.cols, ntok),
    dequantRow: (k, m, row, out) => k.dequant_row_q5_1(m.data, m.scales, row, m.cols, out),
  },
  {
    type: GGMLType.IQ4_NL,
    input: 'q8_0',
    // Q4_0's layout: the same block shape (f16 scale, 16 bytes of nibbles)
    layout: (rows, cols) => ({ data: groupBlocks(rows, cols) * 64, scales: groupBlocks(rows, cols) * 16 }),
    repack: (m, heap, src, r0, nr) => repackBlocks32(m, heap, src, r0, nr, 18),
    matmul: (k, m, a, y, ntok) => k.matmul_iq4_nl(m.data, m.scales, a.q8_0.q, a.q8_0.d, a.q8_0.s, y, m.rows, m.cols, ntok),
    dequantRow: (k, m, row, out) => k.dequant_row_iq4_nl(m.data, m.scales, row, m.cols, out),
  },
  {
    type: GGMLType.BF16,
    input: 'f32',
    layout: (rows, cols) => ({ data: rows * cols * 2, scales: 0 }),
    repack: (m, heap, src, r0) => heap.set(src, m.data + r0 * m.cols * 2),
    matmul: (k, m, a, y, ntok) => k.matmul_bf16(m.data, a.x, y, m.rows, m.cols, ntok),
    dequantRow: (k, m, row, out) => k.dequant_row_bf16(m.data, row, m.cols, out),
  },
];
