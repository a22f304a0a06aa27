import { describe, expect, it } from 'vitest';
import { EdgeLLMError } from '../src/errors.js';
import { Rng } from '../src/generate/rng.js';
import { Sampler, validateSamplingOptions, type SamplingOptions } from '../src/generate/sampler.js';
import { StopMatcher } from '../src/generate/stop.js';

/** Options with every filter off, so a test turns on only what it is about. */
const PLAIN: SamplingOptions = { temperature: 1, topK: 0, topP: 1, minP: 0, repeatPenalty: 1, seed: 1234 };

/** A small distribution whose kept sets are easy to work out by hand; no cut-off lands near a boundary. */
const PROBS = [0.5, 0.2, 0.15, 0.1, 0.05];
const LOGITS = Float32Array.from(PROBS, Math.log);

function randomLogits(rng: Rng, n: number, scale = 4): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (rng.nextFloat() + rng.nextFloat() + rng.nextFloat() - 1.5) * scale;
  return out;
}

function frequencies(opts: SamplingOptions, logits: Float32Array, draws: number): number[] {
  const sampler = new Sampler(opts, logits.length);
  const counts = new Array<number>(logits.length).fill(0);
  const scratch = new Float32Array(logits.length);
  for (let i = 0; i < draws; i++) {
    scratch.set(logits);
    counts[sampler.sample(scratch, [])]++;
  }
  return counts.map((c) => c / draws);
}

/** Renormalizes `weights` over `kept`, zero elsewhere. */
function expected(weights: number[], kept: number[]): number[] {
  const total = kept.reduce((s, i) => s + weights[i], 0);
  return weights.map((w, i) => (kept.includes(i) ? w / total : 0));
}

function expectClose(actual: number[], want: number[], tol = 0.02): void {
  for (let i = 0; i < want.length; i++) {
    if (want[i] === 0) expect(actual[i], `token ${i} is outside the kept set`).toBe(0);
    else expect(Math.abs(actual[i] - want[i]), `token ${i}: got ${actual[i]}, want ${want[i]}`).toBeLessThan(tol);
  }
}

function argmax(a: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < a.length; i++) if (a[i] > a[best]) best = i;
  return best;
}

function badArgument(fn: () => unknown, mentions: string): void {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(EdgeLLMError);
    expect((e as EdgeLLMError).code).toBe('BAD_ARGUMENT');
    expect((e as EdgeLLMError).message).toContain(mentions);
    return;
  }
  throw new Error(`expected BAD_ARGUMENT mentioning ${mentions}`);
}

/**
 * The chain written the obvious way: sort everything, then cut step by step. Draws exactly as Sampler does, so
 * with the same seed the two must pick the same tokens; this pins the shortcuts (heap top-k, min-p before the sort).
 */
function referenceSample(o: Required<SamplingOptions>, logits: Float32Array, history: number[], rng: Rng): number {
  const l = logits;
  if (o.repeatPenalty !== 1 && o.repeatLastN > 0) {
    for (const t of new Set(history.slice(-o.repeatLastN))) l[t] = l[t] > 0 ? l[t] / o.repeatPenalty : l[t] * o.repeatPenalty;
  }
  if (o.temperature === 0) return argmax(l);
  let c = [...l.keys()].filter((i) => l[i] > -Infinity);
  const filtersAll = o.topK === 0 || o.topK >= l.length;
  // Sampler skips the sort when no step needs the order; the draw then walks token ids in order
  if (!(filtersAll && o.topP === 1)) c.sort((a, b) => l[b] - l[a] || a - b);
  if (!filtersAll) c = c.slice(0, o.topK);
  const max = Math.max(...c.map((i) => l[i]));
  if (o.topP < 1) {
    const total = c.reduce((s, i) => s + Math.exp(l[i] - max), 0);
    let cum = 0;
    const end = c.findIndex((i) => (cum += Math.exp(l[i] - max)) >= o.topP * total);
    if (end >= 0) c = c.slice(0, end + 1);
  }
  if (o.minP > 0) c = c.filter((i) => l[i] >= max + Math.log(o.minP));
  const w = c.map((i) => Math.exp((l[i] - max) / o.temperature));
  const u = rng.nextFloat() * w.reduce((s, x) => s + x, 0);
  let cum = 0;
  for (let k = 0; k < c.length; k++) if (u < (cum += w[k])) return c[k];
  return c[0];
}

