import type { Kernels } from './kernels.js';

/** Where the time of a forward pass goes, by kernel family (the bench's per-op breakdown). */
export type OpCategory = 'matmul' | 'quantize' | 'attention' | 'norms/rope/silu';

const CATEGORY: Record<string, OpCategory> = {
  matmul_f32: 'matmul', matmul_f16: 'matmul', matmul_q8_0: 'matmul', matmul_q4_0: 'matmul',
  dequant_row_f32: 'matmul', dequant_row_f16: 'matmul', dequant_row_q8_0: 'matmul', dequant_row_q4_0: 'matmul',
  quantize_q8_0: 'quantize',
  kv_seal_page: 'attention', attend_begin: 'attention', attend_pages: 'attention', attend_end: 'attention', quest_scores: 'attention',
  rmsnorm: 'norms/rope/silu', rope: 'norms/rope/silu', silu_mul: 'norms/rope/silu', add: 'norms/rope/silu',
};

/**
 * Times every kernel call. Off by default: a clock read around each call costs about a microsecond, which is noise for
 * big matrices but not for tiny ones, so the bench takes its headline figures without it.
 */
export class KernelProfile {
  private ms: Record<string, number> = {};

  /** The same kernels, each call timed into its category. */
  wrap(k: Kernels): Kernels {
    const timed: Record<string, unknown> = {};
    for (const [name, fn] of Object.entries(k)) {
      const category = CATEGORY[name];
      if (typeof fn !== 'function' || !category) {
        timed[name] = fn;
        continue;
      }
      timed[name] = (...args: number[]) => {
        const t = performance.now();
        fn(...args);
        this.ms[category] = (this.ms[category] ?? 0) + performance.now() - t;
      };
    }
    return timed as unknown as Kernels;
  }

  /** Milliseconds per category since the last take(). */
  take(): Record<string, number> {
    const ms = this.ms;
    this.ms = {};
    return ms;
  }
}
