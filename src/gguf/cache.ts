/**
 * The download cache: a model fetched from an http(s) URL is written to storage as it arrives (never held whole in
 * memory), resumed where an interrupted download stopped, validated (the size the server announced, the ETag the
 * partial was started with, the GGUF header) before it is used, and afterwards opened with no request at all.
 *
 * What differs between platforms is only the storage (a CacheStore): files in a directory for Node, Deno and Bun
 * (cache-node.ts), OPFS or the Cache API in browsers (cache-browser.ts). Everything that decides what is kept, resumed,
 * trusted or thrown away is here, once.
 *
 * An entry is its bytes plus a small JSON record (url, size, etag, last-modified, complete, time). The record says
 * `complete` only after validation, written atomically, so a crash at any point leaves either a usable entry or one that
 * the next open resumes or removes; a record or data that does not add up is removed and fetched again, never used
 * (the failure to avoid is wllama #268: a broken cache entry that breaks every later run).
 */
import { EdgeLLMError } from '../errors.js';
import { GGUFFile, knownHeader, readGGUF } from './reader.js';
import { errorMessage, fetchOf, isAbortError, openUrl, parseContentLength, parseContentRange, throwIfAborted, type ByteSource, type OpenOptions, type UrlCache } from './source.js';

export interface CacheEntry {
  /** the URL it was downloaded from, without credentials ('' when the record is unreadable) */
  url: string;
  /** the entry's name: the file's name, readable, and a hash of the URL */
  key: string;
  /** the file's size (the server's total; 0 when not yet known) */
  size: number;
  etag?: string;
  complete: boolean;
  /** when the download started (incomplete) or was validated (complete), ms since the epoch */
  storedAt: number;
  /** where its bytes are: a path, or 'opfs:/edgellm-cache/KEY', 'cache-api:edgellm/KEY' */
  where: string;
  /** bytes stored so far (equals size when complete) */
  downloaded: number;
}

export interface ModelCache {
  /** the storage: a directory, 'opfs:/edgellm-cache' or 'cache-api:edgellm' */
  readonly where: string;
  /** A source for the URL's bytes: served from the cache, or downloaded (resuming a partial entry) into it first. */
  open(url: string, opts?: OpenOptions): Promise<ByteSource>;
  /** A complete, valid entry's bytes, or undefined; never downloads (for reading a header that may be cached). */
  get(url: string): Promise<ByteSource | undefined>;
  list(): Promise<CacheEntry[]>;
  /** Removes the entry of a URL, of a key, or every entry of a file name; returns how many were removed. */
  remove(urlOrName: string): Promise<number>;
  /** Removes every entry; returns how many. */
  clear(): Promise<number>;
}

/** What each platform's storage does; see the module comment for what is decided above it. */
export interface CacheStore {
  readonly where: string;
  /** every key with anything stored (a record, bytes, leftovers) */
  keys(): Promise<string[]>;
  /** the record's text (at most MAX_RECORD + 1 bytes of it), or undefined when there is none */
  readRecord(key: string): Promise<string | undefined>;
  /** replaces the record atomically: a reader sees the old one or the new one, never a mix */
  writeRecord(key: string, text: string): Promise<void>;
  /** bytes of the partial download kept durably (0 when there is none) */
  partialSize(key: string): Promise<number>;
  /** continues the partial at `at`, its durable size (the caller removes the entry before starting at 0) */
  append(key: string, at: number): Promise<PartialWriter>;
  /** the partial's bytes, read for validation */
  openPartial(key: string): Promise<ByteSource>;
  /** makes the validated partial the entry's data (Node: rename; stores whose record decides: nothing moves) */
  commit(key: string): Promise<void>;
  /** the committed data, or undefined when it is missing */
  openData(key: string): Promise<ByteSource | undefined>;
  /** where the entry's bytes are, for list() */
  location(key: string, complete: boolean): string;
  /** removes everything of the entry but its lock */
  remove(key: string): Promise<void>;
  /**
   * Exclusive use of an entry across processes and tabs (two downloads of one URL must not write one partial).
   * `wait: false` returns undefined at once when someone else holds it.
   */
  lock(key: string, opts: { signal?: AbortSignal; wait: boolean }): Promise<(() => Promise<void>) | undefined>;
}

