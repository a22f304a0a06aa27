// Elementwise and normalisation ops on f32 vectors. n is always a multiple of 4 (the host checks shapes at load).

import { f32_to_f16_bits } from './common';

/**
 * out[t] = x[t] / rms(x[t]) · w for ntok rows of n. The sum of squares is accumulated in f64, as ggml does, so long
 * rows do not lose precision; the scaling then runs in f32 in ggml's order ((x·scale)·w).
 */
export function rmsnorm(out: usize, x: usize, w: usize, n: i32, ntok: i32, eps: f32): void {
  for (let t = 0; t < ntok; t++) {
    const xt = x + ((<usize>t * n) << 2);
    const ot = out + ((<usize>t * n) << 2);
    let ss: f64 = 0;
    for (let i = 0; i < n; i++) {
      const v = load<f32>(xt + (<usize>i << 2));
      ss += <f64>(v * v);
    }
    const scale = f32x4.splat(<f32>1.0 / Mathf.sqrt(<f32>(ss / <f64>n + <f64>eps)));
    for (let i = 0; i < n; i += 4) {
      const o = <usize>i << 2;
      v128.store(ot + o, f32x4.mul(f32x4.mul(v128.load(xt + o), scale), v128.load(w + o)));
    }
  }
}

/**
 * RoPE on the first nRot dims of each head, in llama.cpp's two modes: "norm" rotates adjacent pairs (2i, 2i+1),
 * "neox" (neox ≠ 0) rotates (i, i + nRot/2). Pair i turns by the angle of row i of cs, which holds per position nRot/2
 * (cos, sin) pairs precomputed by the host in f64 (frequency factors and scaling folded in); token t of the batch uses
 * the row of position pos0 + t. x is [ntok][nHeads·headDim].
 */
export function rope(x: usize, nHeads: i32, headDim: i32, nRot: i32, ntok: i32, cs: usize, pos0: i32, neox: i32): void {
  const width = nHeads * headDim;
  // element offsets (bytes) of the two halves of pair i: (2i, 2i+1) or (i, i + nRot/2)
  const second: usize = neox ? <usize>nRot << 1 : 4;
  for (let t = 0; t < ntok; t++) {
    const row = cs + ((<usize>(pos0 + t) * nRot) << 2);
    for (let h = 0; h < nHeads; h++) {
      const v = x + ((<usize>t * width + <usize>h * headDim) << 2);
      for (let i = 0; i < nRot; i += 2) {
        const c = load<f32>(row + (<usize>i << 2));
        const s = load<f32>(row + (<usize>i << 2), 4);
        const p = v + (neox ? <usize>i << 1 : <usize>i << 2);
        const a = load<f32>(p);
        const b = load<f32>(p + second);
        store<f32>(p, a * c - b * s);
        store<f32>(p + second, a * s + b * c);
      }
    }
  }
}

/** gate = silu(gate) · up, the SwiGLU of the llama FFN. */
export function silu_mul(gate: usize, up: usize, n: i32): void {
  for (let i = 0; i < n; i++) {
    const p = gate + (<usize>i << 2);
    const g = load<f32>(p);
    store<f32>(p, (g / (<f32>1.0 + Mathf.exp(-g))) * load<f32>(up + (<usize>i << 2)));
  }
}

/** a += b */
export function add(a: usize, b: usize, n: i32): void {
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const o = <usize>i << 2;
    v128.store(a + o, f32x4.add(v128.load(a + o), v128.load(b + o)));
  }
  for (; i < n; i++) {
    const o = <usize>i << 2;
    store<f32>(a + o, load<f32>(a + o) + load<f32>(b + o));
  }
}

/**
 * gate = gelu(gate) · up, GELU with the tanh approximation (Gemma's GEGLU) as ggml's CPU backend computes it: the
 * input rounded to f16 indexes a table of gelu values (65536 f32, filled by the host from ggml's f16 table), and
 * |x| ≥ 10 passes through (x ≤ −10 gives 0). Matching the table, not the formula, keeps us on llama.cpp's numbers.
 */
export function gelu_mul(gate: usize, up: usize, n: i32, table: usize): void {
  for (let i = 0; i < n; i++) {
    const p = gate + (<usize>i << 2);
    const g = load<f32>(p);
    let y: f32;
    if (g <= -10) y = 0;
    else if (g >= 10) y = g;
    else y = load<f32>(table + (<usize>f32_to_f16_bits(g) << 2));
    store<f32>(p, y * load<f32>(up + (<usize>i << 2)));
  }
}

/** x[t] += b for ntok rows of n (a projection's bias). */
export function add_bias(x: usize, b: usize, n: i32, ntok: i32): void {
  for (let t = 0; t < ntok; t++) add(x + ((<usize>t * n) << 2), b, n);
}

/** x *= s */
export function scale(x: usize, s: f32, n: i32): void {
  for (let i = 0; i < n; i++) {
    const p = x + (<usize>i << 2);
    store<f32>(p, load<f32>(p) * s);
  }
}

/** x = c·tanh(x/c), ggml's order: scale by the f32 1/c, tanh, scale by c (Gemma 2's final-logit soft-cap). */
export function softcap(x: usize, c: f32, n: i32): void {
  const inv: f32 = <f32>1.0 / c;
  for (let i = 0; i < n; i++) {
    const p = x + (<usize>i << 2);
    store<f32>(p, Mathf.tanh(load<f32>(p) * inv) * c);
  }
}
