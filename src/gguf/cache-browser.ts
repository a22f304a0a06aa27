/**
 * The download cache in browsers: the origin private file system (a directory `edgellm-cache`), else the Cache API (a
 * cache `edgellm`) where OPFS is missing or refused. Both work on a page's thread and in workers.
 *
 * Neither can write into the middle of a file and keep it across a closed tab: an OPFS writable stream and a Cache
 * API put both publish their bytes only when they finish, whole or not at all. So an entry's bytes are segments
 * (KEY.0.part, KEY.1.part, ...) of at most `segmentBytes` each, every one published whole; a tab closed mid-download
 * loses at most the segment being written, and the next open resumes after the last whole one. Reads span the
 * segments (Blob slices, never the file whole). The record (KEY.json) is published the same way, so `complete` in it
 * is what makes an entry usable: nothing is renamed.
 */
import { EdgeLLMError } from '../errors.js';
import { keyOfFile, keysOf, MAX_RECORD, modelCache, type CacheStore, type ModelCache, type PartialWriter } from './cache.js';
import { blobSource, concatSource, errorMessage, type ByteSource } from './source.js';

export interface BrowserCacheOptions {
  /** 'opfs' or 'cache-api' (default: OPFS where it works, else the Cache API) */
  storage?: 'opfs' | 'cache-api';
  /** the most a tab closed mid-download loses (default 64 MiB); also the largest file of an entry */
  segmentBytes?: number;
}

const DIR = 'edgellm-cache';
const CACHE = 'edgellm';
const DEFAULT_SEGMENT = 64 * 1024 * 1024;

/** Files that are published whole: a writer's bytes appear under its name only when close() resolves. */
interface BlobDir {
  readonly where: string;
  names(): Promise<string[]>;
  get(name: string): Promise<Blob | undefined>;
  create(name: string): Promise<{ write(bytes: Uint8Array): Promise<void>; close(): Promise<void>; abort(): Promise<void> }>;
  remove(name: string): Promise<void>;
}

/** The download cache of this origin: OPFS, or the Cache API (see BrowserCacheOptions). */
export async function openModelCache(options: BrowserCacheOptions = {}): Promise<ModelCache> {
  const segment = options.segmentBytes ?? DEFAULT_SEGMENT;
  if (!Number.isSafeInteger(segment) || segment < 1) throw new EdgeLLMError('BAD_ARGUMENT', `segmentBytes must be a positive integer, got ${segment}`);
  const reasons: string[] = [];
  if (options.storage !== 'cache-api') {
    try {
      return modelCache(segmentStore(await opfsDir(), segment));
    } catch (err) {
      if (options.storage === 'opfs') throw storageError('the origin private file system', err);
      reasons.push(`OPFS: ${errorMessage(err)}`);
    }
  }
  try {
    return modelCache(segmentStore(await cacheApiDir(), segment));
  } catch (err) {
    reasons.push(`Cache API: ${errorMessage(err)}`);
  }
  throw new EdgeLLMError('BAD_SOURCE', `no storage for a model cache here (${reasons.join('; ')}); load with cache: false`);
}

function storageError(what: string, err: unknown): EdgeLLMError {
  if (err instanceof EdgeLLMError) return err;
  const full = (err as { name?: string })?.name === 'QuotaExceededError';
  return new EdgeLLMError(full ? 'BUDGET' : 'BAD_SOURCE', `${what}: ${errorMessage(err)}${full ? ' (the storage quota is used up)' : ''}`, { cause: err });
}

const notFound = (err: unknown) => (err as { name?: string })?.name === 'NotFoundError';

interface OpfsWritable {
  write(data: Uint8Array): Promise<void>;
  close(): Promise<void>;
  abort(): Promise<void>;
}
interface OpfsFile {
  getFile(): Promise<File>;
  createWritable(): Promise<OpfsWritable>;
}
interface OpfsDir {
  getDirectoryHandle(name: string, opts?: { create?: boolean }): Promise<OpfsDir>;
  getFileHandle(name: string, opts?: { create?: boolean }): Promise<OpfsFile>;
  removeEntry(name: string): Promise<void>;
  keys(): AsyncIterable<string>;
}

