// The package in the runtimes it claims, run for real: Node, Deno and Bun each run their example (examples/*) and a
// script that imports 'edgellm' from an installed copy of the packed package (so the exports conditions, the files
// list and the .d.ts are what a user gets), single-threaded and with a kernel pool of 2 and 3 threads. Every run must
// give Node's single-thread greedy tokens. Browsers: browser.test.ts; Workers: workerd.test.ts.
import { afterAll, beforeAll, describe, expect, test, vi } from 'vitest';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { loadModel } from '../src/index.js';
import { KernelPool } from '../src/runtime/pool.js';
import { announceSkipIfNoModels, modelPath, ROOT } from './util/shared.js';
import { startServer, type TestServer } from './util/http-server.js';
import { checkDist } from './util/dist.js';

const HAVE = announceSkipIfNoModels('runtimes (Node, Deno, Bun)');
const bin = (name: string) => path.join(ROOT, 'node_modules/.bin', name);

const CASES = [
  { file: 'tiny-260k-q8_0.gguf', prompt: 'Once upon a time' },
  { file: 'sotu-15m-q4_0.gguf', prompt: 'The state of the Union is' },
];
const N = 32;

interface Runtime {
  name: string;
  /** argv for running a script with arguments */
  run(script: string, args: string[]): [string, string[]];
  example: string;
  /** which kernel build 'auto' picks there */
  build: 'simd' | 'relaxed';
}
const node20 = Number(process.versions.node.split('.')[0]) < 22;
const RUNTIMES: Runtime[] = [
  // Node 20 has relaxed SIMD only behind a flag, so it runs the SIMD128 build; newer Node and Deno/Bun the relaxed one.
  { name: 'node', run: (s, a) => [process.execPath, [s, ...a]], example: 'examples/node.mjs', build: node20 ? 'simd' : 'relaxed' },
  { name: 'deno', run: (s, a) => [bin('deno'), ['run', '--allow-read', '--allow-env', '--allow-net', s, ...a]], example: 'examples/deno.ts', build: 'relaxed' },
  { name: 'bun', run: (s, a) => [bin('bun'), [s, ...a]], example: 'examples/bun.ts', build: 'relaxed' },
];

function exec(rt: Runtime, script: string, args: string[], cwd: string, timeout = 120_000) {
  const [cmd, argv] = rt.run(script, args);
  // SIGKILL: a process kept alive by a worker spinning or waiting must not outlive the test
  const r = spawnSync(cmd, argv, { cwd, encoding: 'utf8', timeout, killSignal: 'SIGKILL', env: { ...process.env, NO_COLOR: '1' } });
  if (r.error) throw new Error(`${rt.name} ${script} ${args.join(' ')}: did not exit within ${timeout / 1000} s (${r.error.message}):\n${r.stderr}\n${r.stdout}`);
  if (r.status !== 0) throw new Error(`${rt.name} ${script} exited with ${r.status ?? r.signal}:\n${r.stderr}\n${r.stdout}`);
  return r;
}

