import { EdgeLLMError } from '../errors.js';
import type { ByteSource } from '../gguf/source.js';
import type { GGUFFile, TensorInfo } from '../gguf/reader.js';
import { dequantizeRow, ROW_FORMATS } from '../gguf/quantize.js';
import { typeName } from '../gguf/types.js';
import type { Arena } from '../plan/arena.js';
import type { LlamaConfig } from './config.js';
import { WEIGHT_TYPE_NAMES, WEIGHT_TYPES, type Matrix } from './weight-types.js';

export type { Matrix } from './weight-types.js';

/**
 * One block's weights. Vectors are pointers, 0 where the architecture has no such step (arch.ts); a fused matrix
 * (Phi-3's attn_qkv, or ffn_up holding gate then up) takes the place of its parts.
 */
export interface LayerWeights {
  attnNorm: number;
  /** attn_qkv: Q, K, V rows in one matrix, or null (then wq, wk, wv) */
  wqkv: Matrix | null;
  wq: Matrix | null;
  wk: Matrix | null;
  wv: Matrix | null;
  /** attn_q/k/v.bias */
  bq: number;
  bk: number;
  bv: number;
  /** attn_q_norm / attn_k_norm: per-head RMSNorm weights [headDim] */
  qNorm: number;
  kNorm: number;
  wo: Matrix;
  /** post_attention_norm / post_ffw_norm (Gemma) */
  postAttnNorm: number;
  ffnNorm: number;
  /** ffn_gate (w1), ffn_down (w2), ffn_up (w3), named as in llama2.c; w1 null when w3 holds gate then up */
  w1: Matrix | null;
  w2: Matrix;
  w3: Matrix;
  postFfnNorm: number;
}

export interface LlamaWeights {
  tokenEmbd: Matrix;
  layers: LayerWeights[];
  outputNorm: number;
  /** token_embd itself when the file has no output.weight (tied embeddings) */
  output: Matrix;
  tied: boolean;
  /** rope_freqs.weight [nRot/2]: divisors of the rotary frequencies (Llama 3), 0 if none */
  ropeFreqs: number;
  /** rope_factors_short/long.weight [nRot/2]: Phi-3's LongRoPE divisors for contexts up to / past the original, or 0 */
  ropeShort: number;
  ropeLong: number;
}

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
    const kernel = WEIGHT_TYPES.get(info.type);
    if (!kernel) throw new EdgeLLMError('UNSUPPORTED_TYPE', `tensor ${name} has type ${info.typeName}; edgellm supports ${WEIGHT_TYPE_NAMES.join(', ')}`);
    const layout = kernel.layout(rows, cols);
    const m: Matrix = { name, type: info.type, kernel, rows, cols, data: arena.reserve(name, layout.data), scales: 0 };
    if (layout.scales > 0) m.scales = arena.reserve(`${name}:scales`, layout.scales);
    pending.push({ info, matrix: m });
    return m;
  };
  const vector = (name: string, n: number): number => {
    const info = gguf.tensor(name);
    checkDims(info, [n]);
    if (!ROW_FORMATS.has(info.type)) {
      throw new EdgeLLMError('UNSUPPORTED_TYPE', `tensor ${name} has type ${info.typeName}; a norm weight may be ${[...ROW_FORMATS.keys()].map(typeName).join(', ')}`);
    }
    const ptr = arena.reserve(name, n * 4);
    pending.push({ info, vector: ptr });
    return ptr;
  };

  const a = c.arch;
  const has = (name: string) => gguf.tensorMap.has(name);
  const tokenEmbd = matrix('token_embd.weight', c.dim, c.vocab);
  const layers: LayerWeights[] = [];
  for (let l = 0; l < c.nLayers; l++) {
    const p = `blk.${l}.`;
    const bias = (name: string, n: number) => (a.qkvBias === 'required' || (a.qkvBias === 'optional' && has(name)) ? vector(name, n) : 0);
    const fusedQKV = a.fusedQKV;
    layers.push({
      attnNorm: vector(`${p}attn_norm.weight`, c.dim),
      wqkv: fusedQKV ? matrix(`${p}attn_qkv.weight`, c.dim, qDim + 2 * kvDim) : null,
      wq: fusedQKV ? null : matrix(`${p}attn_q.weight`, c.dim, qDim),
      wk: fusedQKV ? null : matrix(`${p}attn_k.weight`, c.dim, kvDim),
      wv: fusedQKV ? null : matrix(`${p}attn_v.weight`, c.dim, kvDim),
      bq: bias(`${p}attn_q.bias`, qDim),
      bk: bias(`${p}attn_k.bias`, kvDim),
      bv: bias(`${p}attn_v.bias`, kvDim),
      qNorm: a.qkNorm ? vector(`${p}attn_q_norm.weight`, c.headDim) : 0,
      kNorm: a.qkNorm ? vector(`${p}attn_k_norm.weight`, c.headDim) : 0,
      wo: matrix(`${p}attn_output.weight`, qDim, c.dim),
      postAttnNorm: a.postNorms ? vector(`${p}post_attention_norm.weight`, c.dim) : 0,
      ffnNorm: vector(`${p}ffn_norm.weight`, c.dim),
      w1: a.fusedGateUp ? null : matrix(`${p}ffn_gate.weight`, c.dim, c.ffn),
      w2: matrix(`${p}ffn_down.weight`, c.ffn, c.dim),
      w3: matrix(`${p}ffn_up.weight`, c.dim, a.fusedGateUp ? 2 * c.ffn : c.ffn),
      postFfnNorm: a.postNorms ? vector(`${p}post_ffw_norm.weight`, c.dim) : 0,
    });
  }
  const outputNorm = vector('output_norm.weight', c.dim);
  const tied = a.alwaysTied || !has('output.weight');
  const output = tied ? tokenEmbd : matrix('output.weight', c.dim, c.vocab);
  const optional = (on: boolean, name: string) => (on && has(name) ? vector(name, c.nRot / 2) : 0);
  const ropeFreqs = optional(a.ropeFreqs, 'rope_freqs.weight');
  const ropeShort = optional(a.longRope, 'rope_factors_short.weight');
  const ropeLong = optional(a.longRope, 'rope_factors_long.weight');
  if (!ropeShort !== !ropeLong) throw new EdgeLLMError('MISSING_TENSOR', `tensor "${ropeShort ? 'rope_factors_long' : 'rope_factors_short'}.weight" is missing: LongRoPE needs both factor sets`);
  return { weights: { tokenEmbd, layers, outputNorm, output, tied, ropeFreqs, ropeShort, ropeLong }, pending };
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
        m.kernel.repack(m, new Uint8Array(memory.buffer), bytes, r0, nr);
      }
    }
    done += info.byteSize;
    onProgress?.(done, total);
  }
}
