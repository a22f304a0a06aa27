/**
 * A pool of kernel instances on one shared WebAssembly.Memory (docs/threads.md): the calling thread is worker 0, and
 * threads − 1 workers each instantiate the same shared-memory kernel module on the same memory. A job is one kernel
 * export over a list of parts, each with its own arguments (its own rows, tokens or heads); every thread, the caller
 * included, takes the next part left until none is, so a thread held back (by the OS, or a slower core of a phone's
 * big.LITTLE set) takes fewer parts rather than holding up the others. Dispatch goes through a control block in the
 * shared memory with Atomics: no postMessage per job, since a decode step runs hundreds of kernels and dispatch must
 * cost microseconds.
 *
 *   const pool = await KernelPool.start({ module, memory, control, threads: 4 });
 *   pool.run('matmul_q4_0', [argsOfPart0, argsOfPart1, null, argsOfPart3]);  // null: no part there
 *   await pool.dispose();
 *
 * run() is synchronous (the caller waits with Atomics.wait after a short spin), so it slots into the synchronous
 * forward pass. That wait is allowed in Node, Deno, Bun and in Web workers; a browser page's main thread may not wait,
 * and spins instead (docs/threads.md).
 */
import { EdgeLLMError } from '../errors.js';
import { instantiateKernels, type Kernels } from './kernels.js';
import { CONTROL, workerSource } from './pool-worker.js';

export { CONTROL } from './pool-worker.js';

/** How workers are started: Node `worker_threads`, or the Web `Worker` (Deno, Bun, browsers). */
export type PoolPlatform = 'node' | 'web';

export interface PoolOptions {
  /** A shared-memory kernel build (build/edgellm-{simd,relaxed}-shared.wasm: packagedWasmUrl(build, true) in kernels.ts), compiled. */
  module: WebAssembly.Module;
  /** The memory every instance imports: `new WebAssembly.Memory({ initial, maximum, shared: true })`. */
  memory: WebAssembly.Memory;
  /** Byte offset of the control block in memory (8-aligned, controlBytes(threads) bytes, inside the memory's current size). */
  control: number;
  /** Threads in all, the caller included: threads − 1 workers are started. */
  threads: number;
  /** Default: what threadSupport() finds. */
  platform?: PoolPlatform;
}

/** Most threads a pool takes: far past any phone or desktop, and it bounds the control block. */
export const MAX_THREADS = 256;

/**
 * Most parts one job may have with `threads` threads: enough for several per thread, so they balance out. Always below
 * the ticket's part mask (2048 at MAX_THREADS against 4095), which run() uses as the closed ticket.
 */
export function maxParts(threads: number): number {
  return Math.max(16, 8 * threads);
}

/** Bytes of the control block for `threads` threads. */
export function controlBytes(threads: number): number {
  return countersAt(threads) + 8 * Math.ceil(threads / 2);
}

/** Offset in the control block of the threads' taken-part counters. */
function countersAt(threads: number): number {
  return CONTROL.HEADER_BYTES + maxParts(threads) * CONTROL.SLOT_BYTES;
}

/**
 * The cores this runtime reports: Node's os.availableParallelism (through process.getBuiltinModule, so no import of
 * it reaches the browser bundle), else navigator.hardwareConcurrency, else 1.
 */
export function availableCores(): number {
  const g = globalThis as { navigator?: { hardwareConcurrency?: number }; process?: NodeProcessLike };
  // 'os', not 'node:os': the browser bundle must hold no node: specifier (scripts/build.mjs checks), and this branch
  // only runs where process.getBuiltinModule exists
  const os = g.process?.getBuiltinModule?.('os') as { availableParallelism?: () => number } | undefined;
  const n = os?.availableParallelism?.() ?? g.navigator?.hardwareConcurrency ?? 1;
  return Number.isSafeInteger(n) && n >= 1 ? n : 1;
}

/** Whether this runtime can run a pool, and how; else why not (for model.info.threads). */
export function threadSupport(): { platform: PoolPlatform } | { reason: string } {
  const g = globalThis as { crossOriginIsolated?: boolean; Worker?: unknown; process?: NodeProcessLike };
  if (typeof SharedArrayBuffer !== 'function') {
    return { reason: g.crossOriginIsolated === false ? 'no SharedArrayBuffer (not cross-origin isolated)' : 'no SharedArrayBuffer' };
  }
  // Node's worker_threads where the runtime has them (Node, and Deno and Bun, which also have the Web Worker): only
  // those can be unref'd, and Deno keeps a process alive while a Web Worker lives. getBuiltinModule (Node 20.16+, Deno
  // 2, Bun) tells a real runtime from a bundler's `process` shim; older Node 20 has no Web Worker.
  if (typeof g.process?.getBuiltinModule === 'function') return { platform: 'node' };
  if (typeof g.Worker === 'function') return { platform: 'web' };
  if (g.process?.versions?.node) return { platform: 'node' };
  return { reason: 'no Worker in this runtime' };
}

