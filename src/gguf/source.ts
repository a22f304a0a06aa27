/**
 * Where model bytes come from. The reader only needs random access to a few ranges (the header, then each tensor),
 * so a file is read with positional reads and a URL with Range requests, neither ever loaded whole; bytes already in
 * memory are handed out as views.
 */
import { EdgeLLMError } from '../errors.js';
import { isHubName, resolveHubName, type HubOptions } from './hub.js';

export interface ByteSource {
  readonly name: string;
  readonly size: number;
  /**
   * Exactly the bytes [offset, offset + length). With `into` (at least `length` long), a source may read into it and
   * return a view of it, so a loader reusing one buffer holds no new one per read; a memory-backed source returns its
   * own view, zero-copy: do not write to it.
   */
  read(offset: number, length: number, into?: Uint8Array): Promise<Uint8Array>;
  close(): Promise<void>;
}

export type ModelSource = string | URL | Uint8Array | ArrayBuffer | Blob;

/** What openSource needs of a download cache (gguf/cache.ts's ModelCache): a source for a URL's bytes. */
export interface UrlCache {
  open(url: string, opts: OpenOptions): Promise<ByteSource>;
}

export interface OpenOptions {
  /** ms a request may wait for its answer or its next bytes before it is resumed as stalled (default 30 s) */
  stallMs?: number;
  /** bytes transferred so far, of the file's size (undefined when the server does not say) */
  onProgress?: (loaded: number, total: number | undefined) => void;
  signal?: AbortSignal;
  fetch?: typeof fetch;
  /** sent with every HTTP request for the model (an hf: name adds the hub token here) */
  headers?: Record<string, string>;
  /** where an http(s) URL's bytes are kept between runs; without one (or false) the URL is read with range requests */
  cache?: UrlCache | false;
  /** the hub for hf: names: token and endpoint (default HF_TOKEN and HF_ENDPOINT from the environment) */
  hf?: HubOptions;
}

/** A content-length larger than this is not trusted for preallocation: the buffer grows as bytes arrive instead. */
const MAX_PREALLOCATE = 64 << 20;

/** Where a read of `length` bytes goes: the start of the caller's `into` when it is long enough, else a new buffer. */
export function readTarget(into: Uint8Array | undefined, length: number): Uint8Array {
  return into && into.length >= length ? into.subarray(0, length) : new Uint8Array(length);
}

export function checkRange(name: string, size: number, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
    throw new EdgeLLMError('BAD_ARGUMENT', `read from ${name}: offset ${offset} and length ${length} must be non-negative integers`);
  }
  if (offset + length > size) {
    throw new EdgeLLMError('TRUNCATED', `read from ${name}: offset ${offset} + length ${length} is past the end (size ${size})`);
  }
}

/**
 * The fetch to use: the caller's, or the global one bound to its global (a browser's fetch called as another object's
 * method throws "Illegal invocation").
 */
export function fetchOf(opts: { fetch?: typeof fetch; stallMs?: number }, what: string): typeof fetch {
  if (!opts.fetch && typeof globalThis.fetch !== 'function') throw new EdgeLLMError('BAD_SOURCE', `${what}: no fetch() in this environment`);
  return stallGuard(opts.fetch ?? globalThis.fetch.bind(globalThis), opts.stallMs ?? STALL_MS);
}

/** How long a request may wait for its answer, or a body for its next bytes, before it is given up as stalled. */
const STALL_MS = 30_000;

/** A request given up because nothing arrived for a while: a broken connection to resume, not the caller's abort. */
class Stalled extends Error {
  override name = 'Stalled';
}

/**
 * fetch with a stall timeout: a request whose answer, or whose body's next bytes, take longer than `ms` is aborted with
 * `Stalled`, which the readers treat as a broken connection (resumed where it stopped, a bounded number of times). A
 * link that dies without closing (a phone between cells) would otherwise hang the read: browsers set no timeout.
 * Only waiting on the network counts: a consumer slow to ask for the next chunk is not a stall.
 */
