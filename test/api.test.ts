// The public API end to end on tiny-260k (a real 0.28M-parameter model: every call takes milliseconds).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { loadModel, EdgeLLMError, type ErrorCode, type GenerateOptions, type GenerationStats, type Model } from '../src/index.js';
import { memorySource, readGGUF } from '../src/gguf/index.js';
import { announceSkipIfNoModels, modelPath } from './util/shared.js';

const have = announceSkipIfNoModels('public API tests (test/api.test.ts)');
const Q8 = modelPath('tiny-260k-q8_0.gguf');
const F32 = modelPath('tiny-260k-f32.gguf');
const PROMPT = 'Once upon a time';

async function rejection(run: () => Promise<unknown>): Promise<EdgeLLMError> {
  let err: unknown;
  try {
    await run();
  } catch (e) {
    err = e;
  }
  expect(err, 'expected a rejection').toBeInstanceOf(EdgeLLMError);
  return err as EdgeLLMError;
}

async function expectCode(run: () => unknown, code: ErrorCode): Promise<EdgeLLMError> {
  const err = await rejection(async () => run());
  expect(err.code, err.message).toBe(code);
  return err;
}

/** The chunks of one generation, and the token ids reported by onToken. */
async function chunks(model: Model, prompt: string | number[], opts: GenerateOptions = {}): Promise<{ chunks: string[]; ids: number[] }> {
  const out: string[] = [], ids: number[] = [];
  for await (const c of model.generate(prompt, { ...opts, onToken: (id) => ids.push(id) })) out.push(c);
  return { chunks: out, ids };
}

