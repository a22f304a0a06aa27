// Sparse retrieval attention and the KV tiers, without the shared models: the page selection on a 16K-token cache
// built directly with the kernels (a planted key must always be found), sparse attention against an f64 reference over
// exactly the pages it selected, and tiered runs against all-hot runs on synthetic models (same bits, bounded hot
// bytes, BUDGET errors that say what fits).
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { EdgeLLMError, loadModel, type KVType } from '../src/index.js';
import { Arena } from '../src/plan/arena.js';
import { KVCache } from '../src/kv/cache.js';
import { attend, attentionPolicy, bindAttention, planAttention, selectPages, sinkTokens, type AttentionOptions } from '../src/attention/attend.js';
import { instantiateKernels, STATIC_RESERVE, type Kernels } from '../src/runtime/kernels.js';
import type { LlamaConfig } from '../src/model/config.js';
import { GGMLType } from '../src/gguf/types.js';
import { makeSyntheticLlama } from './util/synthetic.js';
import { gaussian } from './util/compare.js';

const TYPES: KVType[] = ['f32', 'f16', 'int8', 'int4'];

/** One layer, one KV head serving a group of 4 query heads, head dim 64: a KV cache and attention on real kernels. */
async function harness(ctx: number, type: KVType, attention: AttentionOptions) {
  const D = 64, group = 4;
  const c = { nLayers: 1, nHeads: group, nKvHeads: 1, headDim: D, window: [0], attnScale: 1 / Math.sqrt(D), attnSoftcap: 0 } as LlamaConfig;
  const policy = attentionPolicy(attention);
  const arena = new Arena(STATIC_RESERVE);
  const kv = new KVCache(arena, c, ctx, { type }, sinkTokens(policy));
  const a = planAttention(arena, c, kv, policy);
  const io = arena.reserve('test io', (2 * D + 2 * group * D) * 4);
  const memory = arena.createMemory();
  const module = await WebAssembly.compile(readFileSync(new URL('../build/edgellm-simd.wasm', import.meta.url)));
  const k: Kernels = await instantiateKernels(module, memory);
  kv.bind(memory);
  bindAttention(a, memory);
  const heap = new Float32Array(memory.buffer);
  const kPtr = io, vPtr = io + D * 4, qPtr = io + 2 * D * 4, outPtr = qPtr + group * D * 4;
  return { D, group, c, kv, a, k, heap, kPtr, vPtr, qPtr, outPtr };
}

