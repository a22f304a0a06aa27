/**
 * A plain f64 forward pass, written for clarity, not speed: the reference the wasm kernels are checked against on
 * synthetic models, and itself checked against llama.cpp on the architecture kit (test/arch-reference.test.ts). Weights
 * are the dequantized values actually stored in the file, so any difference comes from the runtime's arithmetic (f32
 * accumulation, int8 activations), not from weight quantization.
 *
 * It runs every architecture of src/model/arch.ts, driven by the same LlamaConfig fields and architecture row as the
 * runtime, with each step written out as llama.cpp's graph code does it (see ../shared/conformance/arch/README.md).
 *
 * With `roundInput(weightName)` true (or 'q8_0') for a Q8_0/Q4_0 weight, or 'q8_k' for a K-quant, the input of that
 * matmul is first rounded the way the runtime (and llama.cpp) rounds activations, so what remains is f32-vs-f64
 * arithmetic only.
 */
import { WEIGHT_TYPES } from '../../src/model/weight-types.js';
import { f16ToF32, f32ToF16 } from '../../src/gguf/f16.js';
import type { LlamaConfig } from '../../src/model/config.js';
import { syntheticConfig, type SyntheticSpec } from './synthetic.js';

export type RefSpec = Omit<SyntheticSpec, 'ctx'>;
type Weights = Map<string, Float32Array>;

/** x rounded through int8 codes per 32-block, as quantize_q8_0 does in f32: d = amax/127 rounded to f16, codes = round-half-even(x·127/amax). */
export function roundActivationsQ8(x: Float64Array): Float64Array {
  const out = new Float64Array(x.length);
  for (let b = 0; b < x.length; b += 32) {
    let amax = 0;
    for (let i = b; i < b + 32; i++) amax = Math.max(amax, Math.abs(Math.fround(x[i])));
    const d = f16ToF32(f32ToF16(Math.fround(amax / 127)));
    const id = amax ? Math.fround(127 / amax) : 0;
    for (let i = b; i < b + 32; i++) {
      const v = Math.fround(Math.fround(x[i]) * id);
      const r = Math.round(v);
      out[i] = (r - v === 0.5 && r % 2 !== 0 ? r - 1 : r) * d; // half to even, like f32x4.nearest
    }
  }
  return out;
}

/**
 * x rounded through int8 codes per 256-block, as quantize_q8_k does in f32 (ggml's quantize_row_q8_K): max = the value
 * of largest magnitude (the first on ties), iscale = −127/max, codes = round-half-even(iscale·x), d = 1/iscale.
 */
export function roundActivationsQ8K(x: Float64Array): Float64Array {
  const out = new Float64Array(x.length);
  for (let b = 0; b < x.length; b += 256) {
    let amax = 0, max = 0;
    for (let i = b; i < b + 256; i++) {
      const v = Math.fround(x[i]);
      if (Math.abs(v) > amax) {
        amax = Math.abs(v);
        max = v;
      }
    }
    if (amax === 0) continue;
    const iscale = Math.fround(-127 / max);
    const d = Math.fround(1 / iscale);
    for (let i = b; i < b + 256; i++) {
      const v = Math.fround(Math.fround(x[i]) * iscale);
      const r = Math.round(v);
      out[i] = Math.min(127, r - v === 0.5 && r % 2 !== 0 ? r - 1 : r) * d;
    }
  }
  return out;
}

/** What the reference reads of a model: the hyperparameters and architecture row of src/model/config.ts. */
export type RefConfig = Pick<
  LlamaConfig,
  'arch' | 'dim' | 'nLayers' | 'nHeads' | 'nKvHeads' | 'headDim' | 'nRot' | 'ffn' | 'vocab' | 'ropeBase' | 'ropeBaseLocal' |
  'ropeScale' | 'ropeScaleLocal' | 'ropeMode' | 'rmsEps' | 'window' | 'attnSoftcap' | 'finalSoftcap' | 'ropeAttnFactor' | 'ropeOriginalContext' |
  'contextLength'
>;

