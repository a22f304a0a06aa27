/**
 * The download cache on a filesystem (Node, Deno, Bun): one directory, `EDGELLM_CACHE` or the user's cache directory.
 * An entry KEY is KEY.json (its record), KEY.gguf (the complete data: a name that only ever holds a whole, validated
 * file), KEY.gguf.partial while downloading, and KEY.lock while someone works on it. Only the Node-family entry point
 * and the CLI import this.
 */
import { link, mkdir, open, type FileHandle, readdir, readFile, rename, rm, stat, unlink, utimes, writeFile } from 'node:fs/promises';
import { homedir, hostname } from 'node:os';
import { join, resolve } from 'node:path';
import process from 'node:process';
import { EdgeLLMError } from '../errors.js';
import { keyOfFile, keysOf, MAX_RECORD, modelCache, type CacheStore, type ModelCache, type PartialWriter } from './cache.js';
import { openFile } from './file.js';
import { processAlive, randomSuffix } from '../plan/spill.js';
import { errorMessage, throwIfAborted, type ByteSource } from './source.js';

/** A lock whose file has not been touched for this long is abandoned (its holder refreshes it far more often). */
const LOCK_STALE_MS = 60_000;
const LOCK_REFRESH_MS = 10_000;
const LOCK_POLL_MS = 100;

/** The cache directory: `EDGELLM_CACHE`, else the platform's cache directory for edgellm. */
export function defaultCacheDir(env: Record<string, string | undefined> = process.env, platform: string = process.platform, home: string = homedir()): string {
  if (env.EDGELLM_CACHE) return resolve(env.EDGELLM_CACHE);
  if (platform === 'win32') return join(env.LOCALAPPDATA || join(home, 'AppData', 'Local'), 'edgellm', 'cache');
  if (platform === 'darwin') return join(home, 'Library', 'Caches', 'edgellm');
  return join(env.XDG_CACHE_HOME || join(home, '.cache'), 'edgellm');
}

/** The download cache in `dir` (default: defaultCacheDir()). Nothing is created until something is stored. */
export async function openModelCache(dir?: string): Promise<ModelCache> {
  return modelCache(nodeStore(resolve(dir ?? defaultCacheDir())));
}

function ioError(what: string, err: unknown): EdgeLLMError {
  if (err instanceof EdgeLLMError) return err;
  const code = (err as { code?: string })?.code;
  const full = code === 'ENOSPC' || code === 'EDQUOT';
  return new EdgeLLMError(full ? 'BUDGET' : 'BAD_SOURCE', `${what}: ${errorMessage(err)}${full ? ' (the disk is full)' : ''}`, { cause: err });
}

const missing = (err: unknown) => (err as { code?: string })?.code === 'ENOENT';

/** Lock tokens this process holds: a lock with our pid but not our token was left by an earlier process (a container's pid 1). */
const heldTokens = new Set<string>();

function nodeStore(dir: string): CacheStore {
  const path = (key: string, suffix: string) => join(dir, key + suffix);
  const data = (key: string) => path(key, '.gguf');
  const partial = (key: string) => path(key, '.gguf.partial');
  const record = (key: string) => path(key, '.json');
  let made = false;
  const ensureDir = async () => {
    if (made) return;
    try {
      await mkdir(dir, { recursive: true });
    } catch (err) {
      throw ioError(`cannot create the cache directory ${dir}`, err);
    }
    made = true;
  };
  const files = async (): Promise<string[]> => {
    try {
      return await readdir(dir);
    } catch (err) {
      if (missing(err)) return [];
      throw ioError(`cannot read the cache directory ${dir}`, err);
    }
  };
  const size = async (file: string): Promise<number | undefined> => {
    try {
      return (await stat(file)).size;
    } catch (err) {
      if (missing(err)) return undefined;
      throw ioError(`cannot stat ${file}`, err);
    }
  };
  /** A rename is atomic only once the renamed bytes and the directory entry are on disk. */
  const syncDir = async () => {
    try {
      const h = await open(dir, 'r');
      try {
        await h.sync();
      } finally {
        await h.close();
      }
    } catch {
      // Windows cannot open a directory; its renames are durable enough for a cache
    }
  };

  return {
    where: dir,
    async keys() {
      return keysOf(await files());
    },
    async readRecord(key) {
      let h: FileHandle;
      try {
        h = await open(record(key), 'r');
      } catch (err) {
        if (missing(err)) return undefined;
        throw ioError(`cannot read ${record(key)}`, err);
      }
      try {
        const buf = new Uint8Array(MAX_RECORD + 1);
        let n = 0;
        while (n < buf.length) {
          const { bytesRead } = await h.read(buf, n, buf.length - n, n);
          if (bytesRead === 0) break;
          n += bytesRead;
        }
        return new TextDecoder().decode(buf.subarray(0, n));
      } finally {
        await h.close();
      }
    },
    async writeRecord(key, text) {
      await ensureDir();
      const tmp = path(key, `.json.${randomSuffix()}.tmp`);
      try {
        const h = await open(tmp, 'w');
        try {
          await h.writeFile(text);
          await h.sync();
        } finally {
          await h.close();
        }
        await rename(tmp, record(key));
      } catch (err) {
        await rm(tmp, { force: true }).catch(() => {});
        throw ioError(`cannot write ${record(key)}`, err);
      }
      await syncDir();
    },
    async partialSize(key) {
      return (await size(partial(key))) ?? 0;
    },
    async append(key, at): Promise<PartialWriter> {
      await ensureDir();
      const file = partial(key);
      let h: FileHandle | undefined;
      try {
        h = await open(file, at === 0 ? 'w' : 'r+');
        if (at > 0) await h.truncate(at);
      } catch (err) {
        await h?.close().catch(() => {});
        throw ioError(`cannot open ${file}`, err);
      }
      const handle = h;
      let pos = at;
      return {
        async write(bytes) {
          let done = 0;
          try {
            while (done < bytes.length) {
              const { bytesWritten } = await handle.write(bytes, done, bytes.length - done, pos + done);
              if (bytesWritten <= 0) throw new Error('the write made no progress');
              done += bytesWritten;
            }
          } catch (err) {
            throw ioError(`cannot write ${file}`, err);
          }
          pos += bytes.length;
        },
        async close() {
          try {
            await handle.sync();
          } finally {
            await handle.close();
          }
        },
      };
    },
    openPartial: (key) => openFile(partial(key)),
    async commit(key) {
      try {
        await rename(partial(key), data(key));
      } catch (err) {
        throw ioError(`cannot rename ${partial(key)} to ${data(key)}`, err);
      }
      await syncDir();
    },
    async openData(key): Promise<ByteSource | undefined> {
      if ((await size(data(key))) === undefined) return undefined;
      return openFile(data(key));
    },
    location: (key, complete) => (complete ? data(key) : partial(key)),
    async remove(key) {
      for (const f of await files()) {
        if (keyOfFile(f) !== key || f === `${key}.lock`) continue;
        try {
          await rm(join(dir, f), { force: true });
        } catch (err) {
          throw ioError(`cannot remove ${join(dir, f)}`, err);
        }
      }
    },
    async lock(key, { signal, wait }) {
      await ensureDir();
      const file = path(key, '.lock');
      const token = `${process.pid}-${randomSuffix()}`;
      const body = JSON.stringify({ pid: process.pid, host: hostname(), token });
      for (;;) {
        throwIfAborted(signal, `waiting for cache entry ${key}`);
        try {
          await writeFile(file, body, { flag: 'wx' });
          return held(file, token);
        } catch (err) {
          if ((err as { code?: string }).code !== 'EEXIST') throw ioError(`cannot create ${file}`, err);
        }
        const owner = await lockOwner(file);
        if (owner === undefined) continue; // released between our try and our look
        if (owner.stale) {
          await breakLock(file, owner.text);
          continue;
        }
        if (!wait) return undefined;
        await sleep(LOCK_POLL_MS, signal, key);
      }
    },
  };
}

