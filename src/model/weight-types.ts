/**
 * What the kernels can do with each weight type: one row per type, like ggml's CPU type traits. A row says which
 * activation format its matmul reads, how big its repacked layout is, how GGUF rows become that layout, and which
 * kernels multiply and dequantize it. A new weight type is a kernel file in assembly/ plus a row here (its row may live
 * in a file of its family, imported below); the forward pass never names a type.
 */
import { GGMLType, typeName } from '../gguf/types.js';
import type { Kernels } from '../runtime/kernels.js';
import { LEGACY_WEIGHT_TYPES } from './weight-types-legacy.js';
import { K_WEIGHT_TYPES } from './weight-types-k.js';
import { K_LOW_WEIGHT_TYPES } from './weight-types-k-low.js';
import { repackBlocks32, ROW_GROUP, roundUp } from './repack.js';

/** A weight matrix in kernel layout: `rows` output rows of `cols` inputs (ggml dims [cols, rows]). */
export interface Matrix {
  name: string;
  type: GGMLType;
  kernel: WeightKernel;
  rows: number;
  cols: number;
  /** the repacked codes (or values, for float types) */
  data: number;
  /** the repacked scales (and mins), where the type has any */
  scales: number;
}

/**
 * The activation formats a matmul input is prepared in, once per input for every matrix that reads it:
 * - `f32`: the values as they are (float weight types);
 * - `q8_0`: int8 codes per 32-value block with an f32 (f16-rounded) scale, as ggml's quantize_row_q8_0, and two
 *   i16 sums per block, Σx and Σ_{x<0} |x| (Q8_0, Q4_0 and the other 32-blocks; assembly/q8_0.ts);
 * - `q8_k`: int8 codes per 256-value super-block with an f32 scale and i16 code sums per 16, as ggml's
 *   quantize_row_q8_K (the K-quants and IQ4_XS).
 */
export type InputFormat = 'f32' | 'q8_0' | 'q8_k';

/** Where the prepared input of a matmul lies: the f32 values, and each quantized format's codes, scales and sums. */
export interface Activations {
  x: number;
  q8_0: { q: number; d: number; s: number };
  q8_k: { q: number; d: number; s: number };
}

/**
 * Rows r0..r1−1 of m as a matrix of its own, r0 a multiple of the row group (4): every layout is a sequence of row
 * groups, so the slice starts where the layout of r0 rows ends. A slice computes exactly its rows of the whole
 * matrix's product, so threads can split a matmul by rows. Its output rows are packed by the slice's own row count,
 * so a row split suits one token (decode); split a batch by tokens (tokenSlice) instead.
 */
export function rowSlice(m: Matrix, r0: number, r1: number): Matrix {
  if (!(r0 % ROW_GROUP === 0 && 0 <= r0 && r0 < r1 && r1 <= m.rows)) throw new RangeError(`rowSlice ${r0}..${r1} of ${m.rows} rows (starts at a multiple of ${ROW_GROUP})`);
  const before = m.kernel.layout(r0, m.cols);
  return { ...m, rows: r1 - r0, data: m.data + before.data, scales: m.scales && m.scales + before.scales };
}

/**
 * The prepared input of tokens t0.. of a batch whose tokens have `cols` values: every format's arrays are packed per
 * token ([ntok][cols] values or codes, [ntok][cols/32] or [ntok][cols/256] scales, per-32 or per-16 sums), so each
 * advances by t0 tokens. With y advanced by t0·rows floats, a matmul over tokens t0..t1−1 computes exactly their rows
 * of the batch's product.
 */
export function tokenSlice(a: Activations, cols: number, t0: number): Activations {
  const b32 = Math.ceil(cols / 32), b256 = Math.ceil(cols / 256);
  return {
    x: a.x + t0 * cols * 4,
    q8_0: { q: a.q8_0.q + t0 * cols, d: a.q8_0.d + t0 * b32 * 4, s: a.q8_0.s + t0 * b32 * 4 },
    q8_k: { q: a.q8_k.q + t0 * cols, d: a.q8_k.d + t0 * b256 * 4, s: a.q8_k.s + t0 * Math.ceil(cols / 16) * 2 },
  };
}

