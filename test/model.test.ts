// The real models against their references: PyTorch (f32 logits, greedy) and llama.cpp (tiny-260k greedy).
import { describe, expect, it } from 'vitest';
import { loadModel, type Model } from '../src/index.js';
import { announceSkipIfNoModels, modelPath } from './util/shared.js';
import { readNpyF32 } from './util/npy.js';
import { greedyIds, json } from './util/models.js';

const have = announceSkipIfNoModels('real-model tests (test/model.test.ts)');

describe.skipIf(!have)('sotu-15m-f16 vs PyTorch', () => {
  const ref = have ? json('sotu-15m-pytorch-ref.json') : { prompts: [] };
  let model: Model;

  it('loads', async () => {
    model = await loadModel(modelPath('sotu-15m-f16.gguf'));
    expect(model.info.tiedOutput).toBe(true);
    expect(model.info).toMatchObject({ dim: 288, nLayers: 6, nHeads: 6, nKvHeads: 2, headDim: 48, ffn: 768, vocab: 32000 });
  });

  it('tokenizes the 3 prompts to the reference ids', () => {
    for (const p of ref.prompts) expect(model.tokenize(p.text)).toEqual(p.ids);
  });

  it('logits at every position within 0.02 of PyTorch', async () => {
    for (const [i, p] of ref.prompts.entries()) {
      const { shape, data } = readNpyF32(modelPath(`sotu-15m-pytorch-logits-${i + 1}.npy`));
      expect(shape).toEqual([p.ids.length, 32000]);
      const logits = await model.evaluate(p.ids);
      let maxDiff = 0;
      for (let j = 0; j < data.length; j++) maxDiff = Math.max(maxDiff, Math.abs(logits[j] - data[j]));
      console.log(`sotu-15m-f16 prompt ${i + 1}: max |Δlogit| vs PyTorch = ${maxDiff.toFixed(5)}`);
      expect(maxDiff).toBeLessThanOrEqual(0.02);
    }
  });

  it('48 greedy tokens identical on all 3 prompts', async () => {
    for (const p of ref.prompts) {
      const ids = await greedyIds(model, p.ids, 48);
      expect(ids).toEqual(p.greedy_ids);
    }
  });
});

describe.skipIf(!have)('tiny-260k vs llama.cpp', () => {
  const ref = have ? json('tiny-260k-llamacpp.json') : {};
  // llama.cpp keeps its KV cache in f16. With f16 KV we reproduce all 60 tokens of both files. With our f32 reference
  // KV, q8_0 parts ways at token 36, where llama.cpp's choice leads ours by 0.09 logits: the dim-64, head-dim-8 model
  // is that sensitive to the cache's rounding, so both are asserted and the f32 divergence point is logged.
  for (const [type, kv] of [['f32', 'f32'], ['f32', 'f16'], ['q8_0', 'f16']] as const) {
    it(`${type} with ${kv} KV: 60 greedy tokens identical`, async () => {
      const r = ref[`tiny-260k-${type}`];
      const model = await loadModel(modelPath(`tiny-260k-${type}.gguf`), { kv: { type: kv } });
      expect(model.tokenize(r.prompt)).toEqual(r.ids);
      const ids = await greedyIds(model, r.ids, 60);
      expect(ids).toEqual(r.greedy_ids);
      expect(model.detokenize(ids)).toBe(r.greedy_text);
    });
  }
  it('q8_0 with f32 KV: follows llama.cpp until the f16 cache rounding decides a close call', async () => {
    const r = ref['tiny-260k-q8_0'];
    const model = await loadModel(modelPath('tiny-260k-q8_0.gguf'));
    const ids = await greedyIds(model, r.ids, 60);
    const firstDiff = ids.findIndex((id, i) => id !== r.greedy_ids[i]);
    console.log(`tiny-260k-q8_0, f32 KV: ${firstDiff < 0 ? 'all 60 match' : `diverges from llama.cpp (f16 KV) at token ${firstDiff}`}`);
    expect(firstDiff < 0 || firstDiff >= 30).toBe(true);
  });
});