/** Holds a lock: its file is touched now and then (so that other hosts can tell it is alive) until released. */
function held(file: string, token: string): () => Promise<void> {
  heldTokens.add(token);
  const timer = setInterval(() => {
    const now = new Date();
    utimes(file, now, now).catch(() => {});
  }, LOCK_REFRESH_MS);
  (timer as { unref?: () => void }).unref?.();
  let released = false;
  return async () => {
    if (released) return;
    released = true;
    clearInterval(timer);
    heldTokens.delete(token);
    try {
      if (JSON.parse(await readFile(file, 'utf8')).token === token) await unlink(file);
    } catch {
      // gone already (someone judged it stale): nothing of ours to remove
    }
  };
}

/**
 * Who holds a lock, and whether it is abandoned: its process is dead (same host), it is ours by pid but not by token
 * (a process before us had our pid), or nobody has touched it for LOCK_STALE_MS (another host, or a reused pid).
 */
async function lockOwner(file: string): Promise<{ text: string; stale: boolean } | undefined> {
  let text: string;
  let mtimeMs: number;
  try {
    [text, mtimeMs] = await Promise.all([readFile(file, 'utf8'), stat(file).then((s) => s.mtimeMs)]);
  } catch (err) {
    if (missing(err)) return undefined;
    throw ioError(`cannot read ${file}`, err);
  }
  if (Date.now() - mtimeMs > LOCK_STALE_MS) return { text, stale: true };
  let owner: { pid?: unknown; host?: unknown; token?: unknown };
  try {
    owner = JSON.parse(text);
  } catch {
    // being written this instant, or torn by a crash: the age rule above decides
    return { text, stale: false };
  }
  if (owner.host !== hostname() || typeof owner.pid !== 'number' || !Number.isSafeInteger(owner.pid) || owner.pid <= 0) return { text, stale: false };
  if (owner.pid === process.pid) return { text, stale: !heldTokens.has(String(owner.token)) };
  return { text, stale: !processAlive(process, owner.pid) };
}

/**
 * Removes an abandoned lock without removing a live one that replaced it meanwhile: the file is renamed aside first
 * (atomic), and put back if what was moved is not what was judged abandoned.
 */
async function breakLock(file: string, staleText: string): Promise<void> {
  const aside = `${file}.${randomSuffix()}.stale`;
  try {
    await rename(file, aside);
  } catch (err) {
    if (missing(err)) return;
    throw ioError(`cannot remove the abandoned lock ${file}`, err);
  }
  try {
    if ((await readFile(aside, 'utf8')) !== staleText) await link(aside, file).catch(() => {});
  } finally {
    await rm(aside, { force: true }).catch(() => {});
  }
}

function sleep(ms: number, signal: AbortSignal | undefined, key: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(t);
      reject(new EdgeLLMError('ABORTED', `waiting for cache entry ${key}: aborted`, { cause: signal!.reason }));
    };
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
