// Threads (issue 13, docs/threads.md): the matmuls split over a pool of workers on one shared memory give the same
// logits, bit for bit, as one thread, for any thread count; the pool is stopped by dispose and by a failed load, and a
// process that never disposes still exits.
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { loadModel, EdgeLLMError, type LoadOptions } from '../src/index.js';
import { GGMLType } from '../src/gguf/types.js';
import { makeSyntheticLlama, type SyntheticSpec } from './util/synthetic.js';
import { seededIds } from './util/compare.js';
import { announceSkipIfNoModels, modelPath, ROOT } from './util/shared.js';

const { Q8_0, Q4_0, Q4_K, Q6_K, Q5_0, IQ4_XS, F16 } = GGMLType;

/**
 * Logits of 37 tokens, as bytes, twice: in batches of 16 (prefill: tiles of 4 tokens and a remainder, split by tokens)
 * and one token per forward (decode, split by row groups).
 */
async function logits(bytes: Uint8Array | string, ids: number[], options: LoadOptions): Promise<{ bytes: Buffer; threads: number; threading: string }> {
  const out: Buffer[] = [];
  let info = { threads: 0, threading: '' };
  for (const batchSize of [16, 1]) {
    const model = await loadModel(bytes, { batchSize, contextLength: 64, ...options });
    try {
      out.push(Buffer.from((await model.evaluate(ids)).buffer.slice(0)));
      info = { threads: model.info.threads, threading: model.info.threading };
    } finally {
      model.dispose();
    }
  }
  return { bytes: Buffer.concat(out), ...info };
}

async function expectSameForThreadCounts(bytes: Uint8Array | string, vocab: number, counts = [2, 3], length = 37) {
  const ids = seededIds(length, vocab, 7);
  const options: LoadOptions = { contextLength: Math.max(64, length) };
  const one = await logits(bytes, ids, { ...options, threads: 1 });
  expect(one.threads).toBe(1);
  for (const threads of counts) {
    const many = await logits(bytes, ids, { ...options, threads });
    expect(many.threads, many.threading).toBe(threads);
    expect(many.bytes.equals(one.bytes), `threads ${threads}: logits differ from one thread's`).toBe(true);
  }
}

// Shapes big enough that every matmul is split (≥ 2^17 multiply-adds), with a row count that leaves a padded group.
const BASE: SyntheticSpec = { dim: 512, nLayers: 2, nHeads: 8, nKvHeads: 2, ffn: 1024, vocab: 1000, ctx: 64, seed: 5, tied: false };

describe('threads: the same logits for 1, 2 and 3 threads', () => {
  const cases: Array<[string, SyntheticSpec]> = [
    ['Q8_0', { ...BASE, type: Q8_0 }],
    ['Q4_0 with a Q6_K output', { ...BASE, type: Q4_0, types: { 'output.weight': Q6_K } }],
    ['Q4_K / Q6_K / Q5_0 / IQ4_XS / F16 mix', { ...BASE, type: Q4_K, types: { 'blk.0.ffn_down.weight': Q6_K, 'blk.1.attn_q.weight': Q5_0, 'blk.1.ffn_up.weight': IQ4_XS, 'output.weight': F16 } }],
    ['gemma3 (windows, q/k norms, GELU), Q8_0', { ...BASE, architecture: 'gemma3', headDim: 128, nHeads: 4, nKvHeads: 1, window: 8, type: Q8_0, tied: true }],
  ];
  for (const [name, spec] of cases) {
    it(name, async () => {
      await expectSameForThreadCounts(makeSyntheticLlama(spec, { keepWeights: false }).bytes, spec.vocab);
    });
  }

  it('Q8_0 over 100 positions: attention split by KV head past 64 positions too', async () => {
    await expectSameForThreadCounts(makeSyntheticLlama({ ...BASE, type: Q8_0, ctx: 128 }, { keepWeights: false }).bytes, BASE.vocab, [2, 3], 100);
  });

  it.skipIf(!announceSkipIfNoModels('threads: sotu-15m'))('sotu-15m q8_0: logits, and 24 greedy tokens', async () => {
    await expectSameForThreadCounts(modelPath('sotu-15m-q8_0.gguf'), 32000, [2]);
    const greedy = async (threads: number) => {
      const model = await loadModel(modelPath('sotu-15m-q8_0.gguf'), { threads });
      const ids: number[] = [];
      try {
        for await (const _ of model.generate('The state of the Union is', { maxTokens: 24, temperature: 0, onToken: (id) => ids.push(id) }));
      } finally {
        model.dispose();
      }
      return ids;
    };
    expect(await greedy(2)).toEqual(await greedy(1));
  });
});

