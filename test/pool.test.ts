// The kernel pool (src/runtime/pool.ts, docs/threads.md): the shared-memory builds compute what the unshared ones do, a
// matmul split across 1 to 4 threads writes the bytes one call writes, and a disposed pool leaves no worker behind.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { build as esbuild } from 'esbuild';
import { chromium } from 'playwright-core';
import type { Kernels } from '../src/runtime/kernels.js';
import { typeName } from '../src/gguf/types.js';
import { ROW_FORMATS } from '../src/gguf/quantize.js';
import { rowSlice, tokenSlice, WEIGHT_TYPES, type Activations, type Matrix } from '../src/model/weight-types.js';
import { gaussian } from './util/compare.js';
import { controlBytes, KernelPool } from '../src/runtime/pool.js';
import { splitPerTokenOps } from '../src/model/split-ops.js';
import { packagedWasmUrl } from '../src/runtime/kernels.js';
import { ROOT } from './util/shared.js';

type Build = 'simd' | 'relaxed';
const BUILDS: Build[] = ['simd', 'relaxed'];
const wasmBytes = (file: string) => readFileSync(path.join(ROOT, 'build', file));
const sharedModule = (build: Build) => new WebAssembly.Module(readFileSync(packagedWasmUrl(build, true)));

const PAGES = 256; // 16 MiB: room for every test's data, so no view is outgrown
/** A shared memory as the host plans it: created at once, with a maximum. */
const sharedMemory = () => new WebAssembly.Memory({ initial: PAGES, maximum: PAGES * 2, shared: true });
const CONTROL_AT = 64 * 1024; // above the kernels' static data (heap_base is below STATIC_RESERVE)
const DATA_AT = CONTROL_AT + controlBytes(8);

/** A deterministic xorshift stream, so a failure reproduces. */
function random(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 2 ** 32;
  };
}

/**
 * One matmul problem laid out in `memory` from `at`: random repacked Q8_0 and Q4_0 weights (random code bytes and f32
 * scales: the kernels need no particular values) and ntok random activations quantized by quantize_q8_0.
 */
function problem(memory: WebAssembly.Memory, k: Kernels, rows: number, cols: number, ntok: number, seed = 1) {
  const rnd = random(seed);
  const nb = cols / 32;
  const groups = Math.ceil(rows / 4);
  let top = DATA_AT;
  const alloc = (bytes: number) => {
    const p = top;
    top = (top + bytes + 4096 + 63) & ~63; // the kernels' prefetch reads past their data
    if (top > memory.buffer.byteLength) throw new Error('test memory too small');
    return p;
  };
  const heap = new Uint8Array(memory.buffer);
  const bytes = (p: number, n: number) => {
    for (let i = 0; i < n; i++) heap[p + i] = (rnd() * 256) | 0;
  };
  const floats = (p: number, n: number, scale: number) => {
    const f = new Float32Array(memory.buffer, p, n);
    for (let i = 0; i < n; i++) f[i] = (rnd() * 2 - 1) * scale;
  };
  const q8 = { wq: alloc(groups * nb * 128), wd: alloc(groups * nb * 16) };
  const q4 = { wq: alloc(groups * nb * 64), wd: alloc(groups * nb * 16) };
  bytes(q8.wq, groups * nb * 128);
  bytes(q4.wq, groups * nb * 64);
  floats(q8.wd, groups * nb * 4, 0.01);
  floats(q4.wd, groups * nb * 4, 0.01);
  const x = alloc(ntok * cols * 4);
  floats(x, ntok * cols, 3);
  const xq = alloc(ntok * cols), xd = alloc(ntok * nb * 4), xs = alloc(ntok * nb * 4);
  k.quantize_q8_0(x, cols, ntok, xq, xd, xs);
  const y = alloc(ntok * rows * 4);
  return { rows, cols, ntok, nb, groups, q8, q4, x, xq, xd, xs, y };
}
type Problem = ReturnType<typeof problem>;

/** The argument lists of one matmul over all rows and tokens (no split), Q8_0 or Q4_0. */
function wholeArgs(p: Problem, type: 'q8_0' | 'q4_0'): number[] {
  const w = type === 'q8_0' ? p.q8 : p.q4;
  return [w.wq, w.wd, p.xq, p.xd, p.xs, p.y, p.rows, p.cols, p.ntok];
}