export interface WeightKernel {
  type: GGMLType;
  input: InputFormat;
  /** Bytes of the repacked layout of a rows × cols matrix: codes (data) and scales; 0 where there are none. */
  layout(rows: number, cols: number): { data: number; scales: number };
  /** GGUF bytes of rows r0..r0+nr−1 (src) into the planned layout in wasm memory (heap). Fresh memory is zero. */
  repack(m: Matrix, heap: Uint8Array, src: Uint8Array, r0: number, nr: number): void;
  /** y[t][r] for ntok inputs prepared in this row's input format. */
  matmul(k: Kernels, m: Matrix, a: Activations, y: number, ntok: number): void;
  /** Row `row` as f32 at out (token embeddings). */
  dequantRow(k: Kernels, m: Matrix, row: number, out: number): void;
}

const BASIC_WEIGHT_TYPES: WeightKernel[] = [
  {
    type: GGMLType.F32,
    input: 'f32',
    layout: (rows, cols) => ({ data: rows * cols * 4, scales: 0 }),
    repack: (m, heap, src, r0) => heap.set(src, m.data + r0 * m.cols * 4),
    matmul: (k, m, a, y, ntok) => k.matmul_f32(m.data, a.x, y, m.rows, m.cols, ntok),
    dequantRow: (k, m, row, out) => k.dequant_row_f32(m.data, row, m.cols, out),
  },
  {
    type: GGMLType.F16,
    input: 'f32',
    layout: (rows, cols) => ({ data: rows * cols * 2, scales: 0 }),
    repack: (m, heap, src, r0) => heap.set(src, m.data + r0 * m.cols * 2),
    matmul: (k, m, a, y, ntok) => k.matmul_f16(m.data, a.x, y, m.rows, m.cols, ntok),
    dequantRow: (k, m, row, out) => k.dequant_row_f16(m.data, row, m.cols, out),
  },
  {
    type: GGMLType.Q8_0,
    input: 'q8_0',
    layout: (rows, cols) => ({ data: roundUp(rows, ROW_GROUP) * cols, scales: (roundUp(rows, ROW_GROUP) * cols / 32) * 4 }),
    repack: (m, heap, src, r0, nr) => repackBlocks32(m, heap, src, r0, nr, 34),
    matmul: (k, m, a, y, ntok) => k.matmul_q8_0(m.data, m.scales, a.q8_0.q, a.q8_0.d, a.q8_0.s, y, m.rows, m.cols, ntok),
    dequantRow: (k, m, row, out) => k.dequant_row_q8_0(m.data, m.scales, row, m.cols, out),
  },
  {
    type: GGMLType.Q4_0,
    input: 'q8_0',
    layout: (rows, cols) => ({ data: roundUp(rows, ROW_GROUP) * cols / 2, scales: (roundUp(rows, ROW_GROUP) * cols / 32) * 4 }),
    repack: (m, heap, src, r0, nr) => repackBlocks32(m, heap, src, r0, nr, 18),
    matmul: (k, m, a, y, ntok) => k.matmul_q4_0(m.data, m.scales, a.q8_0.q, a.q8_0.d, a.q8_0.s, y, m.rows, m.cols, ntok),
    dequantRow: (k, m, row, out) => k.dequant_row_q4_0(m.data, m.scales, row, m.cols, out),
  },
];

export const WEIGHT_TYPES: ReadonlyMap<GGMLType, WeightKernel> = new Map(
  [...BASIC_WEIGHT_TYPES, ...LEGACY_WEIGHT_TYPES, ...K_WEIGHT_TYPES, ...K_LOW_WEIGHT_TYPES].map((w) => [w.type, w]),
);

/** The names of the weight types the kernels run, for error messages. */
export const WEIGHT_TYPE_NAMES = [...WEIGHT_TYPES.keys()].map(typeName);