export interface PartialWriter {
  write(bytes: Uint8Array): Promise<void>;
  /** makes what was written durable, then releases the file; called after a failure too */
  close(): Promise<void>;
}

/** A record is a few hundred bytes; one larger than this is corrupt and is not read further. */
export const MAX_RECORD = 64 * 1024;
/** Resumes within one open after the connection drops mid-body (a flaky network), bounded so a dead one fails. */
const MAX_RESUMES = 3;
/** Restarts from 0 within one open, when the file changed under a partial or the server refused its range. */
const MAX_RESTARTS = 2;
/** Query parameters that carry credentials: never part of a key or a record. */
const SECRET_PARAMS = /^(token|access_token|hf_token|api_key|apikey)$/i;

interface EntryRecord {
  url: string;
  /** the server's total; absent while unknown (a body without Content-Length), which also rules out resuming */
  size?: number;
  /** a strong ETag, the validator a resume sends in If-Range */
  etag?: string;
  lastModified?: string;
  complete: boolean;
  storedAt: number;
}

/** The URL as the cache records it: no credentials, no fragment. */
function cacheUrl(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new EdgeLLMError('BAD_ARGUMENT', `cache: ${JSON.stringify(url)} is not a URL`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new EdgeLLMError('BAD_ARGUMENT', `cache: ${u.protocol} URLs are not downloaded (http: and https: are)`);
  u.username = '';
  u.password = '';
  u.hash = '';
  for (const name of [...u.searchParams.keys()]) if (SECRET_PARAMS.test(name)) u.searchParams.delete(name);
  return u.href;
}

/** `FILE-HASH`: the file's name kept readable (letters, digits, '.', '_', '-'), and 64 bits of FNV-1a of the URL. */
export function cacheKey(url: string): string {
  const clean = cacheUrl(url);
  let h = 0xcbf29ce484222325n;
  for (const b of new TextEncoder().encode(clean)) h = ((h ^ BigInt(b)) * 0x100000001b3n) & 0xffffffffffffffffn;
  const stem = fileName(clean).replace(/\.gguf$/i, '').replace(/[^A-Za-z0-9._-]+/g, '_').replace(/^[._-]+/, '').slice(0, 80) || 'model';
  return `${stem}-${h.toString(16).padStart(16, '0')}`;
}

/** The key a stored file belongs to (KEY, KEY.json, KEY.gguf.partial, ...), or undefined for a stranger's file. */
export function keyOfFile(name: string): string | undefined {
  const m = /^([A-Za-z0-9][A-Za-z0-9._-]{0,79}-[0-9a-f]{16})(?:\..*)?$/.exec(name);
  return m?.[1];
}

/** The keys the stored files `names` belong to, each once. */
export function keysOf(names: Iterable<string>): string[] {
  const keys = new Set<string>();
  for (const name of names) {
    const key = keyOfFile(name);
    if (key) keys.add(key);
  }
  return [...keys];
}

function parseRecord(text: string | undefined): EntryRecord | 'corrupt' | undefined {
  if (text === undefined) return undefined;
  if (text.length > MAX_RECORD) return 'corrupt';
  let r: Record<string, unknown>;
  try {
    r = JSON.parse(text);
  } catch {
    return 'corrupt';
  }
  if (typeof r !== 'object' || r === null) return 'corrupt';
  const size = r.size;
  const ok =
    typeof r.url === 'string' &&
    typeof r.complete === 'boolean' &&
    typeof r.storedAt === 'number' &&
    (size === undefined || (Number.isSafeInteger(size) && (size as number) >= 0)) &&
    (r.complete === false || size !== undefined) &&
    (r.etag === undefined || typeof r.etag === 'string') &&
    (r.lastModified === undefined || typeof r.lastModified === 'string');
  if (!ok) return 'corrupt';
  return { url: r.url as string, size: size as number | undefined, etag: r.etag as string | undefined, lastModified: r.lastModified as string | undefined, complete: r.complete as boolean, storedAt: r.storedAt as number };
}

const recordText = (r: EntryRecord) => JSON.stringify(r);

/** An entry's record; one that cannot be read counts as corrupt, like one that cannot be parsed. */
async function readRecord(store: CacheStore, key: string): Promise<EntryRecord | 'corrupt' | undefined> {
  try {
    return parseRecord(await store.readRecord(key));
  } catch {
    return 'corrupt';
  }
}

/** The source a cache hands out, named by the URL (errors then say which model) rather than by the storage. */
function named(source: ByteSource, name: string): ByteSource {
  return { name, size: source.size, read: (o, l, into) => source.read(o, l, into), close: () => source.close() };
}

/** Only a strong ETag may be sent in If-Range (RFC 9110 13.1.5); a weak one cannot vouch for a resumed range. */
function strongEtag(etag: string | null): string | undefined {
  return etag !== null && /^"[^"]*"$/.test(etag) ? etag : undefined;
}

