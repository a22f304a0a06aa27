/**
 * Weight-type rows (see weight-types.ts) of Q4_K, Q5_K and Q6_K: 256-value super-blocks, Q8_K activations.
 *
 * The repacks below write the layouts assembly/q4_k.ts, q5_k.ts and q6_k.ts describe: rows in groups of ROW_GROUP, per
 * group and super-block the rows' codes interleaved as the kernel reads them, the 6-bit packed scales and mins unpacked
 * once into bytes, d and dmin widened to f32. Padding rows are never written, so they keep zero codes and scales.
 */
import { GGMLType } from '../gguf/types.js';
import { f16Table } from '../gguf/f16.js';
import { Q4_K_BLOCK_BYTES, Q5_K_BLOCK_BYTES, Q6_K_BLOCK_BYTES, QK_K, scaleMinK4 } from '../gguf/quantize-k.js';
import { ROW_GROUP, roundUp } from './repack.js';
import type { Matrix, WeightKernel } from './weight-types.js';

/** Bytes per group of ROW_GROUP rows and super-block in the kernel layouts: [codes, scales]. */
const LAYOUT = {
  [GGMLType.Q4_K]: [512, 96],
  [GGMLType.Q5_K]: [640, 96],
  [GGMLType.Q6_K]: [768, 80],
} as const;

type KType = keyof typeof LAYOUT;

function layout(type: KType) {
  return (rows: number, cols: number) => {
    const blocks = (roundUp(rows, ROW_GROUP) / ROW_GROUP) * (cols / QK_K);
    return { data: blocks * LAYOUT[type][0], scales: blocks * LAYOUT[type][1] };
  };
}

/** Where row r's super-block b goes: its group's code and scale offsets, and its slot (0..3) in the group. */
function place(m: Matrix, type: KType, r: number, b: number) {
  const nsb = m.cols / QK_K;
  const i = Math.floor(r / ROW_GROUP) * nsb + b;
  return { codes: m.data + i * LAYOUT[type][0], scales: m.scales + i * LAYOUT[type][1], slot: r % ROW_GROUP };
}

/**
 * Q4_K/Q5_K blocks' d, dmin, scales and mins: d and dmin as f32 at scales + 4·slot and + 16 + 4·slot, sub-block j's
 * scale at + 32 + 4j + slot, its min at + 64 + 8·(j/2) + 2·slot + j%2 (pairs of sub-blocks side by side per row).
 */
function scaleMinBlock(heap: Uint8Array, f32: Float32Array, src: Uint8Array, s: number, at: { scales: number; slot: number }): void {
  const t = f16Table();
  f32[(at.scales >> 2) + at.slot] = t[src[s] | (src[s + 1] << 8)];
  f32[(at.scales >> 2) + 4 + at.slot] = t[src[s + 2] | (src[s + 3] << 8)];
  for (let j = 0; j < 8; j++) {
    const [sc, mn] = scaleMinK4(j, src, s + 4);
    heap[at.scales + 32 + 4 * j + at.slot] = sc;
    heap[at.scales + 64 + 8 * (j >> 1) + 2 * at.slot + (j & 1)] = mn;
  }
}

function repackQ4_K(m: Matrix, heap: Uint8Array, src: Uint8Array, r0: number, nr: number): void {
  const nsb = m.cols / QK_K;
  const f32 = new Float32Array(heap.buffer, heap.byteOffset);
  for (let r = r0, s = 0; r < r0 + nr; r++) {
    for (let b = 0; b < nsb; b++, s += Q4_K_BLOCK_BYTES) {
      const at = place(m, GGMLType.Q4_K, r, b);
      scaleMinBlock(heap, f32, src, s, at);
      // ggml: byte 32c + l holds element 64c + l (low nibble) and 64c + 32 + l (high): sub-block 2c low, 2c + 1 high
      for (let j = 0; j < 8; j++) {
        const q = s + 16 + 32 * (j >> 1), shift = (j & 1) * 4;
        const o = at.codes + 64 * j + 16 * at.slot;
        for (let l = 0; l < 16; l++) heap[o + l] = ((src[q + l] >> shift) & 0xf) | (((src[q + 16 + l] >> shift) & 0xf) << 4);
      }
    }
  }
}

function repackQ5_K(m: Matrix, heap: Uint8Array, src: Uint8Array, r0: number, nr: number): void {
  const nsb = m.cols / QK_K;
  const f32 = new Float32Array(heap.buffer, heap.byteOffset);
  for (let r = r0, s = 0; r < r0 + nr; r++) {
    for (let b = 0; b < nsb; b++, s += Q5_K_BLOCK_BYTES) {
      const at = place(m, GGMLType.Q5_K, r, b);
      scaleMinBlock(heap, f32, src, s, at);
      // element 32j + l: nibble (j odd: high) of ql[32·(j/2) + l], fifth bit j of qh[l]
      for (let j = 0; j < 8; j++) {
        const q = s + 48 + 32 * (j >> 1), shift = (j & 1) * 4;
        const code = (l: number) => ((src[q + l] >> shift) & 0xf) | (((src[s + 16 + l] >> j) & 1) << 4);
        const o = at.codes + 80 * j;
        for (let l = 0; l < 16; l++) {
          const lo = code(l), hi = code(l + 16);
          heap[o + 16 * at.slot + l] = lo | ((hi & 7) << 5);
          heap[o + 64 + l] |= (hi >> 3) << (2 * at.slot);
        }
      }
    }
  }
}

