/**
 * Weight-type rows (see weight-types.ts) of Q2_K, Q3_K and IQ4_XS: 256-value super-blocks, Q8_K activations. Rows in
 * groups of ROW_GROUP; per group and super-block the 4 rows' codes back to back in `data` and their scales unpacked
 * once to one byte per sub-block, with d (and dmin) widened to f32, in `scales`. The kernel files
 * (assembly/q2_k.ts, q3_k.ts, iq4_xs.ts) describe each layout and why.
 */
import { GGMLType } from '../gguf/types.js';
import { f16Table } from '../gguf/f16.js';
import { iq4xsScale, q3kScale } from '../gguf/quantize-k-low.js';
import { KVALUES_IQ4NL } from '../gguf/quantize-legacy.js';
import type { Matrix, WeightKernel } from './weight-types.js';
import { ROW_GROUP, roundUp } from './repack.js';

const QK_K = 256;

/** Super-blocks in the layout of a rows × cols matrix (its row groups, padding included). */
const superBlocks = (rows: number, cols: number) => (roundUp(rows, ROW_GROUP) / ROW_GROUP) * (cols / QK_K);

/**
 * Shared walk of the repacks: for each GGUF block (row r, super-block b) at src offset s, calls put with the group
 * super-block index i = group·nsb + b and the row's slot in its group.
 */
function eachBlock(m: Matrix, src: Uint8Array, r0: number, nr: number, blockBytes: number, put: (s: number, i: number, slot: number) => void): void {
  const nsb = m.cols / QK_K;
  let s = 0;
  for (let r = r0; r < r0 + nr; r++) {
    const group = Math.floor(r / ROW_GROUP), slot = r % ROW_GROUP;
    for (let b = 0; b < nsb; b++, s += blockBytes) put(s, group * nsb + b, slot);
  }
}

const f16At = (b: Uint8Array, o: number) => f16Table()[b[o] | (b[o + 1] << 8)];

let negativeMagnitudes: Uint16Array | undefined;
/**
 * For each pair of bytes of IQ4 indices (four indices, read as one little-endian u16): Σ |v| over their negative table
 * values v (the indices 0..7). A pair at a time halves the repack's lookups (a byte table made TinyLlama's IQ4_XS load
 * 1.3 s slower; this one ~0.5 s).
 */
function iq4NegativeMagnitudes(): Uint16Array {
  if (!negativeMagnitudes) {
    const neg = (i: number) => (KVALUES_IQ4NL[i] < 0 ? -KVALUES_IQ4NL[i] : 0);
    const byte = Array.from({ length: 256 }, (_, b) => neg(b & 15) + neg(b >> 4));
    negativeMagnitudes = new Uint16Array(65536);
    for (let p = 0; p < 65536; p++) negativeMagnitudes[p] = byte[p & 255] + byte[p >> 8];
  }
  return negativeMagnitudes;
}

