import { EdgeLLMError } from '../errors.js';
import type { ByteSource } from '../gguf/source.js';
import type { GGUFFile, TensorInfo } from '../gguf/reader.js';
import { dequantizeRow, ROW_FORMATS } from '../gguf/quantize.js';
import { typeName } from '../gguf/types.js';
import { Arena, formatBytes } from '../plan/arena.js';
import { openSpillDir, type SpillDir, type SpillFile } from '../plan/spill.js';
import type { Residency } from '../plan/weights-plan.js';
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
  /** the streamed layer whose image holds this matrix: it is repacked into the slot, then moved to its tier */
  layer?: number;
}

/** Where the weights live, as planned from the header: what the stager moves and memory() reports. */
export interface WeightsPlan {
  residency: Residency[];
  /** per layer, the bytes of its matrices in kernel layout (its image): what staging the layer copies */
  layerBytes: number[];
  /** the staging slot in wasm memory that every streamed layer's matrices point into (0 bytes if none) */
  slot: number;
  slotBytes: number;
  /** weight bytes in wasm outside the slot: embeddings, output, norms and the other vectors, resident layers */
  residentBytes: number;
  /** host bytes of the warm layers' images */
  warmBytes: number;
  /** bytes of the cold layers' images in the spill file */
  coldBytes: number;
  /** the largest read the loader holds in JS at once (a chunk of a tensor's rows) */
  readBytes: number;
}

/**
 * Reserves every weight region in the arena; the bytes are read later by loadWeights. A streamed layer's matrices are
 * laid out in an image of their own (offsets from 0, aligned as the arena aligns), and then pointed into the one slot
 * sized for the largest image, so each layer keeps its own layout (a Q4_K_M mix differs per layer) in a shared region.
 */
