/**
 * The forward pass's per-token ops (norms, RoPE, activations, residual adds, the activations' quantization), split over
 * the kernel pool by token ranges when a batch is big enough to pay for the dispatch (docs/threads.md). Each token's
 * outputs depend on that token's inputs alone, so a range computes the bytes the whole call would: the logits do not
 * depend on the thread count. Matmuls split in Llama.matmul, attention in attend().
 *
 * The result is a Kernels with these ops replaced, so the forward pass reads the same with or without threads.
 */
import type { Kernels } from '../runtime/kernels.js';
import type { KernelPool } from '../runtime/pool.js';
import { tokenSlice, type Activations } from './weight-types.js';

/** Elements below which a per-token op runs on one thread: at ~1 ns an element, under a dispatch's few µs. */
const SPLIT_MIN_ELEMENTS = 1 << 15;

export function splitPerTokenOps(k: Kernels, pool: KernelPool | undefined): Kernels {
  if (!pool || pool.threads < 2) return k;
  /** part(kernels, t0, n) over rows [0, rows) of `width` elements each, in one range per thread. */
  const split = (rows: number, width: number, part: (k: Kernels, t0: number, n: number) => void) => {
    if (rows < 2 || rows * width < SPLIT_MIN_ELEMENTS) return part(k, 0, rows);
    const n = Math.min(rows, pool.threads);
    pool.runParts(Array.from({ length: n }, (_, i) => {
      const t0 = Math.floor((rows * i) / n), t1 = Math.floor((rows * (i + 1)) / n);
      return (t: Kernels) => part(t, t0, t1 - t0);
    }));
  };
  // elementwise ops over n floats: ranges of 4-float rows
  const flat = (n: number, part: (k: Kernels, i0: number, m: number) => void) => {
    if (n % 4) return part(k, 0, n);
    split(n / 4, 4, (t, r0, m) => part(t, 4 * r0, 4 * m));
  };
  // the quantized activations at token t0 (their layout is the matmuls' tokenSlice)
  const at = (x: number, cols: number, q: number, d: number, s: number, t0: number, format: 'q8_0' | 'q8_k') => {
    const a: Activations = { x, q8_0: { q, d, s }, q8_k: { q, d, s } };
    const sliced = tokenSlice(a, cols, t0);
    return { x: sliced.x, ...sliced[format] };
  };
  return {
    ...k,
    rmsnorm: (out, x, w, n, ntok, eps) => split(ntok, n, (t, t0, m) => t.rmsnorm(out + t0 * n * 4, x + t0 * n * 4, w, n, m, eps)),
    rope: (x, nHeads, headDim, nRot, ntok, cs, pos0, neox) =>
      split(ntok, nHeads * headDim, (t, t0, m) => t.rope(x + t0 * nHeads * headDim * 4, nHeads, headDim, nRot, m, cs, pos0 + t0, neox)),
    add_bias: (x, b, n, ntok) => split(ntok, n, (t, t0, m) => t.add_bias(x + t0 * n * 4, b, n, m)),
    add: (a, b, n) => flat(n, (t, i, m) => t.add(a + i * 4, b + i * 4, m)),
    silu_mul: (gate, up, n) => flat(n, (t, i, m) => t.silu_mul(gate + i * 4, up + i * 4, m)),
    gelu_mul: (gate, up, n, table) => flat(n, (t, i, m) => t.gelu_mul(gate + i * 4, up + i * 4, m, table)),
    quantize_q8_0: (x, cols, ntok, q, d, s) =>
      split(ntok, cols, (t, t0, m) => {
        const p = at(x, cols, q, d, s, t0, 'q8_0');
        t.quantize_q8_0(p.x, cols, m, p.q, p.d, p.s);
      }),
    quantize_q8_k: (x, cols, ntok, q, d, s) =>
      split(ntok, cols, (t, t0, m) => {
        const p = at(x, cols, q, d, s, t0, 'q8_k');
        t.quantize_q8_k(p.x, cols, m, p.q, p.d, p.s);
      }),
  };
}