describe('threads: what runs, and stopping', () => {
  const bytes = makeSyntheticLlama({ ...BASE, type: Q8_0 }, { keepWeights: false }).bytes;

  it("info says how many threads run and why; 'auto' takes the cores", async () => {
    const model = await loadModel(bytes, { threads: 'auto' });
    expect(model.info.threads).toBeGreaterThanOrEqual(1);
    expect(model.info.threading).toMatch(/'auto' \(\d+ cores\)/);
    model.dispose();
    const one = await loadModel(bytes);
    expect([one.info.threads, one.info.threading]).toEqual([1, '1: threads 1']);
    one.dispose();
  });

  it('an abort in the middle of a threaded decode stops within one token, and the model runs on', async () => {
    const model = await loadModel(bytes, { threads: 2 });
    try {
      const ac = new AbortController();
      const ids: number[] = [];
      let tokensAtAbort = -1;
      const err = await (async () => {
        for await (const _ of model.generate([1, 5, 9], { maxTokens: 50, temperature: 0, signal: ac.signal, onToken: (id) => ids.push(id) })) {
          if (ids.length === 3 && tokensAtAbort < 0) {
            tokensAtAbort = ids.length;
            ac.abort();
          }
        }
      })().catch((e) => e);
      expect((err as EdgeLLMError).code).toBe('ABORTED');
      expect(ids.length - tokensAtAbort).toBeLessThanOrEqual(1);
      expect((await model.evaluate([1, 5, 9])).length).toBe(3 * 1000);
    } finally {
      model.dispose();
    }
  });

  it('a bad thread count is BAD_ARGUMENT', async () => {
    for (const threads of [0, 1.5, 1000, 'many']) {
      const err = await loadModel(bytes, { threads: threads as number }).catch((e) => e);
      expect(err).toBeInstanceOf(EdgeLLMError);
      expect((err as EdgeLLMError).code).toBe('BAD_ARGUMENT');
    }
  });

  it('a process whose threaded model is disposed, or never disposed, exits by itself', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'edgellm-threads-'));
    try {
      const file = path.join(dir, 'm.gguf');
      writeFileSync(file, bytes);
      for (const dispose of [true, false]) {
        const script = `
          const { loadModel } = await import(${JSON.stringify(pathToFileURL(path.join(ROOT, 'dist/index.js')).href)});
          const model = await loadModel(${JSON.stringify(file)}, { threads: 2 });
          if (model.info.threads !== 2) throw new Error(model.info.threading);
          await model.evaluate([1, 5, 9, 12]);
          ${dispose ? 'model.dispose();' : ''}
          console.log('done');`;
        const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30_000 });
        expect(r.error, `dispose ${dispose}: the process did not exit (${r.stderr})`).toBeUndefined();
        expect([r.status, r.stdout.trim()], r.stderr).toEqual([0, 'done']);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('100 threaded load/dispose cycles leave RSS flat', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'edgellm-threads-'));
    try {
      const file = path.join(dir, 'm.gguf');
      writeFileSync(file, bytes);
      // In a process of its own, so the test runner's heap does not blur it; RSS after 20 cycles against after 100
      // (a pool that leaked its workers would leave ~10 MB of isolate and instance behind per cycle).
      const script = `
        const { loadModel } = await import(${JSON.stringify(pathToFileURL(path.join(ROOT, 'dist/index.js')).href)});
        const rss = [];
        for (let i = 1; i <= 100; i++) {
          const model = await loadModel(${JSON.stringify(file)}, { threads: 2, contextLength: 64 });
          await model.evaluate([1, 5, 9, 12]);
          model.dispose();
          if (i === 20 || i === 100) {
            globalThis.gc();
            await new Promise((r) => setTimeout(r, 100));
            rss.push(process.memoryUsage().rss);
          }
        }
        console.log(JSON.stringify(rss));`;
      const r = spawnSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 120_000 });
      expect(r.status, r.stderr).toBe(0);
      const [at20, at100] = JSON.parse(r.stdout) as number[];
      console.log(`RSS after 20 threaded load/dispose cycles ${(at20 / 1e6).toFixed(0)} MB, after 100 ${(at100 / 1e6).toFixed(0)} MB`);
      expect(at100 - at20, 'RSS growth over 80 cycles').toBeLessThan(64e6);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 150_000);
});
