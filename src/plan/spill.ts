import { EdgeLLMError } from '../errors.js';

/**
 * A model's own temporary directory for what it spills to disk (cold KV pages, cold weights). Node, Deno and Bun use
 * files under os.tmpdir(); browsers use the origin private file system from a dedicated worker, where sync access
 * handles give the synchronous positional reads the forward pass needs. Node modules are reached at run time through
 * process.getBuiltinModule, so the browser and Workers bundles hold no Node built-in.
 */
export interface SpillFile {
  readonly name: string;
  /** Synchronous positional I/O (Node/Deno/Bun fs.readSync/writeSync; an OPFS FileSystemSyncAccessHandle). */
  read(offset: number, into: Uint8Array): void; // reads exactly into.length bytes, else throws EdgeLLMError
  write(offset: number, data: Uint8Array): void;
  /** bytes written so far (the file's size) */
  size(): number;
}

export interface SpillDir {
  /** where it is (a path, or 'opfs:/edgellm-spill-…') */
  readonly location: string;
  create(name: string): Promise<SpillFile>;
  /** closes every file and removes the directory; idempotent */
  dispose(): Promise<void>;
}

const PREFIX = 'edgellm-';
/** A Node spill directory's name: PREFIX, its owner's pid, mkdtemp's random part. */
const NODE_DIR = new RegExp(`^${PREFIX}(\\d+)-[A-Za-z0-9]+$`);
/** OPFS spill directories: a prefix of their own, so the sweep never takes the download cache's `edgellm-cache`. */
const OPFS_PREFIX = 'edgellm-spill-';
/** A file name inside the directory: no separators or dot names, so create() cannot leave it. */
const FILE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;

/** Whether this runtime can spill (Node/Deno/Bun fs; OPFS sync handles in a dedicated worker), else why not. */
export function spillSupport(): { ok: true } | { ok: false; reason: string } {
  const g = globalThis as unknown as WebGlobals;
  // Before fs: with nodejs_compat, workerd's fs is an in-memory one, which would spill memory into memory.
  if (g.navigator?.userAgent === 'Cloudflare-Workers') return { ok: false, reason: 'Cloudflare Workers have no disk to spill to' };
  if (nodeModules()) return { ok: true };
  if (typeof g.navigator?.storage?.getDirectory !== 'function') return { ok: false, reason: 'no file system: neither Node fs nor the origin private file system (OPFS)' };
  if (typeof g.DedicatedWorkerGlobalScope !== 'function' || !(globalThis instanceof g.DedicatedWorkerGlobalScope)) {
    return { ok: false, reason: "OPFS sync access handles exist only in dedicated workers: load the model with loadModelInWorker, not on the page's thread" };
  }
  if (typeof g.FileSystemFileHandle?.prototype?.createSyncAccessHandle !== 'function') return { ok: false, reason: 'this browser has no OPFS sync access handles' };
  if (typeof g.navigator?.locks?.request !== 'function') return { ok: false, reason: 'this browser has no Web Locks (navigator.locks), which mark a live spill directory' };
  return { ok: true };
}

/**
 * A model's one spill directory, opened when its first owner asks (cold weights, each kernel instance's cold KV
 * pages, each a file in it) and removed by the model's dispose, after the owners are done.
 */
export class ModelSpill {
  private opening: Promise<SpillDir> | undefined;
  constructor(private readonly dir?: string) {}

  get(): Promise<SpillDir> {
    return (this.opening ??= openSpillDir({ dir: this.dir }));
  }

  /** Removes the directory, if it was opened (and every file in it); idempotent. */
  async dispose(): Promise<void> {
    const opening = this.opening;
    if (!opening) return;
    await (await opening.catch(() => undefined))?.dispose();
  }
}

/** A fresh directory of this model's own: Node/Deno/Bun under os.tmpdir() (or `dir`), browsers in OPFS (dedicated
 *  workers only: sync access handles). Also removes directories left by processes that died (crash cleanup). */
export async function openSpillDir(options: { dir?: string } = {}): Promise<SpillDir> {
  const support = spillSupport();
  if (!support.ok) throw new EdgeLLMError('BAD_ARGUMENT', `cannot spill to disk here: ${support.reason}`);
  const node = nodeModules();
  if (node) return openNodeDir(node, options.dir);
  if (options.dir !== undefined) throw new EdgeLLMError('BAD_ARGUMENT', 'a spill dir path applies to Node, Deno and Bun; browsers spill to the origin private file system');
  return openOpfsDir();
}

