// Models larger than one wasm memory (issue 14, item 2; docs/memory.md): the layers split over several kernel
// instances, each a memory of its own holding whole layers with their KV cache, give the one-instance logits and greedy
// tokens bit for bit. memoryPerInstance stands in for wasm32's 4 GiB so that small models split: a Q4_K_M-like mix,
// tied embeddings with biases (the output is instance 0's embeddings), Gemma 3's sliding-window layers spread over
// instances (their KV rings and a prefix reuse that must restart), streamed layers inside instances, KV pages in the
// cold tier and sparse attention, at 1 and 2 threads (a pool per instance).
import { describe, expect, it } from 'vitest';
import { loadModel, EdgeLLMError, type LoadOptions } from '../src/index.js';
import { GGMLType } from '../src/gguf/types.js';
import { splitLayers } from '../src/plan/instances.js';
import { makeSyntheticLlama, q4kmLikeTypes, type SyntheticSpec } from './util/synthetic.js';
import { bits, seededIds } from './util/compare.js';
import { greedyIds } from './util/models.js';

const { F32, F16, Q8_0, Q4_0, Q4_K, Q6_K, Q5_0 } = GGMLType;

const BASE: SyntheticSpec = { dim: 512, nLayers: 6, nHeads: 8, nKvHeads: 4, ffn: 1536, vocab: 384, ctx: 128 };

function q4kmTypes(nLayers: number): Record<string, number> {
  return { ...q4kmLikeTypes(nLayers), 'blk.1.attn_q.weight': Q8_0, 'blk.2.attn_k.weight': F16, 'blk.3.ffn_gate.weight': Q5_0, 'blk.4.attn_output.weight': F32 };
}

const MODELS: Record<string, SyntheticSpec> = {
  'Q4_K_M-like mix, untied': { ...BASE, type: Q4_K, types: q4kmTypes(BASE.nLayers), seed: 11 },
  'Q4_0, tied embeddings, q/k/v biases': { ...BASE, type: Q4_0, tied: true, qkvBias: true, seed: 12 },
  'gemma3: sliding-window layers in every instance': {
    ...BASE, architecture: 'gemma3', type: Q8_0, window: 16, swaPattern: [true, true, false, true, true, false], ropeBaseLocal: 10000, seed: 13,
  },
};

/**
 * Logits of 31 positions in batches of 8, then greedy tokens twice: a prompt, and a second one sharing its first 20
 * ids, which reuses (truncates) the cache: every instance's cache must keep the same positions.
 */
async function run(bytes: Uint8Array, opts: LoadOptions) {
  const model = await loadModel(bytes, { batchSize: 8, ...opts });
  try {
    const ids = seededIds(31, model.info.vocab, 40);
    const logits = bits(await model.evaluate(ids));
    const tokens = [...(await greedyIds(model, ids.slice(0, 30), 10)), ...(await greedyIds(model, [...ids.slice(0, 20), ...ids.slice(0, 6)], 10))];
    return { logits, tokens, memory: model.memory(), info: model.info, stats: model.attentionStats() };
  } finally {
    await model.dispose();
  }
}

/** A per-instance limit about 1/2.6 of the one-instance plan, in whole wasm pages: three instances or more. */
function limitFor(totalBytes: number): number {
  return Math.max(1 << 20, Math.ceil(totalBytes / 2.6 / 65536) * 65536);
}

describe('several kernel instances give the one-instance logits and tokens', () => {
  for (const [name, spec] of Object.entries(MODELS)) {
    it(name, async () => {
      const { bytes } = makeSyntheticLlama(spec, { keepWeights: false });
      const one = await run(bytes, {});
      expect(one.memory.instances).toEqual([{ layers: [0, spec.nLayers], bytes: one.memory.totalBytes }]);
      const limit = limitFor(one.memory.totalBytes);
      for (const threads of [1, 2]) {
        const r = await run(bytes, { memoryPerInstance: limit, threads });
        const label = `${threads} thread(s)`;
        expect(r.info.threads, label).toBe(threads);
        const inst = r.memory.instances;
        expect(inst.length, label).toBeGreaterThanOrEqual(3);
        // contiguous runs of whole layers covering the model, each memory within the limit
        expect(inst[0].layers[0]).toBe(0);
        for (let i = 1; i < inst.length; i++) expect(inst[i].layers[0]).toBe(inst[i - 1].layers[1]);
        expect(inst.at(-1)!.layers[1]).toBe(spec.nLayers);
        for (const i of inst) expect(i.bytes).toBeLessThanOrEqual(limit);
        expect(r.memory.totalBytes).toBe(inst.reduce((s, i) => s + i.bytes, 0));
        expect(new Set(r.memory.regions.map((g) => g.instance))).toEqual(new Set(inst.map((_, n) => n)));
        // every layer resident: nothing is copied per token
        expect(r.memory.weights.layers.every((x) => x === 'resident'), label).toBe(true);
        expect(r.memory.weights.stages).toBe(0);
        expect(r.logits.equals(one.logits), label).toBe(true);
        expect(r.tokens, label).toEqual(one.tokens);
        expect(r.memory.kv.hotPagesInUse, label).toBe(one.memory.kv.hotPagesInUse);
        expect(r.stats.queries, label).toBe(one.stats.queries);
      }
    });
  }
});