export const K_LOW_WEIGHT_TYPES: WeightKernel[] = [
  {
    // per group super-block: codes 16 sub-blocks × 16 bytes (4 rows × 4 values per byte group, see assembly/q2_k.ts);
    // scales d f32 [4], dmin f32 [4], then 16 × 4 scale/min bytes [sub-block][row] (96 bytes)
    type: GGMLType.Q2_K,
    input: 'q8_k',
    layout: (rows, cols) => ({ data: superBlocks(rows, cols) * 256, scales: superBlocks(rows, cols) * 96 }),
    repack(m, heap, src, r0, nr) {
      const f = new Float32Array(heap.buffer, m.scales, superBlocks(m.rows, m.cols) * 24);
      const u32 = new Uint32Array(heap.buffer, m.data, superBlocks(m.rows, m.cols) * 64);
      const qs = new Int32Array(16);
      eachBlock(m, src, r0, nr, 84, (s, i, slot) => {
        // ggml: element 128·half + 32p + l sits at bits 2p of qs[32·half + l], so sub-block j (16 values) reads bytes
        // 16·(j % 2).. of half j / 8 at shift 2·((j / 2) % 4). Four bytes at a time (SWAR on u32 words).
        for (let k = 0; k < 16; k++) qs[k] = src[s + 16 + 4 * k] | (src[s + 17 + 4 * k] << 8) | (src[s + 18 + 4 * k] << 16) | (src[s + 19 + 4 * k] << 24);
        for (let j = 0; j < 16; j++) {
          const base = 8 * (j >> 3) + 4 * (j & 1), shift = 2 * ((j >> 1) & 3);
          let v = 0;
          for (let k = 0; k < 4; k++) v |= ((qs[base + k] >>> shift) & 0x03030303) << (2 * k);
          u32[i * 64 + 4 * j + slot] = v;
          heap[m.scales + i * 96 + 32 + 4 * j + slot] = src[s + j];
        }
        f[i * 24 + slot] = f16At(src, s + 80);
        f[i * 24 + 4 + slot] = f16At(src, s + 82);
      });
    },
    matmul: (k, m, a, y, ntok) => k.matmul_q2_k(m.data, m.scales, a.q8_k.q, a.q8_k.d, a.q8_k.s, y, m.rows, m.cols, ntok),
    dequantRow: (k, m, row, out) => k.dequant_row_q2_k(m.data, m.scales, row, m.cols, out),
  },
  {
    // per group super-block: codes 8 pairs of sub-blocks × 48 bytes (A, B, C: 4 rows × 4 values per vector, see
    // assembly/q3_k.ts); scales d f32 [4], then 16 × 4 signed bytes [sub-block][row] (80 bytes)
    type: GGMLType.Q3_K,
    input: 'q8_k',
    layout: (rows, cols) => ({ data: superBlocks(rows, cols) * 384, scales: superBlocks(rows, cols) * 80 }),
    repack(m, heap, src, r0, nr) {
      const f = new Float32Array(heap.buffer, m.scales, superBlocks(m.rows, m.cols) * 20);
      const u32 = new Uint32Array(heap.buffer, m.data, superBlocks(m.rows, m.cols) * 96);
      const hm = new Int32Array(8), qs = new Int32Array(16), c = new Int32Array(8);
      eachBlock(m, src, r0, nr, 110, (s, i, slot) => {
        // ggml: element 128·half + 32k + l takes bits 2k of qs[32·half + l] and bit 4·half + k of hmask[l], so a pair
        // of sub-blocks (p = 4·half + k) reads one shift of each. Four bytes at a time (SWAR on u32 words): code vector
        // j of the pair is this row's 4 codes of values 4j..4j+3.
        const word = (o: number) => src[o] | (src[o + 1] << 8) | (src[o + 2] << 16) | (src[o + 3] << 24);
        for (let j = 0; j < 8; j++) {
          hm[j] = word(s + 4 * j);
          qs[j] = word(s + 32 + 4 * j);
          qs[8 + j] = word(s + 64 + 4 * j);
        }
        for (let p = 0, o = i * 96 + slot; p < 8; p++, o += 12) {
          const half = p >> 2, k = p & 3;
          for (let j = 0; j < 8; j++) c[j] = ((qs[8 * half + j] >>> (2 * k)) & 0x03030303) | (((hm[j] >>> p) & 0x01010101) << 2);
          u32[o] = c[0] | (c[1] << 3) | ((c[6] & 0x03030303) << 6);
          u32[o + 4] = c[2] | (c[3] << 3) | ((c[7] & 0x03030303) << 6);
          u32[o + 8] = c[4] | (c[5] << 3) | (((c[6] >>> 2) & 0x01010101) << 6) | (((c[7] >>> 2) & 0x01010101) << 7);
        }
        for (let j = 0; j < 16; j++) heap[m.scales + i * 80 + 16 + 4 * j + slot] = q3kScale(src, s + 96, j) & 0xff;
        f[i * 20 + slot] = f16At(src, s + 108);
      });
    },
    matmul: (k, m, a, y, ntok) => k.matmul_q3_k(m.data, m.scales, a.q8_k.q, a.q8_k.d, a.q8_k.s, y, m.rows, m.cols, ntok),
    dequantRow: (k, m, row, out) => k.dequant_row_q3_k(m.data, m.scales, row, m.cols, out),
  },
  {
    // per group super-block: indices 4 × 128 bytes; scales 4 × 8 signed bytes, d f32 [4], corr i32 [4] (64 bytes).
    // corr = Σ_ib (ls_ib − 32)·Σ_{v<0} |v| is the weights' constant of the relaxed kernel (assembly/iq4_xs.ts).
    type: GGMLType.IQ4_XS,
    input: 'q8_k',
    layout: (rows, cols) => ({ data: superBlocks(rows, cols) * 512, scales: superBlocks(rows, cols) * 64 }),
    repack(m, heap, src, r0, nr) {
      const f = new Float32Array(heap.buffer, m.scales, superBlocks(m.rows, m.cols) * 16);
      const corr = new Int32Array(heap.buffer, m.scales, superBlocks(m.rows, m.cols) * 16);
      const negOfPair = iq4NegativeMagnitudes();
      // the blocks' index bytes as u16 pairs (every block's indices start at an even offset: 136·k + 8)
      const even = src.byteOffset % 2 === 0 ? src : src.slice();
      const pairs = new Uint16Array(even.buffer, even.byteOffset, even.length >> 1);
      eachBlock(m, src, r0, nr, 136, (s, i, slot) => {
        heap.set(src.subarray(s + 8, s + 136), m.data + i * 512 + slot * 128);
        let c = 0;
        for (let ib = 0; ib < 8; ib++) {
          const ls = iq4xsScale(src, s + 2, ib);
          heap[m.scales + i * 64 + slot * 8 + ib] = ls & 0xff;
          let neg = 0;
          for (let j = (s + 8 + ib * 16) >> 1, end = j + 8; j < end; j++) neg += negOfPair[pairs[j]];
          c += ls * neg;
        }
        f[i * 16 + 8 + slot] = f16At(src, s);
        corr[i * 16 + 12 + slot] = c;
      });
    },
    matmul: (k, m, a, y, ntok) => k.matmul_iq4_xs(m.data, m.scales, a.q8_k.q, a.q8_k.d, y, m.rows, m.cols, ntok),
    dequantRow: (k, m, row, out) => k.dequant_row_iq4_xs(m.data, m.scales, row, m.cols, out),
  },
];