describe('Rng', () => {
  it('is xoshiro128** (published test vector from state 1, 2, 3, 4)', () => {
    const rng = new Rng(0);
    Object.assign(rng, { s0: 1, s1: 2, s2: 3, s3: 4 });
    expect(Array.from({ length: 6 }, () => rng.nextU32())).toEqual([11520, 0, 5927040, 70819200, 2031721883, 1637235492]);
  });

  it('gives fixed values for a fixed seed', () => {
    const a = new Rng(42);
    expect(Array.from({ length: 5 }, () => a.nextU32())).toEqual([660444221, 3652823732, 77672526, 910233633, 2297337756]);
    const b = new Rng(0);
    expect(Array.from({ length: 5 }, () => b.nextU32())).toEqual([1789933344, 44971166, 2521387044, 3848737593, 1138324114]);
    const c = new Rng(42);
    expect(c.nextFloat()).toBe(660444221 / 2 ** 32);
  });

  it('treats the seed as u32', () => {
    const a = new Rng(-1);
    const b = new Rng(0xffffffff);
    for (let i = 0; i < 10; i++) expect(a.nextU32()).toBe(b.nextU32());
  });

  it('is roughly uniform in [0, 1)', () => {
    const rng = new Rng(7);
    const buckets = new Array<number>(16).fill(0);
    const n = 160_000;
    let sum = 0;
    let lo = 1;
    let hi = 0;
    for (let i = 0; i < n; i++) {
      const x = rng.nextFloat();
      lo = Math.min(lo, x);
      hi = Math.max(hi, x);
      sum += x;
      buckets[Math.floor(x * 16)]++;
    }
    expect(lo).toBeGreaterThanOrEqual(0);
    expect(hi).toBeLessThan(1);
    expect(Math.abs(sum / n - 0.5)).toBeLessThan(0.005);
    const e = n / 16;
    const chi2 = buckets.reduce((s, c) => s + (c - e) ** 2 / e, 0);
    expect(chi2).toBeLessThan(40); // 15 degrees of freedom: p ≈ 0.0005
  });
});

describe('validateSamplingOptions', () => {
  it('fills in the defaults: greedy, with the usual filters ready for temperature > 0', () => {
    const o = validateSamplingOptions({});
    expect({ ...o, seed: 0 }).toEqual({ temperature: 0, topK: 40, topP: 0.95, minP: 0.05, repeatPenalty: 1, repeatLastN: 64, seed: 0 });
    expect(Number.isInteger(o.seed) && o.seed >= 0 && o.seed < 2 ** 32).toBe(true);
  });

  it('keeps given values and takes the seed as u32', () => {
    const o = validateSamplingOptions({ temperature: 0.7, topK: 0, topP: 1, minP: 0, repeatPenalty: 1, repeatLastN: 0, seed: -1 });
    expect(o).toEqual({ temperature: 0.7, topK: 0, topP: 1, minP: 0, repeatPenalty: 1, repeatLastN: 0, seed: 0xffffffff });
  });

  it.each([
    [{ temperature: -0.1 }, 'temperature'],
    [{ temperature: Infinity }, 'temperature'],
    [{ temperature: NaN }, 'temperature'],
    [{ topK: 1.5 }, 'topK'],
    [{ topK: -1 }, 'topK'],
    [{ topP: 0 }, 'topP'],
    [{ topP: 1.01 }, 'topP'],
    [{ minP: -0.01 }, 'minP'],
    [{ minP: 2 }, 'minP'],
    [{ repeatPenalty: 0 }, 'repeatPenalty'],
    [{ repeatPenalty: Infinity }, 'repeatPenalty'],
    [{ repeatLastN: -1 }, 'repeatLastN'],
    [{ repeatLastN: 2.5 }, 'repeatLastN'],
    [{ seed: 1.5 }, 'seed'],
    [{ seed: '7' }, 'seed'],
    [{ temperature: '0.5' }, '"0.5"'],
  ])('rejects %o with BAD_ARGUMENT', (opts, mentions) => {
    badArgument(() => validateSamplingOptions(opts as SamplingOptions), mentions);
  });

  it('rejects a bad vocabulary size, logits of the wrong length and out-of-range history ids', () => {
    badArgument(() => new Sampler({}, 0), 'vocabSize');
    badArgument(() => new Sampler({}, 2.5), 'vocabSize');
    const s = new Sampler({ repeatPenalty: 1.1 }, 4);
    badArgument(() => s.sample(new Float32Array(3), []), 'logits');
    badArgument(() => s.sample(new Float32Array(4), [1, 4]), 'history[1]');
    // a rejected history leaves no trace: the next call penalizes token 1 once, as usual
    const l = Float32Array.of(0, 2, 0, 0);
    s.sample(l, [1, 1]);
    expect(l[1]).toBeCloseTo(2 / 1.1, 6);
  });
});