/**
 * Decode split (ntok = 1): by row groups of 4, the repacked layouts' unit. Thread i takes groups [g0, g1): its weights
 * start at group g0 (Q8_0: 128 code bytes per group and block, Q4_0: 64; both 16 scale bytes), its output at row 4·g0.
 */
function splitRows(p: Problem, type: 'q8_0' | 'q4_0', threads: number): (number[] | null)[] {
  const codeBytes = type === 'q8_0' ? 128 : 64;
  const w = type === 'q8_0' ? p.q8 : p.q4;
  return Array.from({ length: threads }, (_, i) => {
    const g0 = Math.floor((p.groups * i) / threads), g1 = Math.floor((p.groups * (i + 1)) / threads);
    const r0 = 4 * g0, r1 = Math.min(p.rows, 4 * g1);
    if (r1 <= r0) return null;
    const wq = w.wq + g0 * p.nb * codeBytes, wd = w.wd + g0 * p.nb * 16, y = p.y + r0 * 4;
    return [wq, wd, p.xq, p.xd, p.xs, y, r1 - r0, p.cols, 1];
  });
}

/** Prefill split: by tokens, every thread all rows. Thread i takes tokens [t0, t1): activations and output from t0. */
function splitTokens(p: Problem, type: 'q8_0' | 'q4_0', threads: number): (number[] | null)[] {
  const w = type === 'q8_0' ? p.q8 : p.q4;
  return Array.from({ length: threads }, (_, i) => {
    const t0 = Math.floor((p.ntok * i) / threads), t1 = Math.floor((p.ntok * (i + 1)) / threads);
    if (t1 <= t0) return null;
    const xq = p.xq + t0 * p.cols, xd = p.xd + t0 * p.nb * 4, xs = p.xs + t0 * p.nb * 4, y = p.y + t0 * p.rows * 4;
    return [w.wq, w.wd, xq, xd, xs, y, p.rows, p.cols, t1 - t0];
  });
}

describe('shared-memory kernel builds', () => {
  for (const build of BUILDS) {
    it(`${build}-shared differs from ${build} in the memory import alone`, () => {
      const wat = (f: string) => wasmBytes(f).toString('utf8').replace(/\(import "env" "memory" \(memory \$0 [^)]*\)\)/, 'MEMORY');
      expect(wat(`edgellm-${build}-shared.wat`)).toBe(wat(`edgellm-${build}.wat`));
      expect(wasmBytes(`edgellm-${build}-shared.wat`).toString('utf8')).toContain('(memory $0 1 65536 shared)');
    });

    it(`${build}-shared on a shared memory computes the bytes ${build} computes`, async () => {
      const runOn = async (module: WebAssembly.Module, memory: WebAssembly.Memory) => {
        const k = (await WebAssembly.instantiate(module, { env: { memory } })).exports as unknown as Kernels;
        expect(k.kernel_build()).toBe(build === 'relaxed' ? 1 : 0);
        const out: Uint8Array[] = [];
        for (const [rows, cols, ntok] of [[102, 256, 1], [37, 128, 7]]) {
          const p = problem(memory, k, rows, cols, ntok, rows);
          const take = (at: number, n: number) => out.push(new Uint8Array(memory.buffer, at, n).slice());
          take(p.xq, ntok * cols);
          take(p.xd, ntok * p.nb * 4);
          take(p.xs, ntok * p.nb * 4);
          k.matmul_q8_0(...(wholeArgs(p, 'q8_0') as Parameters<Kernels['matmul_q8_0']>));
          take(p.y, ntok * rows * 4);
          k.matmul_q4_0(...(wholeArgs(p, 'q4_0') as Parameters<Kernels['matmul_q4_0']>));
          take(p.y, ntok * rows * 4);
          k.rmsnorm(p.y, p.x, p.x + 4 * cols, cols, 1, 1e-5);
          take(p.y, cols * 4);
        }
        return out;
      };
      const unshared = await runOn(new WebAssembly.Module(wasmBytes(`edgellm-${build}.wasm`)), new WebAssembly.Memory({ initial: PAGES }));
      const shared = await runOn(sharedModule(build), sharedMemory());
      expect(shared.length).toBe(unshared.length);
      for (let i = 0; i < shared.length; i++) expect(Buffer.from(shared[i]).equals(Buffer.from(unshared[i])), `output ${i}`).toBe(true);
    });
  }

  it('a shared build imports any shared memory up to 65536 pages, and no unshared one', async () => {
    const module = sharedModule('simd');
    await WebAssembly.instantiate(module, { env: { memory: new WebAssembly.Memory({ initial: 2, maximum: 65536, shared: true }) } });
    await expect(WebAssembly.instantiate(module, { env: { memory: new WebAssembly.Memory({ initial: 2 }) } })).rejects.toThrow();
  });
});