function stallGuard(doFetch: typeof fetch, ms: number): typeof fetch {
  return async (input, init = {}) => {
    const stop = new AbortController();
    const outer = init.signal ?? undefined;
    const follow = () => stop.abort(outer!.reason);
    if (outer?.aborted) follow();
    else outer?.addEventListener('abort', follow, { once: true });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const waiting = () => (timer = setTimeout(() => stop.abort(new Stalled(`no bytes for ${ms / 1000} s`)), ms));
    const settled = () => clearTimeout(timer);
    const finish = () => (settled(), outer?.removeEventListener('abort', follow));
    const why = (err: unknown) => (stop.signal.reason instanceof Stalled ? stop.signal.reason : err);
    let res: Response;
    waiting();
    try {
      res = await doFetch(input, { ...init, signal: stop.signal });
    } catch (err) {
      finish();
      throw why(err);
    }
    settled();
    if (!res.body) {
      finish();
      return res;
    }
    const reader = res.body.getReader();
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        waiting();
        try {
          const { done, value } = await reader.read();
          settled();
          if (done) {
            finish();
            controller.close();
          } else {
            controller.enqueue(value);
          }
        } catch (err) {
          finish();
          controller.error(why(err));
        }
      },
      cancel(reason) {
        finish();
        return reader.cancel(reason);
      },
    });
    return new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers });
  };
}

/** Whether a failure is the caller's abort (its signal, or a fetch or body read rejecting as aborted). */
export function isAbortError(err: unknown, signal: AbortSignal | undefined): boolean {
  return signal?.aborted === true || (err as { name?: string })?.name === 'AbortError';
}

export function throwIfAborted(signal: AbortSignal | undefined, what: string): void {
  if (signal?.aborted) throw new EdgeLLMError('ABORTED', `${what}: aborted`, { cause: signal.reason });
}

export function memorySource(bytes: Uint8Array, name = 'memory'): ByteSource {
  return {
    name,
    size: bytes.length,
    async read(offset, length) {
      checkRange(name, bytes.length, offset, length);
      return bytes.subarray(offset, offset + length);
    },
    async close() {},
  };
}

export function blobSource(blob: Blob, name = typeof (blob as { name?: unknown }).name === 'string' ? (blob as File).name : 'blob'): ByteSource {
  return {
    name,
    size: blob.size,
    async read(offset, length) {
      checkRange(name, blob.size, offset, length);
      const bytes = new Uint8Array(await blob.slice(offset, offset + length).arrayBuffer());
      if (bytes.length !== length) {
        throw new EdgeLLMError('TRUNCATED', `read from ${name}: wanted ${length} bytes at ${offset}, the blob gave ${bytes.length}`);
      }
      return bytes;
    },
    async close() {},
  };
}

/** One source over the parts laid end to end (a split GGUF's files, a cached download's segments). */
export function concatSource(parts: ByteSource[], name: string): ByteSource {
  const starts: number[] = [];
  let size = 0;
  for (const p of parts) {
    starts.push(size);
    size += p.size;
  }
  return {
    name,
    size,
    async read(offset, length, into) {
      checkRange(name, size, offset, length);
      if (length === 0) return new Uint8Array(0);
      let i = starts.length - 1;
      while (i > 0 && starts[i] > offset) i--;
      const end = offset + length;
      // A tensor lies in one part, so this is the loader's case: a read straight from that part.
      if (end <= starts[i] + parts[i].size) return parts[i].read(offset - starts[i], length, into);
      const out = readTarget(into, length);
      for (let at = offset; at < end; i++) {
        const n = Math.min(end, starts[i] + parts[i].size) - at;
        if (n > 0) out.set(await parts[i].read(at - starts[i], n), at - offset);
        at += n;
      }
      return out;
    },
    async close() {
      await Promise.all(parts.map((p) => p.close()));
    },
  };
}

export function parseContentLength(header: string | null): number | undefined {
  if (header === null || !/^\s*\d+\s*$/.test(header)) return undefined;
  const n = Number(header);
  return Number.isSafeInteger(n) ? n : undefined;
}

function allocate(url: string, size: number): Uint8Array {
  try {
    return new Uint8Array(size);
  } catch (err) {
    throw new EdgeLLMError('BUDGET', `download of ${url}: cannot allocate ${size} bytes`, { cause: err });
  }
}

