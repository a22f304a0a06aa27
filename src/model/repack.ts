/** Helpers the weight-type rows share (kept apart from weight-types.ts, which imports the rows' files). */
import { f16ToF32 } from '../gguf/f16.js';
import type { Matrix } from './weight-types.js';

/** Rows interleaved per group in the quantized kernel layouts (assembly/q4_0.ts says why). */
export const ROW_GROUP = 4;
export const roundUp = (n: number, k: number) => Math.ceil(n / k) * k;

/**
 * The common repack of the 32-blocks: row r, block b goes to group r/4, slot r%4; its codes (the block after its f16
 * scale) land at ((group·nb + b)·4 + slot)·codeBytes and its scale, widened to f32, at the same index of the scales.
 * Padding rows are never written, so they keep scale 0.
 */
export function repackBlocks32(m: Matrix, heap: Uint8Array, src: Uint8Array, r0: number, nr: number, blockBytes: number): void {
  const nb = m.cols / 32;
  const codeBytes = blockBytes - 2;
  const scales = new Float32Array(heap.buffer, m.scales, roundUp(m.rows, ROW_GROUP) * nb);
  let s = 0;
  for (let r = r0; r < r0 + nr; r++) {
    const group = Math.floor(r / ROW_GROUP), slot = r % ROW_GROUP;
    for (let b = 0; b < nb; b++) {
      const i = (group * nb + b) * ROW_GROUP + slot;
      scales[i] = f16ToF32(src[s] | (src[s + 1] << 8));
      heap.set(src.subarray(s + 2, s + blockBytes), m.data + i * codeBytes);
      s += blockBytes;
    }
  }
}