describe('sparse selection on a 16K-token cache (mechanism)', () => {
  const CTX = 16384;
  for (const type of TYPES) {
    it(`${type}: a planted key aligned with a later query is always selected, at any depth`, async () => {
      const h = await harness(CTX, type, { mode: 'sparse' });
      const { D, group, kv, a, k, heap } = h;
      const rand = gaussian(7 + type.length);
      const keys = new Float32Array(CTX * D).map(() => rand());
      const values = new Float32Array(CTX * D).map(() => rand());
      for (let trial = 0; trial < 6; trial++) {
        // The query group shares a direction u (as the heads of a retrieval group do), with head-specific noise.
        const u = new Float64Array(D).map(() => rand());
        const norm = Math.hypot(...u);
        const q = new Float32Array(group * D).map((_, i) => (2 * u[i % D]) / norm + 0.3 * rand());
        // Planted at a random depth, outside the sink page and the window: a key of typical norm (√D) along u, plus noise.
        const depth = 32 + Math.floor(((trial + rand() * 0.1 + 0.5) / 7) * (CTX - 200));
        const planted = keys.slice();
        for (let c = 0; c < D; c++) planted[depth * D + c] = (4 * Math.sqrt(D) * u[c]) / norm + 0.5 * rand();
        for (let pos = 0; pos < CTX; pos++) {
          heap.set(planted.subarray(pos * D, (pos + 1) * D), h.kPtr / 4);
          heap.set(values.subarray(pos * D, (pos + 1) * D), h.vPtr / 4);
          kv.append(k, 0, h.kPtr, h.vPtr, pos);
        }
        heap.set(q, h.qPtr / 4);
        const n = selectPages(k, kv, a, 0, 0, h.qPtr, group, CTX);
        const selected = Array.from(a.selected.subarray(0, n));
        expect(selected, `planted at ${depth} (page ${Math.floor(depth / 32)})`).toContain(Math.floor(depth / 32));
        // sink page + window pages + top 4: 256 of 16384 tokens
        expect(n).toBe(1 + 2 + 4);
        expect(selected).toEqual([...selected].sort((x, y) => x - y));
      }
    });
  }

  it('sparse attention equals f64 attention over exactly the selected pages (f32 pages)', async () => {
    const ctx = 2048;
    const h = await harness(ctx, 'f32', { mode: 'sparse', topKPages: 3, windowTokens: 40, sinkTokens: 4 });
    const { D, group, kv, a, k, heap, c } = h;
    const rand = gaussian(99);
    const keys = new Float32Array(ctx * D).map(() => rand());
    const values = new Float32Array(ctx * D).map(() => rand());
    let filled = 0;
    // Queried as the model queries: over every position appended so far.
    for (const nPos of [100, 200, 1000, ctx - 17, ctx]) {
      for (; filled < nPos; filled++) {
        heap.set(keys.subarray(filled * D, (filled + 1) * D), h.kPtr / 4);
        heap.set(values.subarray(filled * D, (filled + 1) * D), h.vPtr / 4);
        kv.append(k, 0, h.kPtr, h.vPtr, filled);
      }
      const q = new Float32Array(group * D).map(() => rand());
      heap.set(q, h.qPtr / 4);
      const n = selectPages(k, kv, a, 0, 0, h.qPtr, group, nPos);
      const pages = Array.from(a.selected.subarray(0, n));
      attend(k, c, kv, a, 0, h.outPtr, h.qPtr, nPos);
      const got = heap.slice(h.outPtr / 4, h.outPtr / 4 + group * D);
      const tokens = pages.flatMap((p) => Array.from({ length: Math.min(32, nPos - p * 32) }, (_, i) => p * 32 + i));
      let maxErr = 0;
      for (let j = 0; j < group; j++) {
        const s = tokens.map((t) => {
          let dot = 0;
          for (let ch = 0; ch < D; ch++) dot += q[j * D + ch] * keys[t * D + ch];
          return dot / Math.sqrt(D);
        });
        const m = Math.max(...s);
        const w = s.map((x) => Math.exp(x - m));
        const sum = w.reduce((x, y) => x + y, 0);
        for (let ch = 0; ch < D; ch++) {
          let o = 0;
          tokens.forEach((t, i) => (o += w[i] * values[t * D + ch]));
          maxErr = Math.max(maxErr, Math.abs(o / sum - got[j * D + ch]));
        }
      }
      // sinks (page 0) + window (pages over the last 40 tokens, the partial one included) + 3 pages, or all of them
      const all = Math.ceil(nPos / 32);
      expect(n).toBe(Math.min(all, 1 + (Math.floor((nPos - 1) / 32) - Math.floor((nPos - 40) / 32) + 1) + 3));
      expect(maxErr, `${nPos} positions, pages ${pages}`).toBeLessThan(2e-5);
    }
  });
});

// A small synthetic model: 3 layers, 4 query heads on 2 KV heads of 16, Q8_0 weights.
const spec = { dim: 64, nLayers: 3, nHeads: 4, nKvHeads: 2, ffn: 96, vocab: 320, ctx: 1024, type: GGMLType.Q8_0, seed: 5 };
const model = makeSyntheticLlama(spec, { keepWeights: false });

/** Greedy ids after a fixed prompt, and the bits of the last logits. */
async function run(opts: Parameters<typeof loadModel>[1], n = 420) {
  const m = await loadModel(model.bytes, { contextLength: 512, ...opts });
  const ids: number[] = [];
  await m.complete([1, 40, 41, 42, 43], { maxTokens: n, temperature: 0, onToken: (id) => ids.push(id) });
  const usage = m.memory();
  const stats = m.attentionStats();
  m.dispose();
  return { ids, usage, stats };
}