/**
 * How llama.cpp's CPU backend computed a position's attention, to tell its rounding from a real difference
 * (test/arch-reference.test.ts). In every case K and V are stored in its F16 cache (rounded to f16). Then:
 * - 'tiled': flash attention on a micro-batch of 64 rows or more (ggml's flash_attn_ext_tiled): Q, the softmax and
 *   the sum over V in f32 (taken as exact here).
 * - 'one_chunk': flash attention on a smaller micro-batch or a single-token decode (flash_attn_ext_f16_one_chunk): Q
 *   rounded to f16, an online softmax over the keys in order, and the sum over V accumulated in f16, rounded at every
 *   key. Over a few hundred keys this moves the logits by up to 0.5% (measured on the kit).
 * - 'no_flash': without flash attention (Gemma 2, whose soft-cap turns it off): Q rounded to f16 for K·Q, and the
 *   softmax probabilities rounded to f16 for the product with V.
 */
export type GgmlAttention = 'tiled' | 'one_chunk' | 'no_flash';

export interface RefOptions {
  /**
   * GELU as ggml's CPU backend computes it (GGML_GELU_FP16): the input rounded to f16 and looked up in an f16 table of
   * the tanh approximation, x ≥ 10 passed through and x ≤ −10 giving 0. Default: the exact tanh approximation.
   */
  geluF16?: boolean;
  /** llama.cpp's attention arithmetic at each position (see GgmlAttention); default exact f64 attention */
  ggmlAttention?: (pos: number) => GgmlAttention;
}

function matvecExact(w: Float32Array, x: Float64Array, rows: number, cols: number): Float64Array {
  const y = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let c = 0; c < cols; c++) s += w[r * cols + c] * x[c];
    y[r] = s;
  }
  return y;
}

function rmsnorm(x: Float64Array, w: Float32Array, eps: number): Float64Array {
  let ss = 0;
  for (const v of x) ss += v * v;
  const scale = 1 / Math.sqrt(ss / x.length + eps);
  return x.map((v, i) => v * scale * w[i]);
}

const silu = (x: number) => x / (1 + Math.exp(-x));
/** GELU, tanh approximation (ggml_gelu_f32's formula) */
const gelu = (x: number) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * x * (1 + 0.044715 * x * x)));
/** ggml_vec_gelu_f32 / ggml_vec_geglu_f32 with GGML_GELU_FP16: the f16 table lookup */
function geluF16(x: number): number {
  const v = Math.fround(x);
  if (v <= -10) return 0;
  if (v >= 10) return v;
  return f16ToF32(f32ToF16(gelu(f16ToF32(f32ToF16(v)))));
}
const softcap = (x: number, cap: number) => cap * Math.tanh(x / cap);
const f16 = (x: number) => f16ToF32(f32ToF16(x));

/**
 * Logits [tokens.length][vocab], each position attending to the earlier ones its layer sees. `model` is a config
 * (e.g. readLlamaConfig on the file) or, for a synthetic llama, the spec it was written from.
 */
