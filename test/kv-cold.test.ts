// The cold KV tier: pages beyond the hot (wasm) and warm (host) tiers in a file of the model's own spill directory.
// Logits equal the all-hot run's bit for bit for every page type, full and sparse, with pages really written to disk
// and read back; the files live exactly as long as the model; a crashed process's directory is swept by the next
// one; bad options are clear errors.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { buildSync } from 'esbuild';
import { afterAll, describe, expect, it } from 'vitest';
import { EdgeLLMError, loadModel, type KVType, type LoadOptions } from '../src/index.js';
import { openSpillDir, spillSupport } from '../src/plan/spill.js';
import { GGMLType } from '../src/gguf/types.js';
import { makeSyntheticLlama } from './util/synthetic.js';
import { ROOT } from './util/shared.js';

const TYPES: KVType[] = ['f32', 'f16', 'int8', 'int4'];
/** A private parent for every spill directory these tests make, so nothing else's temp files are looked at. */
const parent = mkdtempSync(path.join(tmpdir(), 'kv-cold-test-'));
afterAll(() => rmSync(parent, { recursive: true, force: true }));

// 3 layers, 4 query heads on 2 KV heads of 16, Q8_0 weights; pages of 8 tokens, so a 160-token run seals 20 pages
// per KV head, 120 in all.
const spec = { dim: 64, nLayers: 3, nHeads: 4, nKvHeads: 2, ffn: 96, vocab: 320, ctx: 256, type: GGMLType.Q8_0, seed: 11 };
const model = makeSyntheticLlama(spec, { keepWeights: false });
const PROMPT = Array.from({ length: 120 }, (_, i) => 1 + ((i * 37) % (spec.vocab - 1)));
const DECODE = 40;
const SPARSE: LoadOptions['attention'] = { mode: 'sparse', topKPages: 3, windowTokens: 24, sinkTokens: 4 };

/** Teacher-forced logits of the prompt (batched prefill) and the greedy decode after it, with the tiers at the end. */
async function run(options: LoadOptions) {
  const m = await loadModel(model.bytes, { contextLength: 200, ...options });
  const logits = await m.evaluate(PROMPT);
  const ids: number[] = [];
  await m.complete(PROMPT, { maxTokens: DECODE, onToken: (id) => ids.push(id) });
  const kv = m.memory().kv;
  return { m, logits, ids, kv };
}

/** kv options with hot room for a quarter of the page slots, `warmPages` pages warm, and the rest cold. */
function coldOptions(hot: Awaited<ReturnType<typeof run>>['kv'], type: KVType, warmPages: number): LoadOptions['kv'] {
  const hotBytes = hot.hotBytes - Math.floor((3 * hot.hotPageSlots) / 4) * hot.pageBytes;
  return { type, pageTokens: 8, hotBytes, warmBytes: warmPages * hot.pageBytes, coldBytes: '4MB', coldDir: parent };
}

/** Bit-equal logits; a mismatch names the first differing logit (a diff of whole arrays would take minutes). */
function expectSameBits(got: Float32Array, want: Float32Array): void {
  const a = new Uint32Array(got.buffer, got.byteOffset, got.length), b = new Uint32Array(want.buffer, want.byteOffset, want.length);
  let first = -1;
  for (let i = 0; i < a.length && first < 0; i++) if (a[i] !== b[i]) first = i;
  expect(first < 0 ? 'same bits' : `logit ${first} (row ${Math.floor(first / spec.vocab)}): ${got[first]} vs ${want[first]}`).toBe('same bits');
  expect(got.length).toBe(want.length);
}

function spillDirs(): string[] {
  return readdirSync(parent).filter((d) => d.startsWith('edgellm-'));
}

