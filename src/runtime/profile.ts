import type { Kernels } from './kernels.js';

/** Where the time of a forward pass goes, by kernel family (the bench's per-op breakdown). */
export type OpCategory = 'matmul' | 'quantize' | 'attention' | 'norms/rope/silu';

/** A kernel's family by its name: every weight type's matmul_<type>/dequant_row_<type>, every quantize_<format>. */
const FAMILIES: [RegExp, OpCategory][] = [
  [/^(matmul|dequant_row)_/, 'matmul'],
  [/^quantize_/, 'quantize'],
  [/^(kv_seal_page|attend_begin|attend_pages|attend_end|quest_scores)$/, 'attention'],
  [/^(rmsnorm|rope|silu_mul|add)$/, 'norms/rope/silu'],
];

const categoryOf = (name: string): OpCategory | undefined => FAMILIES.find(([re]) => re.test(name))?.[1];

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
      const category = categoryOf(name);
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
