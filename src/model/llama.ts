import { EdgeLLMError } from '../errors.js';
import type { Arena } from '../plan/arena.js';
import type { Kernels } from '../runtime/kernels.js';
import type { KVCache } from '../kv/cache.js';
import { attend, bindAttention, type AttentionState } from '../attention/attend.js';
import type { LlamaConfig } from './config.js';
import type { LayerStager, LayerWeights, LlamaWeights } from './weights.js';
import { f16ToF32, f32ToF16 } from '../gguf/f16.js';
import { rowSlice, tokenSlice, type Activations, type InputFormat, type Matrix } from './weight-types.js';
import { recordJob, type Job, type KernelPool } from '../runtime/pool.js';
import { splitPerTokenOps } from './split-ops.js';

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
 * The llama forward pass over a batch of tokens at consecutive positions, reading top to bottom like llama2.c's
 * run.c. Every buffer is a pointer into the one planned memory; the kernels do the arithmetic.
 */
export class Llama {
  readonly heap: Float32Array;
  private readonly qDim: number;
  private readonly kvDim: number;
  /** the prepared matmul input: its f32 values (set per call) and its quantized forms in the run state */
  private readonly act: Activations;
  /** the kernels, with the per-token ops split over the pool's threads when there is one (split-ops.ts) */
  private readonly ops: Kernels;
  /**
   * Each matrix's last split job and what it was for: a decode step issues the same products with the same buffers
   * every token, and recording the parts again would cost more than dispatching them.
   */
  private readonly jobs = new WeakMap<Matrix, { ntok: number; buffers: number[]; job: Job }>();

  constructor(
    readonly config: LlamaConfig,
    readonly weights: LlamaWeights,
    readonly kv: KVCache,
    readonly attention: AttentionState,
    private readonly s: RunState,
    readonly kernels: Kernels,
    memory: WebAssembly.Memory,
    readonly maxBatch: number,
    /** threads for the matmuls (the pool's thread 0 is `kernels`), or none */
    readonly pool?: KernelPool,
    /** brings streamed layers' weights into their slot, when some layers are not resident */
    readonly stager?: LayerStager,
  ) {
    this.heap = new Float32Array(memory.buffer);
    kv.bind(memory);
    bindAttention(attention, memory);
    attention.pool = pool;
    this.ops = splitPerTokenOps(kernels, pool);
    this.qDim = config.nHeads * config.headDim;
    this.kvDim = config.nKvHeads * config.headDim;
    this.act = { x: 0, q8_0: { q: s.xq, d: s.xd, s: s.xs }, q8_k: { q: s.kq, d: s.kd, s: s.ks } };
    // Frequency factors (Llama 3's, or Phi-3's set for this context) apply to every layer; Gemma 3's local layers have
    // their own base and no linear scaling (ropeBaseLocal, ropeScaleLocal).
    const at = weights.ropeFreqs || (kv.ctx > config.ropeOriginalContext ? weights.ropeLong : weights.ropeShort);
    const factors = at ? this.heap.slice(at / 4, at / 4 + config.nRot / 2) : null;
    this.fillRopeTable(s.rope, config.ropeBase, config.ropeScale, factors);
    if (s.ropeLocal !== s.rope) this.fillRopeTable(s.ropeLocal, config.ropeBaseLocal, config.ropeScaleLocal, factors);
    if (s.gelu) fillGeluTable(this.heap.subarray(s.gelu / 4, s.gelu / 4 + 65536));
  }

  /** cos/sin of pos·scale·base^(-2i/nRot)/factor_i in f64, times the attention factor, rounded once to f32. */
  private fillRopeTable(at: number, base: number, scale: number, factors: Float32Array | null): void {
    const { nRot, ropeAttnFactor: m } = this.config;
    const table = this.heap.subarray(at / 4, at / 4 + this.kv.ctx * nRot);
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
    const c = this.config, s = this.s, k = this.ops, w = this.weights;
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
      this.stageLayer(l);

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
      for (let t = 0; t < B; t++) {
        this.kv.append(k, l, s.k + t * this.kvDim * 4, s.v + t * this.kvDim * 4, pos0 + t);
        attend(k, c, this.kv, this.attention, l, s.xb2 + t * this.qDim * 4, s.q + t * this.qDim * 4, pos0 + t + 1);
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
    const first = allLogits ? 0 : B - 1;
    const n = B - first;
    const xFirst = s.x + first * dim * 4;
    k.rmsnorm(xFirst, xFirst, w.outputNorm, dim, n, eps);
    this.prepareInput(xFirst, dim, n, w.output);
    this.matmul([w.output, xFirst, s.logits], n);
    if (c.finalSoftcap) k.softcap(s.logits, c.finalSoftcap, n * c.vocab);
    return s.logits / 4; // not >> 2: offsets pass 2^31 in memories over 2 GiB
  }

  /** A streamed layer's matrices point into the slot: its image is copied there before the layer runs. */
  private stageLayer(l: number): void {
    this.stager?.stage(l);
  }

  /** q, k, v of the normed input xb: three matrices, or one fused matrix split by rows (Phi-3); then the biases. */
  private projectQKV(L: LayerWeights, B: number): void {
    const s = this.s, k = this.ops, dim = this.config.dim;
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
    const s = this.s, { dim, ffn } = this.config;
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
    const h = this.heap, from = this.s.fused / 4;
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
    const k = this.ops, s = this.s;
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
    const a = this.act, pool = this.pool;
    const macs = products.reduce((sum, [m]) => sum + m.rows * m.cols * ntok, 0);
    if (!pool || macs < SPLIT_MIN_MACS) {
      for (const [m, x, y] of products) {
        a.x = x;
        m.kernel.matmul(this.kernels, m, a, y, ntok);
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
    m.kernel.dequantRow(this.kernels, m, row, out);
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