describe('the cold tier equals all-hot', () => {
  for (const type of TYPES) {
    for (const mode of ['full', 'sparse'] as const) {
      it(`${type}, ${mode} attention: the same logits, bit for bit, with pages written to disk and read back`, async () => {
        const attention = mode === 'sparse' ? SPARSE : { mode };
        const hot = await run({ kv: { type, pageTokens: 8 }, attention });
        void hot.m.dispose();
        const cold = await run({ kv: coldOptions(hot.kv, type, 8), attention });
        const kv = cold.kv;
        // During the run: one spill directory, holding the pages file the counters describe.
        const dirs = spillDirs();
        expect(dirs).toHaveLength(1);
        expect(statSync(path.join(parent, dirs[0], 'kv-pages')).size).toBe(kv.coldBytesAllocated);
        await cold.m.dispose();
        expect(spillDirs(), 'dispose removed the directory').toEqual([]);

        expectSameBits(cold.logits, hot.logits);
        expect(cold.ids).toEqual(hot.ids);
        expect(cold.ids).toHaveLength(DECODE);
        // 159 positions in pages of 8: 19 sealed pages per KV head, 6 heads.
        expect(kv.hotPagesInUse + kv.warmPagesInUse + kv.coldPagesInUse).toBe(6 * 19);
        expect(kv.warmPagesInUse, 'warm is full').toBe(8);
        expect(kv.coldPagesInUse, 'pages went cold').toBeGreaterThan(0);
        expect(kv.coldBytesAllocated).toBeGreaterThanOrEqual(kv.coldPagesInUse * kv.pageBytes);
        expect(kv.coldBytesAllocated).toBeLessThanOrEqual(kv.coldBytes);
        expect(kv.coldPagesStaged, 'cold pages were read back').toBeGreaterThan(0);
        expect(kv.pagesStaged).toBeGreaterThan(kv.coldPagesStaged);
        expect(kv.hotBytes).toBeLessThan(hot.kv.hotBytes);
      });
    }
  }

  it('hot straight to cold (no warm tier), and with 2 threads sharing the memory the pages are read into', async () => {
    const attention = { mode: 'full' as const };
    const hot = await run({ kv: { type: 'int8', pageTokens: 8 }, attention });
    void hot.m.dispose();
    for (const threads of [1, 2]) {
      const cold = await run({ kv: coldOptions(hot.kv, 'int8', 0), attention, threads });
      await cold.m.dispose();
      expectSameBits(cold.logits, hot.logits);
      expect(cold.ids).toEqual(hot.ids);
      expect([cold.kv.warmBytes, cold.kv.warmPagesInUse]).toEqual([0, 0]);
      expect(cold.kv.coldPagesStaged).toBeGreaterThan(0);
    }
  });

  it('a reused prefix cut among the cold pages frees their slots and continues as all-hot does', async () => {
    const hot = await loadModel(model.bytes, { contextLength: 200, kv: { type: 'f16', pageTokens: 8 } });
    const usage = hot.memory().kv;
    const cold = await loadModel(model.bytes, { contextLength: 200, kv: coldOptions(usage, 'f16', 4) });
    const turns = [PROMPT, [...PROMPT.slice(0, 30), 7, 8, 9], [...PROMPT.slice(0, 100), 5]];
    for (const prompt of turns) {
      const a: number[] = [], b: number[] = [];
      await hot.complete(prompt, { maxTokens: 30, onToken: (id) => a.push(id) });
      await cold.complete(prompt, { maxTokens: 30, onToken: (id) => b.push(id) });
      expect(b).toEqual(a);
    }
    const kv = cold.memory().kv;
    const sealed = hot.memory().kv.hotPagesInUse;
    void hot.dispose();
    await cold.dispose();
    expect(spillDirs()).toEqual([]);
    expect(kv.coldPagesStaged).toBeGreaterThan(0);
    // Each sealed page in exactly one tier: none lost or kept twice by the cuts.
    expect(sealed).toBeGreaterThan(6 * 12);
    expect(kv.hotPagesInUse + kv.warmPagesInUse + kv.coldPagesInUse).toBe(sealed);
  });
});

describe('cold tier options', () => {
  it('coldBytes too small is BUDGET saying which context fits, and that context loads', async () => {
    const kv = { type: 'f32' as const, pageTokens: 8, hotBytes: '80KB', warmBytes: '16KB', coldDir: parent };
    const err = await loadModel(model.bytes, { contextLength: 256, kv: { ...kv, coldBytes: '32KB' } }).catch((e) => e);
    expect(err).toBeInstanceOf(EdgeLLMError);
    expect(err.code).toBe('BUDGET');
    expect(err.message).toMatch(/fit kv.warmBytes 16.0 KiB, and the other \d+ need [\d.]+ KiB of kv.coldBytes, which is 32.0 KiB; a context of (\d+) tokens would fit/);
    const fits = Number(/a context of (\d+) tokens would fit/.exec(err.message)![1]);
    expect(fits).toBeGreaterThan(0);
    expect(fits).toBeLessThan(256);
    const m = await loadModel(model.bytes, { contextLength: fits, kv: { ...kv, coldBytes: '32KB' } });
    expect(m.memory().kv.coldBytes).toBeLessThanOrEqual(32 * 1024);
    await m.dispose();
    await expect(loadModel(model.bytes, { contextLength: fits + 1, kv: { ...kv, coldBytes: '32KB' } })).rejects.toThrow(/kv.coldBytes/);
    expect(spillDirs(), 'a plan that fails makes no directory').toEqual([]);
  });

  it("'lots', -1 and a bad coldDir are BAD_ARGUMENT, tiered or not; a coldDir that cannot be a directory fails the load", async () => {
    for (const hot of [{ hotBytes: '80KB' }, {}]) {
      for (const bad of [{ coldBytes: 'lots' }, { coldBytes: -1 }, { coldDir: '' }, { coldDir: 5 as unknown as string }]) {
        const err = await loadModel(model.bytes, { kv: { ...hot, warmBytes: '16KB', coldBytes: '4MB', ...bad } }).catch((e) => e);
        expect(err.code, JSON.stringify({ ...hot, ...bad })).toBe('BAD_ARGUMENT');
        expect(err.message).toMatch(/kv.cold(Bytes|Dir)/);
      }
    }
    const file = path.join(parent, 'not-a-dir');
    writeFileSync(file, '');
    const err = await loadModel(model.bytes, { kv: { pageTokens: 8, hotBytes: '80KB', coldBytes: '4MB', coldDir: file } }).catch((e) => e);
    expect(err).toBeInstanceOf(EdgeLLMError);
    expect(err.code).toBe('BAD_SOURCE');
    expect(err.message).toMatch(/cannot create a spill directory/);
    rmSync(file);
  });

  it('a load that fails after the cold tier opened removes its directory', async () => {
    const controller = new AbortController();
    const err = await loadModel(model.bytes, {
      kv: { pageTokens: 8, hotBytes: '80KB', coldBytes: '4MB', coldDir: parent },
      signal: controller.signal,
      onProgress: (p) => {
        if (p.phase === 'weights') {
          expect(spillDirs()).toHaveLength(1);
          controller.abort();
        }
      },
    }).catch((e) => e);
    expect(err.code).toBe('ABORTED');
    expect(spillDirs()).toEqual([]);
  });

  it('memoryBudget with kv.coldBytes alone puts the pages that do not fit on disk', async () => {
    const all = await loadModel(model.bytes, { contextLength: 256, kv: { pageTokens: 8 } });
    const budget = all.info.memoryBytes - 128 * 1024;
    const m = await loadModel(model.bytes, { contextLength: 256, memoryBudget: budget, kv: { pageTokens: 8, coldBytes: '4MB', coldDir: parent } });
    expect(m.info.memoryBytes).toBeLessThanOrEqual(budget);
    const a: number[] = [], b: number[] = [];
    await all.complete(PROMPT, { maxTokens: 100, onToken: (id) => a.push(id) });
    await m.complete(PROMPT, { maxTokens: 100, onToken: (id) => b.push(id) });
    expect(b).toEqual(a);
    expect(m.memory().kv.coldPagesInUse).toBeGreaterThan(0);
    void all.dispose();
    await m.dispose();
  });
});

