/**
 * edgellm on Cloudflare Workers: the request handling shared by both entry points (worker.ts bundles a model,
 * worker-url.ts does not). The model loads once per isolate, on the first request that needs it, from:
 *   1. env.MODEL_URL when set: an http(s) URL (fetched), or a path such as "/sotu-15m-q4_0.gguf" served by the static
 *      assets binding env.ASSETS;
 *   2. else the model bundled with the worker as a Data module (worker.ts).
 *
 * Routes:
 *   GET  /          JSON: the model (architecture, context, kernel build, wasm memory) and where it came from.
 *   POST /generate  body: JSON {"prompt": "...", "maxTokens": 64, "temperature": 0, ...} or a plain-text prompt.
 *                   Streams text/plain chunks as they are generated; with `Accept: application/x-ndjson`, one line
 *                   per token {"id":..,"text":".."} then {"done":true,"build":..,"decodeTps":..,...}.
 *   POST /v1/chat/completions, GET /v1/models   OpenAI's Chat Completions API, for OpenAI's client libraries
 *                   (baseURL "https://<worker>/v1"): see openai.ts. The chat template is the CHAT_TEMPLATE var, or the
 *                   model's own.
 * Errors are JSON {"error":{"code","message"}}: 400 for a bad request, 404/405 for a bad route, 503 (Retry-After)
 * when the queue is full, 500 otherwise. Under /v1 they are in OpenAI's shape (openai.ts).
 *
 * One model runs one sequence at a time (a second concurrent generate() throws BUSY), so requests to an isolate, to
 * either API, are served in arrival order: up to MAX_QUEUE (default 8) wait their turn, beyond that the worker answers
 * 503. A client that disconnects, while queued or while generating, is dropped and its generation aborted.
 *
 * CORS: off unless CORS_ORIGIN is set ("*" or one origin), since with it any web page can spend this worker's CPU from
 * its visitors' browsers. Then preflights are answered and every response names the origin.
 *
 * Memory: an isolate may use 128 MB, counting the V8 heap (the tokenizer and the rest: 4-15 MiB), ArrayBuffers (a
 * bundled model's bytes for good, a downloaded one's while it loads) and the wasm memory (about the model's size plus
 * the KV cache of CONTEXT_LENGTH tokens). Measured in workerd at the default context of 512: tiny-260k-q8_0 6 MiB,
 * sotu-15m-q4_0 42-47 MiB, sotu-15m-f16 (30 MB, the largest test model) 79 MiB (test/workerd.test.ts).
 *
 * Timings: deployed Workers advance performance.now() only at I/O (a Spectre mitigation), so the prefillTps and
 * decodeTps of the final ndjson line are coarse there, possibly 0; workerd run locally has a running clock.
 */
import { EdgeLLMError, loadModel, type GenerateOptions, type GenerationStats, type Model } from 'edgellm';
import { HttpError } from './http.js';
import { completeReply, errorEvent, modelObject, newReplyId, openaiErrorResponse, parseChatRequest, streamReply } from './openai.js';

/** The Workers bindings this worker reads; every one is optional. */
export interface Env {
  /** An http(s) URL of a GGUF, or a path ("/model.gguf") on the static-assets binding; overrides a bundled model. */
  MODEL_URL?: string;
  /** The static-assets binding (wrangler `[assets] binding = "ASSETS"`), for a MODEL_URL path. */
  ASSETS?: { fetch(request: Request): Promise<Response> };
  /** Tokens of KV cache to plan for (default 512): prompt + generated tokens must fit. */
  CONTEXT_LENGTH?: string;
  /** Cap on wasm memory, e.g. "64MB" (default: 104 MiB less the model's bytes, so the isolate stays under 128 MB). */
  MEMORY_BUDGET?: string;
  /** Requests that may wait for the model while it is busy (default 8); more get 503. */
  MAX_QUEUE?: string;
  /** Largest maxTokens a request may ask for (default 1024); also a chat reply's length when it does not say. */
  MAX_TOKENS?: string;
  /**
   * A Jinja chat template for /v1/chat/completions, used instead of the model's own `tokenizer.chat_template`: for a
   * model without one, or to fix one. build.mjs --chat-template FILE sets it; in wrangler.toml a TOML multi-line string.
   */
  CHAT_TEMPLATE?: string;
  /** The model's name in GET /v1/models (default: MODEL_URL's file name without .gguf, else "edgellm"). */
  MODEL_ID?: string;
  /** "*" or one origin (https://app.example) that browsers may call the worker from; unset, no CORS headers. */
  CORS_ORIGIN?: string;
}

