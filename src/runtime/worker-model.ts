/**
 * A model that runs in a dedicated Web Worker, driven from the page (loadModelInWorker in browser.ts starts one). In a
 * browser page the main thread may not Atomics.wait, so a threaded model's coordinator (the kernel pool's thread 0,
 * runtime/pool.ts) belongs in a worker, where it may; and off the main thread any model, threaded or not, leaves the
 * page responsive while it computes.
 *
 * The page side, WorkerModel, mirrors Model: the methods in FORWARDED run in the worker through one generic call, each
 * returning what Model's does, made asynchronous (AsyncIterable streams stay AsyncIterable, the rest become Promises).
 * The text side (tokenize, detokenize, applyChatTemplate) and chat sessions stay on the page, synchronous as in Model:
 * the worker sends the GGUF header's metadata once, and the page builds the same ModelTokenizer from it. A ChatSession
 * then lives on the page and only its generate calls cross over, which keeps session.messages and session.stats
 * synchronous and the KV cache's prefix reuse in the worker, beside the cache.
 *
 * Messages, page → worker: { op: 'call', id, method, args, callbacks } and { op: 'abort', id }; worker → page, for a
 * call id: { event, args } (an option callback such as onToken fired), { chunk } (a streamed item), then one { result }
 * or { error }. The options of every method (and of the load) are its second argument: the functions in them become
 * events, and the signal becomes abort messages. Nothing else of a call needs a protocol of its own.
 */
import { EdgeLLMError, type ErrorCode } from '../errors.js';
import type { LoadOptions, Model, ModelInfo } from '../api.js';
import { ModelTokenizer, type ChatFormatOptions, type DetokenizeOptions, type TokenizeOptions } from '../chat/model-tokenizer.js';
import { ChatSession, type SessionOptions } from '../chat/session.js';
import type { ChatMessage } from '../chat/template.js';
import { GGUFFile } from '../gguf/reader.js';
import type { ModelSource } from '../gguf/source.js';

/** Model's methods that run in the worker; stream: it returns an AsyncIterable, whose items are sent as they come. */
const FORWARDED = {
  generate: { stream: true },
  chat: { stream: true },
  complete: {},
  evaluate: {},
  score: {},
  perplexity: {},
  memory: {},
  attentionStats: {},
  profile: {},
} as const satisfies Record<string, { stream?: true }>;

type ForwardedName = keyof typeof FORWARDED;

/** Each forwarded method as the page sees it: Model's parameters, and its result made asynchronous. */
type Forwarded = {
  [K in ForwardedName]: Model[K] extends (...args: infer A) => infer R ? (...args: A) => (R extends AsyncIterable<unknown> ? R : Promise<Awaited<R>>) : never;
};

/** Where every method (and loadModel) takes its options. */
const OPTIONS = 1;

/** How long dispose() lets the worker remove its spill files before it is ended regardless. */
const DISPOSE_GRACE_MS = 5000;

type CallRequest = { op: 'call'; id: number; method: string; args: unknown[]; callbacks: string[] };
type Request = CallRequest | { op: 'abort'; id: number };
interface SerializedError {
  code?: ErrorCode;
  name: string;
  message: string;
}
type Reply = { id: number } & ({ event: string; args: unknown[] } | { chunk: unknown } | { result: unknown } | { error: SerializedError });

/** What the page needs of a loaded model besides its methods. */
interface Loaded {
  info: ModelInfo;
  /** The GGUF header's metadata (no tensors), from which the page builds the tokenizer. */
  header: { version: number; metadata: GGUFFile['metadata']; types: GGUFFile['metadataTypes']; alignment: number; dataOffset: number };
  fileSize: number;
  name: string;
}

// ---- the page's side ------------------------------------------------------------------------------------------------

/** A call's replies, in order, for the one consumer that awaits them. */
class Inbox {
  private readonly queue: Reply[] = [];
  private wake: (() => void) | undefined;

  push(reply: Reply): void {
    this.queue.push(reply);
    this.wake?.();
    this.wake = undefined;
  }

  async take(): Promise<Reply> {
    while (this.queue.length === 0) await new Promise<void>((resolve) => (this.wake = resolve));
    return this.queue.shift()!;
  }
}

/** The page's end of the worker: numbered calls, their replies, and the end of the worker. */
class Connection {
  private readonly inboxes = new Map<number, Inbox>();
  private nextId = 1;
  /** Why no call can be made any more: disposed, or the worker failed. */
  failure: EdgeLLMError | undefined;

