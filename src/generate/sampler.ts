import { EdgeLLMError } from '../errors.js';
import { Rng } from './rng.js';

/**
 * How the next token is picked from the logits. The chain follows llama.cpp's default order:
 * repetition penalty → top-k → top-p → min-p → temperature → draw.
 *
 * Defaults: temperature 0, i.e. greedy, so that output is reproducible unless the caller asks for randomness.
 * The other defaults (topK 40, topP 0.95, minP 0.05) only matter once temperature > 0. The repetition penalty is off
 * by default (1.0, as in current llama.cpp), so greedy decoding reproduces llama.cpp's greedy tokens; when set, it looks
 * at the last repeatLastN (64) tokens and applies in greedy mode too.
 */
export interface SamplingOptions {
  /** 0 = greedy argmax (default). Higher is more random. */
  temperature?: number;
  /** Keep only the k most likely tokens; 0 = off. Default 40. */
  topK?: number;
  /** Keep the smallest set of most likely tokens whose probability sums to at least topP; 1 = off. Default 0.95. */
  topP?: number;
  /** Drop tokens less likely than minP times the most likely one; 0 = off. Default 0.05. */
  minP?: number;
  /** Penalize tokens seen in the last repeatLastN tokens; 1 = off (default). */
  repeatPenalty?: number;
  /** How far back the repetition penalty looks; 0 = off. Default 64. */
  repeatLastN?: number;
  /** Any integer, taken as u32 (`seed >>> 0`). Default: drawn from Math.random. */
  seed?: number;
}

export const DEFAULT_SAMPLING: Readonly<Omit<Required<SamplingOptions>, 'seed'>> = Object.freeze({
  temperature: 0,
  topK: 40,
  topP: 0.95,
  minP: 0.05,
  repeatPenalty: 1,
  repeatLastN: 64,
});

/** Fills in defaults and checks ranges; an invalid option throws BAD_ARGUMENT naming the option and the value. */
export function validateSamplingOptions(o: SamplingOptions = {}): Required<SamplingOptions> {
  if (o === null || typeof o !== 'object') {
    throw new EdgeLLMError('BAD_ARGUMENT', `sampling options must be an object, got ${show(o)}`);
  }
  const d = DEFAULT_SAMPLING;
  const seed = o.seed === undefined ? Math.floor(Math.random() * 2 ** 32) : check(o, 'seed', Number.isSafeInteger, 'an integer');
  return {
    temperature: check(o, 'temperature', (v) => Number.isFinite(v) && v >= 0, 'a finite number >= 0', d.temperature),
    topK: check(o, 'topK', (v) => Number.isSafeInteger(v) && v >= 0, 'an integer >= 0 (0 = off)', d.topK),
    topP: check(o, 'topP', (v) => v > 0 && v <= 1, 'in (0, 1] (1 = off)', d.topP),
    minP: check(o, 'minP', (v) => v >= 0 && v <= 1, 'in [0, 1] (0 = off)', d.minP),
    repeatPenalty: check(o, 'repeatPenalty', (v) => Number.isFinite(v) && v > 0, 'a finite number > 0 (1 = off)', d.repeatPenalty),
    repeatLastN: check(o, 'repeatLastN', (v) => Number.isSafeInteger(v) && v >= 0, 'an integer >= 0 (0 = off)', d.repeatLastN),
    seed: seed >>> 0,
  };
}

function check(o: SamplingOptions, name: keyof SamplingOptions, ok: (v: number) => boolean, rule: string, dflt?: number): number {
  const v: unknown = o[name];
  if (v === undefined && dflt !== undefined) return dflt;
  if (typeof v !== 'number' || !ok(v)) {
    throw new EdgeLLMError('BAD_ARGUMENT', `sampling option ${name} must be ${rule}, got ${show(v)}`);
  }
  return v;
}

function show(v: unknown): string {
  return typeof v === 'string' ? JSON.stringify(v) : String(v);
}

/**
 * Picks next tokens. One Sampler per generation: it owns the seeded Rng, so the same seed and the same logits give
 * the same tokens in any engine. Scratch space is sized to the vocabulary once, here, so sample() allocates nothing
 * vocab-sized.
 *
 * The draw walks the kept tokens best first, or in token-id order when neither top-k nor top-p is on (no sort
 * needed then); either way one Rng float per sampled token, none in greedy mode.
 */