// ---- Node, Deno, Bun ----

interface NodeFs {
  mkdirSync(path: string, opts: { recursive: boolean; mode?: number }): unknown;
  mkdtempSync(prefix: string): string;
  readdirSync(path: string): string[];
  readFileSync(path: string, enc: 'utf8'): string;
  writeFileSync(path: string, data: string): void;
  rmSync(path: string, opts: { recursive: boolean; force: boolean }): void;
  openSync(path: string, flags: string, mode?: number): number;
  closeSync(fd: number): void;
  readSync(fd: number, buf: Uint8Array, offset: number, length: number, position: number): number;
  writeSync(fd: number, buf: Uint8Array, offset: number, length: number, position: number): number;
}
interface NodeModules {
  fs: NodeFs;
  path: { join(...parts: string[]): string; resolve(p: string): string };
  os: { tmpdir(): string; hostname(): string };
  process: NodeProcess;
}
interface NodeProcess {
  pid: number;
  kill(pid: number, signal: number): boolean;
  on?(event: 'exit', fn: () => void): unknown;
  getBuiltinModule?: (id: string) => unknown;
}

function nodeModules(): NodeModules | undefined {
  const p = (globalThis as { process?: NodeProcess }).process;
  // 'fs', not 'node:fs': the browser bundle must hold no node: specifier, and this only runs in a runtime with them
  const fs = p?.getBuiltinModule?.('fs') as NodeFs | undefined;
  if (!p || typeof fs?.readSync !== 'function') return undefined;
  return { fs, path: p.getBuiltinModule!('path') as NodeModules['path'], os: p.getBuiltinModule!('os') as NodeModules['os'], process: p };
}

/** Directories of this process still to remove at exit, should their models never be disposed. */
const liveNodeDirs = new Set<string>();
let exitHookInstalled = false;

function openNodeDir(node: NodeModules, dirOption: string | undefined): SpillDir {
  const { fs, path, os, process } = node;
  const parent = path.resolve(dirOption ?? os.tmpdir());
  let location: string;
  try {
    fs.mkdirSync(parent, { recursive: true });
    sweepDeadNodeDirs(node, parent);
    // The owner's pid is in the name, so another process can tell a dead owner's directory; mkdtemp adds the random
    // part and makes it private (0700).
    location = fs.mkdtempSync(path.join(parent, `${PREFIX}${process.pid}-`));
    fs.writeFileSync(path.join(location, 'owner'), JSON.stringify({ pid: process.pid, host: os.hostname() }));
  } catch (err) {
    throw ioError(`cannot create a spill directory in ${parent}`, err);
  }
  liveNodeDirs.add(location);
  if (!exitHookInstalled && typeof process.on === 'function') {
    exitHookInstalled = true;
    // A process that exits without dispose() removes its directories here; one that crashes leaves them to the
    // next openSpillDir's sweep.
    process.on('exit', () => {
      for (const d of liveNodeDirs) rmQuietly(fs, d);
    });
  }
  const fds: number[] = [];
  const names = new Set<string>();
  let disposed = false;
  return {
    location,
    async create(name) {
      if (disposed) throw new EdgeLLMError('DISPOSED', `spill directory ${location} was disposed`);
      checkName(name, names);
      const file = path.join(location, name);
      let fd: number;
      try {
        fd = fs.openSync(file, 'w+', 0o600);
      } catch (err) {
        throw ioError(`cannot create spill file ${file}`, err);
      }
      fds.push(fd);
      names.add(name);
      return positionalFile(name, file, () => disposed, {
        read: (into, at) => fs.readSync(fd, into, 0, into.length, at),
        write: (data, at) => fs.writeSync(fd, data, 0, data.length, at),
      });
    },
    async dispose() {
      if (disposed) return;
      disposed = true;
      for (const fd of fds.splice(0)) {
        try {
          fs.closeSync(fd);
        } catch {
          // closed already: nothing to release
        }
      }
      rmQuietly(fs, location);
      liveNodeDirs.delete(location);
    },
  };
}

/**
 * Removes the spill directories in `parent` whose owner process no longer lives (processAlive). A directory whose owner file names another host (a temp dir shared between machines or containers, where pids
 * mean nothing) is left alone; so is every directory of this process, whose models may be alive.
 */