export function referenceForward(
  model: RefSpec | RefConfig,
  W: Weights,
  tokens: number[],
  roundInput: (weightName: string) => boolean | 'q8_0' | 'q8_k' = () => false,
  opts: RefOptions = {},
): Float64Array[] {
  const c: RefConfig = 'arch' in model ? model : syntheticConfig(model);
  const { arch, dim, nLayers, nHeads, nKvHeads, ffn, vocab, nRot } = c;
  const hd = c.headDim;
  const eps = c.rmsEps;
  const qDim = nHeads * hd;
  const kvDim = nKvHeads * hd;
  const get = (n: string) => {
    const w = W.get(n);
    if (!w) throw new Error(`reference: no weights for ${n}`);
    return w;
  };
  const emb = get('token_embd.weight');
  const outName = !arch.alwaysTied && W.has('output.weight') ? 'output.weight' : 'token_embd.weight';
  // Llama 3's factors, or Phi-3's LongRoPE set for the context (the runtime's default context is the file's)
  const longRope = arch.longRope && W.has('rope_factors_short.weight');
  const freqs = arch.ropeFreqs && W.has('rope_freqs.weight') ? get('rope_freqs.weight')
    : longRope ? get(c.contextLength > c.ropeOriginalContext ? 'rope_factors_long.weight' : 'rope_factors_short.weight') : undefined;
  const mscale = c.ropeAttnFactor;
  const act = arch.ffnActivation === 'silu' ? silu : opts.geluF16 ? geluF16 : gelu;
  /** y = W·x by the named weight, rounding x first if that weight reads int8 activations */
  const matvec = (name: string, x: Float64Array, rows: number, cols: number) => {
    const r = roundInput(name);
    return matvecExact(get(name), r === 'q8_k' ? roundActivationsQ8K(x) : r ? roundActivationsQ8(x) : x, rows, cols);
  };
  const keys: Float64Array[][] = Array.from({ length: nLayers }, () => []);
  const vals: Float64Array[][] = Array.from({ length: nLayers }, () => []);
  const logits: Float64Array[] = [];

  /**
   * Rotates the first nRot dims of each head by pos·scale·base^(−2j/nRot)/factor_j (factor from rope_freqs); 'norm'
   * pairs (2j, 2j+1), 'neox' pairs (j, j + nRot/2). The rest of the head passes through (partial rotary).
   */
  const rope = (v: Float64Array, heads: number, pos: number, base: number, scale: number) => {
    const half = nRot / 2;
    for (let h = 0; h < heads; h++) {
      for (let j = 0; j < half; j++) {
        const theta = pos * scale * Math.pow(base, -(2 * j) / nRot) / (freqs ? freqs[j] : 1);
        const cos = Math.cos(theta) * mscale, sin = Math.sin(theta) * mscale;
        const ia = h * hd + (c.ropeMode === 'neox' ? j : 2 * j);
        const ib = ia + (c.ropeMode === 'neox' ? half : 1);
        const a = v[ia], b = v[ib];
        v[ia] = a * cos - b * sin;
        v[ib] = a * sin + b * cos;
      }
    }
  };
  /** RMSNorm of each head on its own, one weight vector for all heads (attn_q_norm / attn_k_norm) */
  const headNorm = (v: Float64Array, heads: number, w: Float32Array) => {
    for (let h = 0; h < heads; h++) v.set(rmsnorm(v.subarray(h * hd, (h + 1) * hd), w, eps), h * hd);
  };
  const addBias = (v: Float64Array, name: string) => {
    const b = get(name);
    for (let i = 0; i < v.length; i++) v[i] += b[i];
  };

  tokens.forEach((tok, pos) => {
    const x = Float64Array.from(emb.subarray(tok * dim, (tok + 1) * dim));
    // Gemma scales the input embedding by √dim, which llama.cpp computes as the f32 sqrtf(n_embd)
    if (arch.scaleEmbedding) x.forEach((v, i) => (x[i] = v * Math.fround(Math.sqrt(dim))));
    for (let l = 0; l < nLayers; l++) {
      const p = `blk.${l}.`;
      const xb = rmsnorm(x, get(`${p}attn_norm.weight`), eps);
      let q: Float64Array, k: Float64Array, v: Float64Array;
      if (arch.fusedQKV) {
        const qkv = matvec(`${p}attn_qkv.weight`, xb, qDim + 2 * kvDim, dim);
        [q, k, v] = [qkv.slice(0, qDim), qkv.slice(qDim, qDim + kvDim), qkv.slice(qDim + kvDim)];
      } else {
        q = matvec(`${p}attn_q.weight`, xb, qDim, dim);
        k = matvec(`${p}attn_k.weight`, xb, kvDim, dim);
        v = matvec(`${p}attn_v.weight`, xb, kvDim, dim);
      }
      if (arch.qkvBias === 'required' || (arch.qkvBias === 'optional' && W.has(`${p}attn_q.bias`))) {
        addBias(q, `${p}attn_q.bias`);
        addBias(k, `${p}attn_k.bias`);
        addBias(v, `${p}attn_v.bias`);
      }
      if (arch.qkNorm) {
        headNorm(q, nHeads, get(`${p}attn_q_norm.weight`));
        headNorm(k, nKvHeads, get(`${p}attn_k_norm.weight`));
      }
      // a sliding-window layer has its own RoPE base and no linear scaling (llama.cpp's rope_freq_*_train_swa)
      const window = c.window[l];
      rope(q, nHeads, pos, window ? c.ropeBaseLocal : c.ropeBase, window ? c.ropeScaleLocal : c.ropeScale);
      rope(k, nKvHeads, pos, window ? c.ropeBaseLocal : c.ropeBase, window ? c.ropeScaleLocal : c.ropeScale);
      const ggml = opts.ggmlAttention?.(pos);
      keys[l].push(ggml ? k.map(f16) : k);
      vals[l].push(ggml ? v.map(f16) : v);
      if (ggml === 'one_chunk' || ggml === 'no_flash') q = q.map(f16);
      // keys first..pos: all of them, or the last `window` (key t is visible iff pos − t < window)
      const first = window ? Math.max(0, pos - window + 1) : 0;
      const att = new Float64Array(qDim);
      for (let h = 0; h < nHeads; h++) {
        const g = Math.floor(h / (nHeads / nKvHeads));
        if (ggml === 'one_chunk') {
          // online softmax in key order in f32, the V sum rescaled and accumulated in f16 (rounded at every key)
          const f = Math.fround;
          const acc = new Float64Array(hd);
          let m = -Infinity, z = 0;
          keys[l].slice(first).forEach((kt, t) => {
            let dot = 0;
            for (let i = 0; i < hd; i++) dot += q[h * hd + i] * kt[g * hd + i];
            let s = f(f(dot) * f(1 / f(Math.sqrt(hd))));
            if (c.attnSoftcap) s = f(c.attnSoftcap * f(Math.tanh(f(s / c.attnSoftcap))));
            const vt = vals[l][first + t];
            let scale = 1, w = 1;
            if (s > m) {
              scale = f(Math.exp(f(m - s)));
              m = s;
              for (let i = 0; i < hd; i++) acc[i] = f16(acc[i] * scale);
            } else {
              w = f(Math.exp(f(s - m)));
            }
            for (let i = 0; i < hd; i++) acc[i] = f16(acc[i] + vt[g * hd + i] * w);
            z = f(f(z * scale) + w);
          });
          const zInv = f(1 / z);
          for (let i = 0; i < hd; i++) att[h * hd + i] = f(acc[i] * zInv);
          continue;
        }
        const scores = keys[l].slice(first).map((kt) => {
          let s = 0;
          for (let i = 0; i < hd; i++) s += q[h * hd + i] * kt[g * hd + i];
          return c.attnSoftcap ? softcap(s / Math.sqrt(hd), c.attnSoftcap) : s / Math.sqrt(hd);
        });
        const m = Math.max(...scores);
        const e = scores.map((s) => Math.exp(s - m));
        const z = e.reduce((a, b) => a + b, 0);
        e.forEach((w, t) => {
          const pr = ggml === 'no_flash' ? f16(w / z) : w / z;
          for (let i = 0; i < hd; i++) att[h * hd + i] += pr * vals[l][first + t][g * hd + i];
        });
      }
      let o = matvec(`${p}attn_output.weight`, att, dim, qDim);
      if (arch.postNorms) o = rmsnorm(o, get(`${p}post_attention_norm.weight`), eps);
      for (let i = 0; i < dim; i++) x[i] += o[i];
      const xb2 = rmsnorm(x, get(`${p}ffn_norm.weight`), eps);
      let gate: Float64Array, up: Float64Array;
      if (arch.fusedGateUp) {
        const gu = matvec(`${p}ffn_up.weight`, xb2, 2 * ffn, dim);
        [gate, up] = [gu.slice(0, ffn), gu.slice(ffn)];
      } else {
        gate = matvec(`${p}ffn_gate.weight`, xb2, ffn, dim);
        up = matvec(`${p}ffn_up.weight`, xb2, ffn, dim);
      }
      const hb = gate.map((gv, i) => act(gv) * up[i]);
      let d = matvec(`${p}ffn_down.weight`, hb, dim, ffn);
      if (arch.postNorms) d = rmsnorm(d, get(`${p}post_ffw_norm.weight`), eps);
      for (let i = 0; i < dim; i++) x[i] += d[i];
    }
    const out = matvec(outName, rmsnorm(x, get('output_norm.weight'), eps), vocab, dim);
    logits.push(c.finalSoftcap ? out.map((v) => softcap(v, c.finalSoftcap)) : out);
  });
  return logits;
}

/** roundInput for referenceForward that rounds each matmul's input as the runtime does for that weight's type. */
export function runtimeRounding(spec: { type?: number; types?: Record<string, number> }): (weightName: string) => false | 'q8_0' | 'q8_k' {
  return (name) => {
    const format = WEIGHT_TYPES.get(spec.types?.[name] ?? spec.type!)!.input;
    return format === 'f32' ? false : format;
  };
}
