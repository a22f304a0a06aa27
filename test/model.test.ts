// The real models against their two references: PyTorch (f32 logits, greedy) and llama.cpp (greedy, perplexity).
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { loadModel, type Model } from '../src/index.js';
import { announceSkipIfNoModels, modelPath, MODELS, SHARED } from './util/shared.js';
import { readNpyF32 } from './util/npy.js';

const have = announceSkipIfNoModels('real-model tests (test/model.test.ts)');
const json = (name: string) => JSON.parse(readFileSync(path.join(MODELS, name), 'utf8'));


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

/** Greedy ids through the public API (temperature 0 is argmax; the repetition penalty is off by default). */
async function greedyIds(model: Model, prompt: number[], n: number): Promise<number[]> {
  const ids: number[] = [];
  await model.complete(prompt, { maxTokens: n, temperature: 0, onToken: (id) => ids.push(id) });
  return ids;
}

/** llama.cpp's greedy tokens: at least `need` of the prompts match all tokens. */
async function matchLlamaCpp(file: string, refName: string, need: number) {
  const ref = json(refName);
  const model = await loadModel(modelPath(file));
  let matched = 0;
  for (const p of ref.prompts) {
    expect(model.tokenize(p.text)).toEqual(p.ids);
    const ids = await greedyIds(model, p.ids, p.greedy_ids.length);
    const firstDiff = ids.findIndex((id, i) => id !== p.greedy_ids[i]);
    console.log(`${file} ${JSON.stringify(p.text)}: ${firstDiff < 0 ? `all ${ids.length} greedy tokens match llama.cpp` : `diverges from llama.cpp at token ${firstDiff}`}`);
    if (firstDiff < 0) matched++;
  }
  expect(matched).toBeGreaterThanOrEqual(need);
  return model;
}

const dev = have ? readFileSync(path.join(SHARED, 'eval/dev.txt'), 'utf8') : '';

for (const type of ['q8_0', 'q4_0', 'f16']) {
  describe.skipIf(!have)(`sotu-15m-${type} vs llama.cpp`, () => {
    let model: Model;
    it('64 greedy tokens identical on at least 4 of 5 prompts', async () => {
      model = await matchLlamaCpp(`sotu-15m-${type}.gguf`, `sotu-15m-llamacpp-${type}-dev.json`, 4);
    });
    it('dev.txt perplexity (4 × 2048) within 0.5% of llama.cpp', async () => {
      const ref = json(`sotu-15m-llamacpp-${type}-dev.json`).perplexity;
      const r = await model.perplexity(dev, { window: 2048, windows: 4 });
      console.log(`sotu-15m-${type} perplexity ${r.ppl.toFixed(4)} (llama.cpp ${ref.ppl.toFixed(4)}), ${r.tokensScored} tokens`);
      expect(r.textTokens).toBe(ref.text_tokens);
      expect(r.tokensScored).toBe(ref.tokens_scored);
      expect(Math.abs(r.ppl / ref.ppl - 1)).toBeLessThanOrEqual(0.005);
    });
  });
}

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