/**
 * The first request asks for this much: most models' header and tensor table fit in it, and the answer (206 or 200)
 * says whether the server takes ranges at all.
 */
const PROBE_BYTES = 1 << 20;
/** Reads from offset 0 (the header parse) are kept up to this much, so each larger re-read fetches only the new tail. */
const MAX_PREFIX = 64 << 20;
/** Tries per read when the connection breaks or fetch fails; each try resumes where the last one stopped. */
const MAX_TRIES = 5;
/**
 * Without range support a read behind the stream can only restart the GET from byte 0. The header parse is served
 * from the kept prefix and the loader reads in file order, so this happens only for unusual files; bounded so that a
 * pathological order fails instead of downloading the file again and again.
 */
const MAX_REWINDS = 4;

/** A broken connection or failed fetch: worth another try, from where the bytes stopped. */
class Retryable extends Error {}

/** An error's message, or the thrown value as text when it is not an Error. */
export const errorMessage = (err: unknown) => (err as Error)?.message ?? String(err);

/** `bytes START-END/TOTAL`, TOTAL `*` when the server does not know it. */
export function parseContentRange(header: string | null): { start: number; end: number; total: number | undefined } | undefined {
  const m = header?.trim().match(/^bytes\s+(\d+)-(\d+)\/(\d+|\*)$/i);
  if (!m) return undefined;
  const [start, end, total] = [Number(m[1]), Number(m[2]), m[3] === '*' ? undefined : Number(m[3])];
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || end < start) return undefined;
  if (total !== undefined && !Number.isSafeInteger(total)) return undefined;
  return { start, end, total };
}

/**
 * Reads a URL with Range requests: the header in a few growing ranges, then each read as one range straight into the
 * caller's buffer, so the file is never held whole. A server without Range support is read as one streamed GET,
 * consumed forward. Every answer must carry the first one's ETag (or Last-Modified): a file replaced on the server
 * mid-load is an error, never a mix of two files' bytes.
 */
class HttpSource implements ByteSource {
  readonly name: string;
  size = 0;
  /** whether the server answers Range requests (206); without, the file is read as one forward stream */
  ranges = false;
  /** the ETag and Last-Modified of the first answer; every later answer must carry the same, or the read fails */
  private etag?: string;
  private lastModified?: string;
  /** bytes [0, prefix.length) of the file, from the header reads */
  private prefix: Uint8Array = new Uint8Array(0);
  /** without ranges: the GET being consumed, at file offset `pos`, with the unread rest of its last chunk */
  private stream?: { reader: ReadableStreamDefaultReader<Uint8Array>; pos: number; pending?: Uint8Array };
  private rewinds = 0;
  private loaded = 0;
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;

  constructor(
    private readonly url: string,
    private readonly opts: OpenOptions,
    private readonly doFetch: typeof fetch,
  ) {
    this.name = url;
  }

  private error(what: string, cause?: unknown): EdgeLLMError {
    return new EdgeLLMError('BAD_SOURCE', `model URL ${this.url}: ${what}`, cause === undefined ? undefined : { cause });
  }

  private aborted(err: unknown): boolean {
    return isAbortError(err, this.opts.signal);
  }

  private progress(n: number): void {
    this.loaded += n;
    this.opts.onProgress?.(this.loaded, this.size);
  }

  private async request(range?: string): Promise<Response> {
    throwIfAborted(this.opts.signal, `download of ${this.url}`);
    // Ranges count bytes of the file as stored; identity keeps a server from compressing them (browsers set it anyway).
    const headers: Record<string, string> = { ...this.opts.headers, 'accept-encoding': 'identity' };
    if (range !== undefined) headers.range = range;
    try {
      return await this.doFetch(this.url, { headers, signal: this.opts.signal });
    } catch (err) {
      if (this.aborted(err)) throw new EdgeLLMError('ABORTED', `download of ${this.url}: aborted`, { cause: err });
      throw new Retryable(`fetch failed: ${errorMessage(err)}`, { cause: err });
    }
  }

  private async reject(res: Response, what: string): Promise<never> {
    await res.body?.cancel().catch(() => {});
    throw this.error(`HTTP status ${res.status} ${res.statusText}`.trimEnd() + what);
  }

