import { EdgeLLMError } from '../errors.js';

/**
 * Where a block's weight matrices live:
 * - `resident`: in wasm memory for good (regions of their own);
 * - `warm`: a host ArrayBuffer holding the layer's image (its matrices in kernel layout, exactly the bytes the slot
 *   will hold), copied into the staging slot when the forward pass reaches the layer;
 * - `cold`: the same image in the model's spill file on disk, read into the slot at one offset.
 * Token embeddings, the output matrix and every norm, bias and RoPE factor vector stay resident: the embeddings are
 * read one row per token (and are the tied output), and the vectors are a few KB a layer.
 */
export type Residency = 'resident' | 'warm' | 'cold';

/** `LoadOptions.weights`: one tier for every layer, or 'auto' (resident unless the budget or wasm32's 4 GiB forbid). */
export type WeightsOption = Residency | 'auto';

const OPTIONS: readonly WeightsOption[] = ['auto', 'resident', 'warm', 'cold'];

export function checkWeightsOption(v: unknown): WeightsOption {
  if (OPTIONS.includes(v as WeightsOption)) return v as WeightsOption;
  throw new EdgeLLMError('BAD_ARGUMENT', `weights must be one of ${OPTIONS.map((o) => `'${o}'`).join(', ')}, got ${JSON.stringify(v)}`);
}

/**
 * Chooses each layer's tier. `fit` plans the whole process with a residency and returns the plan when it fits the
 * budget and wasm32 (undefined when it does not), so the decision sees every byte the plan counts.
 *
 * 'auto' keeps every layer resident when that fits. Otherwise it streams the fewest layers that make the plan fit,
 * largest first (the slot is then the largest layer's size, and each layer streamed frees the most wasm): warm when the
 * budget leaves room for their host images (wasm32's limit, not the budget, was what did not fit), else cold, since a
 * warm layer takes as many bytes as a resident one plus its share of the slot. Returns undefined when nothing fits.
 */
export function chooseResidency<P>(
  option: WeightsOption,
  layerBytes: readonly number[],
  fit: (residency: Residency[]) => P | undefined,
  canSpill: boolean,
): { plan: P; residency: Residency[] } | undefined {
  const n = layerBytes.length;
  const all = (r: Residency) => new Array<Residency>(n).fill(r);
  const attempt = (residency: Residency[]) => {
    const plan = fit(residency);
    return plan === undefined ? undefined : { plan, residency };
  };
  if (option !== 'auto') return attempt(all(option));
  const resident = attempt(all('resident'));
  if (resident || n === 0) return resident;
  // Largest first; among equals the last layers first, so a model of equal layers keeps its first ones resident.
  const order = layerBytes.map((b, l) => ({ b, l })).sort((x, y) => y.b - x.b || y.l - x.l).map((x) => x.l);
  const streaming = (k: number, tier: Residency) => {
    const r = all('resident');
    for (let i = 0; i < k; i++) r[order[i]] = tier;
    return r;
  };
  for (const tier of canSpill ? (['warm', 'cold'] as const) : (['warm'] as const)) {
    // Whether k streamed layers fit is monotone in k: each one streamed takes its bytes out of wasm and, past the
    // first (the largest, which sets the slot), adds none; a warm layer's bytes move to the host, the total unchanged.
    if (!attempt(streaming(n, tier))) continue;
    let lo = 0, hi = n; // !fits(lo) (k = 0 is the resident plan), fits(hi)
    while (hi - lo > 1) {
      const mid = (lo + hi) >> 1;
      if (attempt(streaming(mid, tier))) hi = mid;
      else lo = mid;
    }
    return attempt(streaming(hi, tier));
  }
  return undefined;
}

/** Layers per tier, e.g. "22 resident" or "4 resident, 18 cold". */
export function describeResidency(residency: readonly Residency[]): string {
  const count = (r: Residency) => residency.filter((x) => x === r).length;
  return (['resident', 'warm', 'cold'] as const).filter((r) => count(r) > 0).map((r) => `${count(r)} ${r}`).join(', ') || 'no layers';
}
