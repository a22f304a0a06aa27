// Weight streaming (issue 14, docs/memory.md): a layer's matrices resident in wasm, warm in host memory or cold in the
// spill file, staged into one wasm slot as the forward pass reaches the layer, give the resident run's logits and greedy
// tokens bit for bit: on models mixing weight types per layer as llama.cpp's Q4_K_M does (so each layer has its own
// layout in the slot), with tied embeddings and biases, in batches that re-stage every layer, and with 2 threads whose
// workers read the slot. The planner's own accounting stays under the budget; a child process's peak RSS stays under
// the budget plus a measured baseline; bad budgets are named errors; the spill directory goes with dispose().
import { describe, expect, it, vi } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { loadModel, EdgeLLMError, type LoadOptions } from '../src/index.js';
import { GGMLType } from '../src/gguf/types.js';
import { makeSyntheticLlama, q4kmLikeTypes, type SyntheticSpec } from './util/synthetic.js';
import { bits, seededIds } from './util/compare.js';
import { greedyIds } from './util/models.js';
import { checkDist } from './util/dist.js';
import { availableCores } from '../src/runtime/pool.js';
import { StageAhead } from '../src/runtime/stage-worker.js';
import { ROOT } from './util/shared.js';

const { F32, F16, Q8_0, Q4_0, Q4_K, Q6_K, Q5_0 } = GGMLType;

/** Four layers of 256 wide: the K-quants need rows of 256. */
const BASE: SyntheticSpec = { dim: 256, nLayers: 4, nHeads: 4, nKvHeads: 2, ffn: 512, vocab: 320, ctx: 128 };

/** A Q4_K_M-like mix, and a few other types on single layers, as a hand-made mix might have. */
function q4kmTypes(nLayers: number): Record<string, number> {
  return { ...q4kmLikeTypes(nLayers), 'blk.1.attn_q.weight': Q8_0, 'blk.1.attn_k.weight': F16, 'blk.2.ffn_gate.weight': Q5_0, 'blk.2.attn_output.weight': F32, 'blk.3.attn_q.weight': Q6_K };
}

const MODELS: Record<string, SyntheticSpec> = {
  'Q4_K_M-like mix, untied': { ...BASE, type: Q4_K, types: q4kmTypes(BASE.nLayers), seed: 3 },
  'Q4_0, tied embeddings, q/k/v biases': { ...BASE, nLayers: 3, type: Q4_0, tied: true, qkvBias: true, seed: 4 },
};

/** Logits of every position (batches of 8: each batch stages every layer again) and 12 greedy tokens. */
async function run(bytes: Uint8Array, opts: LoadOptions) {
  const model = await loadModel(bytes, { batchSize: 8, ...opts });
  try {
    const ids = seededIds(21, model.info.vocab, 7);
    const logits = bits(await model.evaluate(ids));
    const tokens = await greedyIds(model, ids.slice(0, 5), 12);
    return { logits, tokens, memory: model.memory(), info: model.info };
  } finally {
    await model.dispose();
  }
}