function repackQ6_K(m: Matrix, heap: Uint8Array, src: Uint8Array, r0: number, nr: number): void {
  const nsb = m.cols / QK_K;
  const f32 = new Float32Array(heap.buffer, heap.byteOffset);
  const t = f16Table();
  const u32 = new Uint32Array(heap.buffer, heap.byteOffset, heap.byteLength >> 2);
  const q = new Uint8Array(QK_K); // one super-block's codes, 0..63
  for (let r = r0, s = 0; r < r0 + nr; r++) {
    for (let b = 0; b < nsb; b++, s += Q6_K_BLOCK_BYTES) {
      const at = place(m, GGMLType.Q6_K, r, b);
      f32[(at.scales >> 2) + at.slot] = t[src[s + 208] | (src[s + 209] << 8)];
      for (let j = 0; j < 16; j++) heap[at.scales + 16 + 4 * j + at.slot] = src[s + 192 + j];
      // ggml: per 128 values n, element 128n + 32k + l takes ql[64n + l + 32·(k&1)] (low nibble for k < 2) and bits
      // 2k of qh[32n + l]
      for (let n = 0; n < 2; n++) {
        for (let l = 0; l < 32; l++) {
          const ql0 = src[s + 64 * n + l], ql1 = src[s + 64 * n + 32 + l], qh = src[s + 128 + 32 * n + l];
          const e = 128 * n + l;
          q[e] = (ql0 & 0xf) | ((qh & 3) << 4);
          q[e + 32] = (ql1 & 0xf) | (((qh >> 2) & 3) << 4);
          q[e + 64] = (ql0 >> 4) | (((qh >> 4) & 3) << 4);
          q[e + 96] = (ql1 >> 4) | (((qh >> 6) & 3) << 4);
        }
      }
      // per sub-block V0, V1, W, this row's 4 bytes of each (one u32, little-endian) at 4·slot (see assembly/q6_k.ts)
      for (let j = 0, o = (at.codes >> 2) + at.slot, e = 0; j < 16; j++, o += 12, e += 16) {
        let v0 = 0, v1 = 0, w = 0;
        for (let i = 3; i >= 0; i--) {
          const c0 = q[e + i], c1 = q[e + 4 + i], c2 = q[e + 8 + i], c3 = q[e + 12 + i];
          v0 = (v0 << 8) | c0 | ((c2 & 3) << 6);
          v1 = (v1 << 8) | c1 | ((c3 & 3) << 6);
          w = (w << 8) | (c2 >> 2) | ((c3 >> 2) << 4);
        }
        u32[o] = v0;
        u32[o + 4] = v1;
        u32[o + 8] = w;
      }
    }
  }
}

export const K_WEIGHT_TYPES: WeightKernel[] = [
  {
    type: GGMLType.Q4_K,
    input: 'q8_k',
    layout: layout(GGMLType.Q4_K),
    repack: repackQ4_K,
    matmul: (k, m, a, y, ntok) => k.matmul_q4_k(m.data, m.scales, a.q8_k.q, a.q8_k.d, a.q8_k.s, y, m.rows, m.cols, ntok),
    dequantRow: (k, m, row, out) => k.dequant_row_q4_k(m.data, m.scales, row, m.cols, out),
  },
  {
    type: GGMLType.Q5_K,
    input: 'q8_k',
    layout: layout(GGMLType.Q5_K),
    repack: repackQ5_K,
    matmul: (k, m, a, y, ntok) => k.matmul_q5_k(m.data, m.scales, a.q8_k.q, a.q8_k.d, a.q8_k.s, y, m.rows, m.cols, ntok),
    dequantRow: (k, m, row, out) => k.dequant_row_q5_k(m.data, m.scales, row, m.cols, out),
  },
  {
    type: GGMLType.Q6_K,
    input: 'q8_k',
    layout: layout(GGMLType.Q6_K),
    repack: repackQ6_K,
    matmul: (k, m, a, y, ntok) => k.matmul_q6_k(m.data, m.scales, a.q8_k.q, a.q8_k.d, a.q8_k.s, y, m.rows, m.cols, ntok),
    dequantRow: (k, m, row, out) => k.dequant_row_q6_k(m.data, m.scales, row, m.cols, out),
  },
];