describe.skipIf(!have)('generation', () => {
  let model: Model;
  beforeAll(async () => {
    model = await loadModel(Q8);
  });

  it('streams chunks whose concatenation is complete(), greedy and seeded', async () => {
    for (const opts of [{ maxTokens: 40 }, { maxTokens: 40, temperature: 0.8, seed: 42 }]) {
      const streamed = await chunks(model, PROMPT, opts);
      expect(streamed.chunks.length).toBeGreaterThan(1);
      expect(streamed.chunks.join('')).toBe(await model.complete(PROMPT, opts));
    }
  });

  it('greedy by default, and deterministic', async () => {
    const a = await model.complete(PROMPT, { maxTokens: 30 });
    expect(a.startsWith(', there was a little girl named Lily')).toBe(true);
    expect(await model.complete(PROMPT, { maxTokens: 30, temperature: 0 })).toBe(a);
  });

  it('seeded sampling reproduces, and another seed differs', async () => {
    const opts = { maxTokens: 40, temperature: 0.8 };
    const a = await chunks(model, PROMPT, { ...opts, seed: 42 });
    const b = await chunks(model, PROMPT, { ...opts, seed: 42 });
    const c = await chunks(model, PROMPT, { ...opts, seed: 43 });
    expect(b.ids).toEqual(a.ids);
    expect(c.ids).not.toEqual(a.ids);
  });

  it('stop: ["Lily"] ends the text before "Lily"', async () => {
    let stats: GenerationStats | undefined;
    const text = await model.complete(PROMPT, { stop: ['Lily'], maxTokens: 60, onStats: (s) => (stats = s) });
    expect(text).toBe(', there was a little girl named ');
    expect(stats?.stopReason).toBe('stop');
  });

  it('maxTokens: 5 yields exactly 5 tokens', async () => {
    let stats: GenerationStats | undefined;
    const { ids } = await chunks(model, PROMPT, { maxTokens: 5, onStats: (s) => (stats = s) });
    expect(ids.length).toBe(5);
    expect(stats).toMatchObject({ generatedTokens: 5, promptTokens: 5, stopReason: 'maxTokens' });
  });

  it('abort after the 3rd chunk rejects with ABORTED, at most 1 token later', async () => {
    const ac = new AbortController();
    const ids: number[] = [];
    let seen = 0, tokensAtAbort = -1;
    const err = await rejection(async () => {
      for await (const _ of model.generate(PROMPT, { maxTokens: 100, signal: ac.signal, onToken: (id) => ids.push(id) })) {
        if (++seen === 3) {
          tokensAtAbort = ids.length;
          ac.abort();
        }
      }
    });
    expect(err.code).toBe('ABORTED');
    expect(seen).toBe(3);
    expect(ids.length - tokensAtAbort).toBeLessThanOrEqual(1);
    // The model is free again afterwards.
    expect(await model.complete(PROMPT, { maxTokens: 3 })).toBe(', there was');
  });

  it('an already-aborted signal rejects at once with ABORTED', async () => {
    const ids: number[] = [];
    await expectCode(() => model.complete(PROMPT, { signal: AbortSignal.abort(), onToken: (id) => ids.push(id) }), 'ABORTED');
    expect(ids.length).toBe(0);
    await expectCode(() => model.evaluate([1, 403, 407], { signal: AbortSignal.abort() }), 'ABORTED');
  });

  it('an abort from a timer fired while generating stops with ABORTED', async () => {
    const ac = new AbortController();
    const ids: number[] = [];
    // The timer starts at the first token, so it fires mid-generation however fast the machine is; a whole
    // generation of 240 tokens takes far longer than 5 ms plus one token.
    let timer: NodeJS.Timeout | undefined;
    const onToken = (id: number) => {
      ids.push(id);
      timer ??= setTimeout(() => ac.abort(new Error('timeout')), 5);
    };
    const err = await expectCode(() => model.complete([1, 403, 407, 261, 378], { maxTokens: 240, signal: ac.signal, onToken }), 'ABORTED');
    expect((err.cause as Error).message).toBe('timeout');
    expect(ids.length).toBeGreaterThan(0);
    expect(ids.length).toBeLessThan(240);
    clearTimeout(timer);
  });

  it('two generations at once: the second throws a clear error, the first is not corrupted', async () => {
    const expected = await model.complete(PROMPT, { maxTokens: 20 });
    const it1 = model.generate(PROMPT, { maxTokens: 20 })[Symbol.asyncIterator]();
    let first = '';
    const r = await it1.next();
    first += r.value ?? '';
    const err = await expectCode(() => model.complete(PROMPT, { maxTokens: 5 }), 'BUSY');
    expect(err.message).toContain('already generating');
    await expectCode(() => model.evaluate([1, 2, 3]), 'BUSY');
    for (let n = await it1.next(); !n.done; n = await it1.next()) first += n.value;
    expect(first).toBe(expected);
  });

  it('bad prompts and options are BAD_ARGUMENT', async () => {
    await expectCode(() => model.complete([1, 512]), 'BAD_ARGUMENT');
    await expectCode(() => model.complete(PROMPT, { maxTokens: -1 }), 'BAD_ARGUMENT');
    await expectCode(() => model.complete(PROMPT, { temperature: -1 }), 'BAD_ARGUMENT');
  });
});

describe.skipIf(!have)('tokens, logits and scores', () => {
  let model: Model;
  beforeAll(async () => {
    model = await loadModel(F32);
  });

  it('tokenize/detokenize round trip', () => {
    for (const text of ['Once upon a time, there was a little girl named Lily.', 'She said: "Hello!" 123 ü €', '  two  spaces']) {
      const ids = model.tokenize(text);
      expect(ids[0]).toBe(1); // BOS by default (add_bos_token)
      expect(model.detokenize(ids)).toBe(text);
      expect(model.tokenize(text, { bos: false })).toEqual(ids.slice(1));
    }
  });

  it('score() logprobs are the log-softmax of evaluate() rows', async () => {
    const ids = model.tokenize('Once upon a time, there was a little girl named Lily. She loved to play.');
    const logits = await model.evaluate(ids);
    const vocab = model.info.vocab;
    expect(logits.length).toBe(ids.length * vocab);
    const r = await model.score(ids);
    expect(r.tokensScored).toBe(ids.length - 1);
    let nll = 0;
    for (let i = 0; i + 1 < ids.length; i++) {
      const row = logits.subarray(i * vocab, (i + 1) * vocab);
      const max = Math.max(...row);
      const lse = max + Math.log(row.reduce((s, v) => s + Math.exp(v - max), 0));
      expect(r.logprobs[i]).toBeCloseTo(row[ids[i + 1]] - lse, 10);
      nll -= r.logprobs[i];
    }
    expect(r.nll).toBeCloseTo(nll / (ids.length - 1), 12);
    // A trained model predicts this text far better than uniform (ln 512 = 6.2).
    expect(r.nll).toBeLessThan(3);
  });

  it('perplexity of a short text is exp(mean nll) of score over BOS + its tokens', async () => {
    const text = 'Once upon a time, there was a little girl named Lily. She loved to play outside.';
    const ids = model.tokenize(text, { bos: false });
    const r = await model.perplexity(text, { window: ids.length + 1 });
    const s = await model.score([1, ...ids]);
    expect(r.windows.length).toBe(1);
    expect(r.tokensScored).toBe(ids.length);
    expect(r.textTokens).toBe(ids.length);
    expect(r.ppl).toBeCloseTo(Math.exp(s.nll), 10);
  });
});