describe('Sampler', () => {
  it('greedy is argmax, lowest id on ties, NaN never wins', () => {
    const s = new Sampler({ repeatPenalty: 1 }, 5);
    expect(s.sample(Float32Array.of(1, 3, 3, 2, -1), [])).toBe(1);
    expect(s.sample(Float32Array.of(-5, -2, -2, -3, -9), [])).toBe(1);
    expect(s.sample(Float32Array.of(NaN, 0, 4, NaN, 4), [])).toBe(2);
    expect(s.sample(Float32Array.of(-Infinity, -Infinity, 1, -Infinity, 0), [])).toBe(2);
  });

  it('greedy on a full-size vocabulary matches a plain argmax', () => {
    const rng = new Rng(3);
    const s = new Sampler({ repeatPenalty: 1 }, 128256);
    for (let t = 0; t < 5; t++) {
      const l = randomLogits(rng, 128256);
      expect(s.sample(l.slice(), [])).toBe(argmax(l));
    }
  });

  it('repetition penalty: positive logits divided, the rest multiplied, each distinct token once, last N only', () => {
    const s = new Sampler({ repeatPenalty: 2, repeatLastN: 4 }, 6);
    const l = Float32Array.of(2, -2, 1, 0.5, 0, 3);
    // token 5 is outside the last 4; token 0 repeats but is penalized once
    const pick = s.sample(l, [5, 0, 1, 0, 4]);
    expect(Array.from(l)).toEqual([1, -4, 1, 0.5, 0, 3]);
    expect(pick).toBe(5);
    // greedy with the penalty: token 0 drops below token 2
    expect(new Sampler({ repeatPenalty: 3 }, 3).sample(Float32Array.of(2, 0, 1), [0])).toBe(2);
    // repeatPenalty 1 and repeatLastN 0 leave the logits alone
    for (const o of [{ repeatPenalty: 1 }, { repeatPenalty: 2, repeatLastN: 0 }]) {
      const m = Float32Array.of(2, -2, 1);
      new Sampler(o, 3).sample(m, [0, 1, 2]);
      expect(Array.from(m)).toEqual([2, -2, 1]);
    }
  });

  it('top-k = 1 equals greedy at any temperature', () => {
    const rng = new Rng(11);
    for (const temperature of [0.5, 1, 5, 100]) {
      const s = new Sampler({ ...PLAIN, temperature, topK: 1, seed: 5 }, 1000);
      for (let t = 0; t < 20; t++) {
        const l = randomLogits(rng, 1000);
        l[t * 7] = l[t * 7 + 3] = 20; // a tie for first place: the lower id wins
        expect(s.sample(l.slice(), [])).toBe(t * 7);
      }
    }
  });

  it('top-k keeps the k most likely', () => {
    expectClose(frequencies({ ...PLAIN, topK: 3 }, LOGITS, 20_000), expected(PROBS, [0, 1, 2]));
  });

  it('top-p keeps the smallest prefix reaching p', () => {
    // cumulative 0.5, 0.7, 0.85: p = 0.8 keeps three, p = 0.45 keeps one
    expectClose(frequencies({ ...PLAIN, topP: 0.8 }, LOGITS, 20_000), expected(PROBS, [0, 1, 2]));
    expectClose(frequencies({ ...PLAIN, topP: 0.45 }, LOGITS, 2_000), expected(PROBS, [0]));
    // after top-k = 3 the probabilities are renormalized over three tokens (0.59, 0.24, 0.18), so p = 0.8 keeps two
    expectClose(frequencies({ ...PLAIN, topK: 3, topP: 0.8 }, LOGITS, 20_000), expected(PROBS, [0, 1]));
  });

  it('min-p keeps tokens at least minP times as likely as the best', () => {
    // minP 0.25 → p >= 0.125 keeps three; minP 0.35 → p >= 0.175 keeps two; minP 1 keeps the best only
    expectClose(frequencies({ ...PLAIN, minP: 0.25 }, LOGITS, 20_000), expected(PROBS, [0, 1, 2]));
    expectClose(frequencies({ ...PLAIN, minP: 0.35 }, LOGITS, 20_000), expected(PROBS, [0, 1]));
    expectClose(frequencies({ ...PLAIN, minP: 1 }, LOGITS, 2_000), expected(PROBS, [0]));
    // with top-k on as well, the same sets come out of the heap path
    expectClose(frequencies({ ...PLAIN, topK: 4, minP: 0.35 }, LOGITS, 20_000), expected(PROBS, [0, 1]));
  });

  it('temperature is applied after the filters', () => {
    // T = 2 on the min-p set {0, 1, 2}: p ∝ p^(1/2)
    const sharpened = PROBS.map((p) => Math.sqrt(p));
    expectClose(frequencies({ ...PLAIN, minP: 0.25, temperature: 2 }, LOGITS, 20_000), expected(sharpened, [0, 1, 2]));
  });

  it('temperature 1e-3 is near-greedy, a high temperature near-flat', () => {
    expectClose(frequencies({ ...PLAIN, temperature: 1e-3 }, LOGITS, 2_000), expected(PROBS, [0]));
    expectClose(frequencies({ ...PLAIN, temperature: 1000 }, LOGITS, 20_000), [0.2, 0.2, 0.2, 0.2, 0.2]);
  });

  it('-0 and +0 tie, so the lower id ranks first', () => {
    // sorted best first, id 0 alone covers half the mass, so top-p 0.3 keeps only the first-ranked token
    const l = Float32Array.of(-0, 0, -10, -10);
    expectClose(frequencies({ ...PLAIN, topP: 0.3 }, l, 200), [1, 0, 0, 0]);
    const m = Float32Array.of(0, -0, -10, -10);
    expectClose(frequencies({ ...PLAIN, topP: 0.3 }, m, 200), [1, 0, 0, 0]);
  });

  it('masked (-Infinity) tokens are never drawn', () => {
    const l = Float32Array.of(-Infinity, 0, -Infinity, 0, -Infinity);
    expectClose(frequencies({ ...PLAIN, temperature: 50 }, l, 4_000), [0, 0.5, 0, 0.5, 0]);
    expectClose(frequencies({ ...PLAIN, temperature: 50, topK: 4 }, l, 4_000), [0, 0.5, 0, 0.5, 0]);
  });

  it('the same seed and logits give the same tokens; another seed differs', () => {
    const rng = new Rng(99);
    const logits = Array.from({ length: 50 }, () => randomLogits(rng, 500, 2));
    const run = (seed: number) => {
      const s = new Sampler({ temperature: 1.2, seed }, 500);
      const history: number[] = [];
      for (const l of logits) history.push(s.sample(l.slice(), history));
      return history;
    };
    expect(run(5)).toEqual(run(5));
    expect(run(5)).not.toEqual(run(6));
  });

  it.each([
    { temperature: 0.8 },
    { temperature: 0.8, topK: 0 },
    { temperature: 1.5, topK: 0, minP: 0 },
    { temperature: 0.7, topK: 0, topP: 1, minP: 0.1 },
    { temperature: 1, topK: 200, topP: 0.6, minP: 0.02 },
    { temperature: 1, topK: 2000, topP: 0.9, minP: 0 },
    { temperature: 2, topK: 5, topP: 1, minP: 0, repeatPenalty: 1.3 },
    { temperature: 0, repeatPenalty: 1.5, repeatLastN: 8 },
  ])('matches the plain reference chain token for token: %o', (o) => {
    const opts = validateSamplingOptions({ ...o, seed: 2024 });
    const vocab = 3000;
    const rng = new Rng(17);
    const sampler = new Sampler(opts, vocab);
    const refRng = new Rng(opts.seed);
    const history = [1, 2, 3];
    for (let t = 0; t < 150; t++) {
      const l = randomLogits(rng, vocab, 3);
      const want = referenceSample(opts, l.slice(), history, refRng);
      expect(sampler.sample(l, history)).toBe(want);
      history.push(want);
    }
  });

  it('matches the reference beyond 2^21 tokens too, where sorting falls back to a comparator', () => {
    const vocab = 2 ** 21 + 1000;
    const opts = validateSamplingOptions({ temperature: 1, topK: 0, topP: 0.9, minP: 0, seed: 8 });
    const rng = new Rng(4);
    const sampler = new Sampler(opts, vocab);
    const refRng = new Rng(opts.seed);
    const l = new Float32Array(vocab);
    for (let t = 0; t < 5; t++) {
      // a few hundred live tokens, some with ids past 2^21, and a tie
      l.fill(-Infinity);
      for (let j = 0; j < 300; j++) l[Math.floor(rng.nextFloat() * vocab)] = rng.nextFloat() * 3;
      l[vocab - 1] = l[7] = 2.5;
      const want = referenceSample(opts, l.slice(), [], refRng);
      expect(sampler.sample(l, [])).toBe(want);
    }
  });

  it('is fast on a 128256-token vocabulary', () => {
    const vocab = 128256;
    const rng = new Rng(1);
    const logits = randomLogits(rng, vocab, 6);
    const scratch = new Float32Array(vocab);
    const history = Array.from({ length: 200 }, (_, i) => (i * 7919) % vocab);
    const time = (o: SamplingOptions, n: number) => {
      const s = new Sampler({ seed: 1, ...o }, vocab);
      const t0 = performance.now();
      for (let i = 0; i < n; i++) {
        scratch.set(logits);
        s.sample(scratch, history);
      }
      return (performance.now() - t0) / n;
    };
    const ms = {
      greedy: time({}, 50),
      topK40: time({ temperature: 0.8 }, 50),
      noTopK: time({ temperature: 0.8, topK: 0 }, 20),
      topPOnly: time({ temperature: 0.8, topK: 0, topP: 0.95, minP: 0 }, 10),
      noFilter: time({ temperature: 0.8, topK: 0, topP: 1, minP: 0 }, 20),
    };
    console.log('ms per sample at vocab 128256:', ms);
    // generous bounds: these catch an accidental O(V log V) or per-call allocation in the fast paths, not noise
    expect(ms.greedy).toBeLessThan(20);
    expect(ms.topK40).toBeLessThan(20);
    expect(ms.noTopK).toBeLessThan(50);
    expect(ms.noFilter).toBeLessThan(50);
  });
});