function sweepDeadNodeDirs({ fs, path, os, process }: NodeModules, parent: string): void {
  let entries: string[];
  try {
    entries = fs.readdirSync(parent);
  } catch {
    return;
  }
  for (const entry of entries) {
    const m = NODE_DIR.exec(entry);
    if (!m) continue;
    const pid = Number(m[1]);
    if (!Number.isSafeInteger(pid) || pid <= 0 || pid === process.pid) continue;
    const dir = path.join(parent, entry);
    try {
      const owner = JSON.parse(fs.readFileSync(path.join(dir, 'owner'), 'utf8')) as { host?: unknown };
      if (typeof owner.host === 'string' && owner.host !== os.hostname()) continue;
    } catch {
      // no owner file yet (its owner may be between mkdtemp and writing it): the pid alone decides
    }
    if (!processAlive(process, pid)) rmQuietly(fs, dir);
  }
}

/**
 * Whether a process of this host lives: signal 0 to a pid that exists succeeds (or is refused with EPERM, for another
 * user's process), and throws ESRCH only where no such process is.
 */
export function processAlive(proc: { kill(pid: number, signal: number): unknown }, pid: number): boolean {
  try {
    proc.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as { code?: string }).code !== 'ESRCH';
  }
}

function rmQuietly(fs: NodeFs, dir: string): void {
  try {
    fs.rmSync(dir, { recursive: true, force: true });
  } catch {
    // another sweeper got there first, or the directory is not ours to remove: leave it
  }
}

// ---- browsers: OPFS from a dedicated worker ----

interface SyncAccessHandle {
  read(buffer: Uint8Array, opts: { at: number }): number;
  write(buffer: Uint8Array, opts: { at: number }): number;
  getSize(): number;
  close(): void;
}
interface OpfsDirHandle {
  getDirectoryHandle(name: string, opts?: { create?: boolean }): Promise<OpfsDirHandle>;
  getFileHandle(name: string, opts?: { create?: boolean }): Promise<{ createSyncAccessHandle(): Promise<SyncAccessHandle> }>;
  removeEntry(name: string, opts?: { recursive?: boolean }): Promise<void>;
  keys(): AsyncIterable<string>;
}
interface LockManager {
  request(name: string, opts: { mode?: 'exclusive'; ifAvailable?: boolean }, fn: (lock: unknown) => Promise<unknown> | unknown): Promise<unknown>;
}
interface WebGlobals {
  navigator?: { userAgent?: string; storage?: { getDirectory?: () => Promise<OpfsDirHandle> }; locks?: LockManager };
  DedicatedWorkerGlobalScope?: abstract new () => unknown;
  FileSystemFileHandle?: { prototype?: { createSyncAccessHandle?: unknown } };
}

/**
 * In OPFS a directory cannot name a live process, so each holds a Web Lock of its own name while its model lives.
 * The lock is released when dispose() lets it go or when the worker or page dies, so an edgellm-spill-* directory whose
 * lock is free belongs to nobody.
 */
async function openOpfsDir(): Promise<SpillDir> {
  const nav = (globalThis as unknown as WebGlobals).navigator!;
  const root = await nav.storage!.getDirectory!();
  const locks = nav.locks!;
  await sweepDeadOpfsDirs(root, locks);
  const name = `${OPFS_PREFIX}${randomSuffix()}`;
  let release!: () => void;
  const held = new Promise<void>((resolve) => (release = resolve));
  await new Promise<void>((acquired, failed) => {
    locks.request(name, { mode: 'exclusive' }, () => {
      acquired();
      return held;
    }).catch(failed);
  });
  let dir: OpfsDirHandle;
  try {
    dir = await root.getDirectoryHandle(name, { create: true });
  } catch (err) {
    release();
    throw ioError(`cannot create OPFS directory ${name}`, err);
  }
  const location = `opfs:/${name}`;
  const handles: SyncAccessHandle[] = [];
  const names = new Set<string>();
  let disposed = false;
  return {
    location,
    async create(fileName) {
      if (disposed) throw new EdgeLLMError('DISPOSED', `spill directory ${location} was disposed`);
      checkName(fileName, names);
      const where = `${location}/${fileName}`;
      let h: SyncAccessHandle;
      try {
        h = await (await dir.getFileHandle(fileName, { create: true })).createSyncAccessHandle();
      } catch (err) {
        throw ioError(`cannot create spill file ${where}`, err);
      }
      handles.push(h);
      names.add(fileName);
      return positionalFile(fileName, where, () => disposed, {
        read: (into, at) => h.read(into, { at }),
        write: (data, at) => h.write(data, { at }),
      });
    },
    async dispose() {
      if (disposed) return;
      disposed = true;
      for (const h of handles.splice(0)) {
        try {
          h.close();
        } catch {
          // closed already
        }
      }
      try {
        await root.removeEntry(name, { recursive: true });
      } catch {
        // gone already; a later open's sweep removes what is left once the lock is free
      }
      release();
    },
  };
}