describe.skipIf(!HAVE)('real runtimes give Node’s greedy tokens', () => {
  const reference = new Map<string, { ids: number[]; text: string }>();
  /** pool jobs that gave a worker a slice, with 2 threads in Node from src/: before the first token (prefill), after it (decode) */
  const split = new Map<string, { prefill: number; decode: number }>();
  let project = '';

  beforeAll(async () => {
    checkDist();
    for (const c of CASES) {
      const model = await loadModel(modelPath(c.file), { contextLength: 512 });
      const ids: number[] = [];
      const text = await model.complete(c.prompt, { maxTokens: N, onToken: (id) => ids.push(id) });
      reference.set(c.file, { ids, text });
      model.dispose();
    }
    // Which cases make the workers compute at all (a product under Llama's split threshold runs on thread 0 alone):
    // the real pool, counted as it runs.
    const run = vi.spyOn(KernelPool.prototype, 'run');
    try {
      for (const c of CASES) {
        const jobs = () => run.mock.calls.filter(([, args]) => args.slice(1).some(Boolean)).length;
        const model = await loadModel(modelPath(c.file), { contextLength: 512, threads: 2 });
        const at = jobs();
        let prefill = -1;
        await model.complete(c.prompt, { maxTokens: N, onToken: () => void (prefill < 0 && (prefill = jobs() - at)) });
        split.set(c.file, { prefill, decode: jobs() - at - prefill });
        model.dispose();
        run.mockClear();
      }
    } finally {
      run.mockRestore();
    }
    // A user's project with the package installed from its tarball: what `npm install edgellm` would unpack.
    project = mkdtempSync(path.join(tmpdir(), 'edgellm-runtimes-'));
    const pkg = path.join(project, 'node_modules/edgellm');
    mkdirSync(pkg, { recursive: true });
    const tgz = execFileSync('npm', ['pack', '--ignore-scripts', '--silent', '--pack-destination', project], { cwd: ROOT, encoding: 'utf8' }).trim().split('\n').pop()!;
    execFileSync('tar', ['xzf', path.join(project, tgz), '-C', pkg, '--strip-components=1']);
    copyFileSync(path.join(ROOT, 'test/fixtures/runtime-threads.mjs'), path.join(project, 'threads.mjs'));
    writeFileSync(path.join(project, 'package.json'), JSON.stringify({ type: 'module', private: true, dependencies: { edgellm: '*' } }));
    writeFileSync(path.join(project, 'deno.json'), JSON.stringify({ nodeModulesDir: 'manual' }));
    writeFileSync(
      path.join(project, 'greedy.ts'),
      `import { loadModel, type GenerationStats } from 'edgellm';
const args: string[] = (globalThis as any).Deno?.args ?? process.argv.slice(2);
const [file, prompt, n] = args;
const model = await loadModel(file, { contextLength: 512 });
const ids: number[] = [];
let stats: GenerationStats | undefined;
const text = await model.complete(prompt, { maxTokens: Number(n), onToken: (id) => ids.push(id), onStats: (s) => (stats = s) });
console.log(JSON.stringify({ entry: import.meta.resolve('edgellm'), build: model.info.build, ids, text, generated: stats!.generatedTokens }));
`,
    );
    // Node 20 runs no TypeScript: the same script with its types stripped.
    writeFileSync(path.join(project, 'greedy.mjs'), `import { loadModel } from 'edgellm';
const [file, prompt, n] = process.argv.slice(2);
const model = await loadModel(file, { contextLength: 512 });
const ids = [];
const text = await model.complete(prompt, { maxTokens: Number(n), onToken: (id) => ids.push(id) });
console.log(JSON.stringify({ entry: import.meta.resolve('edgellm'), build: model.info.build, ids, text, generated: ids.length }));
`);
  });
  afterAll(() => {
    if (project) rmSync(project, { recursive: true, force: true });
  });

  for (const rt of RUNTIMES) {
    test(`${rt.name}: ${rt.example} streams Node's greedy text and tokens`, () => {
      for (const c of CASES) {
        const r = exec(rt, rt.example, [modelPath(c.file), c.prompt, String(N)], ROOT);
        const ref = reference.get(c.file)!;
        expect(r.stdout, `${rt.name} ${c.file}`).toBe(ref.text);
        const m = /(\d+) tokens, [\d.]+ tok\/s decode \((\w+) build\); ids (\[[\d,]*\])/.exec(r.stderr);
        expect(m, r.stderr).not.toBeNull();
        expect(JSON.parse(m![3]), `${rt.name} ${c.file}`).toEqual(ref.ids);
        expect(m![2]).toBe(rt.build);
      }
    });

    test(`${rt.name}: import 'edgellm' from the installed package resolves the Node-family entry`, () => {
      const c = CASES[0];
      const r = exec(rt, rt.name === 'node' ? 'greedy.mjs' : 'greedy.ts', [modelPath(c.file), c.prompt, String(N)], project);
      const out = JSON.parse(r.stdout.trim().split('\n').pop()!);
      expect(out.entry).toMatch(/node_modules\/edgellm\/dist\/index\.js$/);
      expect(out.ids).toEqual(reference.get(c.file)!.ids);
      expect(out.text).toBe(reference.get(c.file)!.text);
      expect(out.build).toBe(rt.build);
    });

    // Every model of a run is disposed, or none is: the process must end by itself either way (Node's workers are
    // unref'd; Deno and Bun run them through their own worker_threads, which threadSupport() picks for that reason).
    const THREADED = [[2, true], [2, false], [3, true], [3, false]] as const;
    test(`${rt.name}: threads 2 and 3 from the installed package give the single-thread tokens, and the process exits with and without dispose`, () => {
      for (const [threads, dispose] of THREADED) {
        const job = { threads, dispose, cases: CASES.map((c) => ({ file: modelPath(c.file), prompt: c.prompt, n: N })) };
        const r = exec(rt, 'threads.mjs', [JSON.stringify(job)], project, 60_000);
        const out = JSON.parse(r.stdout.trim().split('\n').pop()!);
        expect(out.entry).toMatch(/node_modules\/edgellm\/dist\/index\.js$/);
        // Deno and Bun also have a Web Worker, which Deno would not let exit undisposed: this is why theirs is not taken
        if (rt.name !== 'node') expect(out.getBuiltinModule, 'threadSupport() takes worker_threads here').toBe(true);
        for (const [i, c] of CASES.entries()) {
          const got = out.results[i], what = `${rt.name} threads ${threads} ${c.file}`;
          expect(got.threads, `${what}: ${got.threading}`).toBe(threads);
          // (with a note where the machine has fewer cores than that)
          expect(got.threading).toMatch(new RegExp(`^${threads}: threads ${threads}( \\(more than the \\d+ cores: slower than \\d+\\))?$`));
          expect(got.ids, what).toEqual(reference.get(c.file)!.ids);
          expect(got.text, what).toBe(reference.get(c.file)!.text);
        }
      }
    });
  }

  test('sotu-15m splits its matmuls across the workers at prefill and at decode (tiny-260k is too small to)', () => {
    expect(split.get('sotu-15m-q4_0.gguf')!.prefill).toBeGreaterThan(0);
    expect(split.get('sotu-15m-q4_0.gguf')!.decode).toBeGreaterThan(0);
  });

  // Weights streamed from a spill file by the staging worker (a worker_threads worker opening the file by path), and a
  // URL model through the download cache: a second load makes no request. Spawned without blocking, since the server
  // answering the runtime runs in this process.
  test('node, deno, bun: cold weights staged ahead and a URL through the download cache give the single-thread tokens', async () => {
    const c = CASES[1];
    const server: TestServer = await startServer([{ path: `/m/${c.file}`, file: modelPath(c.file) }]);
    writeFileSync(path.join(project, 'stream.mjs'), `import { loadModel } from 'edgellm';
const job = JSON.parse((globalThis.Deno?.args ?? process.argv.slice(2))[0]);
const greedy = async (model) => { const ids = []; await model.complete(job.prompt, { maxTokens: job.n, onToken: (id) => ids.push(id) }); return ids; };
const cold = await loadModel(job.file, { contextLength: 512, weights: 'cold', stageAhead: true });
const out = { cold: await greedy(cold), weights: cold.memory().weights };
await cold.dispose();
for (const pass of ['first', 'second']) {
  const model = await loadModel(job.url, { contextLength: 512 });
  out[pass] = await greedy(model);
  await model.dispose();
}
console.log(JSON.stringify(out));
`);
    try {
      for (const rt of RUNTIMES) {
        const cache = mkdtempSync(path.join(tmpdir(), 'edgellm-runtimes-cache-'));
        try {
          const job = JSON.stringify({ file: modelPath(c.file), url: `${server.url}/m/${c.file}`, prompt: c.prompt, n: N });
          const [cmd, argv] = rt.name === 'deno' ? [bin('deno'), ['run', '-A', 'stream.mjs', job]] : rt.run('stream.mjs', [job]);
          const before = server.log.length;
          const r = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
            const p = spawn(cmd, argv, { cwd: project, env: { ...process.env, NO_COLOR: '1', EDGELLM_CACHE: cache } });
            let stdout = '', stderr = '';
            p.stdout.on('data', (d) => (stdout += d));
            p.stderr.on('data', (d) => (stderr += d));
            const timer = setTimeout(() => p.kill('SIGKILL'), 120_000);
            p.on('close', (code) => (clearTimeout(timer), resolve({ code, stdout, stderr })));
          });
          expect(r.code, `${rt.name}: ${r.stderr}`).toBe(0);
          const out = JSON.parse(r.stdout.trim().split('\n').pop()!);
          const ref = reference.get(c.file)!.ids;
          expect(out.cold, `${rt.name} cold`).toEqual(ref);
          expect(out.weights.layers.every((x: string) => x === 'cold')).toBe(true);
          expect(out.weights.stagedAhead, `${rt.name}: the staging worker copied layers`).toBeGreaterThan(0);
          expect(out.first, `${rt.name} URL`).toEqual(ref);
          expect(out.second, `${rt.name} URL, cached`).toEqual(ref);
          // the first load downloads it once; the second asks for nothing
          expect(server.log.slice(before).filter((e) => e.bodyBytes > 0).reduce((n, e) => n + e.bodyBytes, 0), rt.name).toBe(statSync(modelPath(c.file)).size);
          expect(server.log.slice(before).every((e) => e.status === 200 || e.status === 206)).toBe(true);
        } finally {
          rmSync(cache, { recursive: true, force: true });
        }
      }
    } finally {
      await server.close();
    }
  });

  test('deno check: the packaged .d.ts type-check a TypeScript user', () => {
    const r = spawnSync(bin('deno'), ['check', 'greedy.ts'], { cwd: project, encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' } });
    expect(r.status, r.stderr).toBe(0);
  });
});