describe('KV tiers on a synthetic model', () => {
  for (const type of TYPES) {
    for (const mode of ['full', 'sparse'] as const) {
      it(`${type}, ${mode} attention: overflowing the hot tier gives the all-hot tokens, and hot bytes stay under the limit`, async () => {
        const attention = { mode, topKPages: 2, windowTokens: 48 };
        const hot = await run({ kv: { type }, attention });
        const hotBytes = hot.usage.kv.hotBytes - Math.floor((2 * hot.usage.kv.hotPageSlots) / 3) * hot.usage.kv.pageBytes; // a third of the page slots
        const tiered = await run({ kv: { type, hotBytes, warmBytes: '4MB' }, attention });
        expect(tiered.ids).toEqual(hot.ids);
        expect(tiered.ids.length).toBe(420);
        const kv = tiered.usage.kv;
        expect(kv.hotBytes).toBeLessThanOrEqual(hotBytes);
        const kvRegions = tiered.usage.regions.filter((r) => r.name.startsWith('kv.'));
        const span = Math.max(...kvRegions.map((r) => r.offset + r.bytes)) - Math.min(...kvRegions.map((r) => r.offset));
        expect(span, 'the KV regions in wasm memory, padding included').toBeLessThanOrEqual(hotBytes);
        expect(kv.hotPagesInUse).toBeLessThanOrEqual(kv.hotPageSlots);
        expect(kv.warmPagesInUse).toBeGreaterThan(0);
        expect(kv.warmBytesAllocated).toBeLessThanOrEqual(kv.warmBytes);
        expect(kv.pagesStaged).toBeGreaterThan(0);
        // 425 positions of 2 KV heads × 3 layers in pages of 32: 13 sealed pages each
        expect(kv.hotPagesInUse + kv.warmPagesInUse).toBe(6 * 13);
        expect(tiered.usage.totalBytes).toBeLessThan(hot.usage.totalBytes);
        if (mode === 'sparse') expect(tiered.stats.meanTokensRead).toBeLessThan(tiered.stats.meanPositions);
      });
    }
  }

  it('a hot tier too small, or a warm tier too small, is BUDGET saying which context fits, and that context loads', async () => {
    const err = await loadModel(model.bytes, { contextLength: 512, kv: { hotBytes: '60KB', warmBytes: '4MB' } }).catch((e) => e);
    expect(err).toBeInstanceOf(EdgeLLMError);
    expect(err.code).toBe('BUDGET');
    expect(err.message).toMatch(/kv.hotBytes 60.0 KiB is too small for a context of 512 tokens: .*; a context of (\d+) tokens would fit/);
    const fits = Number(/a context of (\d+) tokens would fit/.exec(err.message)![1]);
    await expect(loadModel(model.bytes, { contextLength: fits, kv: { hotBytes: '60KB', warmBytes: '4MB' } })).resolves.toBeTruthy();
    await expect(loadModel(model.bytes, { contextLength: fits + 1, kv: { hotBytes: '60KB', warmBytes: '4MB' } })).rejects.toThrow(/too small/);
    const none = await loadModel(model.bytes, { contextLength: 512, kv: { hotBytes: '30KB', warmBytes: '4MB' } }).catch((e) => e);
    expect(none.message).toMatch(/no context fits: raise kv.hotBytes/);

    const warm = await loadModel(model.bytes, { contextLength: 512, kv: { hotBytes: '100KB', warmBytes: '64KB' } }).catch((e) => e);
    expect(warm.code).toBe('BUDGET');
    expect(warm.message).toMatch(/need [\d.]+ KiB of kv.warmBytes, which is 64.0 KiB; a context of (\d+) tokens would fit/);
    const fitsWarm = Number(/a context of (\d+) tokens would fit/.exec(warm.message)![1]);
    expect(fitsWarm).toBeGreaterThan(0);
    expect(fitsWarm).toBeLessThan(512);
    await expect(loadModel(model.bytes, { contextLength: fitsWarm, kv: { hotBytes: '100KB', warmBytes: '64KB' } })).resolves.toBeTruthy();
  });

  // Host memory counts against memoryBudget as wasm does (docs/memory.md): pages that do not fit it go to disk.
  it('memoryBudget with kv.coldBytes puts the KV pages that do not fit on disk, warm taking what is left; without it, BUDGET says so', async () => {
    const all = await loadModel(model.bytes, { contextLength: 1024 });
    const budget = all.memory().plannedBytes - 512 * 1024;
    const err = await loadModel(model.bytes, { contextLength: 1024, memoryBudget: budget, weights: 'resident' }).catch((e) => e);
    expect(err.code).toBe('BUDGET');
    expect(err.message).toMatch(/KV pages on disk \(kv: \{ coldBytes \}\)/);
    const m = await loadModel(model.bytes, { contextLength: 1024, memoryBudget: budget, weights: 'resident', kv: { warmBytes: '256KB', coldBytes: '2MB' } });
    expect(m.memory().plannedBytes).toBeLessThanOrEqual(budget);
    const ids: number[] = [];
    const ref: number[] = [];
    await m.complete([1, 40, 41, 42, 43], { maxTokens: 700, onToken: (id) => ids.push(id) });
    await all.complete([1, 40, 41, 42, 43], { maxTokens: 700, onToken: (id) => ref.push(id) });
    expect(ids.length).toBe(700);
    expect(ids).toEqual(ref);
    expect(m.memory().kv.coldPagesInUse).toBeGreaterThan(0);
  });

  it('bad attention options are BAD_ARGUMENT', async () => {
    for (const attention of [{ mode: 'dense' }, { topKPages: -1 }, { windowTokens: 1.5 }, { sinkTokens: Infinity }] as AttentionOptions[]) {
      const err = await loadModel(model.bytes, { attention }).catch((e) => e);
      expect(err.code, JSON.stringify(attention)).toBe('BAD_ARGUMENT');
      expect(err.message).toMatch(/attention\./);
    }
  });
});
