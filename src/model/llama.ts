import { EdgeLLMError } from '../errors.js';
import type { Arena } from '../plan/arena.js';
import type { Kernels } from '../runtime/kernels.js';
import type { KVCache, KVUsage } from '../kv/cache.js';
import { attend, bindAttention, takeAttentionStats, type AttentionPolicy, type AttentionState, type AttentionStats } from '../attention/attend.js';
import type { LlamaConfig } from './config.js';
import type { LayerStager, LayerWeights, LlamaWeights } from './weights.js';
import { f16ToF32, f32ToF16 } from '../gguf/f16.js';
import { rowSlice, tokenSlice, type Activations, type InputFormat, type Matrix } from './weight-types.js';
import { recordJob, type Job, type KernelPool } from '../runtime/pool.js';
import { splitPerTokenOps } from './split-ops.js';
import type { ModelSpill } from '../plan/spill.js';

/** Multiply-adds below which a matmul runs on one thread: a dispatch costs a few µs, ~100K MACs' worth. */
const SPLIT_MIN_MACS = 1 << 17;
/** Parts per thread a split matmul is cut into: enough that a thread held back leaves its share to the others. */
const PARTS_PER_THREAD = 4;

/** Activation buffers for a batch of up to maxBatch tokens (llama2.c's RunState), all planned in the arena. */
interface RunState {
  x: number; // residual stream [B][dim]
  xb: number; // normed input / attention-output projection [B][max(dim, qDim)]
  xb2: number; // attention output [B][qDim]
  q: number; // [B][qDim]
  k: number; // [B][kvDim]
  v: number; // [B][kvDim]
  hb: number; // ffn gate [B][ffn]
  hb2: number; // ffn up [B][ffn]
  xq: number; // Q8_0 int8 codes of the current matmul input [B][max(dim, qDim, ffn)]
  xd: number; // its f32 block scales
  xs: number; // its i32 block code sums
  kq: number; // Q8_K int8 codes of the current matmul input [B][widest, rounded up to 256]
  kd: number; // its f32 super-block scales
  ks: number; // its i16 code sums per 16
  logits: number; // [B][vocab]
  rope: number; // (cos, sin) per position and rotated pair [ctx][nRot]
  ropeLocal: number; // the same for sliding-window layers where their RoPE differs (Gemma 3's base), else = rope
  fused: number; // output of a fused matrix (Q|K|V or gate|up) before it is split [B][widest fused], if any
  gelu: number; // ggml's GELU table: 65536 f32 indexed by f16 bits, if the FFN uses GELU
}

export function planRunState(arena: Arena, c: LlamaConfig, maxBatch: number, ctx: number): RunState {
  const qDim = c.nHeads * c.headDim;
  const kvDim = c.nKvHeads * c.headDim;
  const widest = Math.max(c.dim, qDim, c.ffn);
  const f32 = (name: string, n: number) => arena.reserve(`state.${name}`, n * 4);
  const rope = f32('rope', ctx * c.nRot);
  return {
    x: f32('x', maxBatch * c.dim),
    xb: f32('xb', maxBatch * Math.max(c.dim, qDim)),
    xb2: f32('xb2', maxBatch * qDim),
    q: f32('q', maxBatch * qDim),
    k: f32('k', maxBatch * kvDim),
    v: f32('v', maxBatch * kvDim),
    hb: f32('hb', maxBatch * c.ffn),
    hb2: f32('hb2', maxBatch * c.ffn),
    xq: arena.reserve('state.xq', maxBatch * widest),
    xd: f32('xd', maxBatch * Math.ceil(widest / 32)),
    xs: f32('xs', maxBatch * Math.ceil(widest / 32)),
    kq: arena.reserve('state.kq', maxBatch * Math.ceil(widest / 256) * 256),
    kd: f32('kd', maxBatch * Math.ceil(widest / 256)),
    ks: arena.reserve('state.ks', maxBatch * Math.ceil(widest / 16) * 2),
    logits: f32('logits', maxBatch * c.vocab),
    rope,
    ropeLocal: localRopeDiffers(c) ? f32('rope (local layers)', ctx * c.nRot) : rope,
    fused: f32('fused', maxBatch * Math.max(c.arch.fusedQKV ? qDim + 2 * kvDim : 0, c.arch.fusedGateUp ? 2 * c.ffn : 0)),
    gelu: c.arch.ffnActivation === 'gelu' ? f32('gelu table', 65536) : 0,
  };
}

