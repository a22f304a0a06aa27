import { EdgeLLMError } from '../errors.js';
import type { Arena } from '../plan/arena.js';
import type { Kernels } from '../runtime/kernels.js';
import type { KVCache } from '../kv/cache.js';
import { attend, bindAttention, type AttentionState } from '../attention/attend.js';
import type { LlamaConfig } from './config.js';
import type { LlamaWeights } from './weights.js';
import type { Activations, InputFormat, Matrix } from './weight-types.js';

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
}

export function planRunState(arena: Arena, c: LlamaConfig, maxBatch: number, ctx: number): RunState {
  const qDim = c.nHeads * c.headDim;
  const kvDim = c.nKvHeads * c.headDim;
  const widest = Math.max(c.dim, qDim, c.ffn);
  const f32 = (name: string, n: number) => arena.reserve(`state.${name}`, n * 4);
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
    rope: f32('rope', ctx * c.nRot),
  };
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

  constructor(
    readonly config: LlamaConfig,
    readonly weights: LlamaWeights,
    readonly kv: KVCache,
    readonly attention: AttentionState,
    private readonly s: RunState,
    readonly kernels: Kernels,
    memory: WebAssembly.Memory,
    readonly maxBatch: number,
  ) {
    this.heap = new Float32Array(memory.buffer);
    kv.bind(memory);
    bindAttention(attention, memory);
    this.qDim = config.nHeads * config.headDim;
    this.kvDim = config.nKvHeads * config.headDim;
    this.act = { x: 0, q8_0: { q: s.xq, d: s.xd, s: s.xs }, q8_k: { q: s.kq, d: s.kd, s: s.ks } };
    this.fillRopeTable();
  }

  /** cos/sin of pos·base^(-2i/nRot) in f64, rounded once to f32. */
  private fillRopeTable(): void {
    const { nRot, ropeBase } = this.config;
    const table = this.heap.subarray(this.s.rope / 4, (this.s.rope / 4) + this.kv.ctx * nRot);
    for (let pos = 0; pos < this.kv.ctx; pos++) {
      for (let i = 0; i < nRot; i += 2) {
        const theta = pos * Math.pow(ropeBase, -i / nRot);
        table[pos * nRot + i] = Math.cos(theta);
        table[pos * nRot + i + 1] = Math.sin(theta);
      }
    }
  }

  /**
   * Runs tokens at positions pos0.., appending to the KV cache. Returns the offset (in floats) of the logits:
   * of every token when allLogits ([ntok][vocab]), else of the last token only.
   */
  forward(tokens: ArrayLike<number>, pos0: number, allLogits: boolean): number {
    const c = this.config, s = this.s, k = this.kernels, w = this.weights;
    const B = tokens.length;
    if (B < 1 || B > this.maxBatch) throw new EdgeLLMError('BAD_ARGUMENT', `forward batch of ${B} tokens; 1..${this.maxBatch} allowed`);
    if (pos0 + B > this.kv.ctx) {
      throw new EdgeLLMError('CONTEXT_FULL', `positions ${pos0}..${pos0 + B - 1} exceed the context of ${this.kv.ctx} tokens`);
    }
    const { dim, ffn, headDim, nHeads, nKvHeads } = c;

    // token embeddings
    for (let t = 0; t < B; t++) {
      const id = tokens[t];
      if (!Number.isInteger(id) || id < 0 || id >= c.vocab) throw new EdgeLLMError('BAD_ARGUMENT', `token id ${id} is outside the vocabulary 0..${c.vocab - 1}`);
      this.dequantRow(w.tokenEmbd, id, s.x + t * dim * 4);
    }

    for (let l = 0; l < c.nLayers; l++) {
      const L = w.layers[l];

      // attention: rmsnorm → q, k, v → rope → cache → attend → output projection → residual
      k.rmsnorm(s.xb, s.x, L.attnNorm, dim, B, c.rmsEps);
      this.prepareInput(s.xb, dim, B, L.wq, L.wk, L.wv);
      this.matmul(L.wq, s.xb, s.q, B);
      this.matmul(L.wk, s.xb, s.k, B);
      this.matmul(L.wv, s.xb, s.v, B);
      k.rope(s.q, nHeads, headDim, c.nRot, B, s.rope, pos0);
      k.rope(s.k, nKvHeads, headDim, c.nRot, B, s.rope, pos0);
      for (let t = 0; t < B; t++) {
        this.kv.append(k, l, s.k + t * this.kvDim * 4, s.v + t * this.kvDim * 4, pos0 + t);
        attend(k, c, this.kv, this.attention, l, s.xb2 + t * this.qDim * 4, s.q + t * this.qDim * 4, pos0 + t + 1);
      }
      this.prepareInput(s.xb2, this.qDim, B, L.wo);
      this.matmul(L.wo, s.xb2, s.xb, B);
      k.add(s.x, s.xb, B * dim);

      // feed-forward: rmsnorm → silu(w1·x) ⊙ (w3·x) → w2 → residual
      k.rmsnorm(s.xb, s.x, L.ffnNorm, dim, B, c.rmsEps);
      this.prepareInput(s.xb, dim, B, L.w1, L.w3);
      this.matmul(L.w1, s.xb, s.hb, B);
      this.matmul(L.w3, s.xb, s.hb2, B);
      k.silu_mul(s.hb, s.hb2, B * ffn);
      this.prepareInput(s.hb, ffn, B, L.w2);
      this.matmul(L.w2, s.hb, s.xb, B);
      k.add(s.x, s.xb, B * dim);
    }

    // final norm and classifier, for every token or just the last
    const first = allLogits ? 0 : B - 1;
    const n = B - first;
    const xFirst = s.x + first * dim * 4;
    k.rmsnorm(xFirst, xFirst, w.outputNorm, dim, n, c.rmsEps);
    this.prepareInput(xFirst, dim, n, w.output);
    this.matmul(w.output, xFirst, s.logits, n);
    return s.logits / 4; // not >> 2: offsets pass 2^31 in memories over 2 GiB
  }

  /** Quantized matrices read int8 activations: quantize the input once, in each format the matrices sharing it read. */
  private prepareInput(x: number, cols: number, ntok: number, ...ms: Matrix[]): void {
    const k = this.kernels, s = this.s;
    const needs = (format: InputFormat) => ms.some((m) => m.kernel.input === format);
    if (needs('q8_0')) k.quantize_q8_0(x, cols, ntok, s.xq, s.xd, s.xs);
    if (needs('q8_k')) k.quantize_q8_k(x, cols, ntok, s.kq, s.kd, s.ks);
  }

  /** y = W·x for ntok tokens; quantized types read the input prepared by prepareInput. */
  private matmul(m: Matrix, x: number, y: number, ntok: number): void {
    this.act.x = x;
    m.kernel.matmul(this.kernels, m, this.act, y, ntok);
  }

  private dequantRow(m: Matrix, row: number, out: number): void {
    m.kernel.dequantRow(this.kernels, m, row, out);
  }
}