interface NodeProcessLike {
  versions?: { node?: string };
  getBuiltinModule?: (id: string) => unknown;
}

/**
 * A worker that could not start (a Content-Security-Policy without worker-src blob:, a runtime that refuses the
 * worker): the model then runs on one thread and says why, as it does without SharedArrayBuffer (a staging worker
 * the options did not ask for: the forward pass stages each layer on its own thread).
 */
export class WorkerStartError extends EdgeLLMError {
  constructor(message: string) {
    super('WASM', message);
  }
}

/** What the pool needs of a Node or Web worker. */
export interface PoolWorker {
  terminate(): Promise<unknown> | void;
}

interface NodeWorker extends PoolWorker {
  on(event: 'message' | 'error' | 'exit', listener: (value: never) => void): void;
  unref(): void;
}
type NodeWorkerClass = new (source: string, options: { eval: true; workerData: unknown }) => NodeWorker;

interface WorkerInit {
  module: WebAssembly.Module;
  memory: WebAssembly.Memory;
  control: number;
  index: number;
  names: string[];
  /** byte offset of the per-thread taken-part counters */
  counters: number;
}

type ReadyMessage = { ready: true } | { error: string };

/**
 * A Web worker's word that it left its loop; it then closes itself. stopWorker() waits for it, and for the close to
 * settle, and terminates only a worker that did not answer.
 *
 * Chromium, when a worker's nested worker is still closing while the outer one closes (a model worker ends right after
 * disposing its pool), now and then leaves both threads waiting forever, the outer one never freed. Terminating the
 * nested worker makes that more frequent; waiting EXIT_SETTLE_MS after its word made it vanish in
 * scripts/dispose-loop.mjs (figures in docs/threads.md). The Web has no event for a worker's end, hence the fixed wait.
 */
const webExits = new WeakMap<object, { done: Promise<void>; resolve: () => void }>();
/** How long stopWorker() waits for a Web worker to leave its loop before terminating it. */
const EXIT_GRACE_MS = 1000;
/** How long stopWorker() then lets a Web worker's own close finish (see webExits). */
const EXIT_SETTLE_MS = 250;

export async function nodeWorkerClass(): Promise<NodeWorkerClass> {
  const p = (globalThis as { process?: NodeProcessLike }).process;
  // Reached at run time only, so no bundle (browser, Workers) sees a Node built-in: getBuiltinModule where this Node has
  // it (20.16+), else an import whose specifier bundlers do not follow.
  const mod = (p?.getBuiltinModule?.('worker_threads') ??
    (await import(/* @vite-ignore */ ['node', 'worker_threads'].join(':')))) as { Worker: NodeWorkerClass };
  return mod.Worker;
}

/**
 * Starts one worker and resolves once it has instantiated the module (its only message). After that, its death (an
 * error outside a kernel, an exit nobody asked for) is reported to onLost. `label` names it in either message.
 */
export function startWorker<Init extends { index: number }>(
  platform: PoolPlatform,
  init: Init,
  NodeWorker: NodeWorkerClass | undefined,
  onLost: (why: string) => void,
  source: (platform: PoolPlatform) => string = workerSource,
  label = `kernel pool worker ${init.index}`,
): Promise<PoolWorker> {
  return new Promise((resolve, reject) => {
    let ready = false;
    const fail = (why: string) => (ready ? onLost(`${label} ${why}`) : reject(new WorkerStartError(`${label} did not start: ${why}`)));
    const onMessage = (worker: PoolWorker, m: ReadyMessage) => {
      if (!('ready' in m)) return fail(m.error);
      ready = true;
      resolve(worker);
    };
    if (platform === 'node') {
      const worker = new NodeWorker!(source('node'), { eval: true, workerData: init });
      worker.on('message', (m: ReadyMessage) => onMessage(worker, m));
      worker.on('error', (e: Error) => fail(`failed: ${e.message}`));
      worker.on('exit', (code: number) => fail(`exited with code ${code}`));
    } else {
      const url = URL.createObjectURL(new Blob([source('web')], { type: 'text/javascript' }));
      const worker = new Worker(url, { type: 'module' });
      // Revoked once the worker has run (Bun reads the URL after the constructor returns).
      worker.onmessage = (e: MessageEvent<ReadyMessage | { exited: true }>) => {
        URL.revokeObjectURL(url);
        if ('exited' in e.data) webExits.get(worker)?.resolve();
        else onMessage(worker, e.data);
      };
      let resolveExit!: () => void;
      webExits.set(worker, { done: new Promise<void>((r) => (resolveExit = r)), resolve: () => resolveExit() });
      worker.onerror = (e: ErrorEvent) => {
        URL.revokeObjectURL(url);
        e.preventDefault?.();
        // A refused script (a Content-Security-Policy without worker-src blob:) gives an event with no message.
        fail(e.message ? `failed: ${e.message}` : 'its script was refused or did not load (a Content-Security-Policy needs worker-src blob: for the kernel pool)');
      };
      worker.postMessage(init);
    }
  });
}

