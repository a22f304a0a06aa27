/**
 * The kernel pool's worker, as source text (docs/threads.md). It is started from this text, not from a file: Node runs
 * it with `new Worker(text, { eval: true })`, Deno, Bun and browsers from a Blob URL. So the same code runs from the
 * TypeScript sources under vitest (Node 20 workers cannot load .ts files) and from any bundle (ours in dist/, or an app's
 * bundler, which would otherwise have to find and copy a worker file), and nothing is fetched at start.
 *
 * It must stay plain JavaScript with no imports; CONTROL reaches it as a literal (see workerSource).
 */
/**
 * The control block (int32 words, then f64 argument slots), at a byte offset the host plans (8-aligned). A job is one
 * kernel export over a list of parts; any thread may run any part, each taking the next one left (ggml's chunking), so
 * a thread that the OS or a slower core holds back takes fewer parts instead of holding every other thread up. The
 * bytes do not depend on who runs what: each part writes its own outputs.
 * - GEN: job generation, bumped by the caller to start a job (idle workers wait on it);
 * - CMD: 0 run, 1 exit (dispose);
 * - FN: the job's export, as an index into the export names handed to every worker at start;
 * - PARTS: the job's part count;
 * - TICKET (its own 64-byte line): the job's generation (high bits) and its next untaken part (low PART_BITS bits).
 *   A part is taken by a compare-exchange that keeps the generation, so a worker that wakes late, still holding an
 *   older generation, can never take a part of a newer job. The caller closes it first (the new generation, part
 *   MASK, past any job's parts) before it writes the new job's FN, PARTS and slots, so a worker reading those new
 *   words reads a ticket it cannot take after them;
 * - DONE (its own line): parts finished in this job (the caller waits on it);
 * - ERROR: 0, or 1 + the index of the first part whose kernel threw;
 * - from HEADER_BYTES, one SLOT_BYTES slot per part: f64 argc, then up to MAX_ARGS arguments as f64 (exact for every
 *   i32 pointer, count and f32 the kernels take);
 * - after the slots, one int32 per thread: parts it has taken so far (each thread writes only its own), which shows the
 *   work really spreads (a pool whose workers never took a part would still compute the right bytes).
 */
export const CONTROL = {
  GEN: 0,
  CMD: 1,
  FN: 2,
  PARTS: 3,
  TICKET: 16,
  DONE: 32,
  ERROR: 33,
  CMD_RUN: 0,
  CMD_EXIT: 1,
  PART_BITS: 12,
  HEADER_BYTES: 192,
  SLOT_BYTES: 128,
  MAX_ARGS: 15,
  /** Atomics.load polls before sleeping (about 140 µs here): meant to outlast the gaps between a decode step's jobs. */
  SPIN: 20000,
} as const;

// One job: wait for the generation to move, take parts until none is left, count each done. The caller (worker 0)
// never posts per job; the one message each way is at start ('ready', or why it could not instantiate).
const MAIN = String.raw`
function poolWorker(init, post) {
  const { module, memory, control, index, names, counters } = init;
  let fns;
  try {
    const instance = new WebAssembly.Instance(module, { env: { memory } });
    fns = names.map((n) => instance.exports[n]);
  } catch (e) {
    post({ error: String((e && e.message) || e) });
    return;
  }
  const w = new Int32Array(memory.buffer, control, C.HEADER_BYTES >> 2);
  const slots = new Float64Array(memory.buffer, control + C.HEADER_BYTES);
  const taken = new Int32Array(memory.buffer, counters + 4 * index, 1);
  const SLOT = C.SLOT_BYTES >> 3, MASK = (1 << C.PART_BITS) - 1, GEN_MASK = (1 << (32 - C.PART_BITS)) - 1;
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
    const fn = fns[Atomics.load(w, C.FN)], parts = Atomics.load(w, C.PARTS), gen = seen & GEN_MASK;
    for (;;) {
      const t = Atomics.load(w, C.TICKET);
      const part = t & MASK;
      if (t >>> C.PART_BITS !== gen || part >= parts) break;
      if (Atomics.compareExchange(w, C.TICKET, t, t + 1) !== t) continue;
      const at = part * SLOT;
      args.length = slots[at];
      for (let i = 0; i < args.length; i++) args[i] = slots[at + 1 + i];
      try {
        fn.apply(undefined, args);
      } catch (e) {
        Atomics.compareExchange(w, C.ERROR, 0, part + 1);
      }
      taken[0]++;
      // Whoever finishes the last part wakes the caller (if it went to sleep).
      if (Atomics.add(w, C.DONE, 1) === parts - 1) Atomics.notify(w, C.DONE);
    }
  }
}
`;

// Node runs an eval'd worker as CommonJS, or as an ES module where the parent has --input-type=module: getBuiltinModule
// (Node 20.16+) works in both, then require (CommonJS), then import(). The text never says require followed by a
// parenthesis: scripts/build.mjs rejects that in the browser bundle, which will carry this source.
const nodeStart = (entry: string) => String.raw`
const wt = globalThis.process.getBuiltinModule?.('worker_threads') ?? (typeof require === 'function' ? require : null)?.call(null, 'worker_threads');
const startNode = ({ parentPort, workerData }) => ${entry}(workerData, (m) => parentPort.postMessage(m));
if (wt) startNode(wt); else import('worker_threads').then(startNode);
`;

/**
 * A worker's source for a platform: Node (worker_threads, init in workerData) or Web (Worker, init as the first
 * message); `body` defines the function `entry(init, post)`, which returns when the worker is to end.
 */
export function workerScript(platform: 'node' | 'web', body: string, entry: string): string {
  const constants = `const C = ${JSON.stringify(CONTROL)};\n`;
  const start = platform === 'node'
    ? nodeStart(entry)
    : `self.onmessage = (e) => { self.onmessage = null; ${entry}(e.data, (m) => self.postMessage(m)); self.postMessage({ exited: true }); self.close(); };\n`;
  return constants + body + start;
}

/** The kernel pool worker's source. */
export function workerSource(platform: 'node' | 'web'): string {
  return workerScript(platform, MAIN, 'poolWorker');
}