  constructor(private readonly worker: Worker) {
    worker.onmessage = (e: MessageEvent<Reply>) => this.inboxes.get(e.data.id)?.push(e.data);
    worker.onmessageerror = () => this.close(new EdgeLLMError('WASM', 'a message from the model worker could not be read'));
    worker.onerror = (e: ErrorEvent) => {
      e.preventDefault();
      // A script that did not load (missing, or refused by a Content-Security-Policy) gives an Event with no message.
      const why = e.message || 'its script did not load (is browser-worker.js beside browser.js, and allowed by the worker-src of any Content-Security-Policy?)';
      this.close(new EdgeLLMError('WASM', `the model worker failed: ${why}`));
    };
  }

  /** Terminates the worker (and with it the kernel pool's workers, which it started); every call under way fails with `why`. */
  close(why: EdgeLLMError): void {
    if (this.failure) return;
    this.fail(why);
    this.worker.terminate();
  }

  /**
   * As close(), but the worker first disposes its model, which removes the model's spill files (OPFS: files of a
   * terminated worker would stay until the next load's sweep). A worker that does not answer in time is ended anyway.
   */
  async dispose(why: EdgeLLMError): Promise<void> {
    if (this.failure) return;
    this.fail(why);
    const id = this.nextId++;
    const inbox = new Inbox();
    this.inboxes.set(id, inbox);
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      this.worker.postMessage({ op: 'call', id, method: 'dispose', args: [], callbacks: [] } satisfies Request);
      await Promise.race([inbox.take(), new Promise((resolve) => (timer = setTimeout(resolve, DISPOSE_GRACE_MS)))]);
    } finally {
      clearTimeout(timer);
      this.inboxes.delete(id);
      this.worker.terminate();
    }
  }

  private fail(why: EdgeLLMError): void {
    this.failure = why;
    const error = { code: why.code, name: why.name, message: why.message };
    for (const [id, inbox] of this.inboxes) inbox.push({ id, error });
  }

  live(): void {
    if (this.failure) throw new EdgeLLMError(this.failure.code, this.failure.message);
  }

  forward(method: ForwardedName, args: unknown[]): unknown {
    return 'stream' in FORWARDED[method] ? { [Symbol.asyncIterator]: () => this.exchange(method, args) } : this.call(method, args);
  }

  async call(method: string, args: unknown[]): Promise<unknown> {
    const replies = this.exchange(method, args);
    for (;;) {
      const r = await replies.next();
      if (r.done) return r.value;
    }
  }

  /**
   * One call: yields its streamed items and returns its result. Option callbacks fire in order with the items, as
   * Model's do (onToken just before its text). Once the call's signal has aborted nothing more of it is delivered and
   * it ends with ABORTED, as Model's stops within one token; a consumer that stops early stops the worker's call too.
   * Either way it returns only once the worker has finished the call, so the next call does not find the model BUSY.
   */
  private async *exchange(method: string, args: unknown[]): AsyncGenerator<unknown, unknown> {
    this.live();
    const { sent, callbacks, signal } = splitOptions(args);
    const id = this.nextId++;
    const inbox = new Inbox();
    const abort = () => this.post({ op: 'abort', id });
    let started = false;
    let settled = false;
    let skipped = false;
    this.inboxes.set(id, inbox);
    try {
      try {
        this.post({ op: 'call', id, method, args: sent, callbacks: Object.keys(callbacks) });
      } catch (e) {
        if (e instanceof EdgeLLMError) throw e;
        throw new EdgeLLMError('BAD_ARGUMENT', `${method}: its arguments cannot be sent to the model worker (${(e as Error).message})`, { cause: e });
      }
      started = true;
      signal?.addEventListener('abort', abort, { once: true });
      if (signal?.aborted) abort();
      for (;;) {
        const reply = await inbox.take();
        if ('error' in reply) {
          settled = true;
          throw revive(reply.error);
        }
        if ('result' in reply) {
          settled = true;
          if (skipped) throw new EdgeLLMError('ABORTED', `${method} was aborted by its AbortSignal`, { cause: signal!.reason });
          return reply.result;
        }
        if (signal?.aborted) {
          skipped = true;
          continue;
        }
        if ('event' in reply) (callbacks[reply.event] as (...a: unknown[]) => void)(...reply.args);
        else yield reply.chunk;
      }
    } finally {
      signal?.removeEventListener('abort', abort);
      if (started && !settled && !this.failure) {
        abort();
        for (;;) {
          const reply = await inbox.take();
          if ('result' in reply || 'error' in reply) break;
        }
      }
      this.inboxes.delete(id);
    }
  }

  private post(request: Request): void {
    this.live();
    this.worker.postMessage(request);
  }
}

