import { EdgeLLMError } from '../errors.js';
import type { Llama } from '../model/llama.js';
import type { LlamaTokenizer } from '../tokenizer/index.js';
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
  generatedTokens: number;
  prefillMs: number;
  decodeMs: number;
  prefillTokensPerSecond: number;
  decodeTokensPerSecond: number;
  /** time spent choosing tokens from logits (inside decodeMs) */
  sampleMs: number;
  stopReason: 'eos' | 'maxTokens' | 'stop' | 'context';
}

export function checkAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new EdgeLLMError('ABORTED', 'generation was aborted by its AbortSignal', { cause: signal.reason });
}

/** Runs the prompt through the model in batches from position 0 and returns the logits of its last token. */
async function prefill(llama: Llama, ids: ArrayLike<number>, signal?: AbortSignal): Promise<Float32Array> {
  if (ids.length > llama.kv.ctx) {
    throw new EdgeLLMError('CONTEXT_FULL', `the prompt has ${ids.length} tokens; the context holds ${llama.kv.ctx}`);
  }
  let at = 0;
  for (let pos = 0; pos < ids.length; pos += llama.maxBatch) {
    checkAborted(signal);
    const batch = Array.prototype.slice.call(ids, pos, pos + llama.maxBatch) as number[];
    at = llama.forward(batch, pos, false);
    if (pos + llama.maxBatch < ids.length) await yieldToEventLoop();
  }
  return llama.heap.subarray(at, at + llama.config.vocab);
}

/**
 * The generation loop: prefill, then sample → stream text → forward one token, until EOS, maxTokens, a stop string or
 * the end of the context. Yields text chunks that never split a UTF-8 character or include any part of a stop string.
 */
export async function* generate(
  llama: Llama,
  tokenizer: LlamaTokenizer,
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
  let logits = await prefill(llama, promptIds, signal);
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
    const at = llama.forward([id], history.length - 1, false);
    logits = llama.heap.subarray(at, at + llama.config.vocab);
  }
  if (stopReason !== 'stop') {
    const { emit } = stops.push(text.flush());
    const rest = emit + stops.flush();
    if (rest) yield rest;
  }
  const t2 = now();
  opts.onStats?.({
    promptTokens: promptIds.length,
    generatedTokens: generated,
    prefillMs: t1 - t0,
    decodeMs: t2 - t1,
    prefillTokensPerSecond: promptIds.length / ((t1 - t0) / 1000),
    decodeTokensPerSecond: generated > 1 ? (generated - 1) / ((t2 - t1) / 1000) : 0,
    sampleMs,
    stopReason,
  });
}

export function now(): number {
  return typeof performance !== 'undefined' ? performance.now() : Date.now();
}