export class KernelPool {
  private readonly words: Int32Array;
  private readonly args: Float64Array;
  private readonly taken: Int32Array;
  private readonly exportIndex: Map<string, number>;
  /** Most parts a job may have (the control block's slots). */
  readonly maxParts: number;
  private disposed = false;
  private canWait = true;
  /**
   * Why a worker is gone, once one is (set from its exit or error event, so seen between jobs: the forward pass runs
   * synchronously, and a worker killed in the middle of a job would leave that job waiting; nothing of ours kills one
   * then, since dispose() cannot run during a job and the kernels allocate nothing).
   */
  private lost: string | undefined;

  private constructor(
    /** Threads in all, the caller's included. */
    readonly threads: number,
    /** The caller's own instance (worker 0), usable directly for work that is not split. */
    readonly kernels: Kernels,
    private readonly workers: PoolWorker[],
    memory: WebAssembly.Memory,
    control: number,
    names: string[],
  ) {
    // Views taken once: a shared memory's buffer is never detached (grow only makes a longer one), and the control
    // block lies inside the current size.
    this.words = new Int32Array(memory.buffer, control, CONTROL.HEADER_BYTES >> 2);
    this.maxParts = maxParts(threads);
    this.args = new Float64Array(memory.buffer, control + CONTROL.HEADER_BYTES, (this.maxParts * CONTROL.SLOT_BYTES) >> 3);
    this.taken = new Int32Array(memory.buffer, control + countersAt(threads), threads);
    this.exportIndex = new Map(names.map((n, i) => [n, i]));
  }

  /** Parts each thread has taken since the pool started (thread 0 is the caller). */
  partsTaken(): number[] {
    return Array.from({ length: this.threads }, (_, i) => Atomics.load(this.taken, i));
  }

  static async start(options: PoolOptions): Promise<KernelPool> {
    const { module, memory, control, threads } = options;
    if (!Number.isInteger(threads) || threads < 1 || threads > MAX_THREADS) {
      throw new EdgeLLMError('BAD_ARGUMENT', `threads must be an integer from 1 to ${MAX_THREADS}, got ${threads}`);
    }
    const size = memory.buffer.byteLength;
    if (typeof SharedArrayBuffer !== 'function' || !(memory.buffer instanceof SharedArrayBuffer)) {
      throw new EdgeLLMError('BAD_ARGUMENT', 'the kernel pool needs a shared memory (new WebAssembly.Memory({ ..., shared: true }))');
    }
    if (!Number.isInteger(control) || control % 8 !== 0 || control < 0 || control + controlBytes(threads) > size) {
      throw new EdgeLLMError('BAD_ARGUMENT', `the control block (${controlBytes(threads)} bytes at ${control}) must be 8-aligned and inside the memory`);
    }
    let kernels: Kernels;
    try {
      kernels = await instantiateKernels(module, memory);
    } catch (e) {
      throw new EdgeLLMError('WASM', `cannot instantiate the kernel module on a shared memory (is it a -shared build?): ${(e as Error).message}`, { cause: e });
    }
    const names = WebAssembly.Module.exports(module).filter((e) => e.kind === 'function').map((e) => e.name);
    // A fresh block: generation 0, nothing running, no error.
    new Uint8Array(memory.buffer, control, controlBytes(threads)).fill(0);
    const platform = options.platform ?? (() => {
      const s = threadSupport();
      if ('reason' in s) throw new EdgeLLMError('WASM', `cannot start kernel workers: ${s.reason}`);
      return s.platform;
    })();
    const NodeWorker = platform === 'node' && threads > 1 ? await nodeWorkerClass() : undefined;
    let pool: KernelPool | undefined;
    let lost: string | undefined;
    const onLost = (why: string) => {
      lost ??= why;
      if (pool && !pool.disposed) pool.lost ??= why;
    };
    const started = await Promise.allSettled(
      Array.from({ length: threads - 1 }, (_, i) => startWorker(platform, { module, memory, control, index: i + 1, names, counters: control + countersAt(threads) }, NodeWorker, onLost)),
    );
    const workers = started.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
    const failed = started.find((s) => s.status === 'rejected');
    if (failed) {
      await Promise.all(workers.map((w) => w.terminate()));
      throw (failed as PromiseRejectedResult).reason;
    }
    // Idle workers must not keep a Node process alive (one that never disposed its model still exits).
    for (const w of workers) (w as Partial<NodeWorker>).unref?.();
    pool = new KernelPool(threads, kernels, workers, memory, control, names);
    pool.lost = lost;
    return pool;
  }