/** A partial can be resumed only if the server can tell us the file is the same one: a total and a validator. */
function resumable(r: EntryRecord): boolean {
  return r.size !== undefined && (r.etag !== undefined || r.lastModified !== undefined);
}

function failure(err: unknown): string {
  const cause = (err as { cause?: { message?: string } })?.cause?.message;
  const message = errorMessage(err);
  return cause && !message.includes(cause) ? `${message} (${cause})` : message;
}

/** A ModelCache over a platform's store. */
export function modelCache(store: CacheStore): ModelCache {
  const removeKey = async (key: string): Promise<void> => {
    const release = await store.lock(key, { wait: false });
    if (!release) throw new EdgeLLMError('BUSY', `cache entry ${key} is being downloaded now; remove it when that is done`);
    try {
      await store.remove(key);
    } finally {
      await release();
    }
  };

  const list = async (): Promise<CacheEntry[]> => {
    const out: CacheEntry[] = [];
    for (const key of (await store.keys()).sort()) {
      const r = await readRecord(store, key);
      const record = r === 'corrupt' || r === undefined ? undefined : r;
      const complete = record?.complete === true;
      const downloaded = complete ? record!.size! : await store.partialSize(key).catch(() => 0);
      out.push({
        url: record?.url ?? '',
        key,
        size: record?.size ?? 0,
        ...(record?.etag !== undefined ? { etag: record.etag } : {}),
        complete,
        storedAt: record?.storedAt ?? 0,
        where: store.location(key, complete),
        downloaded,
      });
    }
    return out;
  };

  /** A complete entry that still adds up (its record, its size, its header), else undefined after removing it. */
  const usable = async (key: string, url: string): Promise<ByteSource | undefined> => {
    const record = await readRecord(store, key);
    if (record === undefined || record === 'corrupt' || !record.complete || record.url !== url) return undefined;
    let source: ByteSource | undefined;
    try {
      source = await store.openData(key);
      if (source && source.size === record.size) {
        const out = named(source, url);
        await readGGUF(out); // remembered: the caller's readGGUF(out) does not parse it again
        return out;
      }
    } catch {
      // unreadable or not a GGUF any more: removed below, and fetched again
    }
    await source?.close().catch(() => {});
    await store.remove(key);
    return undefined;
  };

  return {
    where: store.where,
    async open(url, opts = {}) {
      const clean = cacheUrl(url);
      const key = cacheKey(clean);
      throwIfAborted(opts.signal, `download of ${clean}`);
      const release = (await store.lock(key, { signal: opts.signal, wait: true }))!;
      try {
        return (await usable(key, clean)) ?? (await download(store, key, url, clean, opts));
      } finally {
        await release();
      }
    },
    async get(url) {
      const clean = cacheUrl(url);
      const key = cacheKey(clean);
      // nothing recorded: no lock to take (and no directory to create for it)
      if ((await readRecord(store, key)) === undefined) return undefined;
      const release = await store.lock(key, { wait: false });
      // being downloaded: not complete yet, as far as a reader is concerned
      if (!release) return undefined;
      try {
        return await usable(key, clean);
      } finally {
        await release();
      }
    },
    list,
    async remove(urlOrName) {
      if (/^https?:\/\//i.test(urlOrName)) {
        const key = cacheKey(urlOrName);
        if (!(await store.keys()).includes(key)) return 0;
        await removeKey(key);
        return 1;
      }
      const matches = (await list()).filter((e) => e.key === urlOrName || (e.url !== '' && fileName(e.url) === urlOrName));
      for (const { key } of matches) await removeKey(key);
      return matches.length;
    },
    async clear() {
      let n = 0;
      const busy: string[] = [];
      for (const key of await store.keys()) {
        try {
          await removeKey(key);
          n++;
        } catch (err) {
          if (!(err instanceof EdgeLLMError && err.code === 'BUSY')) throw err;
          busy.push(key);
        }
      }
      if (busy.length) throw new EdgeLLMError('BUSY', `removed ${n} cache entries; ${busy.join(', ')} ${busy.length === 1 ? 'is' : 'are'} being downloaded now`);
      return n;
    },
  };
}

