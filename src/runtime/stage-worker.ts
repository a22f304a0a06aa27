/**
 * Staging ahead: a worker that copies the next streamed layer's image into its slot while the forward pass runs the
 * current layer. The forward pass is synchronous JavaScript, so the copy needs a thread of its own; it writes straight
 * into the (shared) wasm memories, from the warm images (SharedArrayBuffers) or, in Node, Deno and Bun, from the spill
 * file opened by path (an OPFS sync access handle belongs to the worker that opened it, so cold layers in browsers
 * stay staged on the forward pass's thread).
 *
 * One request at a time, through three words of a small SharedArrayBuffer: REQUEST (layer + 1, or −1 to leave),
 * DONE (the layer + 1 last finished), FAILED (layer + 1 whose copy threw). The forward pass waits on DONE before the
 * layer runs (spinning where it may not Atomics.wait: a browser page's main thread); that Atomics load orders the
 * worker's writes before the kernels' (and the pool's) reads.
 */
import { EdgeLLMError } from '../errors.js';
import { workerScript } from './pool-worker.js';
import { nodeWorkerClass, startWorker, stopWorker, threadSupport, waitOn, type PoolWorker } from './pool.js';

const REQUEST = 0, DONE = 1, FAILED = 2;

const BODY = String.raw`
function stageWorker(init, post) {
  const { memories, images, coldPath, coldAt, slotAt, instanceOf, layerBytes, control } = init;
  const w = new Int32Array(control);
  const heaps = memories.map((m) => new Uint8Array(m));
  let fs, fd = -1;
  try {
    if (coldPath) {
      fs = globalThis.process.getBuiltinModule('fs');
      fd = fs.openSync(coldPath, 'r');
    }
  } catch (e) {
    post({ error: String((e && e.message) || e) });
    return;
  }
  post({ ready: true });
  for (;;) {
    Atomics.wait(w, ${REQUEST}, 0);
    const request = Atomics.load(w, ${REQUEST});
    if (request === 0) continue;
    if (request < 0) break;
    const l = request - 1, n = layerBytes[l];
    const slot = heaps[instanceOf[l]].subarray(slotAt[l], slotAt[l] + n);
    try {
      if (images[l]) slot.set(new Uint8Array(images[l], 0, n));
      else {
        for (let done = 0; done < n; ) {
          const got = fs.readSync(fd, slot, done, n - done, coldAt[l] + done);
          if (got === 0) throw new Error('the spill file ended early');
          done += got;
        }
      }
    } catch (e) {
      Atomics.store(w, ${FAILED}, request);
    }
    Atomics.store(w, ${REQUEST}, 0);
    Atomics.store(w, ${DONE}, request);
    Atomics.notify(w, ${DONE});
  }
  if (fd >= 0) fs.closeSync(fd);
}
`;

/** How long the forward pass waits for one layer's copy before it calls the worker lost (a copy takes milliseconds). */
const WAIT_LIMIT_MS = 60_000;

export interface StageAheadInit {
  /** each kernel instance's (shared) memory */
  memories: SharedArrayBuffer[];
  /** per layer, a warm layer's image (a SharedArrayBuffer the worker reads), else undefined */
  images: Array<SharedArrayBuffer | undefined>;
  /** the spill file's path, when the worker may read cold layers from it (Node, Deno, Bun) */
  coldPath?: string;
  coldAt: number[];
  slotAt: number[];
  instanceOf: number[];
  layerBytes: number[];
}

export class StageAhead {
  /** false once Atomics.wait has refused this thread (a browser page's main thread): wait() spins from then on */
  private canWait = true;

  private constructor(
    private readonly worker: PoolWorker,
    private readonly words: Int32Array,
    /** which layers the worker can copy: warm ones, and cold ones when it has the spill file */
    private readonly canCopy: boolean[],
    /** why the worker is gone, once it is (its exit or error event, seen between forward passes) */
    private readonly status: { lost?: string },
  ) {}

  static async start(init: StageAheadInit): Promise<StageAhead> {
    const support = threadSupport();
    if ('reason' in support) throw new EdgeLLMError('WASM', `cannot stage ahead: ${support.reason}`);
    const control = new SharedArrayBuffer(16);
    const NodeWorker = support.platform === 'node' ? await nodeWorkerClass() : undefined;
    const status: { lost?: string } = {};
    const worker = await startWorker(support.platform, { ...init, control, index: 0 }, NodeWorker, (why) => (status.lost ??= why), (p) => workerScript(p, BODY, 'stageWorker'), 'staging worker');
    // an idle stager must not keep a Node process alive
    (worker as { unref?: () => void }).unref?.();
    const canCopy = init.layerBytes.map((_, l) => init.images[l] !== undefined || (init.coldPath !== undefined && init.coldAt[l] !== undefined));
    return new StageAhead(worker, new Int32Array(control), canCopy, status);
  }

  can(layer: number): boolean {
    return this.canCopy[layer] && this.status.lost === undefined;
  }

  /** Starts copying a layer into its slot; the previous request must have been waited for. */
  request(layer: number): void {
    Atomics.store(this.words, DONE, 0);
    Atomics.store(this.words, REQUEST, layer + 1);
    Atomics.notify(this.words, REQUEST);
  }

  /** Returns once the layer's copy is done; throws if it failed or the worker is gone. */
  wait(layer: number): void {
    const want = layer + 1, t0 = performance.now();
    for (let done = Atomics.load(this.words, DONE); done !== want; done = Atomics.load(this.words, DONE)) {
      if (this.status.lost !== undefined || performance.now() - t0 > WAIT_LIMIT_MS) {
        throw new EdgeLLMError('WASM', `the staging worker did not copy layer ${layer}: ${this.status.lost ?? `no answer in ${WAIT_LIMIT_MS / 1000} s`} (load the model again)`);
      }
      if (this.canWait) this.canWait = waitOn(this.words, DONE, done, 1000);
    }
    if (Atomics.load(this.words, FAILED) === want) {
      Atomics.store(this.words, FAILED, 0);
      throw new EdgeLLMError('WASM', `the staging worker could not copy layer ${layer} into its slot`);
    }
  }

  async dispose(): Promise<void> {
    this.status.lost ??= 'disposed';
    Atomics.store(this.words, REQUEST, -1);
    Atomics.notify(this.words, REQUEST);
    await stopWorker(this.worker);
  }
}