  /**
   * Runs kernels[name](...argsPerPart[i]) for every part, each on whichever thread takes it first (the caller's
   * included), and returns when every part is done; null parts are skipped. A kernel that throws (a trap) in any part
   * is a WASM error, after every part has finished.
   */
  run(name: keyof Kernels & string, argsPerPart: readonly (readonly number[] | null | undefined)[]): void {
    if (this.disposed) throw new EdgeLLMError('DISPOSED', 'the kernel pool was disposed');
    if (this.lost) throw new EdgeLLMError('WASM', `${this.lost}; load the model again`);
    const fn = this.exportIndex.get(name);
    if (fn === undefined) throw new EdgeLLMError('BAD_ARGUMENT', `the kernel module has no export ${name}`);
    const parts = argsPerPart.filter((a): a is readonly number[] => !!a);
    if (parts.length > this.maxParts) throw new EdgeLLMError('BAD_ARGUMENT', `${parts.length} parts in one job; at most ${this.maxParts} with ${this.threads} threads`);
    const kernel = this.kernels[name] as (...a: number[]) => unknown;
    if (this.threads === 1 || parts.length <= 1) {
      for (let i = 0; i < parts.length; i++) this.runOwn(kernel, name, parts[i], i);
      this.taken[0] += parts.length;
      return;
    }
    const { words: w, args } = this;
    const n = parts.length, MASK = (1 << CONTROL.PART_BITS) - 1;
    const gen = (Atomics.load(w, CONTROL.GEN) + 1) | 0;
    const ticket = (gen << CONTROL.PART_BITS) | 0;
    // Close the ticket under the new generation before anything of the new job is written. A worker that woke for the
    // last job, late, may read this job's FN or PARTS; it reads TICKET after them, so it then sees a generation that is
    // not its own and takes nothing. Without this, it could read the new PARTS (larger than the last job's) beside the
    // last job's spent ticket and take a part of a job that has not started: a part run twice and DONE counted past n,
    // which the caller then waits for forever (the stall of docs/threads.md).
    Atomics.store(w, CONTROL.TICKET, ticket | MASK);
    const slot = CONTROL.SLOT_BYTES >> 3;
    for (let i = 0; i < parts.length; i++) {
      const a = parts[i];
      if (a.length > CONTROL.MAX_ARGS) throw new EdgeLLMError('BAD_ARGUMENT', `at most ${CONTROL.MAX_ARGS} kernel arguments, got ${a.length}`);
      const at = i * slot;
      args[at] = a.length;
      for (let j = 0; j < a.length; j++) args[at + 1 + j] = a[j];
    }
    Atomics.store(w, CONTROL.DONE, 0);
    Atomics.store(w, CONTROL.ERROR, 0);
    Atomics.store(w, CONTROL.FN, fn);
    Atomics.store(w, CONTROL.PARTS, n);
    Atomics.store(w, CONTROL.TICKET, ticket);
    // The generation bump publishes everything above (Atomics are sequentially consistent); workers spinning see it,
    // sleeping ones are woken.
    Atomics.store(w, CONTROL.GEN, gen);
    Atomics.notify(w, CONTROL.GEN);
    // The caller takes parts as the workers do (what it takes it runs from the JS arrays, not the slots).
    let failed: unknown;
    let failedPart = -1;
    for (;;) {
      const t = Atomics.load(w, CONTROL.TICKET);
      const part = t & MASK;
      if (part >= n) break;
      if (Atomics.compareExchange(w, CONTROL.TICKET, t, t + 1) !== t) continue;
      try {
        kernel(...parts[part]);
      } catch (e) {
        if (!failed) [failed, failedPart] = [e, part];
      }
      this.taken[0]++;
      Atomics.add(w, CONTROL.DONE, 1);
    }
    // Every part must be done before returning (or throwing): they write into memory the caller reads next.
    let spins: number = CONTROL.SPIN;
    for (;;) {
      const done = Atomics.load(w, CONTROL.DONE);
      if (done === n) break;
      if (--spins > 0 || !this.canWait) continue;
      // A browser page's main thread may not wait: it spins instead (it is blocked for the job either way).
      this.canWait = waitOn(w, CONTROL.DONE, done);
      spins = CONTROL.SPIN;
    }
    const bad = failed ? failedPart + 1 : Atomics.load(w, CONTROL.ERROR);
    if (bad) this.fail(name, bad - 1, failed);
  }

