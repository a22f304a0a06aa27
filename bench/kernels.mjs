// The matmul kernels alone, per weight type and build: `npm run bench:kernels [-- options]`.
//
// Each type's matrix is real GGUF blocks (round-to-nearest from random floats, a few distinct rows repeated) repacked by
// its weight-type row exactly as the loader does, and the activations go through the kernels' own quantize step, so
// the kernels read what they read in a model. Prints GMAC/s for one token (decode: the matrix stays in cache when it
// fits, see --rows) and for a batch (prefill), best of 5 by CPU time: the figures docs/kernels.md quotes.
//
//   --rows R --cols C   matrix shape (default 5632 × 2048, TinyLlama's ffn; 16384 × 4096 reads from DRAM)
//   --types a,b,...     weight types (default: every quantized type)
//   --builds simd,relaxed
//   --tokens N          prefill batch (default 32)
import { build } from 'esbuild';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const { values: opt } = parseArgs({
  options: {
    rows: { type: 'string', default: '5632' },
    cols: { type: 'string', default: '2048' },
    types: { type: 'string' },
    builds: { type: 'string', default: 'simd,relaxed' },
    tokens: { type: 'string', default: '32' },
  },
});
const ROWS = Number(opt.rows), COLS = Number(opt.cols), NT = Number(opt.tokens);
if (!(ROWS > 0 && COLS > 0 && COLS % 256 === 0 && NT > 0)) throw new Error('--rows, --tokens > 0 and --cols a multiple of 256');

// the host's weight-type table and quantizers, bundled from the sources (they are not part of the package's API)
const entry = `export { WEIGHT_TYPES } from './src/model/weight-types.ts';
export { quantizeRow, ROW_FORMATS } from './src/gguf/quantize.ts';
export { typeName } from './src/gguf/types.ts';`;
const out = await build({ stdin: { contents: entry, resolveDir: root, loader: 'ts' }, bundle: true, format: 'esm', write: false, platform: 'neutral', logLevel: 'error' });
const { WEIGHT_TYPES, quantizeRow, ROW_FORMATS, typeName } = await import(`data:text/javascript;base64,${Buffer.from(out.outputFiles[0].text).toString('base64')}`);

const QUANTIZED = [...WEIGHT_TYPES.values()].filter((w) => w.input !== 'f32').map((w) => w.type);
const byName = new Map(QUANTIZED.map((t) => [typeName(t).toLowerCase(), t]));
const types = opt.types ? opt.types.split(',').map((n) => byName.get(n.toLowerCase()) ?? fail(`unknown type ${n}: ${[...byName.keys()].join(', ')}`)) : QUANTIZED;
function fail(msg) {
  throw new Error(msg);
}

/** Deterministic floats in [−1, 1). */
function rng(seed) {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 31) - 1;
}

/** GGUF bytes of ROWS × COLS: 64 distinct quantized rows, repeated. */
function ggufBytes(type) {
  const f = ROW_FORMATS.get(type);
  const rowBytes = (COLS / f.blockSize) * f.blockBytes;
  const r = rng(type + 1);
  const distinct = Array.from({ length: 64 }, () => quantizeRow(type, Float32Array.from({ length: COLS }, () => r() * 0.05)));
  const bytes = new Uint8Array(ROWS * rowBytes);
  for (let i = 0; i < ROWS; i++) bytes.set(distinct[i % 64], i * rowBytes);
  return bytes;
}

const cpu = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

console.log(`kernels: ${ROWS} × ${COLS}, GMAC/s for 1 token / ${NT} tokens, 1 thread, best of 5 by CPU time; the load-time repack in MB/s of GGUF bytes (Node ${process.versions.node}, V8 ${process.versions.v8})`);
for (const buildName of opt.builds.split(',')) {
  const memory = new WebAssembly.Memory({ initial: 1024 });
  const { instance } = await WebAssembly.instantiate(readFileSync(path.join(root, `build/edgellm-${buildName}.wasm`)), { env: { memory } });
  const k = instance.exports;
  let top = (k.heap_base() + 63) & ~63;
  const alloc = (n) => {
    const p = top;
    top = (top + n + 4096 + 63) & ~63; // room for the kernels' lookahead loads
    if (top > memory.buffer.byteLength) memory.grow(Math.ceil((top - memory.buffer.byteLength) / 65536));
    return p;
  };
  // activations in both formats, through the kernels' own quantizers
  const x = alloc(NT * COLS * 4);
  const r = rng(7);
  new Float32Array(memory.buffer, x, NT * COLS).set(Float32Array.from({ length: NT * COLS }, () => r() * 2));
  const act = {
    x,
    q8_0: { q: alloc(NT * COLS), d: alloc((NT * COLS) / 8), s: alloc((NT * COLS) / 8) },
    q8_k: { q: alloc(NT * COLS), d: alloc((NT * COLS) / 64), s: alloc((NT * COLS) / 8) },
  };
  k.quantize_q8_0(x, COLS, NT, act.q8_0.q, act.q8_0.d, act.q8_0.s);
  k.quantize_q8_k(x, COLS, NT, act.q8_k.q, act.q8_k.d, act.q8_k.s);
  const y = alloc(NT * ROWS * 4);
  const mark = top;
  for (const type of types) {
    top = mark;
    const kernel = WEIGHT_TYPES.get(type);
    const layout = kernel.layout(ROWS, COLS);
    const m = { name: 'w', type, kernel, rows: ROWS, cols: COLS, data: alloc(layout.data), scales: layout.scales ? alloc(layout.scales) : 0 };
    const gguf = ggufBytes(type);
    let repackS = Infinity; // the load-time repack, best of 3 by CPU time
    for (let trial = 0; trial < 3; trial++) {
      const t0 = cpu();
      kernel.repack(m, new Uint8Array(memory.buffer), gguf, 0, ROWS);
      repackS = Math.min(repackS, cpu() - t0);
    }
    const res = [];
    for (const ntok of [1, NT]) {
      const reps = Math.max(1, Math.round(2e9 / (ROWS * COLS * ntok) / 20));
      for (let i = 0; i < 3 * reps; i++) kernel.matmul(k, m, act, y, ntok); // V8 tiers hot wasm functions up as they run
      let best = Infinity;
      for (let trial = 0; trial < 5; trial++) {
        const t0 = cpu();
        for (let i = 0; i < reps; i++) kernel.matmul(k, m, act, y, ntok);
        best = Math.min(best, (cpu() - t0) / reps);
      }
      res.push(((ROWS * COLS * ntok) / best / 1e9).toFixed(1));
    }
    const repack = (gguf.length / repackS / 1e6).toFixed(0);
    console.log(`  ${buildName.padEnd(8)} ${typeName(type).padEnd(7)} ${res[0].padStart(6)} / ${res[1].padStart(6)}   repack ${repack.padStart(5)} MB/s`);
  }
}
