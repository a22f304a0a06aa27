// Elementwise and normalisation ops on f32 vectors. n is always a multiple of 4 (the host checks shapes at load).

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
 * RoPE in llama.cpp's "norm" mode: rotate adjacent pairs (2i, 2i+1) of the first nRot dims of each head. cs holds,
 * per position, nRot/2 (cos, sin) pairs precomputed by the host in f64; token t of the batch uses the row of
 * position pos0 + t. x is [ntok][nHeads·headDim].
 */
export function rope(x: usize, nHeads: i32, headDim: i32, nRot: i32, ntok: i32, cs: usize, pos0: i32): void {
  const width = nHeads * headDim;
  for (let t = 0; t < ntok; t++) {
    const row = cs + ((<usize>(pos0 + t) * nRot) << 2);
    for (let h = 0; h < nHeads; h++) {
      const v = x + ((<usize>t * width + <usize>h * headDim) << 2);
      for (let i = 0; i < nRot; i += 2) {
        const c = load<f32>(row + (<usize>i << 2));
        const s = load<f32>(row + (<usize>i << 2), 4);
        const a = load<f32>(v + (<usize>i << 2));
        const b = load<f32>(v + (<usize>i << 2), 4);
        store<f32>(v + (<usize>i << 2), a * c - b * s);
        store<f32>(v + (<usize>i << 2), a * s + b * c, 4);
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