/** Whether sliding-window layers rotate differently from global ones (another base, or no linear scaling). */
function localRopeDiffers(c: LlamaConfig): boolean {
  return c.window.some((w) => w > 0) && (c.ropeBaseLocal !== c.ropeBase || c.ropeScaleLocal !== c.ropeScale);
}

/**
 * A kernel instance: a wasm memory of its own holding whole layers [first, end) with their KV cache, attention state
 * and run state, and the kernels (and thread pool) working on it. One memory holds a model up to wasm32's 4 GiB; a larger
 * one is split over several, and the residual stream hops from one to the next once per instance, not per matmul.
 * Instance 0 also holds the token embeddings, the final norm and the output (so a tied output is the embeddings).
 */
export interface KernelInstance {
  first: number;
  end: number;
  /** the model's config as its KV cache and attention see it: nLayers and window of this instance's layers only */
  config: LlamaConfig;
  kv: KVCache;
  attention: AttentionState;
  state: RunState;
  kernels: Kernels;
  memory: WebAssembly.Memory;
  /** threads for its matmuls (the pool's thread 0 is `kernels`), or none */
  pool?: KernelPool;
}

/** An instance as the forward pass runs it: views of its memory and its prepared kernels. */
interface Running extends KernelInstance {
  heap: Float32Array;
  /** the kernels, with the per-token ops split over the pool's threads when there is one (split-ops.ts) */
  ops: Kernels;
  /** the prepared matmul input: its f32 values (set per call) and its quantized forms in the run state */
  act: Activations;
}

/**
 * The llama forward pass over a batch of tokens at consecutive positions, reading top to bottom like llama2.c's
 * run.c. Every buffer is a pointer into a planned memory (its kernel instance's); the kernels do the arithmetic.
 */
export class Llama {
  private readonly qDim: number;
  private readonly kvDim: number;
  private readonly instances: Running[];
  /** per layer, the instance holding it */
  private readonly instanceOf: Running[];
  /** the instance the pass is in: the one whose memory the buffers below point into */
  private at: Running;
  /** every instance's KV cache, seen as one */
  readonly kv: ModelKV;
  /**
   * Each matrix's last split job and what it was for: a decode step issues the same products with the same buffers
   * every token, and recording the parts again would cost more than dispatching them.
   */
  private readonly jobs = new WeakMap<Matrix, { ntok: number; buffers: number[]; job: Job }>();

  constructor(
    readonly config: LlamaConfig,
    readonly weights: LlamaWeights,
    /** the kernel instances, in layer order, instance 0 first */
    instances: readonly KernelInstance[],
    readonly maxBatch: number,
    /** brings streamed layers' weights into their instance's slot, when some layers are not resident */
    readonly stager?: LayerStager,
    /** the model's spill directory (cold weights and KV pages), removed by release() */
    private readonly spill?: ModelSpill,
  ) {
    this.instances = instances.map((i) => {
      i.kv.bind(i.memory);
      bindAttention(i.attention, i.memory);
      i.attention.pool = i.pool;
      const s = i.state;
      return { ...i, heap: new Float32Array(i.memory.buffer), ops: splitPerTokenOps(i.kernels, i.pool), act: { x: 0, q8_0: { q: s.xq, d: s.xd, s: s.xs }, q8_k: { q: s.kq, d: s.kd, s: s.ks } } };
    });
    this.instanceOf = Array.from({ length: config.nLayers }, (_, l) => this.instances.find((i) => l >= i.first && l < i.end)!);
    this.at = this.instances[0];
    this.kv = new ModelKV(this.instances.map((i) => i.kv));
    this.qDim = config.nHeads * config.headDim;
    this.kvDim = config.nKvHeads * config.headDim;
    // Frequency factors (Llama 3's, or Phi-3's set for this context) apply to every layer; Gemma 3's local layers have
    // their own base and no linear scaling (ropeBaseLocal, ropeScaleLocal). They are vectors in instance 0's memory.
    const at = weights.ropeFreqs || (this.kv.ctx > config.ropeOriginalContext ? weights.ropeLong : weights.ropeShort);
    const factors = at ? this.heap.slice(at / 4, at / 4 + config.nRot / 2) : null;
    const first = this.instances[0], s0 = first.state;
    const tables: Array<[(s: RunState) => number, number]> = [[(s) => s.rope, this.kv.ctx * config.nRot]];
    this.fillRopeTable(first.heap, s0.rope, config.ropeBase, config.ropeScale, factors);
    if (s0.ropeLocal !== s0.rope) {
      this.fillRopeTable(first.heap, s0.ropeLocal, config.ropeBaseLocal, config.ropeScaleLocal, factors);
      tables.push([(s) => s.ropeLocal, this.kv.ctx * config.nRot]);
    }
    if (s0.gelu) {
      fillGeluTable(first.heap.subarray(s0.gelu / 4, s0.gelu / 4 + 65536));
      tables.push([(s) => s.gelu, 65536]);
    }
    // the other instances' run states get the same tables, copied rather than computed again
    for (const i of this.instances.slice(1)) {
      for (const [at, n] of tables) i.heap.set(first.heap.subarray(at(s0) / 4, at(s0) / 4 + n), at(i.state) / 4);
    }
  }