describe.skipIf(!have)('sources', () => {
  let server: Server;
  let url: string;
  const bytes = have ? readFileSync(Q8) : new Uint8Array();
  beforeAll(async () => {
    server = createServer((req, res) => {
      if (req.url !== '/tiny.gguf') return void res.writeHead(404).end();
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(bytes.length) });
      // Two writes, so the download reports progress more than once.
      res.write(bytes.subarray(0, 100_000));
      setTimeout(() => res.end(bytes.subarray(100_000)), 5);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/tiny.gguf`;
  });
  afterAll(() => new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve())));

  it('a path, Uint8Array, ArrayBuffer, Blob, file: URL and http URL give the same greedy text', async () => {
    const greedy = async (m: Model) => {
      const text = await m.complete(PROMPT, { maxTokens: 24 });
      m.dispose();
      return text;
    };
    const expected = await greedy(await loadModel(Q8));
    const copy = new Uint8Array(bytes);
    expect(await greedy(await loadModel(copy))).toBe(expected);
    expect(await greedy(await loadModel(copy.buffer.slice(0)))).toBe(expected);
    expect(await greedy(await loadModel(new Blob([copy])))).toBe(expected);
    expect(await greedy(await loadModel(new URL(`file://${Q8}`)))).toBe(expected);

    const progress: Array<{ phase: string; loaded: number; total: number | undefined }> = [];
    const m = await loadModel(url, { onProgress: (p) => progress.push({ ...p }) });
    expect(await greedy(m)).toBe(expected);
    const download = progress.filter((p) => p.phase === 'download');
    const weights = progress.filter((p) => p.phase === 'weights');
    expect(download.length).toBeGreaterThan(1);
    expect(download.at(-1)).toEqual({ phase: 'download', loaded: bytes.length, total: bytes.length });
    expect(weights.length).toBeGreaterThan(1);
    const last = weights.at(-1)!;
    expect(last.loaded).toBe(last.total);
    for (const series of [download, weights]) {
      for (let i = 1; i < series.length; i++) expect(series[i].loaded).toBeGreaterThanOrEqual(series[i - 1].loaded);
    }
    // The download comes before any weight is read.
    expect(progress.findIndex((p) => p.phase === 'weights')).toBe(download.length);
  });

  it('an http 404 is BAD_SOURCE', async () => {
    await expectCode(() => loadModel(url.replace('tiny', 'absent')), 'BAD_SOURCE');
  });
});