describe('streamed weights give the resident logits and tokens', () => {
  for (const [name, spec] of Object.entries(MODELS)) {
    it(name, async () => {
      const { bytes } = makeSyntheticLlama(spec, { keepWeights: false });
      const resident = await run(bytes, { weights: 'resident' });
      const w = resident.memory.weights;
      expect(w.layers.every((r) => r === 'resident')).toBe(true);
      expect(w.slotBytes).toBe(0);
      expect(resident.memory.regions.some((r) => r.name.startsWith('weights.slot'))).toBe(false);

      for (const tier of ['warm', 'cold'] as const) {
        for (const [threads, stageAhead] of [[1, false], [2, false], [1, true], [2, true]] as const) {
          const r = await run(bytes, { weights: tier, threads, stageAhead });
          const label = `${tier}, ${threads} thread(s), ${stageAhead ? 'staged ahead' : 'one slot'}`;
          expect(r.info.threads, label).toBe(threads);
          expect(r.logits.equals(resident.logits), label).toBe(true);
          expect(r.tokens, label).toEqual(resident.tokens);
          const m = r.memory.weights;
          expect(m.layers, label).toEqual(new Array(spec.nLayers).fill(tier));
          // a slot is as large as the largest image it takes (with two, the layers alternate); the tier holds every image
          const largest = (k: number) => Math.max(...m.layerBytes.filter((_, l) => l % 2 === k));
          expect(m.slotBytes, label).toBe(stageAhead ? largest(0) + largest(1) : Math.max(...m.layerBytes));
          expect(r.memory.regions.filter((g) => g.name.startsWith('weights.slot')).length, label).toBe(stageAhead ? 2 : 1);
          expect(m[`${tier}Bytes`]).toBe(m.layerBytes.reduce((a, b) => a + b, 0));
          expect(m[tier === 'warm' ? 'coldBytes' : 'warmBytes']).toBe(0);
          // the streamed layers left wasm: it holds only the slot in their place
          expect(r.memory.totalBytes).toBeLessThan(resident.memory.totalBytes - m[`${tier}Bytes`] + m.slotBytes + 65536);
          expect(m.residentBytes).toBeLessThan(w.residentBytes);
          // evaluate's 3 batches and complete's 1 + 11 forwards
          const passes = 3 + 12, lb = m.layerBytes;
          const sum = (layers: number[]) => layers.reduce((t, l) => t + lb[l], 0);
          if (!stageAhead) {
            // one slot never holds the layer the pass needs next: every layer is copied on every pass
            expect(m.stages, label).toBe(spec.nLayers * passes);
            expect(m.stagedAhead).toBe(0);
            expect(m.stagedBytes).toBe(passes * (m.warmBytes + m.coldBytes));
          } else if (spec.nLayers === 4) {
            // slots 0 1 0 1: after the first pass's layer 0, the worker copies every layer while the one before runs,
            // and once more layer 0 for a next pass at the end
            expect(m.stages, label).toBe(4 * passes + 1);
            expect(m.stagedAhead, label).toBe(4 * passes);
            expect(m.stagedBytes).toBe(passes * sum([0, 1, 2, 3]) + lb[0]);
          } else {
            // 3 layers, slots 0 1 0: layer 1 has slot 1 to itself and stays there from the load on; the wrap from
            // layer 2 to layer 0 needs the slot in use, so layer 0 is copied on the pass's thread, layer 2 ahead
            expect(m.stages, label).toBe(2 * passes);
            expect(m.stagedAhead, label).toBe(passes);
            expect(m.stagedBytes).toBe(passes * sum([0, 2]));
          }
          if (tier === 'cold') expect(m.spill).toBeTruthy();
          else expect(m.spill).toBeUndefined();
          // the planner counts wasm, the warm images and the loader's largest read against the budget; cold ones not
          expect(r.memory.plannedBytes).toBe(r.memory.totalBytes + m.warmBytes + m.readBytes);
        }
      }
    });
  }
});

describe('staging ahead where the thread may not Atomics.wait', () => {
  it("spins for the copy instead, as on a browser page's main thread", async () => {
    // one large layer, so the pass reaches wait() long before the worker's copy is done
    const n = 32 << 20;
    const memory = new SharedArrayBuffer(n), image = new SharedArrayBuffer(n);
    new Uint8Array(image).forEach((_, i, a) => (a[i] = (i * 7) & 255));
    const ahead = await StageAhead.start({ memories: [memory], images: [image], coldAt: [], slotAt: [0], instanceOf: [0], layerBytes: [n] });
    // a browser page's main thread throws on Atomics.wait (the staging worker, a thread of its own, may wait)
    const wait = vi.spyOn(Atomics, 'wait').mockImplementation(() => {
      throw new TypeError('Atomics.wait cannot be called in this context');
    });
    try {
      ahead.request(0);
      ahead.wait(0);
      expect(wait).toHaveBeenCalled();
    } finally {
      wait.mockRestore();
      await ahead.dispose();
    }
    expect(Buffer.from(memory).equals(Buffer.from(image))).toBe(true);
  });
});