  /** Instance 0's memory, which holds the logits. */
  get heap(): Float32Array {
    return this.instances[0].heap;
  }

  /** Instance 0's kernels. */
  get kernels(): Kernels {
    return this.instances[0].kernels;
  }

  get attentionPolicy(): AttentionPolicy {
    return this.instances[0].attention.policy;
  }

  /** Attention counters since the last call, over every instance (massRecall per layer, in layer order). */
  takeAttentionStats(): AttentionStats {
    const all = this.instances.map((i) => takeAttentionStats(i.attention));
    const sum = (f: (s: AttentionStats) => number) => all.reduce((t, s) => t + f(s), 0);
    const queries = sum((s) => s.queries);
    const stats: AttentionStats = {
      queries,
      meanTokensRead: queries ? sum((s) => s.meanTokensRead * s.queries) / queries : 0,
      meanPositions: queries ? sum((s) => s.meanPositions * s.queries) / queries : 0,
      pagesScored: sum((s) => s.pagesScored),
    };
    if (all[0].massRecall) stats.massRecall = all.flatMap((s) => s.massRecall!);
    return stats;
  }

  /** Stops the thread pools and the staging worker, and removes the spill directory. */
  async release(): Promise<void> {
    await Promise.all([...this.instances.map((i) => i.pool?.dispose()), this.stager?.dispose()]);
    await this.spill?.dispose();
  }

  /** cos/sin of pos·scale·base^(-2i/nRot)/factor_i in f64, times the attention factor, rounded once to f32. */
  private fillRopeTable(heap: Float32Array, at: number, base: number, scale: number, factors: Float32Array | null): void {
    const { nRot, ropeAttnFactor: m } = this.config;
    const table = heap.subarray(at / 4, at / 4 + this.kv.ctx * nRot);
    for (let pos = 0; pos < this.kv.ctx; pos++) {
      for (let i = 0; i < nRot; i += 2) {
        const theta = (pos * scale * Math.pow(base, -i / nRot)) / (factors ? factors[i / 2] : 1);
        table[pos * nRot + i] = Math.cos(theta) * m;
        table[pos * nRot + i + 1] = Math.sin(theta) * m;
      }
    }
  }