export function planWeights(gguf: GGUFFile, c: LlamaConfig, arena: Arena, residency?: readonly Residency[]): { weights: LlamaWeights; pending: PendingTensor[]; plan: WeightsPlan } {
  const pending: PendingTensor[] = [];
  const qDim = c.nHeads * c.headDim;
  const kvDim = c.nKvHeads * c.headDim;
  if (residency && residency.length !== c.nLayers) throw new RangeError(`residency for ${residency.length} layers; the model has ${c.nLayers}`);
  const where = (l: number): Residency => residency?.[l] ?? 'resident';
  let residentBytes = 0;
  const reserve = (name: string, bytes: number) => {
    residentBytes += bytes;
    return arena.reserve(name, bytes);
  };
  // Every layer's matrices are also laid out in an image of the layer's own, from offset 0 as the arena aligns: a
  // streamed layer's matrices live there (then in the slot), and a resident layer's size is measured the same way.
  const images = Array.from({ length: c.nLayers }, () => new Arena(0));

  const matrix = (name: string, cols: number, rows: number, layer?: number): Matrix => {
    const info = gguf.tensor(name);
    checkDims(info, [cols, rows]);
    const kernel = WEIGHT_TYPES.get(info.type);
    if (!kernel) throw new EdgeLLMError('UNSUPPORTED_TYPE', `tensor ${name} has type ${info.typeName}; edgellm supports ${WEIGHT_TYPE_NAMES.join(', ')}`);
    const layout = kernel.layout(rows, cols);
    const streamed = layer !== undefined && where(layer) !== 'resident';
    const place = (part: string, bytes: number) => {
      const inImage = layer === undefined ? 0 : images[layer].reserve(part, bytes);
      return streamed ? inImage : reserve(part, bytes);
    };
    const m: Matrix = { name, type: info.type, kernel, rows, cols, data: place(name, layout.data), scales: 0 };
    if (layout.scales > 0) m.scales = place(`${name}:scales`, layout.scales);
    pending.push({ info, matrix: m, layer: streamed ? layer : undefined });
    return m;
  };
  const vector = (name: string, n: number): number => {
    const info = gguf.tensor(name);
    checkDims(info, [n]);
    if (!ROW_FORMATS.has(info.type)) {
      throw new EdgeLLMError('UNSUPPORTED_TYPE', `tensor ${name} has type ${info.typeName}; a norm weight may be ${[...ROW_FORMATS.keys()].map(typeName).join(', ')}`);
    }
    const ptr = reserve(name, n * 4);
    pending.push({ info, vector: ptr });
    return ptr;
  };

  const a = c.arch;
  const has = (name: string) => gguf.tensorMap.has(name);
  const tokenEmbd = matrix('token_embd.weight', c.dim, c.vocab);
  const layers: LayerWeights[] = [];
  for (let l = 0; l < c.nLayers; l++) {
    const p = `blk.${l}.`;
    const layerMatrix = (name: string, cols: number, rows: number) => matrix(name, cols, rows, l);
    const bias = (name: string, n: number) => (a.qkvBias === 'required' || (a.qkvBias === 'optional' && has(name)) ? vector(name, n) : 0);
    const fusedQKV = a.fusedQKV;
    layers.push({
      attnNorm: vector(`${p}attn_norm.weight`, c.dim),
      wqkv: fusedQKV ? layerMatrix(`${p}attn_qkv.weight`, c.dim, qDim + 2 * kvDim) : null,
      wq: fusedQKV ? null : layerMatrix(`${p}attn_q.weight`, c.dim, qDim),
      wk: fusedQKV ? null : layerMatrix(`${p}attn_k.weight`, c.dim, kvDim),
      wv: fusedQKV ? null : layerMatrix(`${p}attn_v.weight`, c.dim, kvDim),
      bq: bias(`${p}attn_q.bias`, qDim),
      bk: bias(`${p}attn_k.bias`, kvDim),
      bv: bias(`${p}attn_v.bias`, kvDim),
      qNorm: a.qkNorm ? vector(`${p}attn_q_norm.weight`, c.headDim) : 0,
      kNorm: a.qkNorm ? vector(`${p}attn_k_norm.weight`, c.headDim) : 0,
      wo: layerMatrix(`${p}attn_output.weight`, qDim, c.dim),
      postAttnNorm: a.postNorms ? vector(`${p}post_attention_norm.weight`, c.dim) : 0,
      ffnNorm: vector(`${p}ffn_norm.weight`, c.dim),
      w1: a.fusedGateUp ? null : layerMatrix(`${p}ffn_gate.weight`, c.dim, c.ffn),
      w2: layerMatrix(`${p}ffn_down.weight`, c.ffn, c.dim),
      w3: layerMatrix(`${p}ffn_up.weight`, c.dim, a.fusedGateUp ? 2 * c.ffn : c.ffn),
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

  // The slot holds the largest streamed image; each streamed matrix points into it at its offset in its image.
  const layerBytes = images.map((image) => image.regions.reduce((end, r) => Math.max(end, r.offset + r.bytes), 0));
  const slotBytes = Math.max(0, ...layerBytes.filter((_, l) => where(l) !== 'resident'));
  const slot = slotBytes > 0 ? arena.reserve('weights.slot (streamed layers)', slotBytes) : 0;
  for (const t of pending) {
    if (t.layer === undefined) continue;
    t.matrix!.data += slot;
    if (t.matrix!.scales) t.matrix!.scales += slot;
  }
  const tierBytes = (r: Residency) => layerBytes.reduce((sum, b, l) => sum + (where(l) === r ? b : 0), 0);
  return {
    weights: { tokenEmbd, layers, outputNorm, output, tied, ropeFreqs, ropeShort, ropeLong },
    pending,
    plan: {
      residency: layers.map((_, l) => where(l)), layerBytes, slot, slotBytes, residentBytes, warmBytes: tierBytes('warm'), coldBytes: tierBytes('cold'),
      readBytes: Math.max(...pending.map((t) => readChunk(t).bytes)),
    },
  };
}

function checkDims(info: TensorInfo, want: number[]): void {
  const got = info.dims;
  if (got.length !== want.length || got.some((d, i) => d !== want[i])) {
    throw new EdgeLLMError('BAD_TENSOR', `tensor ${info.name} has dims [${got.join(', ')}]; the model's metadata needs [${want.join(', ')}]`);
  }
}

/** Bytes read from the source per step, so a large tensor never needs a second full-size copy in JS. */
const CHUNK_BYTES = 4 << 20;

/** How loadWeights reads a tensor: a vector whole, a matrix by whole rows, about CHUNK_BYTES (at least a row) a read. */
function readChunk(t: PendingTensor): { rowBytes: number; rowsPerChunk: number; bytes: number } {
  if (!t.matrix) return { rowBytes: t.info.byteSize, rowsPerChunk: 1, bytes: t.info.byteSize };
  const rows = t.matrix.rows;
  const rowBytes = t.info.byteSize / rows;
  const rowsPerChunk = Math.min(rows, Math.max(1, Math.floor(CHUNK_BYTES / rowBytes)));
  return { rowBytes, rowsPerChunk, bytes: rowsPerChunk * rowBytes };
}

/** Cold images start on a page of the spill file. */
const SPILL_ALIGN = 4096;

/**
 * Reads every planned tensor from the source and repacks it into kernel layout in wasm memory. A streamed layer is
 * repacked where it will run, in the slot (zeroed first: a layout's padding must read as fresh memory does), and its
 * image then moves to its tier: a host copy (warm) or the spill file (cold), written once here. So the bytes a layer
 * is staged with are the bytes a resident load would have made. Returns the stager that brings the layers back, or
 * undefined when every layer is resident.
 */
export async function loadWeights(
  source: ByteSource,
  memory: WebAssembly.Memory,
  pending: PendingTensor[],
  plan: WeightsPlan,
  onProgress?: (done: number, total: number) => void,
): Promise<LayerStager | undefined> {
  const total = pending.reduce((s, p) => s + p.info.byteSize, 0);
  const heap = new Uint8Array(memory.buffer);
  const { residency, layerBytes, slot } = plan;
  const images: Array<Uint8Array | undefined> = [];
  const coldAt: number[] = [];
  let spill: { dir: SpillDir; file: SpillFile } | undefined;
  let open = -1;
  const flush = () => {
    if (open < 0) return;
    const image = heap.subarray(slot, slot + layerBytes[open]);
    if (residency[open] === 'warm') {
      try {
        images[open] = image.slice();
      } catch (err) {
        throw new EdgeLLMError('BUDGET', `the host refused ${formatBytes(image.length)} for layer ${open}'s weights (warm)`, { cause: err });
      }
    } else {
      spill!.file.write(coldAt[open], image);
    }
  };
  try {
    if (residency.includes('cold')) {
      const dir = await openSpillDir();
      spill = { dir, file: await dir.create('weights') };
      let at = 0;
      residency.forEach((r, l) => {
        if (r !== 'cold') return;
        coldAt[l] = at;
        at += Math.ceil(layerBytes[l] / SPILL_ALIGN) * SPILL_ALIGN;
      });
    }
    let done = 0;
    // One buffer for every read (the plan counts readBytes), rather than a new one per read for V8 to collect late.
    const buffer = new Uint8Array(plan.readBytes);
    for (const p of pending) {
      const { info } = p;
      if (p.layer !== undefined && p.layer !== open) {
        flush();
        open = p.layer;
        heap.fill(0, slot, slot + layerBytes[open]);
      }
      if (p.vector !== undefined) {
        const bytes = await source.read(info.offset, info.byteSize, buffer);
        new Float32Array(memory.buffer, p.vector, info.elements).set(dequantizeRow(info.type, bytes, info.elements));
      } else {
        const m = p.matrix!;
        const { rowBytes, rowsPerChunk } = readChunk(p);
        for (let r0 = 0; r0 < m.rows; r0 += rowsPerChunk) {
          const nr = Math.min(rowsPerChunk, m.rows - r0);
          const bytes = await source.read(info.offset + r0 * rowBytes, nr * rowBytes, buffer);
          m.kernel.repack(m, heap, bytes, r0, nr);
        }
      }
      done += info.byteSize;
      onProgress?.(done, total);
    }
    flush();
  } catch (err) {
    await spill?.dir.dispose();
    throw err;
  }
  if (!residency.some((r) => r !== 'resident')) return undefined;
  return new LayerStager(plan, heap, images, coldAt, spill, open);
}

/** What streaming has done since load, for memory(). */
export interface StagingUsage {
  /** layers copied into the slot, and their bytes */
  stages: number;
  stagedBytes: number;
  /** ms spent copying (warm) or reading (cold) them */
  stageMs: number;
  /** the spill directory holding the cold layers, if any */
  spill?: string;
}

/**
 * Brings a streamed layer's image into the slot before the layer runs: one copy from its host buffer (warm) or one
 * positional read from the spill file (cold), straight into wasm memory. With threads the pool's workers read the slot
 * after the job that follows is published, which orders the copy before their reads.
 */
export class LayerStager {
  private stages = 0;
  private stagedBytes = 0;
  private stageMs = 0;

  constructor(
    readonly plan: WeightsPlan,
    private readonly heap: Uint8Array,
    private images: Array<Uint8Array | undefined>,
    private readonly coldAt: number[],
    private readonly spill: { dir: SpillDir; file: SpillFile } | undefined,
    /** the layer whose image the slot holds (the last one loaded), −1 for none */
    private staged: number,
  ) {}

  stage(layer: number): void {
    const tier = this.plan.residency[layer];
    if (tier === 'resident' || layer === this.staged) return;
    const t0 = performance.now();
    const bytes = this.plan.layerBytes[layer];
    const slot = this.heap.subarray(this.plan.slot, this.plan.slot + bytes);
    // Until the copy completes the slot holds neither layer.
    this.staged = -1;
    if (tier === 'warm') slot.set(this.images[layer]!);
    else this.spill!.file.read(this.coldAt[layer], slot);
    this.staged = layer;
    this.stages++;
    this.stagedBytes += bytes;
    this.stageMs += performance.now() - t0;
  }

  usage(): StagingUsage {
    return { stages: this.stages, stagedBytes: this.stagedBytes, stageMs: this.stageMs, spill: this.spill?.dir.location };
  }

  /** Drops the warm images and removes the spill directory. */
  async dispose(): Promise<void> {
    this.images = [];
    this.staged = -1;
    await this.spill?.dir.dispose();
  }
}
