// sotu-15m q8_0/q4_0/f16 against llama.cpp: greedy tokens on the 5 reference prompts, and dev.txt perplexity.
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { loadModel, type Model } from '../src/index.js';
import { announceSkipIfNoModels, modelPath, SHARED } from './util/shared.js';
import { greedyIds, json } from './util/models.js';

const have = announceSkipIfNoModels('llama.cpp reference tests (test/llamacpp.test.ts)');

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