  /**
   * Runs tokens at positions pos0.., appending to the KV cache. Returns the offset (in floats) of the logits:
   * of every token when allLogits ([ntok][vocab]), else of the last token only.
   */
  forward(tokens: ArrayLike<number>, pos0: number, allLogits: boolean): number {
    const c = this.config, w = this.weights;
    let s = this.enter(this.instances[0]), k = this.at.ops;
    const B = tokens.length;
    if (B < 1 || B > this.maxBatch) throw new EdgeLLMError('BAD_ARGUMENT', `forward batch of ${B} tokens; 1..${this.maxBatch} allowed`);
    if (pos0 + B > this.kv.ctx) {
      throw new EdgeLLMError('CONTEXT_FULL', `positions ${pos0}..${pos0 + B - 1} exceed the context of ${this.kv.ctx} tokens`);
    }
    const { dim, ffn, headDim, nHeads, nKvHeads, rmsEps: eps } = c;
    const a = c.arch, neox = c.ropeMode === 'neox' ? 1 : 0;

    // token embeddings (× √dim for Gemma, in f32 as ggml_scale does)
    for (let t = 0; t < B; t++) {
      const id = tokens[t];
      if (!Number.isInteger(id) || id < 0 || id >= c.vocab) throw new EdgeLLMError('BAD_ARGUMENT', `token id ${id} is outside the vocabulary 0..${c.vocab - 1}`);
      this.dequantRow(w.tokenEmbd, id, s.x + t * dim * 4);
    }
    if (a.scaleEmbedding) k.scale(s.x, Math.fround(Math.sqrt(dim)), B * dim);

    for (let l = 0; l < c.nLayers; l++) {
      const L = w.layers[l];
      if (this.instanceOf[l] !== this.at) {
        s = this.hop(this.instanceOf[l], B);
        k = this.at.ops;
      }
      // a streamed layer's matrices point into the slot: its image is copied there before the layer runs
      this.stager?.stage(l);
      const local = l - this.at.first;

      // attention: rmsnorm → q, k, v (+ bias) → per-head q/k norm → rope → cache → attend → output projection
      // (→ post-norm) → residual
      k.rmsnorm(s.xb, s.x, L.attnNorm, dim, B, eps);
      this.projectQKV(L, B);
      if (L.qNorm) {
        k.rmsnorm(s.q, s.q, L.qNorm, headDim, B * nHeads, eps);
        k.rmsnorm(s.k, s.k, L.kNorm, headDim, B * nKvHeads, eps);
      }
      const cs = c.window[l] ? s.ropeLocal : s.rope;
      k.rope(s.q, nHeads, headDim, c.nRot, B, cs, pos0, neox);
      k.rope(s.k, nKvHeads, headDim, c.nRot, B, cs, pos0, neox);
      const { kv, attention, config: layers } = this.at;
      for (let t = 0; t < B; t++) {
        kv.append(k, local, s.k + t * this.kvDim * 4, s.v + t * this.kvDim * 4, pos0 + t);
        attend(k, layers, kv, attention, local, s.xb2 + t * this.qDim * 4, s.q + t * this.qDim * 4, pos0 + t + 1);
      }
      this.prepareInput(s.xb2, this.qDim, B, L.wo);
      this.matmul([L.wo, s.xb2, s.xb], B);
      if (L.postAttnNorm) k.rmsnorm(s.xb, s.xb, L.postAttnNorm, dim, B, eps);
      k.add(s.x, s.xb, B * dim);

      // feed-forward: rmsnorm → act(gate·x) ⊙ (up·x) → down (→ post-norm) → residual
      k.rmsnorm(s.xb, s.x, L.ffnNorm, dim, B, eps);
      this.projectGateUp(L, B);
      if (a.ffnActivation === 'gelu') k.gelu_mul(s.hb, s.hb2, B * ffn, s.gelu);
      else k.silu_mul(s.hb, s.hb2, B * ffn);
      this.prepareInput(s.hb, ffn, B, L.w2);
      this.matmul([L.w2, s.hb, s.xb], B);
      if (L.postFfnNorm) k.rmsnorm(s.xb, s.xb, L.postFfnNorm, dim, B, eps);
      k.add(s.x, s.xb, B * dim);
    }

    // final norm and classifier, for every token or just the last (soft-capped for Gemma 2)
    if (this.at !== this.instances[0]) {
      s = this.hop(this.instances[0], B);
      k = this.at.ops;
    }
    const first = allLogits ? 0 : B - 1;
    const n = B - first;
    const xFirst = s.x + first * dim * 4;
    k.rmsnorm(xFirst, xFirst, w.outputNorm, dim, n, eps);
    this.prepareInput(xFirst, dim, n, w.output);
    this.matmul([w.output, xFirst, s.logits], n);
    if (c.finalSoftcap) k.softcap(s.logits, c.finalSoftcap, n * c.vocab);
    return s.logits / 4; // not >> 2: offsets pass 2^31 in memories over 2 GiB
  }

  private enter(i: Running): RunState {
    this.at = i;
    return i.state;
  }