async function sweepDeadOpfsDirs(root: OpfsDirHandle, locks: LockManager): Promise<void> {
  const stale: string[] = [];
  try {
    for await (const entry of root.keys()) if (entry.startsWith(OPFS_PREFIX) && /^[A-Za-z0-9]+$/.test(entry.slice(OPFS_PREFIX.length))) stale.push(entry);
  } catch {
    return;
  }
  for (const entry of stale) {
    // Taking the lock only where it is free means its owner is gone; removing while holding it keeps a racing
    // sweeper in another tab from doing the same at once.
    await locks.request(entry, { mode: 'exclusive', ifAvailable: true }, async (lock) => {
      if (lock === null) return;
      try {
        await root.removeEntry(entry, { recursive: true });
      } catch {
        // removed by another sweeper, or a file in it is still open somewhere: leave it
      }
    });
  }
}

// ---- shared ----

/** 16 random hex digits, for names no other process or tab picks. */
export function randomSuffix(): string {
  const bytes = new Uint8Array(8);
  globalThis.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

function checkName(name: string, taken: Set<string>): void {
  if (typeof name !== 'string' || !FILE_NAME.test(name) || name === 'owner') {
    throw new EdgeLLMError('BAD_ARGUMENT', `spill file name must be letters, digits, '.', '_' or '-' (not 'owner'), got ${JSON.stringify(name)}`);
  }
  if (taken.has(name)) throw new EdgeLLMError('BAD_ARGUMENT', `spill file ${name} exists already`);
}

function checkRange(file: string, offset: number, length: number, size: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(offset + length)) {
    throw new EdgeLLMError('BAD_ARGUMENT', `spill file ${file}: bad offset ${offset}`);
  }
  if (offset + length > size) throw new EdgeLLMError('TRUNCATED', `spill file ${file} holds ${size} bytes; cannot read ${length} at ${offset}`);
}

/** A full disk is the budget's problem (BUDGET); any other I/O failure means the medium failed (BAD_SOURCE). */
function ioError(what: string, err: unknown): EdgeLLMError {
  if (err instanceof EdgeLLMError) return err;
  const code = (err as { code?: string; name?: string })?.code ?? (err as { name?: string })?.name;
  const full = code === 'ENOSPC' || code === 'EDQUOT' || code === 'QuotaExceededError';
  return new EdgeLLMError(full ? 'BUDGET' : 'BAD_SOURCE', `${what}: ${(err as Error)?.message ?? err}${full ? ' (the disk is full)' : ''}`, { cause: err });
}

/**
 * A SpillFile over a platform's positional reads and writes (Node fs, an OPFS sync access handle), which may move
 * fewer bytes than asked: both loop until done, and a read or write that moves nothing is an error, not a hang.
 */
function positionalFile(
  name: string, where: string, disposed: () => boolean,
  io: { read(into: Uint8Array, at: number): number; write(data: Uint8Array, at: number): number },
): SpillFile {
  let size = 0;
  const live = () => {
    if (disposed()) throw new EdgeLLMError('DISPOSED', `spill file ${where} was disposed`);
  };
  const loop = (what: 'read' | 'write', offset: number, bytes: Uint8Array) => {
    let done = 0;
    while (done < bytes.length) {
      let n: number;
      try {
        n = io[what](bytes.subarray(done), offset + done);
      } catch (err) {
        throw ioError(`cannot ${what} spill file ${where}`, err);
      }
      if (n <= 0) {
        if (what === 'read') throw new EdgeLLMError('TRUNCATED', `spill file ${where} ended at ${offset + done} of ${offset + bytes.length} bytes`);
        throw ioError(`cannot write spill file ${where}`, new Error('the write made no progress'));
      }
      done += n;
    }
  };
  return {
    name,
    read(offset, into) {
      live();
      checkRange(where, offset, into.length, size);
      loop('read', offset, into);
    },
    write(offset, data) {
      live();
      checkRange(where, offset, data.length, Infinity);
      loop('write', offset, data);
      size = Math.max(size, offset + data.length);
    },
    size: () => size,
  };
}
