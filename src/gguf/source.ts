/**
 * Where model bytes come from. The reader only needs random access to a few ranges (the header, then each tensor),
 * so a file is read with positional reads and never loaded whole; bytes already in memory are handed out as views.
 */
import { EdgeLLMError } from '../errors.js';

export interface ByteSource {
  readonly name: string;
  readonly size: number;
  /** Exactly `length` bytes at `offset`. Views of memory sources are zero-copy: do not write to them. */
  /**
   * The bytes [offset, offset + length). With `into` (at least `length` long), a source may read into it and return a
   * view of it, so a loader reusing one buffer holds no new one per read; a memory-backed source returns its own view.
   */
  read(offset: number, length: number, into?: Uint8Array): Promise<Uint8Array>;
  close(): Promise<void>;
}

export type ModelSource = string | URL | Uint8Array | ArrayBuffer | Blob;

export interface OpenOptions {
  onProgress?: (loaded: number, total: number | undefined) => void;
  signal?: AbortSignal;
  fetch?: typeof fetch;
}

/** A content-length larger than this is not trusted for preallocation: the buffer grows as bytes arrive instead. */
const MAX_PREALLOCATE = 16 * 1024 ** 3;

export function checkRange(name: string, size: number, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
    throw new EdgeLLMError('BAD_ARGUMENT', `read from ${name}: offset ${offset} and length ${length} must be non-negative integers`);
  }
  if (offset + length > size) {
    throw new EdgeLLMError('TRUNCATED', `read from ${name}: offset ${offset} + length ${length} is past the end (size ${size})`);
  }
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

function blobSource(blob: Blob): ByteSource {
  const name = typeof (blob as { name?: unknown }).name === 'string' ? (blob as File).name : 'blob';
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

function parseContentLength(header: string | null): number | undefined {
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

async function httpSource(url: string, opts: OpenOptions): Promise<ByteSource> {
  const doFetch = opts.fetch ?? globalThis.fetch;
  if (typeof doFetch !== 'function') throw new EdgeLLMError('BAD_SOURCE', `model URL ${url}: no fetch() in this environment`);
  const { signal, onProgress } = opts;
  throwIfAborted(signal, `download of ${url}`);
  const isAbort = (err: unknown) => signal?.aborted || (err as { name?: string })?.name === 'AbortError';
  let response: Response;
  try {
    response = await doFetch(url, { signal });
  } catch (err) {
    if (isAbort(err)) throw new EdgeLLMError('ABORTED', `download of ${url}: aborted`, { cause: err });
    throw new EdgeLLMError('BAD_SOURCE', `model URL ${url}: fetch failed: ${(err as Error)?.message ?? err}`, { cause: err });
  }
  if (!response.ok) {
    await response.body?.cancel().catch(() => {});
    throw new EdgeLLMError('BAD_SOURCE', `model URL ${url}: HTTP status ${response.status} ${response.statusText}`.trimEnd());
  }
  // A compressed body decodes to more bytes than content-length says, so the length is only a first guess.
  const declared = parseContentLength(response.headers.get('content-length'));
  const encoded = (response.headers.get('content-encoding') ?? 'identity') !== 'identity';
  const total = declared !== undefined && !encoded ? declared : undefined;
  let buf = allocate(url, declared !== undefined && declared <= MAX_PREALLOCATE ? declared : 1 << 20);
  let loaded = 0;
  try {
    if (!response.body) {
      const all = new Uint8Array(await response.arrayBuffer());
      onProgress?.(all.length, total);
      return memorySource(all, url);
    }
    const reader = response.body.getReader();
    onProgress?.(0, total);
    for (;;) {
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
      onProgress?.(loaded, total);
    }
  } catch (err) {
    if (err instanceof EdgeLLMError) throw err;
    if (isAbort(err)) throw new EdgeLLMError('ABORTED', `download of ${url}: aborted after ${loaded} bytes`, { cause: err });
    throw new EdgeLLMError('BAD_SOURCE', `model URL ${url}: download failed after ${loaded} bytes: ${(err as Error)?.message ?? err}`, {
      cause: err,
    });
  }
  return memorySource(buf.subarray(0, loaded), url);
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
  if (url && (url.protocol === 'http:' || url.protocol === 'https:')) return httpSource(url.href, opts);
  throw new EdgeLLMError(
    'BAD_SOURCE',
    `model path "${String(path)}": file paths need a filesystem (Node, Deno, Bun); here, pass the bytes (Uint8Array/ArrayBuffer), a Blob or an http(s) URL`,
  );
};

/**
 * Opens a model: an http(s) URL is downloaded, bytes and Blobs are used as they are, and anything else (a path, a
 * file: URL) goes to openPath.
 */
export async function openSource(source: ModelSource, opts: OpenOptions = {}, openPath: PathOpener = fetchRelativePath): Promise<ByteSource> {
  if (typeof source === 'string') {
    if (/^https?:\/\//i.test(source)) return httpSource(source, opts);
    return openPath(/^file:\/\//i.test(source) ? new URL(source) : source, opts);
  }
  if (source instanceof URL) {
    if (source.protocol === 'http:' || source.protocol === 'https:') return httpSource(source.href, opts);
    if (source.protocol === 'file:') return openPath(source, opts);
    throw new EdgeLLMError('BAD_SOURCE', `model URL ${source.href}: protocol ${source.protocol} is not http:, https: or file:`);
  }
  if (source instanceof Uint8Array) return memorySource(source);
  if (source instanceof ArrayBuffer) return memorySource(new Uint8Array(source));
  if (typeof Blob !== 'undefined' && source instanceof Blob) return blobSource(source);
  const kind = source === null ? 'null' : typeof source === 'object' ? (source as object).constructor?.name ?? 'object' : typeof source;
  throw new EdgeLLMError('BAD_SOURCE', `model source: expected a path, URL, Uint8Array, ArrayBuffer or Blob, got ${kind}`);
}