/**
 * What a load hands openSource: the cache is found (`get`) only when a URL is opened, and where there is none the URL
 * is read by ranges. `headerOnly` (a tokenizer, `info`): a complete entry is used, but nothing is downloaded into it.
 */
export function lazyCache(get: () => Promise<ModelCache | undefined>, headerOnly: boolean): UrlCache {
  return {
    async open(url, opts) {
      const cache = await get();
      const uncached: OpenOptions = { ...opts, cache: false };
      if (!cache) return openUrl(url, uncached);
      if (!headerOnly) return cache.open(url, opts);
      return (await cache.get(url)) ?? openUrl(url, uncached);
    },
  };
}

/** The last segment of a URL's path, decoded where it decodes. */
function fileName(url: string): string {
  const base = new URL(url).pathname.split('/').pop() ?? '';
  try {
    return decodeURIComponent(base);
  } catch {
    return base;
  }
}

/**
 * Downloads into the entry `key` (its lock held), resuming its partial when the record allows, and returns the
 * validated, committed data. `url` is what is fetched (it may carry a token); `clean` is what is recorded.
 */
async function download(store: CacheStore, key: string, url: string, clean: string, opts: OpenOptions): Promise<ByteSource> {
  const doFetch = fetchOf(opts, `model URL ${clean}`);
  const { signal, onProgress } = opts;
  const what = `download of ${clean}`;

  // What the partial was started with, and how far it got; a partial that cannot be trusted is thrown away.
  let record: EntryRecord | undefined;
  let at = 0;
  const previous = await readRecord(store, key);
  if (previous !== undefined && previous !== 'corrupt' && !previous.complete && previous.url === clean && resumable(previous)) {
    const have = await store.partialSize(key).catch(() => -1);
    if (have >= 0 && have <= previous.size!) {
      record = previous;
      at = have;
    }
  }
  if (!record) await store.remove(key);

  let restarts = 0;
  let resumes = 0;
  const restart = async (why: string) => {
    if (++restarts > MAX_RESTARTS) throw new EdgeLLMError('BAD_SOURCE', `${what}: restarted ${MAX_RESTARTS} times and still ${why}`);
    await store.remove(key);
    record = undefined;
    at = 0;
  };

  while (!record || at < record.size!) {
    throwIfAborted(signal, what);
    const headers = new Headers(opts.headers);
    // Ranges count stored bytes, so the body must be the bytes themselves (browsers choose this header themselves).
    headers.set('accept-encoding', 'identity');
    const resuming = record !== undefined && at > 0;
    if (resuming) {
      headers.set('range', `bytes=${at}-`);
      headers.set('if-range', record!.etag ?? record!.lastModified!);
    }
    let response: Response;
    try {
      response = await doFetch(url, { headers, signal });
    } catch (err) {
      if (isAbortError(err, signal)) throw new EdgeLLMError('ABORTED', `${what}: aborted`, { cause: err });
      throw new EdgeLLMError('BAD_SOURCE', `model URL ${clean}: fetch failed: ${failure(err)}`, { cause: err });
    }
    const cancel = () => response.body?.cancel().catch(() => {});
    const encoded = (response.headers.get('content-encoding') ?? 'identity').toLowerCase() !== 'identity';
    const etag = strongEtag(response.headers.get('etag'));

    if (resuming && response.status === 206) {
      const range = parseContentRange(response.headers.get('content-range'));
      if (!range || range.start !== at || range.total !== record!.size || encoded || (etag !== undefined && record!.etag !== undefined && etag !== record!.etag)) {
        await cancel();
        await restart('the server answers a resumed range with another file or range');
        continue;
      }
    } else if (response.status === 200) {
      // A whole body: the first request, a server without ranges, or a file that changed since the partial began.
      if (record) await store.remove(key);
      const total = encoded ? undefined : parseContentLength(response.headers.get('content-length'));
      const lastModified = response.headers.get('last-modified') ?? undefined;
      record = { url: clean, size: total, etag, lastModified, complete: false, storedAt: Date.now() };
      at = 0;
      await store.writeRecord(key, recordText(record));
    } else if (response.status === 416 && resuming) {
      await cancel();
      await restart('the server refuses the range of the partial download');
      continue;
    } else {
      await cancel();
      // The file is gone or refused (4xx): its partial will not be finished. A server error may pass: keep it.
      if (response.status >= 400 && response.status < 500 && response.status !== 408 && response.status !== 429) await store.remove(key);
      throw new EdgeLLMError('BAD_SOURCE', `model URL ${clean}: HTTP status ${response.status} ${response.statusText}`.trimEnd());
    }

    // The body, written as it arrives.
    const current = record!;
    let cut: unknown;
    const writer = await store.append(key, at);
    try {
      if (!response.body) throw new EdgeLLMError('BAD_SOURCE', `model URL ${clean}: the response has no body`);
      const reader = response.body.getReader();
      onProgress?.(at, current.size);
      for (;;) {
        // a body already buffered would otherwise be read to its end after an abort
        if (signal?.aborted) {
          await reader.cancel().catch(() => {});
          throw signal.reason ?? new DOMException('aborted', 'AbortError');
        }
        const { done, value } = await reader.read();
        if (done) break;
        if (current.size !== undefined && at + value.length > current.size) {
          await reader.cancel().catch(() => {});
          throw new EdgeLLMError('BAD_SOURCE', `model URL ${clean}: the server sent more than the ${current.size} bytes it announced`);
        }
        await writer.write(value);
        at += value.length;
        onProgress?.(at, current.size);
      }
    } catch (err) {
      cut = err;
    } finally {
      await writer.close();
    }
    if (cut !== undefined && isAbortError(cut, signal)) throw new EdgeLLMError('ABORTED', `${what}: aborted after ${at} bytes (kept: the next open resumes)`, { cause: cut });
    // ours (too many bytes, no body, the storage failed): not a connection to resume, and nothing worth keeping
    if (cut instanceof EdgeLLMError) {
      await store.remove(key);
      throw cut;
    }
    if (current.size === undefined) {
      if (cut !== undefined) {
        await store.remove(key);
        throw new EdgeLLMError('BAD_SOURCE', `${what} failed after ${at} bytes of an unannounced size (nothing kept): ${failure(cut)}`, { cause: cut });
      }
      record = { ...current, size: at };
      await store.writeRecord(key, recordText(record));
      break;
    }
    if (at < current.size) {
      const why = cut === undefined ? 'the body ended early' : failure(cut);
      if (!resumable(current)) {
        await store.remove(key);
        throw new EdgeLLMError('BAD_SOURCE', `${what} stopped at ${at} of ${current.size} bytes (${why}); the server gives no ETag or Last-Modified to resume with, so nothing was kept`, { cause: cut });
      }
      if (++resumes <= MAX_RESUMES) continue;
      throw new EdgeLLMError('BAD_SOURCE', `${what} stopped at ${at} of ${current.size} bytes (${why}); they are kept, and the next open resumes`, { cause: cut });
    }
  }

  // Every byte is stored: the size is the server's total; now the header must parse before the entry is complete.
  const done = record!;
  const partial = await store.openPartial(key);
  let header: GGUFFile;
  try {
    if (partial.size !== done.size) throw new EdgeLLMError('TRUNCATED', `${partial.size} bytes stored, the server's total is ${done.size}`);
    header = await readGGUF(partial);
  } catch (err) {
    await partial.close().catch(() => {});
    await store.remove(key);
    const code = err instanceof EdgeLLMError ? err.code : 'BAD_SOURCE';
    throw new EdgeLLMError(code, `model URL ${clean}: the download is not a usable GGUF (not kept): ${failure(err)}`, { cause: err });
  }
  await partial.close();
  await store.commit(key);
  await store.writeRecord(key, recordText({ ...done, complete: true, storedAt: Date.now() }));
  const data = await store.openData(key);
  if (!data) throw new EdgeLLMError('BAD_SOURCE', `cache entry ${key}: its data vanished right after it was stored`);
  // the header checked above, under the name the caller's own parse would give it
  return knownHeader(named(data, clean), new GGUFFile({ ...header, types: header.metadataTypes }, header.fileSize, clean));
}