/** The options argument split into what is sent, the callbacks (which become events) and the signal (abort messages). */
function splitOptions(args: unknown[]): { sent: unknown[]; callbacks: Record<string, unknown>; signal: AbortSignal | undefined } {
  const options = args[OPTIONS];
  if (options === null || typeof options !== 'object') return { sent: args, callbacks: {}, signal: undefined };
  const plain: Record<string, unknown> = {};
  const callbacks: Record<string, unknown> = {};
  let signal: AbortSignal | undefined;
  for (const [key, value] of Object.entries(options)) {
    if (key === 'signal' && value instanceof AbortSignal) signal = value;
    else if (typeof value === 'function') callbacks[key] = value;
    else plain[key] = value;
  }
  const sent = args.slice();
  sent[OPTIONS] = plain;
  return { sent, callbacks, signal };
}

function revive(e: SerializedError): Error {
  if (e.code) return new EdgeLLMError(e.code, e.message);
  return Object.assign(new Error(e.message), { name: e.name });
}

/** A page-relative URL means the page's address (the worker's own would be the worker script's); URL objects do not clone. */
function resolveSource(src: ModelSource): ModelSource {
  if (typeof src !== 'string' && !(src instanceof URL)) return src;
  const base = (globalThis as { location?: { href?: string } }).location?.href;
  try {
    return new URL(src, base).href;
  } catch {
    return String(src);
  }
}

export interface WorkerModel extends Forwarded {}

/**
 * A Model running in a dedicated worker; see loadModelInWorker. Model's API, except that generate and chat stream
 * across (AsyncIterable<string> as in Model), complete, evaluate, score, perplexity, memory, attentionStats and profile
 * return Promises, and dispose() terminates the worker, and the kernel pool's workers with it. tokenize, detokenize,
 * applyChatTemplate and session() run on the page, as in Model. Errors are EdgeLLMError with Model's codes; a worker
 * that fails (its script did not load, it crashed) fails every call with WASM.
 */
export class WorkerModel {
  static {
    for (const name of Object.keys(FORWARDED) as ForwardedName[]) {
      Object.defineProperty(this.prototype, name, {
        configurable: true,
        writable: true,
        value(this: WorkerModel, ...args: unknown[]) {
          return this.connection.forward(name, args);
        },
      });
    }
  }

  private constructor(
    private readonly connection: Connection,
    readonly info: ModelInfo,
    /** The tokenizer and chat template, on the page. */
    readonly text: ModelTokenizer,
  ) {}

  /** Loads src in `worker` (a module worker running browser-worker.js) with loadModel's options. */
  static async start(worker: Worker, src: ModelSource, options: LoadOptions = {}): Promise<WorkerModel> {
    const connection = new Connection(worker);
    const { signal, ...rest } = options;
    // An aborted load ends the worker at once, whatever it is doing (a download, or reading weights).
    const abort = () => connection.close(new EdgeLLMError('ABORTED', 'the load was aborted by its AbortSignal'));
    signal?.addEventListener('abort', abort, { once: true });
    try {
      if (signal?.aborted) abort();
      const loaded = (await connection.call('load', [resolveSource(src), rest])) as Loaded;
      // Aborted just as the load finished: its result came before the abort.
      connection.live();
      const gguf = new GGUFFile({ ...loaded.header, tensors: [] }, loaded.fileSize, loaded.name);
      return new WorkerModel(connection, loaded.info, ModelTokenizer.fromGGUF(gguf));
    } catch (e) {
      connection.close(new EdgeLLMError('DISPOSED', 'the load failed'));
      throw e;
    } finally {
      signal?.removeEventListener('abort', abort);
    }
  }

  tokenize(text: string, opts: TokenizeOptions = {}): number[] {
    this.connection.live();
    return this.text.tokenize(text, opts);
  }

  detokenize(ids: ArrayLike<number>, opts: DetokenizeOptions = {}): string {
    this.connection.live();
    return this.text.detokenize(ids, opts);
  }

  applyChatTemplate(messages: ChatMessage[], opts: ChatFormatOptions = {}): string {
    this.connection.live();
    return this.text.applyChatTemplate(messages, opts);
  }

  /** A conversation on the page whose turns generate in the worker (which keeps the KV cache between them). */
  session(opts: SessionOptions = {}): ChatSession {
    this.connection.live();
    return new ChatSession({ text: this.text, contextLength: this.info.context, generate: (ids, o) => this.generate(ids, o) }, opts);
  }