async function opfsDir(): Promise<BlobDir> {
  const g = globalThis as unknown as { navigator?: { storage?: { getDirectory?: () => Promise<OpfsDir> } }; FileSystemFileHandle?: { prototype?: { createWritable?: unknown } } };
  if (typeof g.navigator?.storage?.getDirectory !== 'function') throw new Error('navigator.storage.getDirectory is missing');
  if (typeof g.FileSystemFileHandle?.prototype?.createWritable !== 'function') throw new Error('this browser has no OPFS writable streams');
  const dir = await (await g.navigator.storage.getDirectory()).getDirectoryHandle(DIR, { create: true });
  return {
    where: `opfs:/${DIR}`,
    async names() {
      const out: string[] = [];
      for await (const name of dir.keys()) out.push(name);
      return out;
    },
    async get(name) {
      try {
        return await (await dir.getFileHandle(name)).getFile();
      } catch (err) {
        if (notFound(err)) return undefined;
        throw err;
      }
    },
    async create(name) {
      const w = await (await dir.getFileHandle(name, { create: true })).createWritable();
      return {
        write: (bytes) => w.write(bytes),
        close: () => w.close(),
        async abort() {
          await w.abort().catch(() => {});
          await dir.removeEntry(name).catch(() => {});
        },
      };
    },
    async remove(name) {
      try {
        await dir.removeEntry(name);
      } catch (err) {
        if (!notFound(err)) throw err;
      }
    },
  };
}

async function cacheApiDir(): Promise<BlobDir> {
  const caches = (globalThis as { caches?: CacheStorage }).caches;
  if (!caches) throw new Error('there is no Cache API (caches) here');
  const cache = await caches.open(CACHE);
  // Cache API entries are keyed by request; these addresses are never fetched.
  const request = (name: string) => new Request(`https://edgellm-cache.invalid/${encodeURIComponent(name)}`);
  return {
    where: `cache-api:${CACHE}`,
    async names() {
      return (await cache.keys()).map((r) => decodeURIComponent(new URL(r.url).pathname.slice(1)));
    },
    async get(name) {
      const r = await cache.match(request(name));
      // A stored body's blob refers to the stored bytes; nothing is read until a slice is.
      return r ? await r.blob() : undefined;
    },
    async create(name) {
      // The put reads the stream as it is written (the stream's backpressure paces the writes) and publishes the
      // entry only when the stream closes.
      const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>();
      const put = cache.put(request(name), new Response(readable));
      put.catch(() => {});
      const w = writable.getWriter();
      return {
        write: (bytes) => w.write(bytes),
        async close() {
          await w.close();
          await put;
        },
        async abort() {
          await w.abort().catch(() => {});
          await put.catch(() => {});
        },
      };
    },
    async remove(name) {
      await cache.delete(request(name));
    },
  };
}