export interface ExecutionContext {
  waitUntil(promise: Promise<unknown>): void;
}

/** The Workers memory limit, and what the runtime and JS heap need beside the model bytes and the wasm memory. */
const ISOLATE_BYTES = 128 * 2 ** 20;
const RESERVE_BYTES = 24 * 2 ** 20;
const DEFAULTS = { contextLength: 512, maxQueue: 8, maxTokens: 1024, maxTokensPerRequest: 64 };
const MAX_BODY = 256 * 1024;
/** The request fields passed on to model.generate(). */
const FIELDS = ['prompt', 'maxTokens', 'temperature', 'topK', 'topP', 'minP', 'repeatPenalty', 'repeatLastN', 'seed', 'stop'] as const;

type Source = 'bundled' | 'url' | 'asset';

export function createWorker(bundled?: ArrayBuffer | Uint8Array) {
  let loaded: Promise<{ model: Model; source: Source; modelBytes: number }> | undefined;
  const queue = new Queue();

  /** The model of this isolate: loaded once; a failed load is retried by the next request. */
  function getModel(env: Env, ctx: ExecutionContext) {
    if (!loaded) {
      loaded = load(env, bundled);
      loaded.catch(() => (loaded = undefined));
      // Loading outlives the request that started it (and any request waiting for it) if that client goes away.
      ctx.waitUntil(loaded.catch(() => {}));
    }
    return loaded;
  }

  return {
    async fetch(request: Request, env: Env, ctx: ExecutionContext): Promise<Response> {
      const { pathname } = new URL(request.url);
      const openai = pathname === '/v1' || pathname.startsWith('/v1/');
      const cors = env.CORS_ORIGIN?.trim();
      let response: Response;
      try {
        response = cors && request.method === 'OPTIONS' ? preflight(request, cors) : await route(request, pathname, env, ctx);
      } catch (err) {
        response = openai ? openaiErrorResponse(err) : errorResponse(err);
      }
      if (cors) {
        response.headers.set('access-control-allow-origin', cors);
        response.headers.set('access-control-expose-headers', 'retry-after');
      }
      return response;
    },
  };

  async function route(request: Request, pathname: string, env: Env, ctx: ExecutionContext): Promise<Response> {
    const method = request.method;
    const only = (allowed: string) => {
      if (!allowed.split(', ').includes(method)) throw new HttpError(405, 'METHOD_NOT_ALLOWED', `${method} ${pathname}: use ${allowed.split(', ')[0]}`, { allow: allowed });
    };
    if (pathname === '/') {
      only('GET, HEAD');
      const { model, source, modelBytes } = await getModel(env, ctx);
      return Response.json({
        ...model.info, // memoryBytes: the wasm memory planned
        source,
        modelBytes,
        queue: { running: queue.running, waiting: queue.waiting, max: intVar(env.MAX_QUEUE, 'MAX_QUEUE', DEFAULTS.maxQueue) },
      });
    }
    if (pathname === '/generate') {
      only('POST');
      return await generate(request, env, ctx);
    }
    if (pathname === '/v1/chat/completions') {
      only('POST');
      return await chatCompletions(request, env, ctx);
    }
    if (pathname === '/v1/models' || pathname.startsWith('/v1/models/')) {
      only('GET, HEAD');
      // Listed without loading the model: clients call this to check the connection, and it should stay cheap.
      const model = modelObject(modelId(env), 0);
      if (pathname === '/v1/models') return Response.json({ object: 'list', data: [model] });
      const id = decodeURIComponent(pathname.slice('/v1/models/'.length));
      if (id !== model.id) throw new HttpError(404, 'model_not_found', `The model ${JSON.stringify(id)} does not exist: this worker serves ${JSON.stringify(model.id)}`, {}, 'model');
      return Response.json(model);
    }
    if (pathname === '/v1' || pathname.startsWith('/v1/')) {
      throw new HttpError(404, 'unknown_url', `Invalid URL (${request.method} ${pathname}): the routes are POST /v1/chat/completions and GET /v1/models`);
    }
    throw new HttpError(404, 'NOT_FOUND', `no route ${pathname}: use GET /, POST /generate or POST /v1/chat/completions`);
  }

  async function generate(request: Request, env: Env, ctx: ExecutionContext): Promise<Response> {
    const { prompt, options } = await readRequest(request, env);
    const ndjson = /application\/x-ndjson/i.test(request.headers.get('accept') ?? '');
    const { model } = await getModel(env, ctx);
    const format = ndjson ? (e: TokenEvent) => JSON.stringify(e) + '\n' : (e: TokenEvent) => ('text' in e ? e.text : '');
    return respond(request, env, ctx, {
      produce: async function* (signal) {
        for await (const e of tokenEvents(model, prompt, { ...options, signal })) yield format(e);
      },
      // The status line is sent; an ndjson stream says what failed in its last line, a text stream is cut.
      onError: ndjson ? (err) => JSON.stringify(errorBody(err)) + '\n' : undefined,
      headers: {
        'content-type': ndjson ? 'application/x-ndjson; charset=utf-8' : 'text/plain; charset=utf-8',
        'cache-control': 'no-store',
        'x-content-type-options': 'nosniff',
      },
    });
  }

  async function chatCompletions(request: Request, env: Env, ctx: ExecutionContext): Promise<Response> {
    const text = await readText(request);
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch (err) {
      throw new HttpError(400, 'invalid_json', `We could not parse the JSON body of your request: ${(err as Error).message}`);
    }
    const chat = parseChatRequest(body, intVar(env.MAX_TOKENS, 'MAX_TOKENS', DEFAULTS.maxTokens));
    const { model } = await getModel(env, ctx);
    // Rendered and tokenized before queueing, so that a conversation the template refuses, or one too long for the
    // context, is answered at once rather than after the requests ahead of it.
    let ids: number[];
    try {
      ids = model.text.chatIds(chat.messages, { template: env.CHAT_TEMPLATE || undefined, tools: chat.tools, addGenerationPrompt: true });
    } catch (err) {
      if (err instanceof EdgeLLMError && err.code === 'NO_TEMPLATE') {
        throw new HttpError(
          500,
          'no_chat_template',
          'The model has no chat template (tokenizer.chat_template) and the worker has none configured: set the CHAT_TEMPLATE var (wrangler.toml [vars]), or build with build.mjs --chat-template FILE',
          { 'x-should-retry': 'false' },
        );
      }
      throw err;
    }
    const context = model.info.context;
    if (ids.length >= context) {
      throw new HttpError(400, 'context_length_exceeded', `The messages are ${ids.length} tokens once rendered, and this model's context is ${context} tokens, with room needed for the reply`, {}, 'messages');
    }
    const meta = { id: newReplyId(), created: Math.floor(Date.now() / 1000), model: chat.model ?? modelId(env) };
    return respond(request, env, ctx, {
      produce: (signal) =>
        chat.stream ? streamReply(model, ids, { ...chat.options, signal }, meta, chat.includeUsage) : completeReply(model, ids, { ...chat.options, signal }, meta),
      onError: errorEvent,
      headers: chat.stream
        ? { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache' }
        : { 'content-type': 'application/json', 'cache-control': 'no-store' },
    });
  }

  /**
   * Runs a request's generation in its turn and streams what `produce` yields. Aborted when the client disconnects:
   * request.signal where the runtime provides it, and the response's cancel(). The first chunk is awaited before the
   * response is returned, so that a bad option or an over-long prompt answers with its own status rather than a
   * broken stream.
   */
  async function respond(
    request: Request,
    env: Env,
    ctx: ExecutionContext,
    how: { produce: (signal: AbortSignal) => AsyncIterable<string>; onError?: (err: unknown) => string; headers: Record<string, string> },
  ): Promise<Response> {
    const abort = new AbortController();
    const onAbort = () => abort.abort(new Error('the client disconnected'));
    if (request.signal?.aborted) onAbort();
    request.signal?.addEventListener('abort', onAbort);

    let release: () => void;
    try {
      release = await queue.acquire(intVar(env.MAX_QUEUE, 'MAX_QUEUE', DEFAULTS.maxQueue), abort.signal);
    } catch (err) {
      request.signal?.removeEventListener('abort', onAbort);
      throw err;
    }
    let finish!: () => void;
    const finished = new Promise<void>((resolve) => (finish = resolve));
    // The generation (and the queue slot) outlive a disconnected client's request until the abort is seen.
    ctx.waitUntil(finished);
    const done = () => {
      release();
      request.signal?.removeEventListener('abort', onAbort);
      finish();
    };
    const chunks = (async function* () {
      try {
        yield* how.produce(abort.signal);
      } finally {
        done();
      }
    })();

    let first: IteratorResult<string> | undefined;
    try {
      first = await chunks.next();
    } catch (err) {
      done();
      throw err;
    }
    const encoder = new TextEncoder();
    const body = new ReadableStream<Uint8Array>({
      // Pulled as the runtime sends: one chunk per pull, so each token is flushed as it is generated.
      async pull(controller) {
        try {
          for (;;) {
            const r = first ?? (await chunks.next());
            first = undefined;
            if (r.done) return controller.close();
            if (r.value) return controller.enqueue(encoder.encode(r.value));
          }
        } catch (err) {
          if (abort.signal.aborted) return; // cancelled: nobody is reading
          if (!how.onError) return controller.error(err);
          controller.enqueue(encoder.encode(how.onError(err)));
          controller.close();
        }
      },
      async cancel(reason) {
        abort.abort(reason ?? new Error('the client disconnected'));
        await chunks.return(undefined);
      },
    });
    return new Response(body, { headers: how.headers });
  }
}

/** The answer to a CORS preflight; the request headers are echoed because "*" does not cover Authorization. */
function preflight(request: Request, origin: string): Response {
  return new Response(null, {
    status: 204,
    headers: {
      'access-control-allow-origin': origin,
      'access-control-allow-methods': 'GET, HEAD, POST, OPTIONS',
      'access-control-allow-headers': request.headers.get('access-control-request-headers') ?? '',
      'access-control-max-age': '86400',
    },
  });
}

function modelId(env: Env): string {
  if (env.MODEL_ID) return env.MODEL_ID;
  const file = env.MODEL_URL?.trim().split(/[?#]/)[0].split('/').pop();
  return file ? decodeURIComponent(file).replace(/\.gguf$/i, '') : 'edgellm';
}

type TokenEvent =
  | { id: number; text: string }
  | { text: string }
  | ({ done: true; build: string; prefillTps: number; decodeTps: number } & Omit<GenerationStats, 'prefillTokensPerSecond' | 'decodeTokensPerSecond'>);

/**
 * Generation as one event per token: a token's text is what it completed (possibly "", e.g. half a UTF-8 character or
 * a possible stop-string prefix, whose text comes with a later token); text held back to the end comes as {text}.
 */
async function* tokenEvents(model: Model, prompt: string | number[], options: GenerateOptions): AsyncGenerator<TokenEvent> {
  const pending: number[] = [];
  let stats: GenerationStats | undefined;
  const chunks = model.generate(prompt, { ...options, onToken: (id) => pending.push(id), onStats: (s) => (stats = s) });
  for await (const text of chunks) {
    const ids = pending.splice(0);
    const last = ids.pop();
    for (const id of ids) yield { id, text: '' };
    yield last === undefined ? { text } : { id: last, text };
  }
  for (const id of pending.splice(0)) yield { id, text: '' };
  const { decodeTokensPerSecond, prefillTokensPerSecond, ...s } = stats!;
  yield { done: true, build: model.info.build, ...s, prefillTps: round(prefillTokensPerSecond), decodeTps: round(decodeTokensPerSecond) };
}

async function load(env: Env, bundled: ArrayBuffer | Uint8Array | undefined): Promise<{ model: Model; source: Source; modelBytes: number }> {
  let bytes: ArrayBuffer | Uint8Array;
  let source: Source;
  const url = env.MODEL_URL?.trim();
  if (url) {
    let response: Response;
    if (/^https?:\/\//i.test(url)) {
      source = 'url';
      try {
        response = await fetch(url);
      } catch (err) {
        throw new EdgeLLMError('BAD_SOURCE', `MODEL_URL ${url}: fetch failed: ${(err as Error)?.message ?? err}`, { cause: err });
      }
    } else if (url.startsWith('/')) {
      if (!env.ASSETS) throw new EdgeLLMError('BAD_SOURCE', `MODEL_URL is the path ${url}, but there is no ASSETS binding to read it from`);
      source = 'asset';
      response = await env.ASSETS.fetch(new Request(new URL(url, 'https://assets.invalid')));
    } else {
      throw new EdgeLLMError('BAD_SOURCE', `MODEL_URL must be an http(s) URL or a path starting with "/" on the ASSETS binding, got ${JSON.stringify(url)}`);
    }
    if (!response.ok) {
      await response.body?.cancel();
      throw new EdgeLLMError('BAD_SOURCE', `MODEL_URL ${url}: HTTP ${response.status} ${response.statusText}`.trimEnd());
    }
    bytes = await readBody(response, url);
  } else if (bundled && bundled.byteLength > 0) {
    source = 'bundled';
    bytes = bundled;
  } else {
    throw new EdgeLLMError('BAD_SOURCE', 'no model: set MODEL_URL, or deploy worker.ts with a bundled model.gguf');
  }
  // The isolate holds the model's bytes and the wasm memory side by side (the bytes of a download only while loading).
  const memoryBudget = env.MEMORY_BUDGET || Math.max(0, ISOLATE_BYTES - RESERVE_BYTES - bytes.byteLength);
  const contextLength = intVar(env.CONTEXT_LENGTH, 'CONTEXT_LENGTH', DEFAULTS.contextLength);
  const model = await loadModel(bytes, { contextLength, memoryBudget });
  return { model, source, modelBytes: bytes.byteLength };
}

/**
 * The whole body, read into one buffer of the declared length: the isolate then holds the model once while it loads
 * (Response.arrayBuffer() may hold the chunks and their concatenation at once).
 */
async function readBody(response: Response, url: string): Promise<Uint8Array> {
  const declared = Number(response.headers.get('content-length') ?? NaN);
  const encoded = (response.headers.get('content-encoding') ?? 'identity') !== 'identity';
  if (!response.body || encoded || !Number.isSafeInteger(declared)) return new Uint8Array(await response.arrayBuffer());
  const bytes = new Uint8Array(declared);
  const reader = response.body.getReader();
  let at = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (at + value.length > declared) {
      await reader.cancel();
      throw new EdgeLLMError('BAD_SOURCE', `MODEL_URL ${url}: the body is longer than its content-length ${declared}`);
    }
    bytes.set(value, at);
    at += value.length;
  }
  if (at !== declared) throw new EdgeLLMError('TRUNCATED', `MODEL_URL ${url}: got ${at} of the ${declared} bytes declared`);
  return bytes;
}

/** The request body as text, at most MAX_BODY. */
async function readText(request: Request): Promise<string> {
  const declared = Number(request.headers.get('content-length') ?? 0);
  if (declared > MAX_BODY) throw new HttpError(413, 'TOO_LARGE', `the request body is ${declared} bytes; the limit is ${MAX_BODY}`);
  const text = await request.text();
  if (text.length > MAX_BODY) throw new HttpError(413, 'TOO_LARGE', `the request body is over ${MAX_BODY} bytes`);
  return text;
}

/** The prompt and generate() options of a request: a JSON object, or else the body is the prompt. */
async function readRequest(request: Request, env: Env): Promise<{ prompt: string | number[]; options: GenerateOptions }> {
  const text = await readText(request);
  let fields: Record<string, unknown>;
  const json = /json/i.test(request.headers.get('content-type') ?? '') || /^\s*\{/.test(text);
  if (json) {
    try {
      fields = JSON.parse(text);
    } catch (err) {
      throw new HttpError(400, 'BAD_REQUEST', `the body is not valid JSON: ${(err as Error).message}`);
    }
    if (fields === null || typeof fields !== 'object' || Array.isArray(fields)) throw new HttpError(400, 'BAD_REQUEST', 'the JSON body must be an object such as {"prompt": "..."}');
    const unknown = Object.keys(fields).filter((k) => !(FIELDS as readonly string[]).includes(k));
    if (unknown.length) throw new HttpError(400, 'BAD_REQUEST', `unknown field${unknown.length > 1 ? 's' : ''} ${unknown.join(', ')}; the fields are ${FIELDS.join(', ')}`);
  } else {
    fields = { prompt: text };
  }
  const { prompt, ...options } = fields as { prompt?: unknown } & GenerateOptions;
  if (typeof prompt !== 'string' && !(Array.isArray(prompt) && prompt.length > 0)) {
    throw new HttpError(400, 'BAD_REQUEST', 'prompt is required: a string, or an array of token ids');
  }
  if (typeof prompt === 'string' && prompt.length === 0) throw new HttpError(400, 'BAD_REQUEST', 'the prompt is empty');
  const limit = intVar(env.MAX_TOKENS, 'MAX_TOKENS', DEFAULTS.maxTokens);
  options.maxTokens ??= Math.min(DEFAULTS.maxTokensPerRequest, limit);
  if (typeof options.maxTokens === 'number' && options.maxTokens > limit) throw new HttpError(400, 'BAD_ARGUMENT', `maxTokens is at most ${limit} here, got ${options.maxTokens}`);
  return { prompt: prompt as string | number[], options };
}

/** FIFO admission to the one model: `acquire` resolves with a release function once the caller's turn comes. */
class Queue {
  running = false;
  private waiters: Array<{ grant: () => void }> = [];

  get waiting(): number {
    return this.waiters.length;
  }

  acquire(max: number, signal: AbortSignal): Promise<() => void> {
    if (signal.aborted) return Promise.reject(new EdgeLLMError('ABORTED', 'the client disconnected'));
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      const next = this.waiters.shift();
      if (next) next.grant();
      else this.running = false;
    };
    if (!this.running) {
      this.running = true;
      return Promise.resolve(release);
    }
    if (this.waiters.length >= max) {
      return Promise.reject(new HttpError(503, 'QUEUE_FULL', `the model is busy and ${this.waiters.length} requests are waiting; retry later`, { 'retry-after': '5' }));
    }
    return new Promise((resolve, reject) => {
      const waiter = {
        grant: () => {
          signal.removeEventListener('abort', onAbort);
          resolve(release);
        },
      };
      const onAbort = () => {
        const at = this.waiters.indexOf(waiter);
        if (at >= 0) this.waiters.splice(at, 1);
        reject(new EdgeLLMError('ABORTED', 'the client disconnected while waiting'));
      };
      signal.addEventListener('abort', onAbort);
      this.waiters.push(waiter);
    });
  }
}

function intVar(value: string | undefined, name: string, dflt: number): number {
  if (value === undefined || value === '') return dflt;
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 0) throw new HttpError(500, 'BAD_CONFIG', `${name} must be a non-negative integer, got ${JSON.stringify(value)}`);
  return n;
}

function round(x: number): number {
  return Number.isFinite(x) ? Math.round(x * 10) / 10 : 0;
}

function errorBody(err: unknown): { error: { code: string; message: string } } {
  if (err instanceof HttpError || err instanceof EdgeLLMError) return { error: { code: err.code, message: err.message } };
  return { error: { code: 'INTERNAL', message: err instanceof Error ? err.message : String(err) } };
}

function errorResponse(err: unknown): Response {
  let status = 500;
  let headers: Record<string, string> = {};
  if (err instanceof HttpError) ({ status, headers } = err);
  else if (err instanceof EdgeLLMError && (err.code === 'BAD_ARGUMENT' || err.code === 'CONTEXT_FULL')) status = 400;
  if (status >= 500 && !(err instanceof HttpError)) console.error(err);
  return Response.json(errorBody(err), { status, headers });
}