  /** The validators of this answer must be the first answer's (a header the answer leaves out proves nothing). */
  private checkSame(res: Response, at: number): void {
    for (const [header, pinned] of [['etag', this.etag], ['last-modified', this.lastModified]] as const) {
      const now = res.headers.get(header);
      if (pinned !== undefined && now !== null && now !== pinned) {
        void res.body?.cancel().catch(() => {});
        throw this.error(`the file changed on the server while it was read (at offset ${at}, ${header} ${now}, was ${pinned})`);
      }
    }
  }

  private checkSize(size: number | undefined, header: string): number {
    if (size === undefined || !Number.isSafeInteger(size)) throw this.error(`the server declares an unusable size (${header})`);
    return size;
  }

  /**
   * The first request: learns the size, whether ranges work, and the validators; keeps what it read as the prefix.
   * Returns the answer instead when the file can only be read whole (no ranges and no usable length).
   */
  async open(): Promise<Response | undefined> {
    const res = await this.withTries(0, () => this.request(`bytes=0-${PROBE_BYTES - 1}`));
    this.etag = res.headers.get('etag') ?? undefined;
    this.lastModified = res.headers.get('last-modified') ?? undefined;
    if (res.status === 206) {
      const header = res.headers.get('content-range');
      const range = parseContentRange(header);
      if (!range) await this.reject(res, `: Content-Range ${JSON.stringify(header)} is not "bytes START-END/SIZE"`);
      this.size = this.checkSize(range!.total, `Content-Range ${header}`);
      if (range!.start !== 0 || range!.end !== Math.min(PROBE_BYTES, this.size) - 1) {
        await this.reject(res, `: asked for bytes 0-${PROBE_BYTES - 1}, the server sent Content-Range ${header}`);
      }
      this.ranges = true;
      const head = new Uint8Array(range!.end + 1);
      const { got } = await this.readBody(res, head, 0);
      if (got < head.length) await this.fetchRange(got, head.subarray(got));
      this.prefix = head;
      return undefined;
    }
    if (res.status === 416 && /^bytes \*\/0$/.test(res.headers.get('content-range') ?? '')) {
      await res.body?.cancel().catch(() => {});
      return undefined; // an empty file: the reader says it is too short
    }
    if (res.status !== 200) await this.reject(res, '');
    const encoded = (res.headers.get('content-encoding') ?? 'identity') !== 'identity';
    const length = res.headers.get('content-length');
    if (length === null || encoded || !res.body) return res;
    this.size = this.checkSize(parseContentLength(length), `Content-Length ${length}`);
    this.stream = { reader: res.body.getReader(), pos: 0 };
    return undefined;
  }

  /** Runs `attempt` until it returns, retrying what is Retryable (with a short backoff), at most MAX_TRIES times. */
  private async withTries<T>(at: number, attempt: () => Promise<T>): Promise<T> {
    for (let tries = 1; ; tries++) {
      try {
        return await attempt();
      } catch (err) {
        if (!(err instanceof Retryable)) throw err;
        if (tries >= MAX_TRIES) throw this.error(`reading at offset ${at} failed ${tries} times: ${err.message}`, err);
        await this.backoff(tries);
      }
    }
  }

  private async backoff(tries: number): Promise<void> {
    await new Promise((resolve) => setTimeout(resolve, 100 * 2 ** (tries - 1)));
    throwIfAborted(this.opts.signal, `download of ${this.url}`);
  }

