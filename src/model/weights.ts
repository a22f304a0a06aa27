import { EdgeLLMError } from '../errors.js';
import type { ByteSource } from '../gguf/source.js';
import type { GGUFFile, TensorInfo } from '../gguf/reader.js';
import { GGMLType, SUPPORTED_TYPE_NAMES, TYPE_TRAITS } from '../gguf/types.js';
import { f16ToF32 } from '../gguf/f16.js';
import { dequantizeRow } from '../gguf/quantize.js';
import type { Arena } from '../plan/arena.js';
import type { LlamaConfig } from './config.js';

/**
 * A weight matrix in kernel layout: `rows` output rows of `cols` inputs (ggml dims [cols, rows]).
 * F32/F16: `data` holds the values row-major. Q8_0/Q4_0: rows go in groups of 4 (the last padded with zero rows), and
 * for each group and block `data` holds the 4 rows' codes back to back, `scales` their 4 block scales as f32, kept apart
 * so codes and scales are each one aligned SIMD load (see assembly/q4_0.ts).
 */
export interface Matrix {
  name: string;
  type: GGMLType;
  rows: number;
  cols: number;
  data: number;
  scales: number;
}

export interface LayerWeights {
  attnNorm: number;
  wq: Matrix;
  wk: Matrix;
  wv: Matrix;
  wo: Matrix;
  ffnNorm: number;
  /** ffn_gate (w1), ffn_down (w2), ffn_up (w3), named as in llama2.c */
  w1: Matrix;
  w2: Matrix;
  w3: Matrix;
}

export interface LlamaWeights {
  tokenEmbd: Matrix;
  layers: LayerWeights[];
  outputNorm: number;
  /** token_embd itself when the file has no output.weight (tied embeddings) */
  output: Matrix;
  tied: boolean;
}

/** Rows interleaved per group in the quantized kernel layout. */
const ROW_GROUP = 4;
const roundUp = (n: number, k: number) => Math.ceil(n / k) * k;

interface PendingTensor {
  info: TensorInfo;
  /** where it goes: a matrix (repacked) or an f32 vector (norm) */
  matrix?: Matrix;
  vector?: number;
}

/** Reserves every weight region in the arena; the bytes are read later by loadWeights. */
export function planWeights(gguf: GGUFFile, c: LlamaConfig, arena: Arena): { weights: LlamaWeights; pending: PendingTensor[] } {
  const pending: PendingTensor[] = [];
  const qDim = c.nHeads * c.headDim;
  const kvDim = c.nKvHeads * c.headDim;

  const matrix = (name: string, cols: number, rows: number): Matrix => {
    const info = gguf.tensor(name);
    checkDims(info, [cols, rows]);
    const traits = TYPE_TRAITS.get(info.type);
    if (!traits?.supported) {
      throw new EdgeLLMError('UNSUPPORTED_TYPE', `tensor ${name} has type ${info.typeName}; edgellm supports ${SUPPORTED_TYPE_NAMES.join(', ')}`);
    }
    const m: Matrix = { name, type: info.type, rows, cols, data: 0, scales: 0 };
    const n = rows * cols;
    const padded = roundUp(rows, ROW_GROUP) * cols;
    switch (info.type) {
      case GGMLType.F32: m.data = arena.reserve(name, n * 4); break;
      case GGMLType.F16: m.data = arena.reserve(name, n * 2); break;
      case GGMLType.Q8_0: m.data = arena.reserve(name, padded); m.scales = arena.reserve(`${name}:scales`, (padded / 32) * 4); break;
      case GGMLType.Q4_0: m.data = arena.reserve(name, padded / 2); m.scales = arena.reserve(`${name}:scales`, (padded / 32) * 4); break;
    }
    pending.push({ info, matrix: m });
    return m;
  };
  const vector = (name: string, n: number): number => {
    const info = gguf.tensor(name);
    checkDims(info, [n]);
    if (!TYPE_TRAITS.get(info.type)?.supported) {
      throw new EdgeLLMError('UNSUPPORTED_TYPE', `tensor ${name} has type ${info.typeName}; edgellm supports ${SUPPORTED_TYPE_NAMES.join(', ')}`);
    }
    const ptr = arena.reserve(name, n * 4);
    pending.push({ info, vector: ptr });
    return ptr;
  };

  const tokenEmbd = matrix('token_embd.weight', c.dim, c.vocab);
  const layers: LayerWeights[] = [];
  for (let l = 0; l < c.nLayers; l++) {
    const p = `blk.${l}.`;
    layers.push({
      attnNorm: vector(`${p}attn_norm.weight`, c.dim),
      wq: matrix(`${p}attn_q.weight`, c.dim, qDim),
      wk: matrix(`${p}attn_k.weight`, c.dim, kvDim),
      wv: matrix(`${p}attn_v.weight`, c.dim, kvDim),
      wo: matrix(`${p}attn_output.weight`, qDim, c.dim),
      ffnNorm: vector(`${p}ffn_norm.weight`, c.dim),
      w1: matrix(`${p}ffn_gate.weight`, c.dim, c.ffn),
      w2: matrix(`${p}ffn_down.weight`, c.ffn, c.dim),
      w3: matrix(`${p}ffn_up.weight`, c.dim, c.ffn),
    });
  }
  const outputNorm = vector('output_norm.weight', c.dim);
  const tied = !gguf.tensorMap.has('output.weight');
  const output = tied ? tokenEmbd : matrix('output.weight', c.dim, c.vocab);
  return { weights: { tokenEmbd, layers, outputNorm, output, tied }, pending };
}