  /**
   * Ends the worker, and with it the kernel pool's workers; calls under way and later ones fail with DISPOSED at
   * once. The worker first disposes its model, removing its spill files: the promise resolves when they are gone.
   */
  dispose(): Promise<void> {
    return this.connection.dispose(new EdgeLLMError('DISPOSED', 'the model was disposed'));
  }
}

// ---- the worker's side ----------------------------------------------------------------------------------------------

interface WorkerScope {
  onmessage: ((e: MessageEvent<Request>) => void) | null;
  postMessage(message: Reply, transfer?: Transferable[]): void;
  close?(): void;
}

/**
 * Serves one model in this worker (browser-worker.ts): the first call is 'load', then FORWARDED's methods. `load` is
 * the platform's loadModelOn, which hands over the header it read (the page builds its tokenizer from it).
 */
export function serveModel(
  load: (src: ModelSource, options: LoadOptions, onHeader: (gguf: GGUFFile) => void) => Promise<Model>,
  scope = globalThis as unknown as WorkerScope,
): void {
  let model: Model | undefined;
  const calls = new Map<number, AbortController>();

  async function loadHere(src: ModelSource, options: LoadOptions): Promise<Loaded> {
    if (model) throw new EdgeLLMError('BAD_ARGUMENT', 'this worker has a model already');
    let gguf: GGUFFile | undefined;
    model = await load(src, options, (header) => (gguf = header));
    const { version, metadata, metadataTypes: types, alignment, dataOffset, fileSize, sourceName } = gguf!;
    return { info: model.info, header: { version, metadata, types, alignment, dataOffset }, fileSize, name: sourceName };
  }

  async function run({ id, method, args, callbacks }: CallRequest): Promise<void> {
    const controller = new AbortController();
    calls.set(id, controller);
    const options: Record<string, unknown> = { ...(args[OPTIONS] as object | undefined), signal: controller.signal };
    for (const name of callbacks) options[name] = (...a: unknown[]) => scope.postMessage({ id, event: name, args: a });
    const call = args.slice();
    call[OPTIONS] = options;
    try {
      if (method === 'dispose') {
        for (const other of calls.values()) if (other !== controller) other.abort();
        const disposing = model?.dispose();
        model = undefined;
        await disposing;
        scope.postMessage({ id, result: undefined });
        // The worker ends itself, as the pool's workers do (pool.ts); the page's terminate() stays the backstop.
        // Node's worker scope has no close.
        scope.close?.();
        return;
      }
      if (method === 'load') {
        scope.postMessage({ id, result: await loadHere(call[0] as ModelSource, options) });
        return;
      }
      if (!Object.hasOwn(FORWARDED, method)) throw new EdgeLLMError('BAD_ARGUMENT', `the model worker has no method ${method}`);
      if (!model) throw new EdgeLLMError('DISPOSED', 'no model is loaded in this worker');
      const out = (model[method as ForwardedName] as (...a: unknown[]) => unknown)(...call);
      if ('stream' in FORWARDED[method as ForwardedName]) {
        for await (const chunk of out as AsyncIterable<unknown>) scope.postMessage({ id, chunk });
        scope.postMessage({ id, result: undefined });
      } else {
        const result = await out;
        scope.postMessage({ id, result }, transferables(result));
      }
    } catch (err) {
      scope.postMessage({ id, error: serializeError(err) });
    } finally {
      calls.delete(id);
    }
  }

  scope.onmessage = (e) => {
    const request = e.data;
    if (request.op === 'abort') calls.get(request.id)?.abort();
    else void run(request);
  };
}

function serializeError(err: unknown): SerializedError {
  if (err instanceof EdgeLLMError) return { code: err.code, name: err.name, message: err.message };
  const e = err as { name?: unknown; message?: unknown } | undefined;
  return { name: typeof e?.name === 'string' ? e.name : 'Error', message: typeof e?.message === 'string' ? e.message : String(err) };
}

/** The buffers of a result's typed arrays (evaluate's logits can be large), moved rather than copied: only buffers a view owns whole. */
function transferables(result: unknown): Transferable[] {
  const values = ArrayBuffer.isView(result) ? [result] : result !== null && typeof result === 'object' ? Object.values(result) : [];
  const buffers = new Set<ArrayBuffer>();
  for (const v of values) {
    if (ArrayBuffer.isView(v) && v.buffer instanceof ArrayBuffer && v.byteOffset === 0 && v.byteLength === v.buffer.byteLength) buffers.add(v.buffer);
  }
  return [...buffers];
}