describe.skipIf(!have)('info, memory, dispose, context', () => {
  it('info describes the model and the file', async () => {
    for (const [path, types] of [[Q8, undefined], [F32, { F32: 47 }]] as const) {
      const model = await loadModel(path);
      const header = await readGGUF(memorySource(readFileSync(path)));
      const expectedTypes: Record<string, number> = {};
      for (const t of header.tensors) expectedTypes[t.typeName] = (expectedTypes[t.typeName] ?? 0) + 1;
      expect(model.info).toMatchObject({
        architecture: 'llama', dim: 64, nLayers: 5, nHeads: 8, nKvHeads: 4, headDim: 8, ffn: 192, vocab: 512,
        contextLength: 256, context: 256, batchSize: 32, tiedOutput: true, ggufVersion: 3, tensorCount: 47,
        fileSize: statSync(path).size,
      });
      expect(model.info.tensorTypes).toEqual(types ?? expectedTypes);
      if (!types) expect(model.info.tensorTypes.Q8_0).toBeGreaterThan(0);
      model.dispose();
    }
  });

  it('memory(): regions are disjoint and fit in totalBytes; kv bytes per token match the shape', async () => {
    const model = await loadModel(Q8, { contextLength: 100 });
    const mem = model.memory();
    expect(mem.totalBytes).toBe(model.info.memoryBytes);
    // 5 layers × 4 KV heads: K and V of 8 channels in f32, plus the page's key summary (min and max of 8) per 32 tokens
    expect(mem.kvBytesPerToken).toBe(5 * 4 * (2 * 8 * 4 + (8 * 8) / 32));
    const sorted = [...mem.regions].sort((a, b) => a.offset - b.offset);
    let sum = 0;
    for (let i = 0; i < sorted.length; i++) {
      sum += sorted[i].bytes;
      if (i > 0) expect(sorted[i].offset).toBeGreaterThanOrEqual(sorted[i - 1].offset + sorted[i - 1].bytes);
    }
    expect(sum).toBeLessThanOrEqual(mem.totalBytes);
    expect(sorted.at(-1)!.offset + sorted.at(-1)!.bytes).toBeLessThanOrEqual(mem.totalBytes);
    // 100 positions take 4 pages of 32 per layer and KV head
    expect(mem.regions.find((r) => r.name.startsWith('kv.pages'))?.bytes).toBe(5 * 4 * 4 * (2 * 32 * 8 * 4));
    model.dispose();
  });

  it('after dispose(), every call throws DISPOSED', async () => {
    const model = await loadModel(Q8);
    model.dispose();
    await expectCode(() => model.tokenize('hi'), 'DISPOSED');
    await expectCode(() => model.detokenize([1]), 'DISPOSED');
    await expectCode(() => model.complete(PROMPT), 'DISPOSED');
    await expectCode(() => model.generate(PROMPT)[Symbol.asyncIterator]().next(), 'DISPOSED');
    await expectCode(() => model.score([1, 2]), 'DISPOSED');
  });

  // BUG (src/index.ts, left for the owner to fix): these three read this.llama (set to undefined by dispose())
  // before calling live(), so they throw "TypeError: Cannot read properties of undefined" instead of DISPOSED.
  it('after dispose(), evaluate(), perplexity() and memory() throw DISPOSED too', async () => {
    const model = await loadModel(Q8);
    model.dispose();
    await expectCode(() => model.evaluate([1, 2]), 'DISPOSED');
    await expectCode(() => model.perplexity('Once upon a time'), 'DISPOSED');
    await expectCode(() => model.memory(), 'DISPOSED');
  });

  it('a prompt longer than the context is CONTEXT_FULL', async () => {
    const model = await loadModel(Q8, { contextLength: 16 });
    const long = model.tokenize('Once upon a time, there was a little girl named Lily. She loved to play outside and came to play.');
    expect(long.length).toBeGreaterThan(16);
    await expectCode(() => model.complete(long), 'CONTEXT_FULL');
    await expectCode(() => model.evaluate(long), 'CONTEXT_FULL');
    await expectCode(() => model.score(long), 'CONTEXT_FULL');
    // The model still works after refusing.
    expect(await model.complete(PROMPT, { maxTokens: 3 })).toBe(', there was');
    model.dispose();
  });

  it('generation stops at the end of the context with stopReason "context"', async () => {
    const model = await loadModel(Q8, { contextLength: 16 });
    let stats: GenerationStats | undefined;
    const { ids } = await chunks(model, PROMPT, { maxTokens: 100, onStats: (s) => (stats = s) });
    // 5 prompt tokens + 11 generated fill the 16 positions (the last token is sampled, never run).
    expect(ids.length).toBe(11);
    expect(stats).toMatchObject({ stopReason: 'context', promptTokens: 5, generatedTokens: 11 });
    model.dispose();
  });
});