function checkDims(info: TensorInfo, want: number[]): void {
  const got = info.dims;
  if (got.length !== want.length || got.some((d, i) => d !== want[i])) {
    throw new EdgeLLMError('BAD_TENSOR', `tensor ${info.name} has dims [${got.join(', ')}]; the model's metadata needs [${want.join(', ')}]`);
  }
}

/** Bytes read from the source per step, so a large tensor never needs a second full-size copy in JS. */
const CHUNK_BYTES = 4 << 20;

/** Reads every planned tensor from the source and repacks it into kernel layout in wasm memory. */
export async function loadWeights(
  source: ByteSource,
  memory: WebAssembly.Memory,
  pending: PendingTensor[],
  onProgress?: (done: number, total: number) => void,
): Promise<void> {
  const total = pending.reduce((s, p) => s + p.info.byteSize, 0);
  let done = 0;
  for (const p of pending) {
    const { info } = p;
    if (p.vector !== undefined) {
      const bytes = await source.read(info.offset, info.byteSize);
      new Float32Array(memory.buffer, p.vector, info.elements).set(dequantizeRow(info.type, bytes, info.elements));
    } else {
      const m = p.matrix!;
      const rowBytes = info.byteSize / m.rows;
      const rowsPerChunk = Math.max(1, Math.floor(CHUNK_BYTES / rowBytes));
      for (let r0 = 0; r0 < m.rows; r0 += rowsPerChunk) {
        const nr = Math.min(rowsPerChunk, m.rows - r0);
        const bytes = await source.read(info.offset + r0 * rowBytes, nr * rowBytes);
        repackRows(m, memory, bytes, r0, nr);
      }
    }
    done += info.byteSize;
    onProgress?.(done, total);
  }
}

/**
 * GGUF blocks → kernel layout for rows r0..r0+nr. Q8_0 block: f16 d + 32 int8; Q4_0 block: f16 d + 16 nibble bytes.
 * Row r, block b goes to group r/4, slot r%4: codes at ((group·nb + b)·4 + slot)·codeBytes, its scale at the same index.
 * Padding rows are never written: fresh wasm memory is zero, so they have scale 0.
 */
function repackRows(m: Matrix, memory: WebAssembly.Memory, src: Uint8Array, r0: number, nr: number): void {
  const heap = new Uint8Array(memory.buffer);
  switch (m.type) {
    case GGMLType.F32: heap.set(src, m.data + r0 * m.cols * 4); return;
    case GGMLType.F16: heap.set(src, m.data + r0 * m.cols * 2); return;
  }
  const nb = m.cols / 32;
  const blockBytes = m.type === GGMLType.Q8_0 ? 34 : 18;
  const codeBytes = blockBytes - 2;
  const scales = new Float32Array(memory.buffer, m.scales, roundUp(m.rows, ROW_GROUP) * nb);
  let s = 0;
  for (let r = r0; r < r0 + nr; r++) {
    const group = Math.floor(r / ROW_GROUP), slot = r % ROW_GROUP;
    for (let b = 0; b < nb; b++) {
      const i = (group * nb + b) * ROW_GROUP + slot;
      scales[i] = f16ToF32(src[s] | (src[s + 1] << 8));
      s += 2;
      for (let j = 0, d = m.data + i * codeBytes; j < codeBytes; j++) heap[d + j] = src[s++];
    }
  }
}