describe('StopMatcher', () => {
  /** Feeds the pieces in order; returns everything emitted (plus the flush if no stop) and whether it stopped. */
  function stream(stops: string[], pieces: string[]): { text: string; stopped: boolean; emits: string[] } {
    const m = new StopMatcher(stops);
    const emits: string[] = [];
    for (const p of pieces) {
      const r = m.push(p);
      emits.push(r.emit);
      if (r.stopped) return { text: emits.join(''), stopped: true, emits };
    }
    return { text: emits.join('') + m.flush(), stopped: false, emits };
  }

  it('finds a stop string split across many pushes, holding back only what could start it', () => {
    const r = stream(['</s>'], ['Hello <', '/', 's', '>', ' never seen']);
    expect(r).toEqual({ text: 'Hello ', stopped: true, emits: ['Hello ', '', '', ''] });
  });

  it('releases a held prefix once it stops matching', () => {
    // "ab" might start "abc"; "abd" cannot, so it all comes out
    expect(stream(['abc'], ['ab', 'd', 'ab', 'c']).emits).toEqual(['', 'abd', '', '']);
    expect(stream(['abc'], ['xab', 'd']).emits).toEqual(['x', 'abd']);
    // the held text overlaps the stop string's own prefix: "aa" + "ab" contains "aab" at 1
    expect(stream(['aab'], ['aa', 'ab', 'tail'])).toEqual({ text: 'a', stopped: true, emits: ['', 'a'] });
    expect(stream(['abab'], ['aba', 'bab'])).toEqual({ text: '', stopped: true, emits: ['', ''] });
  });

  it('handles several stop strings: holds the longest possible start, stops at the match that ends first', () => {
    const m = new StopMatcher(['\n\n', 'User:']);
    expect(m.push('Hi\nUs')).toEqual({ emit: 'Hi\n', stopped: false });
    expect(m.push('er: more')).toEqual({ emit: '', stopped: true });
    // "b" is complete before "abc" is, however the text is split
    expect(stream(['b', 'abc'], ['xab', 'c']).text).toBe('xa');
    expect(stream(['abc', 'b'], ['xabc']).text).toBe('xa');
    // two matches ending together: the longer (earlier) one cuts
    expect(stream(['bc', 'abc'], ['xabcd']).text).toBe('x');
  });

  it('with no stop, flush returns the held-back text', () => {
    const m = new StopMatcher(['###']);
    expect(m.push('text #')).toEqual({ emit: 'text ', stopped: false });
    expect(m.push('#')).toEqual({ emit: '', stopped: false });
    expect(m.flush()).toBe('##');
    expect(m.flush()).toBe('');
    expect(new StopMatcher([]).push('anything')).toEqual({ emit: 'anything', stopped: false });
  });

  it('stays stopped', () => {
    const m = new StopMatcher(['x']);
    expect(m.push('ax')).toEqual({ emit: 'a', stopped: true });
    expect(m.push('more')).toEqual({ emit: '', stopped: true });
    expect(m.flush()).toBe('');
  });

  it('handles unicode: multi-unit characters and surrogate pairs', () => {
    expect(stream(['終わり'], ['こんにちは終', 'わ', 'り!']).emits).toEqual(['こんにちは', '', '']);
    // 😀 (D83D DE00) and 🛑 (D83D DED1) share a high surrogate: the half is held, never emitted alone
    const m = new StopMatcher(['🛑']);
    expect(m.push('a\uD83D')).toEqual({ emit: 'a', stopped: false });
    expect(m.push('\uDE00b')).toEqual({ emit: '😀b', stopped: false });
    expect(m.push('c🛑d')).toEqual({ emit: 'c', stopped: true });
    expect(stream(['é!'], ['café', '?', 'é', '!']).text).toBe('café?');
  });

  it('gives the same result however the text is split (random texts, stops and split points)', () => {
    const rng = new Rng(5);
    const pick = (n: number) => Math.floor(rng.nextFloat() * n);
    const word = (len: number) => Array.from({ length: len }, () => 'ab'[pick(2)]).join('');
    for (let t = 0; t < 2000; t++) {
      const text = word(pick(20));
      const stops = Array.from({ length: 1 + pick(3) }, () => word(1 + pick(4)));
      const pieces: string[] = [];
      for (let i = 0; i < text.length; ) {
        const n = 1 + pick(4);
        pieces.push(text.slice(i, i + n));
        i += n;
      }
      // reference: grow the text one character at a time and cut at the first (longest) stop string it ends with
      let want = text;
      let stopped = false;
      for (let end = 1; end <= text.length && !stopped; end++) {
        const ending = stops.filter((s) => text.slice(0, end).endsWith(s)).sort((a, b) => b.length - a.length);
        if (ending.length) {
          want = text.slice(0, end - ending[0].length);
          stopped = true;
        }
      }
      const got = stream(stops, pieces);
      expect(got.text, `${JSON.stringify(text)} stops ${JSON.stringify(stops)}`).toBe(want);
      expect(got.stopped).toBe(stopped);
    }
  });

  it('ignores empty stop strings and rejects non-strings with BAD_ARGUMENT', () => {
    expect(new StopMatcher(['', 'z']).push('abc')).toEqual({ emit: 'abc', stopped: false });
    badArgument(() => new StopMatcher('stop' as unknown as string[]), 'stop');
    badArgument(() => new StopMatcher(['ok', 3 as unknown as string]), 'stop[1]');
  });
});