describe("'auto' and the budget", () => {
  const spec = MODELS['Q4_K_M-like mix, untied'];
  const { bytes } = makeSyntheticLlama(spec, { keepWeights: false });

  it('streams the fewest layers that fit, cold, and stays under the budget in its own accounting', async () => {
    const resident = await run(bytes, {});
    expect(resident.memory.weights.layers.every((r) => r === 'resident'), "'auto' without a budget keeps every layer resident").toBe(true);
    // Streaming the largest layer alone gains nothing (the slot takes its size); each next one gains its bytes. A
    // budget short of the second largest and half the third takes three layers out.
    const [, second, third] = [...resident.memory.weights.layerBytes].sort((a, b) => b - a);
    const budget = resident.memory.plannedBytes - second - Math.round(third / 2);
    const r = await run(bytes, { memoryBudget: budget, stageAhead: false });
    const m = r.memory;
    expect(m.budgetBytes).toBe(budget);
    expect(m.plannedBytes).toBeLessThanOrEqual(budget);
    expect(m.totalBytes).toBeLessThanOrEqual(budget);
    const cold = m.weights.layers.filter((x) => x === 'cold').length;
    expect(cold, m.weights.layers.join(' ')).toBe(3);
    expect(m.weights.layers.filter((x) => x === 'warm').length).toBe(0);
    // the largest layers go first (layer 2 has an F32 matrix, 1 Q8_0 and F16 ones, 0 and 3 Q6_K ones)
    const sizes = m.weights.layerBytes;
    expect(new Set(sizes).size, 'the mix gives every layer its own size').toBe(spec.nLayers);
    const streamed = sizes.filter((_, l) => m.weights.layers[l] === 'cold');
    expect(Math.min(...streamed)).toBeGreaterThan(Math.max(...sizes.filter((_, l) => m.weights.layers[l] === 'resident')));
    expect(m.weights.slotBytes).toBe(Math.max(...sizes));
    expect(r.logits.equals(resident.logits)).toBe(true);
    expect(r.tokens).toEqual(resident.tokens);

    // Staging ahead needs a second slot: under the same budget it streams all four layers to make room for it,
    // since a copy overlapped with compute costs less than one on the pass's thread.
    const ahead = await run(bytes, { memoryBudget: budget, stageAhead: true });
    expect(ahead.memory.plannedBytes).toBeLessThanOrEqual(budget);
    expect(ahead.memory.weights.layers).toEqual(['cold', 'cold', 'cold', 'cold']);
    expect(ahead.memory.regions.filter((g) => g.name.startsWith('weights.slot')).length).toBe(2);
    expect(ahead.memory.weights.stagedAhead).toBeGreaterThan(0);
    expect(ahead.logits.equals(resident.logits)).toBe(true);
  });

  it('stages ahead by default only where the threads leave a core free', async () => {
    const cores = availableCores();
    const slots = (m: Awaited<ReturnType<typeof run>>) => m.memory.regions.filter((g) => g.name.startsWith('weights.slot')).length;
    const busy = await run(bytes, { weights: 'cold', threads: Math.min(cores, 8) });
    expect([slots(busy), busy.memory.weights.stagedAhead]).toEqual([1, 0]);
    if (cores > 1) {
      const free = await run(bytes, { weights: 'cold', threads: 1 });
      expect(slots(free)).toBe(2);
      expect(free.memory.weights.stagedAhead).toBeGreaterThan(0);
    }
  });

  it("weights: 'resident' under a budget it cannot meet says that streaming would fit", async () => {
    const resident = await run(bytes, {});
    const budget = resident.memory.totalBytes - 2 * 65536;
    const err = await loadModel(bytes, { memoryBudget: budget, weights: 'resident', batchSize: 8 }).catch((e) => e);
    expect(err).toBeInstanceOf(EdgeLLMError);
    expect(err.code).toBe('BUDGET');
    expect(err.message).toMatch(/or all of it with weights: 'auto' \(\d resident, \d cold layers\)/);
  });

  it("weights: 'warm' counts its host images against the budget", async () => {
    const warm = await run(bytes, { weights: 'warm' });
    const err = await loadModel(bytes, { weights: 'warm', batchSize: 8, memoryBudget: warm.memory.totalBytes + 65536 }).catch((e) => e);
    expect(err.code, err.message).toBe('BUDGET');
    const ok = await loadModel(bytes, { weights: 'warm', batchSize: 8, memoryBudget: warm.memory.plannedBytes });
    await ok.dispose();
  });

  it('bad budgets and options are named errors', async () => {
    for (const memoryBudget of ['0', '-1GB', 'lots', 0, -5, '']) {
      const err = await loadModel(bytes, { memoryBudget }).catch((e) => e);
      expect(err, String(memoryBudget)).toBeInstanceOf(EdgeLLMError);
      expect(err.code, `${memoryBudget}: ${err.message}`).toBe('BAD_ARGUMENT');
      expect(err.message).toContain('memoryBudget');
    }
    const err = await loadModel(bytes, { weights: 'disk' as never }).catch((e) => e);
    expect(err.code).toBe('BAD_ARGUMENT');
    expect(err.message).toMatch(/weights must be one of 'auto', 'resident', 'warm', 'cold'/);
    // smaller than one layer: even every layer on disk leaves the slot, embeddings and output over it
    const all = await run(bytes, { weights: 'cold' });
    const small = await loadModel(bytes, { memoryBudget: all.memory.weights.slotBytes / 2 }).catch((e) => e);
    expect(small.code).toBe('BUDGET');
    expect(small.message).toMatch(/the weights alone do not fit \(with a 1-token context the plan needs [\d.]+ MiB: the token embeddings, output, norms and a slot for the largest layer, with every layer cold\)/);
  });

  it('dispose removes the spill directory; a failed load leaves none', async () => {
    const model = await loadModel(bytes, { weights: 'cold' });
    const dir = model.memory().weights.spill!;
    expect(existsSync(dir)).toBe(true);
    await model.dispose();
    expect(existsSync(dir)).toBe(false);
    const ours = () => readdirSync(os.tmpdir()).filter((d) => d.startsWith(`edgellm-${process.pid}-`));
    const before = ours();
    const stop = new Error('stop while the weights load');
    const err = await loadModel(bytes, { weights: 'cold', onProgress: (p) => { if (p.phase === 'weights' && p.loaded > 0) throw stop; } }).catch((e) => e);
    expect(err).toBe(stop);
    expect(ours()).toEqual(before);

    // cold weights and cold KV pages, over two kernel instances: one directory for the model, a file per owner
    const opts: LoadOptions = { batchSize: 8, weights: 'cold', kv: { pageTokens: 8, hotBytes: '300KB', coldBytes: '4MB' } };
    const single = await loadModel(bytes, opts);
    const one = single.memory();
    await single.dispose();
    const slots = one.weights.slotBytes;
    const both = await loadModel(bytes, { ...opts, memoryPerInstance: Math.ceil((slots + (one.totalBytes - slots) * 0.8) / 65536) * 65536 });
    await both.complete(seededIds(5, both.info.vocab, 40), { maxTokens: 2 });
    expect(both.memory().instances.length).toBeGreaterThan(1);
    expect(ours().filter((d) => !before.includes(d))).toEqual([path.basename(both.memory().weights.spill!)]);
    expect(readdirSync(both.memory().weights.spill!).filter((f) => f !== 'owner').sort()).toEqual(['kv-pages-0', 'kv-pages-1', 'weights']);
    await both.dispose();
    expect(ours()).toEqual(before);
  });
});