export class Sampler {
  readonly options: Required<SamplingOptions>;
  private readonly vocabSize: number;
  private readonly rng: Rng;
  /** Candidate token ids, best first once sorted. */
  private readonly ids: Int32Array;
  /** Unnormalized probabilities of the candidates, in f64 so long tails do not vanish. */
  private readonly weights: Float64Array;
  /** Marks tokens already penalized in this call, so a token repeated in the window is penalized once. */
  private readonly seen: Uint8Array;
  /** The logits being sampled, for the fallback sort comparator (created once rather than per call). */
  private current: Float32Array = new Float32Array(0);
  private readonly bestFirst = (a: number, b: number): number => this.current[b] - this.current[a] || a - b;

  constructor(opts: SamplingOptions, vocabSize: number) {
    if (!Number.isSafeInteger(vocabSize) || vocabSize <= 0) {
      throw new EdgeLLMError('BAD_ARGUMENT', `vocabSize must be a positive integer, got ${show(vocabSize)}`);
    }
    this.options = validateSamplingOptions(opts);
    this.vocabSize = vocabSize;
    this.rng = new Rng(this.options.seed);
    this.ids = new Int32Array(vocabSize);
    this.weights = new Float64Array(vocabSize);
    this.seen = new Uint8Array(vocabSize);
  }

  /** logits is modified in place (scratch). history = all token ids so far (prompt + generated), for the repetition penalty. Returns the chosen id. */
  sample(logits: Float32Array, history: ArrayLike<number>): number {
    if (logits.length !== this.vocabSize) {
      throw new EdgeLLMError('BAD_ARGUMENT', `logits has length ${logits.length}, expected the vocabulary size ${this.vocabSize}`);
    }
    this.penalizeRepeats(logits, history);
    const { temperature, topK, topP, minP } = this.options;
    if (temperature === 0) return argmax(logits);

    // Candidates ids[0..n) after top-k and min-p, best first whenever top-p needs the order, and `total`, the
    // softmax denominator over the top-k set, which top-p's cumulative sum is measured against.
    // min-p and top-p each keep a prefix of the best-first order, so applying min-p first and then top-p on what is
    // left keeps exactly what llama.cpp's order keeps; and min-p is a plain logit threshold, so without top-k it
    // runs before any sort and only its survivors get sorted.
    const ids = this.ids;
    let n = 0;
    let total = 0;
    let max: number;
    if (topK > 0 && topK < this.vocabSize) {
      n = this.selectTopK(logits, topK);
      if (n === 0) return argmax(logits);
      this.sortBestFirst(logits, n);
      max = logits[ids[0]];
      if (topP < 1) for (let i = 0; i < n; i++) total += Math.exp(logits[ids[i]] - max);
      if (minP > 0) {
        const floor = max + Math.log(minP);
        let keep = 1;
        while (keep < n && logits[ids[keep]] >= floor) keep++;
        n = keep;
      }
    } else {
      max = maxLogit(logits);
      if (max === -Infinity) return argmax(logits);
      const floor = minP > 0 ? max + Math.log(minP) : -Infinity;
      for (let i = 0; i < logits.length; i++) {
        const l = logits[i];
        if (l > -Infinity) {
          if (topP < 1) total += Math.exp(l - max);
          if (l >= floor) ids[n++] = i;
        }
      }
      // Without top-p nothing needs the order: the draw is as fair in token-id order, and the sort is skipped.
      if (topP < 1) this.sortBestFirst(logits, n);
    }

    if (topP < 1) {
      const target = topP * total;
      let cum = 0;
      for (let i = 0; i < n; i++) {
        cum += Math.exp(logits[ids[i]] - max);
        if (cum >= target) {
          n = i + 1;
          break;
        }
      }
    }

    const weights = this.weights;
    let sum = 0;
    for (let i = 0; i < n; i++) {
      const w = Math.exp((logits[ids[i]] - max) / temperature);
      weights[i] = w;
      sum += w;
    }
    // cum below retraces the additions that made sum, so it reaches sum exactly and u < sum always lands.
    const u = this.rng.nextFloat() * sum;
    let cum = 0;
    for (let i = 0; i < n; i++) {
      cum += weights[i];
      if (u < cum) return ids[i];
    }
    return ids[0];
  }