  private runOwn(kernel: (...a: number[]) => unknown, name: string, args: readonly number[], part: number): void {
    try {
      kernel(...args);
    } catch (e) {
      this.fail(name, part, e);
    }
  }

  private fail(name: string, part: number, cause: unknown): never {
    const why = cause ? `: ${(cause as Error).message}` : '';
    throw new EdgeLLMError('WASM', `kernel ${name} failed in part ${part}${why}`, { cause });
  }

  /**
   * run() with each part's call written as code against a Kernels: part i is called with a recorder and must make
   * exactly one kernel call, which a thread then makes for real. So the host's own call sites split as they are:
   *
   *   pool.runParts(ranges.map(([r0, r1]) => (k) => m.kernel.matmul(k, rowSlice(m, r0, r1), a, y + 4 * r0, 1)));
   *
   * null parts are skipped.
   */
  runParts(parts: readonly (((k: Kernels) => void) | null | undefined)[]): void {
    const job = recordJob(parts);
    if (job) this.run(job.name, job.parts);
  }

  /** Stops every worker (they leave their loop on the exit command; terminate is the backstop). Idempotent. */
  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    Atomics.store(this.words, CONTROL.CMD, CONTROL.CMD_EXIT);
    Atomics.add(this.words, CONTROL.GEN, 1);
    Atomics.notify(this.words, CONTROL.GEN);
    await Promise.all(this.workers.map(stopWorker));
  }
}

/**
 * Atomics.wait(words, index, value, timeoutMs), where this thread may wait; false where it may not (a browser page's
 * main thread, where Atomics.wait throws), for the caller to spin instead from then on.
 */
export function waitOn(words: Int32Array, index: number, value: number, timeoutMs?: number): boolean {
  try {
    Atomics.wait(words, index, value, timeoutMs);
    return true;
  } catch {
    return false;
  }
}

/**
 * Ends a worker that was told to leave its loop: a Node one is terminated; a Web one closes itself (webExits), and is
 * terminated only if it does not say it left in EXIT_GRACE_MS.
 */
export async function stopWorker(w: PoolWorker): Promise<void> {
  const exit = webExits.get(w);
  if (exit) {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const exited = await Promise.race([exit.done.then(() => true), new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), EXIT_GRACE_MS)))]);
    clearTimeout(timer);
    if (exited) {
      await new Promise((resolve) => setTimeout(resolve, EXIT_SETTLE_MS));
      return;
    }
  }
  await w.terminate();
}

/** A job as run() takes it: one kernel, and each part's arguments. */
export interface Job {
  name: keyof Kernels & string;
  parts: number[][];
}

/**
 * The job that runParts(parts) runs, recorded and not run: for a caller that issues the same job again and again (a
 * decode step's matmuls) and keeps it, to skip recording it every time.
 */
export function recordJob(parts: readonly (((k: Kernels) => void) | null | undefined)[]): Job | undefined {
  let name: string | undefined;
  const args: number[][] = [];
  parts.forEach((part, i) => {
    if (!part) return;
    const calls = recordCalls(part);
    if (calls.length !== 1) throw new EdgeLLMError('BAD_ARGUMENT', `part ${i} made ${calls.length} kernel calls, not one`);
    if (name !== undefined && calls[0].name !== name) {
      throw new EdgeLLMError('BAD_ARGUMENT', `part ${i} calls ${calls[0].name}, another part ${name}: a job runs one kernel`);
    }
    name = calls[0].name;
    args.push(calls[0].args);
  });
  return name === undefined ? undefined : { name: name as Job['name'], parts: args };
}

/**
 * The kernel calls `part` makes, recorded instead of run: through one recorder for every part (runParts runs for every
 * matmul of a decode step, so it allocates no Proxy per call).
 */
const recorded: { name: string; args: number[] }[] = [];
const recorder = new Proxy({} as Kernels, { get: (_, name) => (...args: number[]) => void recorded.push({ name: String(name), args }) });
function recordCalls(part: (k: Kernels) => void): { name: string; args: number[] }[] {
  recorded.length = 0;
  part(recorder);
  return recorded.splice(0);
}
