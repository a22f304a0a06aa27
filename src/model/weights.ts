import { EdgeLLMError } from '../errors.js';
import type { ByteSource } from '../gguf/source.js';
import type { GGUFFile, TensorInfo } from '../gguf/reader.js';
import { dequantizeRow, ROW_FORMATS } from '../gguf/quantize.js';
import { typeName } from '../gguf/types.js';
import { Arena, formatBytes } from '../plan/arena.js';
import type { ModelSpill, SpillDir, SpillFile } from '../plan/spill.js';
import type { Residency } from '../plan/weights-plan.js';
import type { LlamaConfig } from './config.js';
import { WEIGHT_TYPE_NAMES, WEIGHT_TYPES, type Matrix } from './weight-types.js';
import { StageAhead } from '../runtime/stage-worker.js';
import { WorkerStartError } from '../runtime/pool.js';

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
  /** the kernel instance whose memory holds it */
  instance: number;
}

/** Where the weights live, as planned from the header: what the stager moves and memory() reports. */
export interface WeightsPlan {
  residency: Residency[];
  /** per layer, the bytes of its matrices in kernel layout (its image): what staging the layer copies */
  layerBytes: number[];
  /** per layer, the kernel instance (a wasm memory of its own) holding it; instance 0 also holds the rest */
  instanceOf: number[];
  /**
   * per layer, for a streamed one, the slot its matrices point into (an address in its instance's memory) and which of
   * its instance's slots that is: one slot per instance, or two when the next layer is staged ahead, the streamed
   * layers alternating between them
   */
  slotAt: number[];
  slotIndex: number[];
  /** slots per instance with streamed layers (1, or 2 when staging ahead), and the bytes of all slots */
  slotsPerInstance: 1 | 2;
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
 * Reserves every weight region in the arenas, a layer's in its kernel instance's (instanceOf) and the rest in instance
 * 0's; the bytes are read later by loadWeights. A streamed layer's matrices are laid out in an image of their own
 * (offsets from 0, aligned as the arena aligns), and then pointed into one of its instance's slots (one, or two taken
 * in turn when staging ahead), sized for the largest image it takes, so each layer keeps its own layout (a Q4_K_M mix
 * differs per layer) in a shared region.
 */