  /**
   * Copies the body into `dst`. A body that breaks off returns what arrived with the reason (the caller resumes from
   * there); one that runs past `dst` is an error, since the server sent other bytes than the ones asked.
   */
  private async readBody(res: Response, dst: Uint8Array, at: number): Promise<{ got: number; cut?: unknown }> {
    if (!res.body) return { got: 0, cut: new Error('the answer has no body') };
    const reader = res.body.getReader();
    let got = 0;
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return { got, cut: got < dst.length ? new Error(`the body ended after ${got} of ${dst.length} bytes`) : undefined };
        if (got + value.length > dst.length) throw this.error(`asked for ${dst.length} bytes at offset ${at}, the server sent more`);
        dst.set(value, got);
        got += value.length;
        this.progress(value.length);
      }
    } catch (err) {
      void reader.cancel().catch(() => {});
      if (err instanceof EdgeLLMError) throw err;
      if (this.aborted(err)) throw new EdgeLLMError('ABORTED', `download of ${this.url}: aborted at offset ${at + got}`, { cause: err });
      return { got, cut: err };
    }
  }

  /** Fills `dst` with the bytes at `start` by Range requests, resuming a broken one where it stopped. */
  private async fetchRange(start: number, dst: Uint8Array): Promise<void> {
    let done = 0;
    for (let tries = 1; ; tries++) {
      const from = start + done;
      const to = start + dst.length - 1;
      let got = 0;
      let cut: unknown;
      try {
        const res = await this.request(`bytes=${from}-${to}`);
        await this.checkRangeAnswer(res, from, to);
        ({ got, cut } = await this.readBody(res, dst.subarray(done), from));
        done += got;
        if (done === dst.length) return;
      } catch (err) {
        if (!(err instanceof Retryable)) throw err;
        cut = err;
      }
      if (tries >= MAX_TRIES) throw this.error(`reading bytes ${start + done}-${to} failed ${tries} times: ${errorMessage(cut)}`, cut);
      if (got === 0) await this.backoff(tries);
    }
  }

  private async checkRangeAnswer(res: Response, from: number, to: number): Promise<void> {
    const asked = `bytes ${from}-${to}`;
    if (res.status === 200) await this.reject(res, `: asked for ${asked}, the server sent the whole file (it no longer honours Range)`);
    if (res.status !== 206) await this.reject(res, ` for ${asked}`);
    this.checkSame(res, from);
    const header = res.headers.get('content-range');
    const range = parseContentRange(header);
    if (!range || range.start !== from || range.end !== to || range.total !== this.size) {
      await this.reject(res, `: asked for ${asked} of ${this.size}, the server sent Content-Range ${JSON.stringify(header)}`);
    }
  }

  /** Without ranges: fills `dst` from the stream at `start`, skipping forward, or restarting the GET for an earlier offset. */
  private async fromStream(start: number, dst: Uint8Array): Promise<void> {
    let done = 0;
    for (let tries = 1; ; tries++) {
      let cut: unknown;
      try {
        if (!this.stream) await this.restart(start + done);
        else if (this.stream.pos > start + done) {
          if (++this.rewinds > MAX_REWINDS) {
            throw this.error(`the server does not honour Range, and reads went back in the file more than ${MAX_REWINDS} times`);
          }
          await this.restart(start + done);
        }
        const r = await this.pull(start + done, dst.subarray(done));
        done += r.got;
        if (done === dst.length) return;
        cut = r.cut;
      } catch (err) {
        if (!(err instanceof Retryable)) throw err;
        cut = err;
      }
      void this.stream?.reader.cancel().catch(() => {});
      this.stream = undefined;
      if (tries >= MAX_TRIES) throw this.error(`reading at offset ${start + done} failed ${tries} times: ${errorMessage(cut)}`, cut);
    }
  }

  private async restart(at: number): Promise<void> {
    void this.stream?.reader.cancel().catch(() => {});
    this.stream = undefined;
    const res = await this.request();
    if (res.status !== 200) await this.reject(res, ` on restarting the download for offset ${at}`);
    this.checkSame(res, at);
    const length = parseContentLength(res.headers.get('content-length'));
    if (length !== undefined && length !== this.size) {
      void res.body?.cancel().catch(() => {});
      throw this.error(`the file changed on the server while it was read (its size is now ${length}, was ${this.size})`);
    }
    if (!res.body) throw new Retryable('the answer has no body');
    this.stream = { reader: res.body.getReader(), pos: 0 };
  }

  /** Skips the stream to `at`, then copies what it can into `dst`; a break returns what arrived with the reason. */
  private async pull(at: number, dst: Uint8Array): Promise<{ got: number; cut?: unknown }> {
    const s = this.stream!;
    let got = 0;
    try {
      while (got < dst.length) {
        let chunk = s.pending;
        s.pending = undefined;
        if (!chunk) {
          const { done, value } = await s.reader.read();
          if (done) return { got, cut: new Error(`the body ended at offset ${s.pos}, before the ${this.size} bytes it declared`) };
          this.progress(value.length);
          chunk = value;
        }
        if (s.pos < at) {
          const skip = Math.min(chunk.length, at - s.pos);
          s.pos += skip;
          if (skip < chunk.length) s.pending = chunk.subarray(skip);
          continue;
        }
        const n = Math.min(chunk.length, dst.length - got);
        dst.set(chunk.subarray(0, n), got);
        got += n;
        s.pos += n;
        if (n < chunk.length) s.pending = chunk.subarray(n);
      }
      return { got };
    } catch (err) {
      if (this.aborted(err)) throw new EdgeLLMError('ABORTED', `download of ${this.url}: aborted at offset ${s.pos}`, { cause: err });
      return { got, cut: err };
    }
  }

  private fill(start: number, dst: Uint8Array): Promise<void> {
    return this.ranges ? this.fetchRange(start, dst) : this.fromStream(start, dst);
  }

  read(offset: number, length: number, into?: Uint8Array): Promise<Uint8Array> {
    // One read at a time: a stream has one position, and the prefix grows in place.
    const run = this.queue.then(() => this.readNow(offset, length, into));
    this.queue = run.catch(() => {});
    return run;
  }

  private async readNow(offset: number, length: number, into?: Uint8Array): Promise<Uint8Array> {
    if (this.closed) throw new EdgeLLMError('DISPOSED', `read from ${this.url}: the source is closed`);
    checkRange(this.url, this.size, offset, length);
    throwIfAborted(this.opts.signal, `download of ${this.url}`);
    if (offset === 0 && length > this.prefix.length && length <= MAX_PREFIX) {
      const grown = new Uint8Array(length);
      grown.set(this.prefix);
      await this.fill(this.prefix.length, grown.subarray(this.prefix.length));
      this.prefix = grown;
    }
    const end = offset + length;
    if (end <= this.prefix.length && !into) return this.prefix.subarray(offset, end);
    const out = readTarget(into, length);
    const kept = Math.max(0, Math.min(this.prefix.length, end) - offset);
    if (kept > 0) out.set(this.prefix.subarray(offset, offset + kept));
    if (kept < length) await this.fill(offset + kept, out.subarray(kept));
    return out;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.prefix = new Uint8Array(0);
    await this.stream?.reader.cancel().catch(() => {});
    this.stream = undefined;
  }
}