describe('instances with streamed layers, KV tiers and sparse attention', () => {
  const spec = MODELS['Q4_K_M-like mix, untied'];
  const { bytes } = makeSyntheticLlama(spec, { keepWeights: false });

  it('cold layers inside instances (a slot in each), cold KV pages and sparse attention: the same bits', async () => {
    const { bytes } = makeSyntheticLlama(MODELS['Q4_0, tied embeddings, q/k/v biases'], { keepWeights: false });
    const attention = { mode: 'sparse' as const, topKPages: 1, windowTokens: 8, sinkTokens: 4 };
    const kv = { pageTokens: 8, hotBytes: '640KB', coldBytes: '8MB' };
    const one = await run(bytes, { attention, kv });
    for (const stageAhead of [false, true]) {
      // a limit that the all-cold plan needs two instances for: each holds its slots and a share of the rest
      const cold = await run(bytes, { attention, kv, weights: 'cold', stageAhead });
      expect(cold.memory.instances.length).toBe(1);
      const slots = cold.memory.weights.slotBytes;
      const limit = Math.ceil((slots + (cold.memory.totalBytes - slots) * 0.8) / 65536) * 65536;
      for (const threads of [1, 2]) {
        const r = await run(bytes, { attention, kv, weights: 'cold', memoryPerInstance: limit, threads, stageAhead });
        const m = r.memory;
        expect(m.instances.length).toBeGreaterThanOrEqual(2);
        expect(m.weights.layers.every((x) => x === 'cold')).toBe(true);
        // each instance has a slot for its streamed layers, or two when a worker stages the next one ahead
        expect(m.regions.filter((g) => g.name.startsWith('weights.slot')).length).toBe(m.instances.length * (stageAhead ? 2 : 1));
        expect(m.weights.stagedAhead > 0).toBe(stageAhead);
        expect(m.kv.coldPagesStaged, 'some pages were read back from the cold tier').toBeGreaterThan(0);
        expect(r.logits.equals(one.logits), `${threads} thread(s), stageAhead ${stageAhead}`).toBe(true);
        expect(r.tokens).toEqual(one.tokens);
      }
    }
  });

  it("'auto' splits before it streams: past one memory's limit, every layer stays resident", async () => {
    const one = await run(bytes, {});
    const r = await run(bytes, { memoryPerInstance: limitFor(one.memory.totalBytes) });
    expect(r.memory.instances.length).toBeGreaterThan(1);
    expect(r.memory.weights.layers.every((x) => x === 'resident')).toBe(true);
    expect(r.logits.equals(one.logits)).toBe(true);
  });

  it('bad limits are BAD_ARGUMENT; a limit below one layer is BUDGET, saying so', async () => {
    for (const v of ['0', 'lots', '-1GB', '5GiB', 1000]) {
      await expect(loadModel(bytes, { memoryPerInstance: v }), String(v)).rejects.toMatchObject({ code: 'BAD_ARGUMENT', message: expect.stringContaining('memoryPerInstance') });
    }
    const err = await loadModel(bytes, { memoryPerInstance: '1MB', weights: 'resident' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(EdgeLLMError);
    expect(err).toMatchObject({ code: 'BUDGET', message: expect.stringMatching(/^one wasm memory of 1\.0 MiB \(memoryPerInstance\) cannot hold a kernel instance's least: .*; raise memoryPerInstance$/) });
  });
});

describe('splitLayers', () => {
  it('gives contiguous runs, each instance a layer at least, balanced by bytes with the head on instance 0', () => {
    expect(splitLayers([10, 10, 10, 10], 0, 1)).toEqual([0, 0, 0, 0]);
    expect(splitLayers([10, 10, 10, 10], 0, 2)).toEqual([0, 0, 1, 1]);
    expect(splitLayers([10, 10, 10, 10], 20, 2)).toEqual([0, 1, 1, 1]);
    expect(splitLayers([10, 10, 10, 10], 1000, 3)).toEqual([0, 1, 2, 2]);
    expect(splitLayers([10, 10, 10], 0, 3)).toEqual([0, 1, 2]);
    expect(splitLayers([1, 1, 1, 1, 100], 0, 2)).toEqual([0, 0, 0, 0, 1]);
    expect(() => splitLayers([10, 10], 0, 3)).toThrow(RangeError);
  });
});