export function planWeights(
  gguf: GGUFFile,
  c: LlamaConfig,
  arenas: readonly Arena[],
  residency: readonly Residency[],
  instanceOf: readonly number[] = new Array<number>(c.nLayers).fill(0),
  slotsPerInstance: 1 | 2 = 1,
): { weights: LlamaWeights; pending: PendingTensor[]; plan: WeightsPlan } {
  const pending: PendingTensor[] = [];
  const qDim = c.nHeads * c.headDim;
  const kvDim = c.nKvHeads * c.headDim;
  if (residency.length !== c.nLayers) throw new RangeError(`residency for ${residency.length} layers; the model has ${c.nLayers}`);
  const where = (l: number): Residency => residency[l];
  // a layer's tensors go to its instance's memory, everything else to instance 0's
  const instance = (layer?: number) => (layer === undefined ? 0 : instanceOf[layer]);
  let residentBytes = 0;
  const reserve = (name: string, bytes: number, layer?: number) => {
    residentBytes += bytes;
    return arenas[instance(layer)].reserve(name, bytes);
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
      return streamed ? inImage : reserve(part, bytes, layer);
    };
    const m: Matrix = { name, type: info.type, kernel, rows, cols, data: place(name, layout.data), scales: 0 };
    if (layout.scales > 0) m.scales = place(`${name}:scales`, layout.scales);
    pending.push({ info, matrix: m, layer: streamed ? layer : undefined, instance: instance(layer) });
    return m;
  };
  const vector = (name: string, n: number, layer?: number): number => {
    const info = gguf.tensor(name);
    checkDims(info, [n]);
    if (!ROW_FORMATS.has(info.type)) {
      throw new EdgeLLMError('UNSUPPORTED_TYPE', `tensor ${name} has type ${info.typeName}; a norm weight may be ${[...ROW_FORMATS.keys()].map(typeName).join(', ')}`);
    }
    const ptr = reserve(name, n * 4, layer);
    pending.push({ info, vector: ptr, instance: instance(layer) });
    return ptr;
  };

  const a = c.arch;
  const has = (name: string) => gguf.tensorMap.has(name);
  const tokenEmbd = matrix('token_embd.weight', c.dim, c.vocab);
  const layers: LayerWeights[] = [];
  for (let l = 0; l < c.nLayers; l++) {
    const p = `blk.${l}.`;
    const layerMatrix = (name: string, cols: number, rows: number) => matrix(name, cols, rows, l);
    const layerVector = (name: string, n: number) => vector(name, n, l);
    const bias = (name: string, n: number) => (a.qkvBias === 'required' || (a.qkvBias === 'optional' && has(name)) ? layerVector(name, n) : 0);
    const fusedQKV = a.fusedQKV;
    layers.push({
      attnNorm: layerVector(`${p}attn_norm.weight`, c.dim),
      wqkv: fusedQKV ? layerMatrix(`${p}attn_qkv.weight`, c.dim, qDim + 2 * kvDim) : null,
      wq: fusedQKV ? null : layerMatrix(`${p}attn_q.weight`, c.dim, qDim),
      wk: fusedQKV ? null : layerMatrix(`${p}attn_k.weight`, c.dim, kvDim),
      wv: fusedQKV ? null : layerMatrix(`${p}attn_v.weight`, c.dim, kvDim),
      bq: bias(`${p}attn_q.bias`, qDim),
      bk: bias(`${p}attn_k.bias`, kvDim),
      bv: bias(`${p}attn_v.bias`, kvDim),
      qNorm: a.qkNorm ? layerVector(`${p}attn_q_norm.weight`, c.headDim) : 0,
      kNorm: a.qkNorm ? layerVector(`${p}attn_k_norm.weight`, c.headDim) : 0,
      wo: layerMatrix(`${p}attn_output.weight`, qDim, c.dim),
      postAttnNorm: a.postNorms ? layerVector(`${p}post_attention_norm.weight`, c.dim) : 0,
      ffnNorm: layerVector(`${p}ffn_norm.weight`, c.dim),
      w1: a.fusedGateUp ? null : layerMatrix(`${p}ffn_gate.weight`, c.dim, c.ffn),
      w2: layerMatrix(`${p}ffn_down.weight`, c.ffn, c.dim),
      w3: layerMatrix(`${p}ffn_up.weight`, c.dim, a.fusedGateUp ? 2 * c.ffn : c.ffn),
      postFfnNorm: a.postNorms ? layerVector(`${p}post_ffw_norm.weight`, c.dim) : 0,
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

  // An instance's streamed layers take turns in its slots (alternating when there are two, so the next one can be
  // copied in while the current one runs); a slot holds the largest of its images, and each streamed matrix points
  // into its layer's slot at its offset in the image.
  const layerBytes = images.map((image) => image.regions.reduce((end, r) => Math.max(end, r.offset + r.bytes), 0));
  const slotIndex = new Array<number>(c.nLayers).fill(0);
  const streamedSoFar = arenas.map(() => 0);
  for (let l = 0; l < c.nLayers; l++) if (where(l) !== 'resident') slotIndex[l] = streamedSoFar[instanceOf[l]]++ % slotsPerInstance;
  const slotAddress = arenas.map((arena, i) => Array.from({ length: slotsPerInstance }, (_, k) => {
    const bytes = Math.max(0, ...layerBytes.filter((_, l) => where(l) !== 'resident' && instanceOf[l] === i && slotIndex[l] === k));
    return { at: bytes > 0 ? arena.reserve(`weights.slot${slotsPerInstance > 1 ? ` ${k}` : ''} (streamed layers)`, bytes) : 0, bytes };
  }));
  const slotAt = layerBytes.map((_, l) => (where(l) === 'resident' ? 0 : slotAddress[instanceOf[l]][slotIndex[l]].at));
  for (const t of pending) {
    if (t.layer === undefined) continue;
    t.matrix!.data += slotAt[t.layer];
    if (t.matrix!.scales) t.matrix!.scales += slotAt[t.layer];
  }
  const tierBytes = (r: Residency) => layerBytes.reduce((sum, b, l) => sum + (where(l) === r ? b : 0), 0);
  return {
    weights: { tokenEmbd, layers, outputNorm, output, tied, ropeFreqs, ropeShort, ropeLong },
    pending,
    plan: {
      residency: layers.map((_, l) => where(l)), layerBytes, instanceOf: [...instanceOf], slotAt, slotIndex, slotsPerInstance,
      slotBytes: slotAddress.flat().reduce((sum, slot) => sum + slot.bytes, 0), residentBytes, warmBytes: tierBytes('warm'), coldBytes: tierBytes('cold'),
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
 * The tensors in the order of their bytes in the file, so that a source read as one forward stream (an HTTP server
 * without Range support) never has to go back. A streamed layer is repacked in the one slot, so its tensors must come
 * together: for a file that interleaves two layers' tensors (none that llama.cpp writes), the plan's order instead.
 */
function fileOrder(pending: PendingTensor[]): PendingTensor[] {
  const sorted = [...pending].sort((a, b) => a.info.offset - b.info.offset);
  const closed = new Set<number>();
  let open = -1;
  for (const p of sorted) {
    if (p.layer === undefined || p.layer === open) continue;
    if (closed.has(p.layer)) return pending;
    closed.add(open);
    open = p.layer;
  }
  return sorted;
}

/**
 * Reads every planned tensor from the source and repacks it into kernel layout in wasm memory. A streamed layer is
 * repacked where it will run, in the slot (zeroed first: a layout's padding must read as fresh memory does), and its
 * image then moves to its tier: a host copy (warm) or the spill file (cold), written once here. So the bytes a layer
 * is staged with are the bytes a resident load would have made. Returns the stager that brings the layers back, or
 * undefined when every layer is resident.
 */
export async function loadWeights(
  source: ByteSource,
  /** each kernel instance's memory */
  memories: readonly WebAssembly.Memory[],
  pending: PendingTensor[],
  plan: WeightsPlan,
  /** the model's spill directory, where cold layers' images go (its dispose removes them) */
  spillDir: ModelSpill,
  onProgress?: (done: number, total: number) => void,
): Promise<LayerStager | undefined> {
  const total = pending.reduce((s, p) => s + p.info.byteSize, 0);
  const heaps = memories.map((m) => new Uint8Array(m.buffer));
  const { residency, layerBytes, slotAt, instanceOf } = plan;
  const slotOf = (l: number) => heaps[instanceOf[l]].subarray(slotAt[l], slotAt[l] + layerBytes[l]);
  // with two slots a worker copies the next layer in, so it must see the warm images: shared buffers then
  const ahead = plan.slotsPerInstance === 2;
  const images: Array<Uint8Array | undefined> = [];
  const coldAt: number[] = [];
  // each slot holds the last layer repacked into it
  const staged = new Map<number, number>();
  let spill: { dir: SpillDir; file: SpillFile } | undefined;
  let open = -1;
  const flush = () => {
    if (open < 0) return;
    staged.set(slotKey(plan, open), open);
    const image = slotOf(open);
    if (residency[open] === 'warm') {
      try {
        images[open] = ahead ? new Uint8Array(new SharedArrayBuffer(image.length)) : image.slice();
        if (ahead) images[open]!.set(image);
      } catch (err) {
        throw new EdgeLLMError('BUDGET', `the host refused ${formatBytes(image.length)} for layer ${open}'s weights (warm)`, { cause: err });
      }
    } else {
      spill!.file.write(coldAt[open], image);
    }
  };
  // a failure leaves the spill directory to the caller, which disposes it with whatever was written to it
  if (residency.includes('cold')) {
    const dir = await spillDir.get();
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
  for (const p of fileOrder(pending)) {
    const { info } = p;
    if (p.layer !== undefined && p.layer !== open) {
      flush();
      open = p.layer;
      slotOf(open).fill(0);
    }
    if (p.vector !== undefined) {
      const bytes = await source.read(info.offset, info.byteSize, buffer);
      new Float32Array(memories[p.instance].buffer, p.vector, info.elements).set(dequantizeRow(info.type, bytes, info.elements));
    } else {
      const m = p.matrix!;
      const { rowBytes, rowsPerChunk } = readChunk(p);
      for (let r0 = 0; r0 < m.rows; r0 += rowsPerChunk) {
        const nr = Math.min(rowsPerChunk, m.rows - r0);
        const bytes = await source.read(info.offset + r0 * rowBytes, nr * rowBytes, buffer);
        m.kernel.repack(m, heaps[p.instance], bytes, r0, nr);
      }
    }
    done += info.byteSize;
    onProgress?.(done, total);
  }
  flush();
  if (!residency.some((r) => r !== 'resident')) return undefined;
  return new LayerStager(plan, heaps, images, coldAt, spill, staged);
}

/** Which slot of which instance a streamed layer runs in. */
const slotKey = (plan: WeightsPlan, l: number) => plan.instanceOf[l] * 2 + plan.slotIndex[l];

/** What streaming has done since load, for memory(). */
export interface StagingUsage {
  /** layers copied into a slot, and their bytes */
  stages: number;
  stagedBytes: number;
  /** of stages, those a worker copied while the layer before ran (staging ahead) */
  stagedAhead: number;
  /** ms the forward pass spent on staging: copying (warm), reading (cold), or waiting for a copy ahead to finish */
  stageMs: number;
  /** the spill directory holding the cold layers, if any */
  spill?: string;
}

/**
 * Brings a streamed layer's image into its slot before the layer runs: one copy from its host buffer (warm) or one
 * positional read from the spill file (cold), straight into wasm memory. With two slots per instance and a staging
 * worker (`ahead`), the next streamed layer is copied into the other slot while this one runs, and staging a layer is
 * waiting for that copy. With threads the pool's workers read the slot after the job that follows is published, which
 * orders the copy before their reads.
 */
export class LayerStager {
  private stages = 0;
  private stagedBytes = 0;
  private stagedAhead = 0;
  private stageMs = 0;
  /** the layer the staging worker is copying, −1 for none */
  private pending = -1;
  /** per streamed layer, the next streamed one in forward order (the last wraps to the first), −1 for a resident layer */
  private readonly next: number[];
  private ahead: StageAhead | undefined;

  constructor(
    readonly plan: WeightsPlan,
    private readonly heaps: Uint8Array[],
    private readonly images: Array<Uint8Array | undefined>,
    private readonly coldAt: number[],
    private readonly spill: { dir: SpillDir; file: SpillFile } | undefined,
    /** per slot (slotKey), the layer whose image it holds; absent or −1 for none */
    private readonly staged: Map<number, number>,
  ) {
    const streamed = plan.residency.flatMap((r, l) => (r === 'resident' ? [] : [l]));
    this.next = plan.residency.map((r, l) => (r === 'resident' ? -1 : streamed[(streamed.indexOf(l) + 1) % streamed.length]));
  }

  /**
   * Starts the staging worker, where the plan has two slots per instance; `cold`: the worker reads cold layers from
   * the spill file by path (a file system it can open: Node, Deno, Bun). `required`: the options asked for it, so a
   * worker that cannot start fails the load; else staging stays on the forward pass's thread (stage() copies each layer).
   */
  async startAhead(cold: boolean, required: boolean): Promise<void> {
    const p = this.plan;
    if (p.slotsPerInstance !== 2 || this.ahead) return;
    // `cold` only where workers are Node's (planStageAhead), whose runtimes spill to a path, never to OPFS
    const coldPath = cold && this.spill ? `${this.spill.dir.location}/${this.spill.file.name}` : undefined;
    try {
      this.ahead = await StageAhead.start({
        memories: this.heaps.map((h) => h.buffer as SharedArrayBuffer),
        images: p.residency.map((_, l) => this.images[l]?.buffer as SharedArrayBuffer | undefined),
        coldPath, coldAt: this.coldAt, slotAt: p.slotAt, instanceOf: p.instanceOf, layerBytes: p.layerBytes,
      });
    } catch (e) {
      // a worker refused (a Content-Security-Policy without worker-src blob:) where staging ahead was only the default
      if (required || !(e instanceof WorkerStartError)) throw e;
    }
  }

  stage(layer: number): void {
    const p = this.plan;
    if (p.residency[layer] === 'resident') return;
    const key = slotKey(p, layer);
    const t0 = performance.now();
    if (this.pending >= 0) {
      // the copy ahead is this layer's, unless a forward pass stopped short of it
      this.ahead!.wait(this.pending);
      this.staged.set(slotKey(p, this.pending), this.pending);
      this.pending = -1;
    }
    if (this.staged.get(key) !== layer) {
      const bytes = p.layerBytes[layer];
      const slot = this.heaps[p.instanceOf[layer]].subarray(p.slotAt[layer], p.slotAt[layer] + bytes);
      // Until the copy completes the slot holds neither layer.
      this.staged.set(key, -1);
      if (p.residency[layer] === 'warm') slot.set(this.images[layer]!);
      else this.spill!.file.read(this.coldAt[layer], slot);
      this.staged.set(key, layer);
      this.stages++;
      this.stagedBytes += bytes;
    }
    this.stageMs += performance.now() - t0;
    // Copy the next streamed layer while this one runs, unless it needs this layer's slot (an odd count's wrap).
    const next = this.next[layer];
    if (this.ahead?.can(next) && slotKey(p, next) !== key && this.staged.get(slotKey(p, next)) !== next) {
      this.staged.set(slotKey(p, next), -1);
      this.ahead.request(next);
      this.pending = next;
      this.stages++;
      this.stagedAhead++;
      this.stagedBytes += p.layerBytes[next];
    }
  }

  usage(): StagingUsage {
    return { stages: this.stages, stagedBytes: this.stagedBytes, stagedAhead: this.stagedAhead, stageMs: this.stageMs, spill: this.spill?.dir.location };
  }

  /** Stops the staging worker (the model's dispose removes the spill directory). */
  async dispose(): Promise<void> {
    await this.ahead?.dispose();
  }
}