/**
 * The one case where a URL is held whole: a server that neither takes ranges nor says the length (a chunked or
 * compressed body). A compressed body decodes to more bytes than content-length says, so the length is only a guess.
 */
async function downloadWhole(url: string, response: Response, opts: OpenOptions): Promise<ByteSource & { readonly ranges: boolean }> {
  const { signal, onProgress } = opts;
  const declared = parseContentLength(response.headers.get('content-length'));
  let buf = allocate(url, declared !== undefined && declared <= MAX_PREALLOCATE ? declared : 1 << 20);
  let loaded = 0;
  try {
    const reader = response.body?.getReader();
    onProgress?.(0, undefined);
    for (; reader; ) {
      throwIfAborted(signal, `download of ${url}`);
      const { done, value } = await reader.read();
      if (done) break;
      if (loaded + value.length > buf.length) {
        let cap = Math.max(buf.length * 2, 1 << 20);
        while (cap < loaded + value.length) cap *= 2;
        const grown = allocate(url, cap);
        grown.set(buf.subarray(0, loaded));
        buf = grown;
      }
      buf.set(value, loaded);
      loaded += value.length;
      onProgress?.(loaded, undefined);
    }
  } catch (err) {
    if (err instanceof EdgeLLMError) throw err;
    if (isAbortError(err, signal)) throw new EdgeLLMError('ABORTED', `download of ${url}: aborted after ${loaded} bytes`, { cause: err });
    throw new EdgeLLMError('BAD_SOURCE', `model URL ${url}: download failed after ${loaded} bytes: ${errorMessage(err)}`, { cause: err });
  }
  return { ...memorySource(buf.subarray(0, loaded), url), ranges: false };
}

