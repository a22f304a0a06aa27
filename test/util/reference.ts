/**
 * A plain f64 llama forward pass, written for clarity, not speed: the reference the wasm kernels are checked against on
 * synthetic models. Weights are the dequantized values actually stored in the file, so any difference comes from the
 * runtime's arithmetic (f32 accumulation, int8 activations), not from weight quantization.
 */
export interface RefSpec {
  dim: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  headDim?: number;
  ffn: number;
  vocab: number;
  ropeBase?: number;
  eps?: number;
  tied?: boolean;
}

type Weights = Map<string, Float32Array>;

function matvec(w: Float32Array, x: Float64Array, rows: number, cols: number): Float64Array {
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
export function referenceForward(spec: RefSpec, W: Weights, tokens: number[]): Float64Array[] {
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
  const out = spec.tied === false || W.has('output.weight') ? get('output.weight') : emb;
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
      const q = matvec(get(`${p}attn_q.weight`), xb, qDim, dim);
      const k = matvec(get(`${p}attn_k.weight`), xb, kvDim, dim);
      const v = matvec(get(`${p}attn_v.weight`), xb, kvDim, dim);
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
      const o = matvec(get(`${p}attn_output.weight`), att, dim, qDim);
      for (let i = 0; i < dim; i++) x[i] += o[i];
      const xb2 = rmsnorm(x, get(`${p}ffn_norm.weight`), eps);
      const g1 = matvec(get(`${p}ffn_gate.weight`), xb2, ffn, dim);
      const u = matvec(get(`${p}ffn_up.weight`), xb2, ffn, dim);
      const hb = g1.map((gv, i) => (gv / (1 + Math.exp(-gv))) * u[i]);
      const d = matvec(get(`${p}ffn_down.weight`), hb, dim, ffn);
      for (let i = 0; i < dim; i++) x[i] += d[i];
    }
    logits.push(matvec(out, rmsnorm(x, get('output_norm.weight'), eps), vocab, dim));
  });
  return logits;
}