  /**
   * Moves the residual stream of B tokens into another instance's memory, and the pass with it. With threads, that
   * instance's workers read it after the next job is published, which orders the copy before their reads.
   */
  private hop(to: Running, B: number): RunState {
    const from = this.at, n = B * this.config.dim;
    to.heap.set(from.heap.subarray(from.state.x / 4, from.state.x / 4 + n), to.state.x / 4);
    return this.enter(to);
  }

  /** q, k, v of the normed input xb: three matrices, or one fused matrix split by rows (Phi-3); then the biases. */
  private projectQKV(L: LayerWeights, B: number): void {
    const s = this.at.state, k = this.at.ops, dim = this.config.dim;
    if (L.wqkv) {
      this.prepareInput(s.xb, dim, B, L.wqkv);
      this.matmul([L.wqkv, s.xb, s.fused], B);
      this.split(B, this.qDim + 2 * this.kvDim, [s.q, this.qDim], [s.k, this.kvDim], [s.v, this.kvDim]);
    } else {
      this.prepareInput(s.xb, dim, B, L.wq!, L.wk!, L.wv!);
      this.matmul([L.wq!, s.xb, s.q], [L.wk!, s.xb, s.k], [L.wv!, s.xb, s.v], B);
    }
    if (L.bq) k.add_bias(s.q, L.bq, this.qDim, B);
    if (L.bk) k.add_bias(s.k, L.bk, this.kvDim, B);
    if (L.bv) k.add_bias(s.v, L.bv, this.kvDim, B);
  }

  /** gate into hb and up into hb2: two matrices, or one ffn_up holding gate then up (Phi-3). */
  private projectGateUp(L: LayerWeights, B: number): void {
    const s = this.at.state, { dim, ffn } = this.config;
    if (L.w1) {
      this.prepareInput(s.xb, dim, B, L.w1, L.w3);
      this.matmul([L.w1, s.xb, s.hb], [L.w3, s.xb, s.hb2], B);
    } else {
      this.prepareInput(s.xb, dim, B, L.w3);
      this.matmul([L.w3, s.xb, s.fused], B);
      this.split(B, 2 * ffn, [s.hb, ffn], [s.hb2, ffn]);
    }
  }

  /** Splits the fused output rows [B][width] into parts [B][n] at their pointers. */
  private split(B: number, width: number, ...parts: Array<[number, number]>): void {
    const h = this.at.heap, from = this.at.state.fused / 4;
    for (let t = 0; t < B; t++) {
      let col = 0;
      for (const [to, n] of parts) {
        h.copyWithin(to / 4 + t * n, from + t * width + col, from + t * width + col + n);
        col += n;
      }
    }
  }

  /** Quantized matrices read int8 activations: quantize the input once, in each format the matrices sharing it read. */
  private prepareInput(x: number, cols: number, ntok: number, ...ms: Matrix[]): void {
    const k = this.at.ops, s = this.at.state;
    const needs = (format: InputFormat) => ms.some((m) => m.kernel.input === format);
    if (needs('q8_0')) k.quantize_q8_0(x, cols, ntok, s.xq, s.xd, s.xs);
    if (needs('q8_k')) k.quantize_q8_k(x, cols, ntok, s.kq, s.kd, s.ks);
  }