describe('peak RSS of a child process stays under the budget plus a baseline', () => {
  // 8 layers of F32 at 512 wide: 14 MiB a layer, 120 MiB of weights, against a budget of 45 MiB.
  const BIG: SyntheticSpec = { dim: 512, nLayers: 8, nHeads: 8, nKvHeads: 8, ffn: 1536, vocab: 320, ctx: 64, seed: 9 };
  const TINY: SyntheticSpec = { dim: 64, nLayers: 1, nHeads: 2, nKvHeads: 2, ffn: 128, vocab: 320, ctx: 64, seed: 9 };

  it.skipIf(!existsSync('/proc/self/status'))('cold weights under memoryBudget', async () => {
    checkDist();
    const dir = mkdtempSync(path.join(os.tmpdir(), 'edgellm-rss-'));
    try {
      const big = path.join(dir, 'big.gguf'), tiny = path.join(dir, 'tiny.gguf');
      writeFileSync(big, makeSyntheticLlama(BIG, { keepWeights: false }).bytes);
      writeFileSync(tiny, makeSyntheticLlama(TINY, { keepWeights: false }).bytes);
      // Loads and generates, then prints the peak RSS; the same script gives the baseline (a tiny model). The loader
      // reads through one reused buffer (a new one per read waited for V8's collector: 30 MB more, docs/memory.md).
      const child = (file: string, options: LoadOptions) => {
        // VmHWM, not resourceUsage().maxRSS: Linux carries maxRSS over exec from the forked parent (this test worker).
        const script = `
          const { readFileSync } = await import('node:fs');
          const hwm = () => Number(/VmHWM:\\s*(\\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'))[1]) * 1024;
          const { loadModel } = await import(${JSON.stringify(pathToFileURL(path.join(ROOT, 'dist/index.js')).href)});
          const model = await loadModel(${JSON.stringify(file)}, ${JSON.stringify(options)});
          const loadPeak = hwm();
          await model.complete([1, 5, 9, 13], { maxTokens: 8 });
          const m = model.memory();
          const peak = hwm();
          console.log(JSON.stringify({ peak, loadPeak, plannedBytes: m.plannedBytes, layers: m.weights.layers, stages: m.weights.stages }));
          await model.dispose();`;
        const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 60_000 });
        expect(r.status, r.stderr).toBe(0);
        return JSON.parse(r.stdout.trim().split('\n').pop()!) as { peak: number; loadPeak: number; plannedBytes: number; layers: string[]; stages: number };
      };
      const baseline = child(tiny, {});
      const resident = child(big, {});
      const budget = 45 << 20;
      const cold = child(big, { memoryBudget: budget });
      expect(cold.layers.filter((l) => l === 'cold').length).toBeGreaterThan(4);
      expect(cold.stages).toBeGreaterThan(0);
      expect(cold.plannedBytes).toBeLessThanOrEqual(budget);
      const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;
      console.log(
        `peak RSS (after loading): baseline (tiny model) ${mib(baseline.peak)} (${mib(baseline.loadPeak)}), ` +
          `resident ${mib(resident.peak)} (${mib(resident.loadPeak)}), cold under ${mib(budget)}: ${mib(cold.peak)} (${mib(cold.loadPeak)})`,
      );
      expect(cold.peak, `cold ${mib(cold.peak)} vs budget ${mib(budget)} + baseline ${mib(baseline.peak)}`).toBeLessThanOrEqual(budget + baseline.peak);
      // the resident run shows the test can tell: it is over that line
      expect(resident.peak).toBeGreaterThan(budget + baseline.peak);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
