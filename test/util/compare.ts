/** Comparing runtime logits with the f64 reference forward pass (test/util/reference.ts), shared by the synthetic-model tests. */

/** Seeded token ids (mulberry32), so a failure reproduces exactly. */
export function seededIds(n: number, vocab: number, seed: number): number[] {
  let a = seed >>> 0;
  const ids: number[] = [];
  for (let i = 0; i < n; i++) {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    ids.push(((t ^ (t >>> 14)) >>> 0) % vocab);
  }
  return ids;
}

export interface Errors {
  /** max |Δlogit| over all positions, divided by the largest |reference logit| */
  relMax: number;
  /** smallest per-row cosine similarity */
  minCos: number;
  /** positions whose argmax differs */
  argmaxMiss: number;
}

export function compare(got: Float32Array, ref: Float64Array[], vocab: number): Errors {
  let maxDiff = 0, scale = 0, minCos = 1, argmaxMiss = 0;
  ref.forEach((row, p) => {
    let dot = 0, na = 0, nb = 0, ga = 0, ra = 0;
    for (let i = 0; i < vocab; i++) {
      const g = got[p * vocab + i], r = row[i];
      maxDiff = Math.max(maxDiff, Math.abs(g - r));
      scale = Math.max(scale, Math.abs(r));
      dot += g * r;
      na += g * g;
      nb += r * r;
      if (g > got[p * vocab + ga]) ga = i;
      if (r > row[ra]) ra = i;
    }
    minCos = Math.min(minCos, dot / Math.sqrt(na * nb));
    if (ga !== ra) argmaxMiss++;
  });
  return { relMax: maxDiff / scale, minCos, argmaxMiss };
}

export const fmt = (e: Errors) => `rel max|Δ| ${e.relMax.toExponential(2)}, min cos ${e.minCos.toFixed(7)}, argmax misses ${e.argmaxMiss}`;

/** The index of the largest of a[from .. from+n) relative to `from`; the lowest index on a tie (as llama.cpp's greedy). */
export function argmax(a: ArrayLike<number>, from: number, n: number): number {
  let best = 0;
  for (let i = 1; i < n; i++) if (a[from + i] > a[from + best]) best = i;
  return best;
}

/** The q-quantile of xs (nearest rank, lower side), e.g. 0.5 for the median and 0.99 for p99. */
export function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}
