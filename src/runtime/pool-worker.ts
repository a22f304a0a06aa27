/**
 * The kernel pool's worker, as source text (docs/threads.md). It is started from this text, not from a file: Node runs
 * it with `new Worker(text, { eval: true })`, Deno, Bun and browsers from a Blob URL. So the same code runs from the
 * TypeScript sources under vitest (Node 20 workers cannot load .ts files) and from any bundle (ours in dist/, or an app's
 * bundler, which would otherwise have to find and copy a worker file), and nothing is fetched at start.
 *
 * It must stay plain JavaScript with no imports; CONTROL reaches it as a literal (see workerSource).
 */
/**
 * The control block (int32 words, then f64 argument slots), at a byte offset the host plans (8-aligned):
 * - GEN: job generation, bumped by the caller to start a job (workers wait on it);
 * - CMD: 0 run, 1 exit (dispose);
 * - FN: the job's export, as an index into the export names handed to every worker at start;
 * - DONE (its own 64-byte line, away from the words the caller writes): workers finished with this job (the caller waits on it);
 * - ERROR: 0, or 1 + the index of the first worker whose kernel threw;
 * - from HEADER_BYTES, one SLOT_BYTES slot per thread: f64 argc (−1: no work for this thread), then up to MAX_ARGS
 *   arguments as f64 (exact for every i32 pointer, count and f32 the kernels take). Slot 0 is the caller's and unused.
 */
export const CONTROL = {
  GEN: 0,
  CMD: 1,
  FN: 2,
  DONE: 16,
  ERROR: 17,
  CMD_RUN: 0,
  CMD_EXIT: 1,
  HEADER_BYTES: 128,
  SLOT_BYTES: 128,
  MAX_ARGS: 15,
  /** Atomics.load polls before sleeping (about 140 µs here): meant to outlast the gaps between a decode step's jobs. */
  SPIN: 20000,
} as const;

// One job: wait for the generation to move, run this worker's slice, count it done. The caller (worker 0) never
// posts per job; the one message each way is at start ('ready', or why it could not instantiate).
const MAIN = String.raw`
function poolWorker(init, post) {
  const { module, memory, control, index, threads, names } = init;
  let fns;
  try {
    const instance = new WebAssembly.Instance(module, { env: { memory } });
    fns = names.map((n) => instance.exports[n]);
  } catch (e) {
    post({ error: String((e && e.message) || e) });
    return;
  }
  const w = new Int32Array(memory.buffer, control, C.HEADER_BYTES >> 2);
  const a = new Float64Array(memory.buffer, control + C.HEADER_BYTES + index * C.SLOT_BYTES, C.SLOT_BYTES >> 3);
  const args = [];
  let seen = Atomics.load(w, C.GEN);
  post({ ready: true });
  for (;;) {
    // A short spin catches the next op of a decode step without a futex round trip; then sleep until notified.
    let spins = C.SPIN;
    while (Atomics.load(w, C.GEN) === seen) {
      if (--spins > 0) continue;
      Atomics.wait(w, C.GEN, seen);
      spins = C.SPIN;
    }
    seen = Atomics.load(w, C.GEN);
    if (Atomics.load(w, C.CMD) === C.CMD_EXIT) return;
    const argc = a[0];
    if (argc >= 0) {
      args.length = argc;
      for (let i = 0; i < argc; i++) args[i] = a[1 + i];
      try {
        fns[Atomics.load(w, C.FN)].apply(undefined, args);
      } catch (e) {
        Atomics.compareExchange(w, C.ERROR, 0, index + 1);
      }
    }
    // The last worker in wakes the caller (if it went to sleep).
    if (Atomics.add(w, C.DONE, 1) === threads - 2) Atomics.notify(w, C.DONE);
  }
}
`;

// Node runs an eval'd worker as CommonJS, or as an ES module where the parent has --input-type=module: getBuiltinModule
// (Node 20.16+) works in both, then require (CommonJS), then import(). The text never says require followed by a
// parenthesis: scripts/build.mjs rejects that in the browser bundle, which will carry this source.
const NODE_START = String.raw`
const wt = globalThis.process.getBuiltinModule?.('worker_threads') ?? (typeof require === 'function' ? require : null)?.call(null, 'worker_threads');
const startNode = ({ parentPort, workerData }) => poolWorker(workerData, (m) => parentPort.postMessage(m));
if (wt) startNode(wt); else import('worker_threads').then(startNode);
`;

/** The worker's source for a platform: Node (worker_threads, init in workerData) or Web (Worker, init as the first message). */
export function workerSource(platform: 'node' | 'web'): string {
  const constants = `const C = ${JSON.stringify(CONTROL)};\n`;
  const start = platform === 'node'
    ? NODE_START
    : `self.onmessage = (e) => { self.onmessage = null; poolWorker(e.data, (m) => self.postMessage(m)); self.close(); };\n`;
  return constants + MAIN + start;
}