  /**
   * y = W·x for ntok tokens, for each [W, x, y] given; quantized types read the input prepared by prepareInput. With
   * threads, products big enough to pay for the dispatch are split: one token by row groups, a batch by 4-token tiles,
   * into about PARTS_PER_THREAD parts per thread; products of one weight type and input (q, k and v; gate and up) are
   * one job, so a decode step waits for its threads fewer times. Each part is the same kernel on a slice, computing the same
   * bytes as the whole call (test/matmul-split.test.ts), so the logits do not depend on the thread count.
   */
  private matmul(...args: [...products: Array<[m: Matrix, x: number, y: number]>, ntok: number]): void {
    const ntok = args.pop() as number, products = args as Array<[Matrix, number, number]>;
    const { act: a, pool, kernels } = this.at;
    const macs = products.reduce((sum, [m]) => sum + m.rows * m.cols * ntok, 0);
    if (!pool || macs < SPLIT_MIN_MACS) {
      for (const [m, x, y] of products) {
        a.x = x;
        m.kernel.matmul(kernels, m, a, y, ntok);
      }
      return;
    }
    // one job runs one kernel, and the products share the one prepared input
    if (products.some(([m, x]) => m.kernel !== products[0][0].kernel || x !== products[0][1])) {
      for (const [m, x, y] of products) this.matmul([m, x, y], ntok);
      return;
    }
    const key = products[0][0];
    const last = this.jobs.get(key);
    if (last && last.ntok === ntok && last.buffers.length === products.length * 2 && products.every(([, x, y], i) => last.buffers[2 * i] === x && last.buffers[2 * i + 1] === y)) {
      pool.run(last.job.name, last.job.parts);
      return;
    }
    // each product's share of the parts by its units (row groups or token tiles of 4), at least one
    const units = products.map(([m]) => (ntok === 1 ? Math.ceil(m.rows / 4) : Math.ceil(ntok / 4)));
    const total = units.reduce((x, y) => x + y, 0);
    const want = Math.min(total, PARTS_PER_THREAD * pool.threads, pool.maxParts - products.length);
    const parts: Array<(k: Kernels) => void> = [];
    products.forEach(([m, x, y], p) => {
      const n = Math.max(1, Math.min(units[p], Math.round((want * units[p]) / total)));
      const at = (i: number) => 4 * Math.floor((units[p] * i) / n);
      for (let i = 0; i < n; i++) {
        const u0 = at(i), u1 = at(i + 1);
        parts.push(ntok === 1
          ? (k) => m.kernel.matmul(k, rowSlice(m, u0, Math.min(u1, m.rows)), { ...a, x }, y + u0 * 4, 1)
          : (k) => m.kernel.matmul(k, m, tokenSlice({ ...a, x }, m.cols, u0), y + u0 * m.rows * 4, Math.min(u1, ntok) - u0));
      }
    });
    const job = recordJob(parts)!;
    this.jobs.set(key, { ntok, buffers: products.flatMap(([, x, y]) => [x, y]), job });
    pool.run(job.name, job.parts);
  }

  private dequantRow(m: Matrix, row: number, out: number): void {
    m.kernel.dequantRow(this.at.kernels, m, row, out);
  }
}

/**
 * ggml's GELU table (ggml_table_gelu_f16), as f32: for every f16 value x, gelu(x) with the tanh approximation computed
 * in f32 as ggml_gelu_f32 does, rounded to f16.
 */
function fillGeluTable(table: Float32Array): void {
  const f = Math.fround;
  const SQRT_2_OVER_PI = f(0.79788456080286535587989211986876), GELU_COEF_A = f(0.044715);
  for (let h = 0; h < 65536; h++) {
    const x = f(f16ToF32(h));
    const inner = f(f(SQRT_2_OVER_PI * x) * f(1 + f(f(GELU_COEF_A * x) * x)));
    table[h] = f16ToF32(f32ToF16(f(f(f(0.5) * x) * f(1 + f(Math.tanh(inner))))));
  }
}

/**
 * Every instance's KV cache seen as one: they hold the same positions, each for its own layers, so they append,
 * truncate and reset together.
 */
export class ModelKV {
  constructor(private readonly caches: readonly KVCache[]) {}

  get ctx(): number {
    return this.caches[0].ctx;
  }

  get type(): KVCache['type'] {
    return this.caches[0].type;
  }

  get positions(): number {
    return this.caches[0].positions;
  }

  get bytesPerToken(): number {
    return this.caches.reduce((sum, c) => sum + c.bytesPerToken, 0);
  }

  /**
   * KVCache.truncate on every cache. Each keeps what its own layers allow (a sliding-window layer may force a restart),
   * and the least of them is what all keep: cutting to it again is exact, since every cache rounds the same way.
   */
  truncate(n: number): number {
    const kept = Math.min(...this.caches.map((c) => c.truncate(n)));
    for (const c of this.caches) if (c.positions !== kept) c.truncate(kept);
    return kept;
  }

  /** Every field summed over the caches, but the type and page size, which they share. */
  usage(): KVUsage {
    const all = this.caches.map((c) => c.usage());
    const total = { ...all[0] };
    for (const u of all.slice(1)) {
      for (const key of Object.keys(u) as Array<keyof KVUsage>) {
        if (key !== 'type' && key !== 'pageTokens' && key !== 'pageBytes') (total[key] as number) += u[key] as number;
      }
    }
    return total;
  }
}