describe('KernelPool', () => {
  for (const build of BUILDS) {
    for (const threads of [1, 2, 3, 4]) {
      it(`${build}, ${threads} thread(s): Q8_0 and Q4_0 matmuls split in parts write the bytes of one call`, async () => {
        const memory = sharedMemory();
        const pool = await KernelPool.start({ module: sharedModule(build), memory, control: CONTROL_AT, threads });
        try {
          expect(pool.threads).toBe(threads);
          const k = pool.kernels;
          // 102 rows: 26 groups, the last padded (rows 102, 103 absent); 11 tokens: 4-token tiles and 1-token remainders
          for (const [ntok, split] of [[1, splitRows], [11, splitTokens]] as const) {
            const p = problem(memory, k, 102, 256, ntok, 7 + ntok);
            const y = () => new Uint8Array(memory.buffer, p.y, ntok * p.rows * 4).slice();
            for (const type of ['q8_0', 'q4_0'] as const) {
              const name = `matmul_${type}` as const;
              new Uint8Array(memory.buffer, p.y, ntok * p.rows * 4).fill(0xa5); // what no thread writes stays visible
              (k[name] as (...a: number[]) => void)(...wholeArgs(p, type));
              const want = y();
              // as many parts as threads, and more (parts go to whichever thread is free)
              for (const parts of [threads, 4 * threads]) {
                new Uint8Array(memory.buffer, p.y, ntok * p.rows * 4).fill(0xa5);
                pool.run(name, split(p, type, parts));
                expect(Buffer.from(y()).equals(Buffer.from(want)), `${name}, ntok ${ntok}, ${parts} parts`).toBe(true);
              }
            }
          }
          // Many back-to-back jobs (the decode pattern: workers still spinning), each complete when run returns.
          const p = problem(memory, k, 64, 128, 1, 3);
          (k.matmul_q8_0 as (...a: number[]) => void)(...wholeArgs(p, 'q8_0'));
          const want = new Uint8Array(memory.buffer, p.y, 64 * 4).slice();
          for (let i = 0; i < 200; i++) {
            new Uint8Array(memory.buffer, p.y, 64 * 4).fill(i);
            pool.run('matmul_q8_0', splitRows(p, 'q8_0', 3 * threads));
            expect(Buffer.from(memory.buffer, p.y, 64 * 4).equals(Buffer.from(want))).toBe(true);
          }
        } finally {
          await pool.dispose();
        }
      });
    }
  }

  // Every weight type, split as the forward pass will split it (rowSlice, tokenSlice) and written as the host's own
  // matmul calls (runParts): the pool passes the arguments through exactly, so this is matmul-split.test.ts across threads.
  for (const build of BUILDS) {
    it(`${build}: every weight type split over 3 and 4 threads through runParts writes the bytes of one call`, async () => {
      const ROWS = 26, COLS = 512, NTOK = 11; // 7 row groups, the last padded; 4-token tiles and remainders
      const memory = sharedMemory();
      const heap = new Uint8Array(memory.buffer);
      let top = DATA_AT;
      const alloc = (bytes: number, fill = 0) => {
        const p = top;
        top = (top + bytes + 4096 + 63) & ~63;
        heap.fill(fill, p, p + bytes);
        return p;
      };
      for (const threads of [3, 4]) {
        const pool = await KernelPool.start({ module: sharedModule(build), memory, control: CONTROL_AT, threads });
        try {
          const k = pool.kernels;
          top = DATA_AT;
          const g = gaussian(5);
          const x = alloc(NTOK * COLS * 4);
          new Float32Array(memory.buffer, x, NTOK * COLS).set(Float32Array.from({ length: NTOK * COLS }, () => g()));
          const a: Activations = {
            x,
            q8_0: { q: alloc(NTOK * COLS), d: alloc(NTOK * (COLS / 32) * 4), s: alloc(NTOK * (COLS / 32) * 4) },
            q8_k: { q: alloc(NTOK * COLS), d: alloc(NTOK * (COLS / 256) * 4), s: alloc(NTOK * (COLS / 16) * 2) },
          };
          k.quantize_q8_0(x, COLS, NTOK, a.q8_0.q, a.q8_0.d, a.q8_0.s);
          k.quantize_q8_k(x, COLS, NTOK, a.q8_k.q, a.q8_k.d, a.q8_k.s);
          const groups = Math.ceil(ROWS / 4);
          const part = (n: number, i: number) => [Math.floor((n * i) / threads), Math.floor((n * (i + 1)) / threads)];
          for (const type of WEIGHT_TYPES.keys()) {
            const f = ROW_FORMATS.get(type)!;
            const rowBytes = (COLS / f.blockSize) * f.blockBytes;
            const gguf = new Uint8Array(ROWS * rowBytes);
            const v = new Float32Array(COLS);
            for (let r = 0; r < ROWS; r++) {
              for (let c = 0; c < COLS; c++) v[c] = 0.1 * g();
              f.quantize!(v, gguf.subarray(r * rowBytes, (r + 1) * rowBytes));
            }
            const kernel = WEIGHT_TYPES.get(type)!;
            const layout = kernel.layout(ROWS, COLS);
            const m: Matrix = { name: 'w', type, kernel, rows: ROWS, cols: COLS, data: alloc(layout.data), scales: layout.scales ? alloc(layout.scales) : 0 };
            kernel.repack(m, heap, gguf, 0, ROWS);
            const bytes = (y: number, n: number) => Buffer.from(memory.buffer.slice(y, y + n * 4));

            const one = alloc(ROWS * 4), rowsSplit = alloc(ROWS * 4, 0xa5);
            kernel.matmul(k, m, a, one, 1);
            pool.runParts(Array.from({ length: threads }, (_, i) => {
              const [g0, g1] = part(groups, i);
              const r0 = 4 * g0, r1 = Math.min(ROWS, 4 * g1);
              return r1 > r0 ? (kk: Kernels) => kernel.matmul(kk, rowSlice(m, r0, r1), a, rowsSplit + r0 * 4, 1) : null;
            }));
            expect(bytes(rowsSplit, ROWS).equals(bytes(one, ROWS)), `${typeName(type)}: decode by row groups`).toBe(true);

            const all = alloc(NTOK * ROWS * 4), tokensSplit = alloc(NTOK * ROWS * 4, 0xa5);
            kernel.matmul(k, m, a, all, NTOK);
            pool.runParts(Array.from({ length: threads }, (_, i) => {
              const [t0, t1] = part(NTOK, i);
              return (kk: Kernels) => kernel.matmul(kk, m, tokenSlice(a, COLS, t0), tokensSplit + t0 * ROWS * 4, t1 - t0);
            }));
            expect(bytes(tokensSplit, NTOK * ROWS).equals(bytes(all, NTOK * ROWS)), `${typeName(type)}: prefill by tokens`).toBe(true);
          }
        } finally {
          await pool.dispose();
        }
      }
    });
  }

  it('the parts spread over every thread (a pool whose workers took none would still write the right bytes)', async () => {
    const memory = sharedMemory();
    const threads = 3;
    const pool = await KernelPool.start({ module: sharedModule('simd'), memory, control: CONTROL_AT, threads });
    try {
      const p = problem(memory, pool.kernels, 256, 1024, 1, 5);
      // Until every worker has taken a part: workers spinning or woken take parts within a few jobs; the bound only
      // keeps a broken pool from looping forever.
      for (let job = 0; job < 5000 && pool.partsTaken().some((n) => n === 0); job++) pool.run('matmul_q8_0', splitRows(p, 'q8_0', 4 * threads));
      const taken = pool.partsTaken();
      expect(taken.every((n) => n > 0), `parts taken per thread: ${taken}`).toBe(true);
    } finally {
      await pool.dispose();
    }
  });

  it('a worker that dies is a WASM error at the next job, not a wait forever', async () => {
    const memory = sharedMemory();
    const pool = await KernelPool.start({ module: sharedModule('simd'), memory, control: CONTROL_AT, threads: 3 });
    try {
      const ok = [DATA_AT, DATA_AT, DATA_AT + 4096, 1, 8, 1];
      pool.run('matmul_f32', [ok, ok, ok]);
      // killed from outside, as an out-of-memory worker would be (terminate resolves once its exit event has run)
      await (pool as unknown as { workers: { terminate(): Promise<unknown> }[] }).workers[1].terminate();
      expect(() => pool.run('matmul_f32', [ok, ok, ok])).toThrow(expect.objectContaining({ code: 'WASM', message: expect.stringMatching(/worker 2 exited.*load the model again/) }));
    } finally {
      await pool.dispose();
    }
  });

  // The forward pass's per-token ops (src/model/split-ops.ts) split by token ranges: the bytes of one call.
  for (const build of BUILDS) {
    it(`${build}: norms, RoPE, activations, adds and the activations' quantization split by tokens write the bytes of one call`, async () => {
      const memory = sharedMemory();
      const pool = await KernelPool.start({ module: sharedModule(build), memory, control: CONTROL_AT, threads: 3 });
      try {
        const k = pool.kernels, split = splitPerTokenOps(k, pool);
        const ntok = 37, n = 1024, heads = 8, headDim = n / heads, bytes = ntok * n * 4;
        let top = DATA_AT;
        const alloc = (size: number) => ((top += size + 64), top - size - 64);
        const rnd = gaussian(11);
        const fill = (p: number, count: number) => new Float32Array(memory.buffer, p, count).forEach((_, i, a) => (a[i] = rnd() * 2));
        const x = alloc(bytes), y = alloc(bytes), w = alloc(n * 4), cs = alloc(64 * headDim * 4), table = alloc(65536 * 4);
        const out = alloc(bytes), q = alloc(ntok * n), d = alloc(ntok * (n / 32) * 4), sums = alloc(ntok * (n / 16) * 4);
        fill(w, n), fill(cs, 64 * headDim), fill(table, 65536);
        const ops: Array<[string, (k: Kernels) => void]> = [
          ['rmsnorm', (t) => t.rmsnorm(out, x, w, n, ntok, 1e-5)],
          ['rope', (t) => t.rope(x, heads, headDim, headDim, ntok, cs, 3, 0)],
          ['rope neox', (t) => t.rope(x, heads, headDim, headDim / 2, ntok, cs, 5, 1)],
          ['add_bias', (t) => t.add_bias(x, w, n, ntok)],
          ['add', (t) => t.add(x, y, ntok * n)],
          ['silu_mul', (t) => t.silu_mul(x, y, ntok * n)],
          ['gelu_mul', (t) => t.gelu_mul(x, y, ntok * n, table)],
          ['quantize_q8_0', (t) => t.quantize_q8_0(x, n, ntok, q, d, sums)],
          ['quantize_q8_k', (t) => t.quantize_q8_k(x, n, ntok, q, d, sums)],
        ];
        const state = () => Buffer.from(new Uint8Array(memory.buffer, x, top - x)).toString('base64');
        for (const [name, op] of ops) {
          fill(x, ntok * n), fill(y, ntok * n);
          const before = state();
          op(k);
          const want = state();
          new Uint8Array(memory.buffer, x, top - x).set(Buffer.from(before, 'base64'));
          const taken = pool.partsTaken().reduce((a, b) => a + b);
          op(split);
          expect(pool.partsTaken().reduce((a, b) => a + b), `${name} was split`).toBeGreaterThan(taken + 1);
          expect(state() === want, `${name}: split bytes differ`).toBe(true);
        }
      } finally {
        await pool.dispose();
      }
    });
  }

  it('runParts takes one kernel call per part, the same kernel in every part', async () => {
    const memory = sharedMemory();
    const pool = await KernelPool.start({ module: sharedModule('simd'), memory, control: CONTROL_AT, threads: 2 });
    try {
      const ok = (k: Kernels) => k.matmul_f32(DATA_AT, DATA_AT, DATA_AT + 4096, 1, 8, 1);
      pool.runParts([ok, null]);
      expect(() => pool.runParts([ok, (k) => k.add(DATA_AT, DATA_AT, 4)])).toThrow(expect.objectContaining({ code: 'BAD_ARGUMENT' }));
      expect(() => pool.runParts([ok, () => {}])).toThrow(expect.objectContaining({ code: 'BAD_ARGUMENT' }));
      expect(() => pool.runParts([(k) => (ok(k), ok(k))])).toThrow(expect.objectContaining({ code: 'BAD_ARGUMENT' }));
    } finally {
      await pool.dispose();
    }
  });

  it('a kernel trap in a part is a WASM error after every part is done, and the pool runs on', async () => {
    const memory = sharedMemory();
    const pool = await KernelPool.start({ module: sharedModule('simd'), memory, control: CONTROL_AT, threads: 3 });
    try {
      const out = DATA_AT;
      const ok = [DATA_AT, DATA_AT, out, 1, 8, 1]; // matmul_f32(w, x, y, rows, cols, ntok) over whatever is there
      const trap = [2 ** 31 - 64, DATA_AT, out, 1, 8, 1]; // w past the memory's end
      expect(() => pool.run('matmul_f32', [ok, trap, ok])).toThrow(expect.objectContaining({ code: 'WASM', message: expect.stringContaining('part 1') }));
      expect(() => pool.run('matmul_f32', [trap, ok])).toThrow(expect.objectContaining({ code: 'WASM', message: expect.stringContaining('part 0') }));
      expect(() => pool.run('matmul_f32', [ok, ok, ok, ok, ok, ok, ok, trap])).toThrow(expect.objectContaining({ code: 'WASM', message: expect.stringContaining('part 7') }));
      pool.run('matmul_f32', Array(pool.maxParts).fill(ok));
      expect(() => pool.run('no_such_kernel' as never, [])).toThrow(expect.objectContaining({ code: 'BAD_ARGUMENT' }));
      expect(() => pool.run('matmul_f32', Array(pool.maxParts + 1).fill(ok))).toThrow(expect.objectContaining({ code: 'BAD_ARGUMENT' }));
    } finally {
      await pool.dispose();
    }
    expect(() => pool.run('matmul_f32', [])).toThrow(expect.objectContaining({ code: 'DISPOSED' }));
  });

  it('rejects an unshared memory, a misplaced control block and bad thread counts', async () => {
    const module = sharedModule('simd');
    const memory = sharedMemory();
    await expect(KernelPool.start({ module, memory: new WebAssembly.Memory({ initial: 4 }), control: CONTROL_AT, threads: 2 })).rejects.toMatchObject({ code: 'BAD_ARGUMENT' });
    await expect(KernelPool.start({ module, memory, control: CONTROL_AT + 4, threads: 2 })).rejects.toMatchObject({ code: 'BAD_ARGUMENT' });
    await expect(KernelPool.start({ module, memory, control: PAGES * 65536 - 64, threads: 2 })).rejects.toMatchObject({ code: 'BAD_ARGUMENT' });
    await expect(KernelPool.start({ module, memory, control: CONTROL_AT, threads: 0 })).rejects.toMatchObject({ code: 'BAD_ARGUMENT' });
    await expect(KernelPool.start({ module, memory, control: CONTROL_AT, threads: 1.5 })).rejects.toMatchObject({ code: 'BAD_ARGUMENT' });
    const unsharedBuild = new WebAssembly.Module(wasmBytes('edgellm-simd.wasm'));
    await expect(KernelPool.start({ module: unsharedBuild, memory, control: CONTROL_AT, threads: 2 })).rejects.toMatchObject({ code: 'WASM' });
  });
});

