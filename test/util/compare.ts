/** Comparing runtime logits with the f64 reference forward pass (test/util/reference.ts), shared by the synthetic-model tests. */

/** A Float32Array's bytes, to compare logits bit for bit (`.equals`). */
export const bits = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

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

/** Seeded normal samples (mulberry32 + Box-Muller), so a failure reproduces exactly. */
export function gaussian(seed: number): () => number {
  let a = seed >>> 0;
  const uniform = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296;
  };
  return () => Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
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

/** Where our greedy token first differs from llama.cpp's: our top-1, its logit, and its gap over llama.cpp's token. */
export interface GreedyDivergence { prompt: number; at: number; ours: number; theirs: number; logit: number; gap: number; refGap?: number }

/**
 * A prompt of a llama.cpp reference JSON against `logits`, our teacher-forced pass over [...ids, ...greedy_ids] (row
 * n−1+k is where llama.cpp chose greedy_ids[k] after the same k tokens): how many of its greedy tokens ours
 * reproduce, where they first differ (with llama.cpp's own gap there when it is the prompt's last position, whose
 * top-10 is known), and whether our decode path (one token per forward) chooses what the rows say up to there.
 */
export async function greedyAgainst(
  model: { generate(ids: number[], opts: { maxTokens: number; temperature: number; onToken: (id: number) => void }): AsyncIterable<unknown> },
  p: { ids: number[]; greedy_ids: number[]; top10: { ids: number[]; logits: number[] }[] },
  prompt: number,
  logits: Float32Array,
  V: number,
): Promise<{ matched: number; divergence?: GreedyDivergence; decodeAgrees: boolean }> {
  const n = p.ids.length;
  let k = 0;
  while (k < p.greedy_ids.length && argmax(logits, (n - 1 + k) * V, V) === p.greedy_ids[k]) k++;
  let divergence: GreedyDivergence | undefined;
  if (k < p.greedy_ids.length) {
    const row = (n - 1 + k) * V;
    const ours = argmax(logits, row, V);
    const theirs = p.greedy_ids[k];
    const last = p.top10[n - 1];
    const refGap = k === 0 && last.ids.includes(ours) ? last.logits[0] - last.logits[last.ids.indexOf(ours)] : undefined;
    divergence = { prompt, at: k, ours, theirs, logit: logits[row + ours], gap: logits[row + ours] - logits[row + theirs], refGap };
  }
  const generated: number[] = [];
  for await (const _ of model.generate(p.ids, { maxTokens: Math.min(k + 1, p.greedy_ids.length), temperature: 0, onToken: (id) => generated.push(id) }));
  const want = [...p.greedy_ids.slice(0, k), ...(divergence ? [divergence.ours] : [])];
  return { matched: k, divergence, decodeAgrees: generated.join() === want.slice(0, generated.length).join() };
}