/**
 * Opens an http(s) URL for reading by ranges (or one forward stream where the server has no Range support). Errors:
 * BAD_SOURCE for an error status, a broken connection that retries did not mend, or answers that contradict each
 * other (a Content-Range other than the one asked, a changed ETag); ABORTED for the signal.
 */
export async function openHttp(url: string, opts: OpenOptions = {}): Promise<ByteSource & { readonly ranges: boolean }> {
  const doFetch = fetchOf(opts, `model URL ${url}`);
  throwIfAborted(opts.signal, `download of ${url}`);
  const source = new HttpSource(url, opts, doFetch);
  // no ranges and no usable length: the reader needs the size up front, so this one file is read whole
  const whole = await source.open();
  return whole ? downloadWhole(url, whole, opts) : source;
}

/** An http(s) URL: through the cache when one is given, else read by ranges. */
export function openUrl(url: string, opts: OpenOptions): Promise<ByteSource> {
  return opts.cache ? opts.cache.open(url, opts) : openHttp(url, opts);
}

/** The options for a resolved hf: name: its token joins the caller's headers. */
export function withHeaders(opts: OpenOptions, headers: Record<string, string>): OpenOptions {
  return Object.keys(headers).length ? { ...opts, headers: { ...opts.headers, ...headers } } : opts;
}

/** Opens a local path or file: URL; each entry point brings its own (Node, Deno and Bun read files; others cannot). */
export type PathOpener = (path: string | URL, opts: OpenOptions) => Promise<ByteSource>;

/**
 * Where there is no filesystem (browsers, Workers): a relative path is resolved against the page's address when there
 * is one, and fetched; anything else is an error that says what to pass instead.
 */
export const fetchRelativePath: PathOpener = async (path, opts) => {
  const base = (globalThis as { location?: { href?: string } }).location?.href;
  let url: URL | undefined;
  try {
    if (base !== undefined) url = new URL(path, base);
  } catch {
    url = undefined;
  }
  if (url && (url.protocol === 'http:' || url.protocol === 'https:')) return openUrl(url.href, opts);
  throw new EdgeLLMError(
    'BAD_SOURCE',
    `model path "${String(path)}": file paths need a filesystem (Node, Deno, Bun); here, pass the bytes (Uint8Array/ArrayBuffer), a Blob or an http(s) URL`,
  );
};

/**
 * Opens a model: an http(s) URL is read by ranges (or through opts.cache), an hf: name is resolved to its hub URL
 * (the first part, for a split GGUF: split.ts opens the rest), bytes and Blobs are used as they are, and anything
 * else (a path, a file: URL) goes to openPath.
 */
export async function openSource(source: ModelSource, opts: OpenOptions = {}, openPath: PathOpener = fetchRelativePath): Promise<ByteSource> {
  if (typeof source === 'string') {
    if (isHubName(source)) {
      const hub = await resolveHubName(source, opts);
      return openUrl(hub.url, withHeaders(opts, hub.headers));
    }
    if (/^https?:\/\//i.test(source)) return openUrl(source, opts);
    return openPath(/^file:\/\//i.test(source) ? new URL(source) : source, opts);
  }
  if (source instanceof URL) {
    if (source.protocol === 'http:' || source.protocol === 'https:') return openUrl(source.href, opts);
    if (source.protocol === 'file:') return openPath(source, opts);
    throw new EdgeLLMError('BAD_SOURCE', `model URL ${source.href}: protocol ${source.protocol} is not http:, https: or file:`);
  }
  if (source instanceof Uint8Array) return memorySource(source);
  if (source instanceof ArrayBuffer) return memorySource(new Uint8Array(source));
  if (typeof Blob !== 'undefined' && source instanceof Blob) return blobSource(source);
  const kind = source === null ? 'null' : typeof source === 'object' ? (source as object).constructor?.name ?? 'object' : typeof source;
  throw new EdgeLLMError('BAD_SOURCE', `model source: expected a path, URL, Uint8Array, ArrayBuffer or Blob, got ${kind}`);
}