// The pool bundled on its own (as the package bundles its host) and run in a fresh process of each runtime: this
// checks the worker source runs from a bundle, that Deno and Bun run it (through their worker_threads, which the pool
// prefers, and through the Web Worker), and that the process exits by itself with a disposed pool, and with one never
// disposed (the workers are unref'd).
const bin = (name: string) => path.join(ROOT, 'node_modules/.bin', name);
const RUNTIMES: [string, (script: string) => [string, string[]]][] = [
  ['node', (s) => [process.execPath, [s]]],
  ['deno', (s) => [bin('deno'), ['run', '--allow-read', s]]],
  ['bun', (s) => [bin('bun'), [s]]],
];

describe('a pool in a child process', () => {
  let dir: string;
  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'edgellm-pool-'));
    await esbuild({ entryPoints: [path.join(ROOT, 'src/runtime/pool.ts')], outfile: path.join(dir, 'pool.js'), bundle: true, format: 'esm', platform: 'neutral', logLevel: 'error' });
    writeFileSync(path.join(dir, 'child.mjs'), `
      import { readFileSync } from 'node:fs';
      import { KernelPool, threadSupport } from './pool.js';
      const [wasm, dispose, platform] = process.argv.slice(-3);
      const module = new WebAssembly.Module(readFileSync(wasm));
      const memory = new WebAssembly.Memory({ initial: 4, maximum: 8, shared: true });
      const pool = await KernelPool.start({ module, memory, control: 65536, threads: 3, platform: platform === 'auto' ? undefined : platform });
      const y = new Float32Array(memory.buffer, 80000, 3).fill(NaN);
      const w = new Float32Array(memory.buffer, 70000, 8).fill(1);
      // y[i] = Σ w·w over 8 columns in part i: 8 each, so every part ran
      const a = (i) => [70000, 70000, 80000 + 4 * i, 1, 8, 1];
      pool.run('matmul_f32', [a(0), a(1), a(2)]);
      if (dispose === 'dispose') await pool.dispose();
      console.log(threadSupport().platform, [...y].join(','));
    `);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  // More threads than cores, so the OS preempts them anywhere, including between the caller's stores that publish a
  // job: a worker late from the last job must take no part of the next one before it starts. Before the ticket was
  // closed first (pool.ts run()), such a worker read the new part count beside the spent ticket, ran a part twice and
  // counted DONE past the part count, and the caller waited forever: this hung within 80k to 330k jobs here (2 cores,
  // 4 threads), every time. A child process, since a stalled Atomics.wait would stop this test's own thread.
  it('node: 400k jobs of changing part counts on more threads than cores run every part once, and none stalls', () => {
    writeFileSync(path.join(dir, 'stress.mjs'), `
      import { readFileSync } from 'node:fs';
      import { KernelPool } from './pool.js';
      const module = new WebAssembly.Module(readFileSync(process.argv[2]));
      const memory = new WebAssembly.Memory({ initial: 4, maximum: 8, shared: true });
      const pool = await KernelPool.start({ module, memory, control: 65536, threads: 4 });
      const DATA = 131072, ONES = DATA + 64 * 64, counts = new Array(32).fill(0);
      new Float32Array(memory.buffer, ONES, 16).fill(1);
      const jobs = Array.from({ length: 30 }, (_, j) => Array.from({ length: j & 1 ? 2 : 2 + (j % 15) }, (_, i) => [DATA + 64 * i, ONES, 16]));
      for (let j = 0; j < 400_000; j++) {
        const parts = jobs[j % jobs.length];
        pool.run('add', parts);  // part i adds 1 to its own 16 floats
        counts.forEach((_, i) => i < parts.length && counts[i]++);
      }
      const sums = new Float32Array(memory.buffer, DATA, 64 * 32);
      const wrong = counts.flatMap((c, i) => sums[16 * i] === c ? [] : [i + ': ' + sums[16 * i] + ' not ' + c]);
      await pool.dispose();
      console.log(wrong.length ? 'parts run a wrong number of times: ' + wrong.join(', ') : 'ok');
    `);
    const r = spawnSync(process.execPath, [path.join(dir, 'stress.mjs'), path.join(ROOT, 'build/edgellm-simd-shared.wasm')], { encoding: 'utf8', timeout: 60_000 });
    expect(r.error, 'a job stalled (its caller waits forever)').toBeUndefined();
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('ok');
  });

  const cases: [string, string, string][] = [];
  for (const [rt] of RUNTIMES) for (const dispose of ['dispose', 'forget']) cases.push([rt, dispose, 'auto']);
  // Deno keeps a process alive while a Web Worker lives (it cannot be unref'd), so the Web platform is checked disposed.
  cases.push(['deno', 'dispose', 'web'], ['bun', 'dispose', 'web']);
  for (const [rt, dispose, platform] of cases) {
    it(`${rt}, platform ${platform}: a process that ${dispose === 'dispose' ? 'disposed its pool' : 'never disposed its pool'} exits by itself`, () => {
      const [cmd, argv] = RUNTIMES.find(([n]) => n === rt)![1](path.join(dir, 'child.mjs'));
      const r = spawnSync(cmd, [...argv, path.join(ROOT, 'build/edgellm-simd-shared.wasm'), dispose, platform], {
        encoding: 'utf8', timeout: 20_000, env: { ...process.env, NO_COLOR: '1' },
      });
      expect(r.error, 'timed out: a worker kept the process alive').toBeUndefined();
      expect(r.stderr).toBe('');
      expect(r.stdout.trim()).toBe('node 8,8,8');
      expect(r.status).toBe(0);
    });
  }
});

