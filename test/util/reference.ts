/**
 * A plain f64 llama forward pass, written for clarity, not speed: the reference the wasm kernels are checked against on
 * synthetic models. Weights are the dequantized values actually stored in the file, so any difference comes from the
 * runtime's arithmetic (f32 accumulation, int8 activations), not from weight quantization.
 *
 * With `roundInput(weightName)` true (or 'q8_0') for a Q8_0/Q4_0 weight, or 'q8_k' for a K-quant, the input of that
 * matmul is first rounded the way the runtime (and llama.cpp) rounds activations, so what remains is f32-vs-f64
 * arithmetic only.
 */
import { WEIGHT_TYPES } from '../../src/model/weight-types.js';
import { f16ToF32, f32ToF16 } from '../../src/gguf/f16.js';
import type { SyntheticSpec } from './synthetic.js';

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

/** Logits [tokens.length][vocab], each position attending to all earlier ones. */
export function referenceForward(
  spec: RefSpec, W: Weights, tokens: number[], roundInput: (weightName: string) => boolean | 'q8_0' | 'q8_k' = () => false,
): Float64Array[] {
  const { dim, nLayers, nHeads, nKvHeads, ffn, vocab } = spec;
  const hd = spec.headDim ?? dim / nHeads;
  const base = spec.ropeBase ?? 10000;
  const eps = spec.eps ?? 1e-5;
  const qDim = nHeads * hd;
  const kvDim = nKvHeads * hd;
  const get = (n: string) => {
    const w = W.get(n);
    if (!w) throw new Error(`reference: no weights for ${n}`);
    return w;
  };
  const emb = get('token_embd.weight');
  const outName = spec.tied === false || W.has('output.weight') ? 'output.weight' : 'token_embd.weight';
  /** y = W·x by the named weight, rounding x first if that weight reads int8 activations */
  const matvec = (name: string, x: Float64Array, rows: number, cols: number) => {
    const r = roundInput(name);
    return matvecExact(get(name), r === 'q8_k' ? roundActivationsQ8K(x) : r ? roundActivationsQ8(x) : x, rows, cols);
  };
  const keys: Float64Array[][] = Array.from({ length: nLayers }, () => []);
  const vals: Float64Array[][] = Array.from({ length: nLayers }, () => []);
  const logits: Float64Array[] = [];

  const rope = (v: Float64Array, heads: number, pos: number) => {
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < hd; i += 2) {
        const theta = pos * Math.pow(base, -i / hd);
        const c = Math.cos(theta), s = Math.sin(theta);
        const a = v[h * hd + i], b = v[h * hd + i + 1];
        v[h * hd + i] = a * c - b * s;
        v[h * hd + i + 1] = a * s + b * c;
      }
    }
  };

  tokens.forEach((tok, pos) => {
    const x = Float64Array.from(emb.subarray(tok * dim, (tok + 1) * dim));
    for (let l = 0; l < nLayers; l++) {
      const p = `blk.${l}.`;
      const xb = rmsnorm(x, get(`${p}attn_norm.weight`), eps);
      const q = matvec(`${p}attn_q.weight`, xb, qDim, dim);
      const k = matvec(`${p}attn_k.weight`, xb, kvDim, dim);
      const v = matvec(`${p}attn_v.weight`, xb, kvDim, dim);
      rope(q, nHeads, pos);
      rope(k, nKvHeads, pos);
      keys[l].push(k);
      vals[l].push(v);
      const att = new Float64Array(qDim);
      for (let h = 0; h < nHeads; h++) {
        const g = Math.floor(h / (nHeads / nKvHeads));
        const scores = keys[l].map((kt) => {
          let s = 0;
          for (let i = 0; i < hd; i++) s += q[h * hd + i] * kt[g * hd + i];
          return s / Math.sqrt(hd);
        });
        const m = Math.max(...scores);
        const e = scores.map((s) => Math.exp(s - m));
        const z = e.reduce((a, b) => a + b, 0);
        e.forEach((w, t) => {
          for (let i = 0; i < hd; i++) att[h * hd + i] += (w / z) * vals[l][t][g * hd + i];
        });
      }
      const o = matvec(`${p}attn_output.weight`, att, dim, qDim);
      for (let i = 0; i < dim; i++) x[i] += o[i];
      const xb2 = rmsnorm(x, get(`${p}ffn_norm.weight`), eps);
      const g1 = matvec(`${p}ffn_gate.weight`, xb2, ffn, dim);
      const u = matvec(`${p}ffn_up.weight`, xb2, ffn, dim);
      const hb = g1.map((gv, i) => (gv / (1 + Math.exp(-gv))) * u[i]);
      const d = matvec(`${p}ffn_down.weight`, hb, dim, ffn);
      for (let i = 0; i < dim; i++) x[i] += d[i];
    }
    logits.push(matvec(outName, rmsnorm(x, get('output_norm.weight'), eps), vocab, dim));
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