  /** llama.cpp's rule: a positive logit is divided by the penalty, a negative one multiplied, so both move down. */
  private penalizeRepeats(logits: Float32Array, history: ArrayLike<number>): void {
    const { repeatPenalty, repeatLastN } = this.options;
    if (repeatPenalty === 1 || repeatLastN === 0) return;
    const start = Math.max(0, history.length - repeatLastN);
    // Check the whole window before marking anything, so a bad id cannot leave `seen` dirty for the next call.
    for (let i = start; i < history.length; i++) {
      const t = history[i];
      if (!(Number.isInteger(t) && t >= 0 && t < this.vocabSize)) {
        throw new EdgeLLMError('BAD_ARGUMENT', `history[${i}] = ${show(t)} is not a token id in [0, ${this.vocabSize})`);
      }
    }
    const seen = this.seen;
    for (let i = start; i < history.length; i++) {
      const t = history[i];
      if (seen[t]) continue;
      seen[t] = 1;
      const l = logits[t];
      logits[t] = l > 0 ? l / repeatPenalty : l * repeatPenalty;
    }
    for (let i = start; i < history.length; i++) seen[history[i]] = 0;
  }

  /**
   * The k best tokens into ids[0..n), unordered: a min-heap of size k whose root is the worst kept, so one pass costs
   * O(V log k) and most tokens are rejected by a single comparison with the root. Ties go to the lower id because
   * ids arrive in increasing order and only a strictly larger logit displaces the root.
   */
  private selectTopK(logits: Float32Array, k: number): number {
    const heap = this.ids;
    let n = 0;
    let rootLogit = -Infinity;
    for (let i = 0; i < logits.length; i++) {
      const l = logits[i];
      if (!(l > -Infinity)) continue; // -inf (masked) and NaN can never be drawn
      if (n < k) {
        // sift up
        let c = n++;
        while (c > 0) {
          const p = (c - 1) >> 1;
          if (!worse(logits, i, heap[p])) break;
          heap[c] = heap[p];
          c = p;
        }
        heap[c] = i;
        rootLogit = logits[heap[0]];
      } else if (l > rootLogit) {
        // replace the root, sift down
        let c = 0;
        for (;;) {
          let child = 2 * c + 1;
          if (child >= n) break;
          if (child + 1 < n && worse(logits, heap[child + 1], heap[child])) child++;
          if (!worse(logits, heap[child], i)) break;
          heap[c] = heap[child];
          c = child;
        }
        heap[c] = i;
        rootLogit = logits[heap[0]];
      }
    }
    return n;
  }

  /** Sorts ids[0..n) best first: higher logit, then lower id, a total order, so any engine's sort agrees. */
  private sortBestFirst(logits: Float32Array, n: number): void {
    const ids = this.ids;
    if (this.vocabSize > ID_LIMIT) {
      this.current = logits;
      ids.subarray(0, n).sort(this.bestFirst);
      return;
    }
    // A comparator call per comparison dominates at vocabulary scale. Instead each candidate becomes one exact f64
    // integer, the logit's bits remapped to sort descending and then the id, and the engine's native numeric sort
    // orders them, about 3x faster.
    const bits = new Uint32Array(logits.buffer, logits.byteOffset, logits.length);
    const keys = this.weights.subarray(0, n); // free until the draw
    for (let i = 0; i < n; i++) {
      const id = ids[i];
      const b = bits[id] === 0x80000000 ? 0 : bits[id]; // -0 ties with +0
      const ascending = b & 0x80000000 ? ~b >>> 0 : (b | 0x80000000) >>> 0; // grows with the float's value
      keys[i] = (0xffffffff - ascending) * ID_LIMIT + id;
    }
    keys.sort();
    for (let i = 0; i < n; i++) ids[i] = keys[i] % ID_LIMIT;
  }
}

/** Token ids below 2^21 fit beside the 32 logit bits in a sort key: 53 bits, exact in an f64. */
const ID_LIMIT = 2 ** 21;

/** a ranks below b: lower logit, or the same logit and a higher id. */
function worse(logits: Float32Array, a: number, b: number): boolean {
  const la = logits[a];
  const lb = logits[b];
  return la < lb || (la === lb && a > b);
}

/** Greedy pick: the largest logit, lowest id on ties; NaN never wins. */
function argmax(logits: Float32Array): number {
  let best = 0;
  let bestLogit = -Infinity;
  for (let i = 0; i < logits.length; i++) {
    if (logits[i] > bestLogit) {
      bestLogit = logits[i];
      best = i;
    }
  }
  return best;
}

function maxLogit(logits: Float32Array): number {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
  return max;
}