// The Web platform in Chromium: a page served with COOP/COEP is cross-origin isolated; a dedicated worker (the
// coordinator the model will want, so the page stays responsive) runs a pool of Blob-URL workers, and so does the
// page's main thread (which may not Atomics.wait, so run() spins there); served without them, the page has no
// SharedArrayBuffer and threadSupport() says why.
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
describe.skipIf(!existsSync(CHROMIUM))('a pool in Chromium', () => {
  let dir: string;
  let server: Server;
  let origin: string;
  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'edgellm-pool-web-'));
    await esbuild({ entryPoints: [path.join(ROOT, 'src/runtime/pool.ts')], outfile: path.join(dir, 'pool.js'), bundle: true, format: 'esm', platform: 'browser', logLevel: 'error' });
    writeFileSync(path.join(dir, 'index.html'), `<!doctype html><script type="module">
      import { KernelPool, threadSupport } from './pool.js';
      import { job } from './job.js';
      const support = threadSupport();
      window.result = 'platform' in support
        ? new Promise((resolve) => { const w = new Worker('./coordinator.js', { type: 'module' }); w.onmessage = (e) => resolve(e.data); w.onerror = (e) => resolve(String(e.message)); })
        : Promise.resolve(support);
      // The page's main thread may not Atomics.wait: its run() spins instead.
      window.mainThread = 'platform' in support ? job(KernelPool) : Promise.resolve(null);
    </script>`);
    writeFileSync(path.join(dir, 'job.js'), `
      export async function job(KernelPool) {
        try {
          const module = await WebAssembly.compileStreaming(fetch('./edgellm-simd-shared.wasm'));
          const memory = new WebAssembly.Memory({ initial: 176, maximum: 176, shared: true });
          const pool = await KernelPool.start({ module, memory, control: 65536, threads: 3 });
          const y = new Float32Array(memory.buffer, 80000, 3);
          new Float32Array(memory.buffer, 70000, 8).fill(1);
          const a = (i) => [70000, 70000, 80000 + 4 * i, 1, 8, 1];
          let ok = 0;
          for (let i = 0; i < 100; i++) {
            y.fill(NaN);
            pool.run('matmul_f32', [a(0), a(1), a(2)]);
            if (y.every((v) => v === 8)) ok++;
          }
          // One long job on thread 1 alone: the caller's spin runs out and it must wait (or, on a page, keep spinning).
          const W = 1 << 20, Y = 10 << 20, R = 2000, C = 1024;
          new Float32Array(memory.buffer, W, R * C).fill(1);
          pool.run('matmul_f32', [null, [W, W, Y, R, C, 1]]);
          const long = new Float32Array(memory.buffer, Y, R).every((v) => v === C);
          await pool.dispose();
          return { ok, long };
        } catch (e) {
          return String(e.stack || e);
        }
      }
    `);
    writeFileSync(path.join(dir, 'coordinator.js'), `
      import { KernelPool } from './pool.js';
      import { job } from './job.js';
      postMessage(await job(KernelPool));
    `);
    writeFileSync(path.join(dir, 'edgellm-simd-shared.wasm'), readFileSync(path.join(ROOT, 'build/edgellm-simd-shared.wasm')));
    const types: Record<string, string> = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm' };
    server = createServer((req, res) => {
      const url = new URL(req.url!, 'http://x');
      const [, mode, file] = url.pathname.split('/');
      const p = path.join(dir, file || 'index.html');
      if (!existsSync(p)) return void res.writeHead(404).end();
      const headers: Record<string, string> = { 'content-type': types[path.extname(p)] ?? 'application/octet-stream' };
      if (mode === 'isolated') Object.assign(headers, { 'cross-origin-opener-policy': 'same-origin', 'cross-origin-embedder-policy': 'require-corp' });
      res.writeHead(200, headers).end(readFileSync(p));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    await new Promise((resolve) => server?.close(resolve));
    rmSync(dir, { recursive: true, force: true });
  });

  it('cross-origin isolated: a worker and the main thread each run a pool of 3 threads; not isolated: no SharedArrayBuffer', async () => {
    const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'] });
    try {
      const page = await browser.newPage();
      await page.goto(`${origin}/isolated/`);
      expect(await page.evaluate(() => (window as unknown as { result: Promise<unknown> }).result)).toEqual({ ok: 100, long: true });
      expect(await page.evaluate(() => (window as unknown as { mainThread: Promise<unknown> }).mainThread)).toEqual({ ok: 100, long: true });
      await page.goto(`${origin}/plain/`);
      expect(await page.evaluate(() => (window as unknown as { result: Promise<unknown> }).result)).toEqual({ reason: 'no SharedArrayBuffer (not cross-origin isolated)' });
    } finally {
      await browser.close();
    }
  });
});