describe('spill directories', () => {
  it('Node can spill; files read back what was written, and reads past the end are TRUNCATED', async () => {
    expect(spillSupport()).toEqual({ ok: true });
    const dir = await openSpillDir({ dir: parent });
    expect(path.basename(dir.location)).toMatch(new RegExp(`^edgellm-${process.pid}-`));
    const f = await dir.create('a');
    f.write(100, new Uint8Array([1, 2, 3]));
    const back = new Uint8Array(3);
    f.read(100, back);
    expect([...back]).toEqual([1, 2, 3]);
    expect(f.size()).toBe(103);
    expect(() => f.read(101, new Uint8Array(3))).toThrow(expect.objectContaining({ code: 'TRUNCATED' }));
    await expect(dir.create('a')).rejects.toThrow(/exists already/);
    await expect(dir.create('../x')).rejects.toThrow(expect.objectContaining({ code: 'BAD_ARGUMENT' }));
    await dir.dispose();
    await dir.dispose();
    expect(existsSync(dir.location)).toBe(false);
    expect(() => f.read(100, back)).toThrow(expect.objectContaining({ code: 'DISPOSED' }));
  });

  it('a process killed with its directory open leaves it to the next openSpillDir, which removes it; a live one keeps its own', async () => {
    // The child runs the real module, bundled from source.
    const bundle = path.join(parent, 'spill-child.mjs');
    buildSync({ entryPoints: [path.join(ROOT, 'src/plan/spill.ts')], bundle: true, format: 'esm', platform: 'neutral', outfile: bundle, logLevel: 'error' });
    const script = `import { openSpillDir } from ${JSON.stringify(bundle)};
      const d = await openSpillDir({ dir: ${JSON.stringify(parent)} });
      (await d.create('kv-pages')).write(0, new Uint8Array(4096));
      console.log(d.location);
      if (process.argv[1] === 'exit') process.exit(0);
      setInterval(() => {}, 1000);`;
    const start = (mode: string) => {
      const child = spawn(process.execPath, ['--input-type=module', '-e', script, mode], { stdio: ['ignore', 'pipe', 'inherit'] });
      const location = new Promise<string>((resolve, reject) => {
        let out = '';
        child.stdout!.on('data', (d) => {
          out += d;
          if (out.includes('\n')) resolve(out.trim());
        });
        child.on('exit', (code) => reject(new Error(`child exited (${code}) before printing its directory`)));
      });
      const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
      return { child, location, exited };
    };
    const dead = start('hang');
    const live = start('hang');
    const clean = start('exit');
    const [deadDir, liveDir] = await Promise.all([dead.location, live.location]);
    const cleanDir = await clean.location.catch(() => '');
    await clean.exited;
    expect(cleanDir && existsSync(cleanDir), 'a process that exits without dispose removes its directory').toBe(false);
    dead.child.kill('SIGKILL');
    await dead.exited;
    expect(existsSync(path.join(deadDir, 'kv-pages')), 'SIGKILL left the directory behind').toBe(true);
    try {
      const mine = await openSpillDir({ dir: parent });
      expect(existsSync(deadDir), "the dead process's directory was swept").toBe(false);
      expect(existsSync(liveDir), "a live process's directory is kept").toBe(true);
      await mine.dispose();
    } finally {
      live.child.kill('SIGKILL');
      await live.exited;
    }
    rmSync(liveDir, { recursive: true, force: true });
    rmSync(bundle);
  });
});
