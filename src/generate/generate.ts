import { EdgeLLMError } from '../errors.js';
import type { Llama } from '../model/llama.js';
import type { Tokenizer } from '../tokenizer/index.js';
import { Sampler, type SamplingOptions } from './sampler.js';
import { StopMatcher } from './stop.js';
import { yieldToEventLoop } from './yield.js';

export interface GenerateOptions extends SamplingOptions {
  /** Most tokens to generate (default 256); generation also ends at the end of the context. */
  maxTokens?: number;
  /** Generation ends before the first occurrence of any of these strings, which are not emitted. */
  stop?: string[];
  signal?: AbortSignal;
  /** Called with each generated token id, before its text is yielded. */
  onToken?: (id: number) => void;
  /** Called once at the end with timings. */
  onStats?: (stats: GenerationStats) => void;
}

export interface GenerationStats {
  promptTokens: number;
  /** prompt tokens whose KV was already cached from an earlier call (a shared prefix), so not computed again */
  cachedTokens: number;
  /** prompt tokens run through the model: promptTokens − cachedTokens */
  prefilledTokens: number;
  generatedTokens: number;
  prefillMs: number;
  decodeMs: number;
  /** prefilledTokens per second */
  prefillTokensPerSecond: number;
  decodeTokensPerSecond: number;
  /** time spent choosing tokens from logits (inside decodeMs) */
  sampleMs: number;
  stopReason: 'eos' | 'maxTokens' | 'stop' | 'context';
}

export function checkAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new EdgeLLMError('ABORTED', 'generation was aborted by its AbortSignal', { cause: signal.reason });
}

/**
 * The ids whose keys and values are in the KV cache, in order: what the last computation left there. A new prompt that
 * starts with some of them reuses them (llama.cpp's server does the same), which is what makes a chat session prefill
 * only its new turn. Batched and one-at-a-time forwards give the same bits, so reuse never changes a logit.
 */
export class CachedPrefix {
  readonly ids: number[] = [];

  /**
   * Makes the cache hold a prefix of `ids` (at most all but the last, whose logits are needed) and returns its
   * length: the shared prefix, or less where the KV cache has to restart a page (see KVCache.truncate).
   */
  reuse(llama: Llama, ids: ArrayLike<number>): number {
    let shared = 0;
    const limit = Math.min(this.ids.length, ids.length - 1);
    while (shared < limit && this.ids[shared] === ids[shared]) shared++;
    const keep = llama.kv.truncate(Math.min(shared, llama.kv.positions));
    this.ids.length = keep;
    return keep;
  }

  /** Forwards ids at the end of the cache; the logits offset as Llama.forward returns it. */
  forward(llama: Llama, ids: number[], allLogits: boolean): number {
    let done = false;
    try {
      const at = llama.forward(ids, this.ids.length, allLogits);
      done = true;
      this.ids.push(...ids);
      return at;
    } finally {
      // A forward that threw half way left the cache matching no list of ids.
      if (!done) this.ids.length = 0;
    }
  }

  clear(): void {
    this.ids.length = 0;
  }
}

/** Runs the prompt (after what is cached) through the model in batches and returns the logits of its last token. */
async function prefill(llama: Llama, cache: CachedPrefix, ids: number[], signal?: AbortSignal): Promise<{ logits: Float32Array; cached: number }> {
  if (ids.length > llama.kv.ctx) {
    throw new EdgeLLMError('CONTEXT_FULL', `the prompt has ${ids.length} tokens; the context holds ${llama.kv.ctx}`);
  }
  const cached = cache.reuse(llama, ids);
  let at = 0;
  for (let pos = cached; pos < ids.length; pos += llama.maxBatch) {
    checkAborted(signal);
    at = cache.forward(llama, ids.slice(pos, pos + llama.maxBatch), false);
    if (pos + llama.maxBatch < ids.length) await yieldToEventLoop();
  }
  return { logits: llama.heap.subarray(at, at + llama.config.vocab), cached };
}

/**
 * The generation loop: prefill, then sample → stream text → forward one token, until EOS, maxTokens, a stop string or
 * the end of the context. Yields text chunks that never split a UTF-8 character or include any part of a stop string.
 */
export async function* generate(
  llama: Llama,
  tokenizer: Tokenizer,
  cache: CachedPrefix,
  promptIds: number[],
  opts: GenerateOptions,
): AsyncGenerator<string, void, undefined> {
  const maxTokens = opts.maxTokens ?? 256;
  if (!Number.isSafeInteger(maxTokens) || maxTokens < 0) throw new EdgeLLMError('BAD_ARGUMENT', `maxTokens must be an integer >= 0, got ${maxTokens}`);
  if (promptIds.length === 0) throw new EdgeLLMError('BAD_ARGUMENT', 'the prompt is empty and the model adds no BOS token: nothing to condition on');
  const sampler = new Sampler(opts, llama.config.vocab);
  const stops = new StopMatcher(opts.stop ?? []);
  // keep the first piece's leading space, so prompt + generated text reads as one text
  const text = tokenizer.decoder({ stripLeadingSpace: false });
  const history = promptIds.slice();
  const { signal } = opts;

  const t0 = now();
  const prefilled = await prefill(llama, cache, promptIds, signal);
  let logits = prefilled.logits;
  const t1 = now();
  let generated = 0;
  let stopReason: GenerationStats['stopReason'] = 'maxTokens';
  let sampleMs = 0;
  while (generated < maxTokens) {
    checkAborted(signal);
    const ts = now();
    const id = sampler.sample(logits, history);
    sampleMs += now() - ts;
    if (tokenizer.isEog(id)) {
      stopReason = 'eos';
      break;
    }
    history.push(id);
    generated++;
    opts.onToken?.(id);
    const { emit, stopped } = stops.push(text.push(id));
    if (emit) yield emit;
    if (stopped) {
      stopReason = 'stop';
      break;
    }
    if (generated === maxTokens) break;
    if (history.length >= llama.kv.ctx) {
      stopReason = 'context';
      break;
    }
    await yieldToEventLoop();
    checkAborted(signal);
    const at = cache.forward(llama, [id], false);
    logits = llama.heap.subarray(at, at + llama.config.vocab);
  }
  if (stopReason !== 'stop') {
    const { emit } = stops.push(text.flush());
    const rest = emit + stops.flush();
    if (rest) yield rest;
  }
  const t2 = now();
  const prefilledTokens = promptIds.length - prefilled.cached;
  opts.onStats?.({
    promptTokens: promptIds.length,
    cachedTokens: prefilled.cached,
    prefilledTokens,
    generatedTokens: generated,
    prefillMs: t1 - t0,
    decodeMs: t2 - t1,
    prefillTokensPerSecond: prefilledTokens / ((t1 - t0) / 1000),
    decodeTokensPerSecond: generated > 1 ? (generated - 1) / ((t2 - t1) / 1000) : 0,
    sampleMs,
    stopReason,
  });
}

export function now(): number {
  return typeof performance !== 'undefined' ? performance.now() : Date.now();
}