/** An entry's bytes as segments in a BlobDir; the record says whether they are complete. */
function segmentStore(dir: BlobDir, segmentBytes: number): CacheStore {
  const record = (key: string) => `${key}.json`;
  const segmentName = (key: string, n: number) => `${key}.${n}.part`;
  /** The segments in order; a gap (one lost or removed) makes the entry unusable. */
  const segments = async (key: string): Promise<Blob[]> => {
    const found = new Map<number, string>();
    for (const name of await dir.names()) {
      const m = keyOfFile(name) === key ? /\.(\d+)\.part$/.exec(name) : null;
      if (m) found.set(Number(m[1]), name);
    }
    const blobs: Blob[] = [];
    for (let n = 0; n < found.size; n++) {
      const name = found.get(n);
      const blob = name === undefined ? undefined : await dir.get(name);
      if (!blob) throw new EdgeLLMError('TRUNCATED', `cache entry ${key}: segment ${n} of ${found.size} is missing`);
      blobs.push(blob);
    }
    return blobs;
  };
  const source = async (key: string) => segmentedSource(`${dir.where}/${key}`, await segments(key));
  const lock = webLock();

  return {
    where: dir.where,
    async keys() {
      return keysOf(await dir.names());
    },
    async readRecord(key) {
      const blob = await dir.get(record(key));
      return blob === undefined ? undefined : await blob.slice(0, MAX_RECORD + 1).text();
    },
    async writeRecord(key, text) {
      const w = await dir.create(record(key)).catch((err) => Promise.reject(storageError(`cannot write ${dir.where}/${record(key)}`, err)));
      try {
        await w.write(new TextEncoder().encode(text));
        await w.close();
      } catch (err) {
        await w.abort();
        throw storageError(`cannot write ${dir.where}/${record(key)}`, err);
      }
    },
    async partialSize(key) {
      return (await segments(key)).reduce((n, b) => n + b.size, 0);
    },
    async append(key): Promise<PartialWriter> {
      let next = (await segments(key)).length;
      let current: Awaited<ReturnType<BlobDir['create']>> | undefined;
      let written = 0;
      const where = () => `${dir.where}/${segmentName(key, next)}`;
      const publish = async () => {
        const w = current!;
        current = undefined;
        if (written === 0) return w.abort();
        try {
          await w.close();
        } catch (err) {
          await w.abort();
          throw storageError(`cannot write ${where()}`, err);
        }
        next++;
        written = 0;
      };
      return {
        async write(bytes) {
          for (let done = 0; done < bytes.length; ) {
            try {
              current ??= await dir.create(segmentName(key, next));
              const part = bytes.subarray(done, done + Math.min(bytes.length - done, segmentBytes - written));
              await current.write(part);
              done += part.length;
              written += part.length;
            } catch (err) {
              throw storageError(`cannot write ${where()}`, err);
            }
            if (written === segmentBytes) await publish();
          }
        },
        async close() {
          if (current) await publish();
        },
      };
    },
    openPartial: source,
    // The record's `complete`, written next, is what publishes the entry.
    async commit() {},
    async openData(key) {
      const blobs = await segments(key);
      return blobs.length ? segmentedSource(`${dir.where}/${key}`, blobs) : undefined;
    },
    location: (key) => `${dir.where}/${key}`,
    async remove(key) {
      for (const name of await dir.names()) if (keyOfFile(name) === key) await dir.remove(name);
    },
    lock,
  };
}

/** Bytes spread over Blobs (an entry's segments), read by slices. */
function segmentedSource(name: string, blobs: Blob[]): ByteSource {
  return concatSource(blobs.map((b) => blobSource(b, name)), name);
}

interface LockManager {
  request(name: string, opts: { mode: 'exclusive'; ifAvailable?: boolean; signal?: AbortSignal }, fn: (lock: unknown) => Promise<void> | void): Promise<unknown>;
}

/**
 * Entry locks across tabs and workers: Web Locks, which the browser releases when a tab or worker dies. Where there
 * are none, a lock within this context only.
 */
function webLock(): CacheStore['lock'] {
  const locks = (globalThis as { navigator?: { locks?: LockManager } }).navigator?.locks;
  if (typeof locks?.request !== 'function') {
    const held = new Map<string, Promise<void>>();
    return async (key, { wait }) => {
      while (held.has(key)) {
        if (!wait) return undefined;
        await held.get(key);
      }
      let release!: () => void;
      held.set(key, new Promise<void>((r) => (release = r)));
      return async () => {
        held.delete(key);
        release();
      };
    };
  }
  return (key, { signal, wait }) =>
    new Promise((resolve, reject) => {
      let release!: () => void;
      const holding = new Promise<void>((r) => (release = r));
      const opts = wait ? { mode: 'exclusive' as const, ...(signal ? { signal } : {}) } : { mode: 'exclusive' as const, ifAvailable: true };
      locks
        .request(`edgellm-cache:${key}`, opts, (lock) => {
          if (lock === null) return resolve(undefined);
          resolve(async () => release());
          return holding;
        })
        .catch((err) => reject(signal?.aborted ? new EdgeLLMError('ABORTED', `waiting for cache entry ${key}: aborted`, { cause: err }) : storageError(`cannot lock cache entry ${key}`, err)));
    });
}
