// Threads (issue 13, docs/threads.md): the matmuls and attention split over a pool of workers on one shared memory give
// the same logits, bit for bit, as one thread, for 1, 2, 3 and 8 threads (8 oversubscribes a 2-core machine: the
// workers then spin and sleep, which must cost time but never bits): on sotu-15m, on synthetic models holding every
// weight type the loader runs, and with every KV type in full and sparse attention, all pages hot and tiered. The pool
// is stopped by dispose and by a failed load, and a process that never disposes still exits.
import { describe, expect, it, vi } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { loadModel, EdgeLLMError, type AttentionStats, type KVUsage, type LoadOptions } from '../src/index.js';
import { GGMLType, typeName } from '../src/gguf/types.js';
import { KV_TYPES } from '../src/kv/cache.js';
import { WEIGHT_TYPES } from '../src/model/weight-types.js';
import { KernelPool } from '../src/runtime/pool.js';
import { makeSyntheticLlama, type SyntheticSpec } from './util/synthetic.js';
import { seededIds } from './util/compare.js';
import { announceSkipIfNoModels, modelPath, ROOT } from './util/shared.js';

const { Q8_0 } = GGMLType;

/** Jobs the pools have run, by kernel (the real run, counted): shows which steps were split. */
const jobs = new Map<string, number>();
const run = KernelPool.prototype.run;
vi.spyOn(KernelPool.prototype, 'run').mockImplementation(function (this: KernelPool, name, parts) {
  jobs.set(name, (jobs.get(name) ?? 0) + 1);
  return run.call(this, name, parts);
});

/** The thread counts the issue names, compared against one thread. */
const THREADS = [2, 3, 8];

interface Run {
  /** the logits of every position, of every batch size in turn, as bytes */
  bytes: Buffer;
  threads: number;
  threading: string;
  /** per batch size: the attention counters and the KV cache's tiers after the evaluation */
  attention: AttentionStats[];
  kv: KVUsage[];
}

/**
 * Logits of every position of `ids`, once per batch size: 16 (prefill: tiles of 4 tokens and a remainder, matmuls
 * split by tokens) and 1 (decode, matmuls split by row groups), by default.
 */
async function logits(src: Uint8Array | string, ids: number[], options: LoadOptions, batchSizes = [16, 1]): Promise<Run> {
  const run: Run = { bytes: Buffer.alloc(0), threads: 0, threading: '', attention: [], kv: [] };
  const out: Buffer[] = [];
  for (const batchSize of batchSizes) {
    const model = await loadModel(src, { batchSize, contextLength: 64, ...options });
    try {
      model.attentionStats();
      out.push(Buffer.from((await model.evaluate(ids)).buffer.slice(0)));
      run.attention.push(model.attentionStats());
      run.kv.push(model.memory().kv);
      run.threads = model.info.threads;
      run.threading = model.info.threading;
    } finally {
      model.dispose();
    }
  }
  run.bytes = Buffer.concat(out);
  return run;
}

/**
 * The logits for each thread count in `counts` are the single-thread ones, byte for byte; so are the attention
 * counters (the same pages read). Returns the single-thread run, for the caller to check the case is what it says.
 */
async function expectSameForThreadCounts(
  src: Uint8Array | string, vocab: number,
  { counts = THREADS, length = 37, options = {}, batchSizes }: { counts?: number[]; length?: number; options?: LoadOptions; batchSizes?: number[] } = {},
): Promise<Run> {
  const ids = seededIds(length, vocab, 7);
  const opts: LoadOptions = { contextLength: Math.max(64, length), ...options };
  const one = await logits(src, ids, { ...opts, threads: 1 }, batchSizes);
  expect(one.threads).toBe(1);
  for (const threads of counts) {
    const many = await logits(src, ids, { ...opts, threads }, batchSizes);
    expect(many.threads, many.threading).toBe(threads);
    expect(many.bytes.equals(one.bytes), `threads ${threads}: logits differ from one thread's`).toBe(true);
    expect(many.attention, `threads ${threads}: attention counters`).toEqual(one.attention);
  }
  return one;
}

/** Llama's SPLIT_MIN_MACS (src/model/llama.ts): a product of fewer multiply-adds runs on thread 0 alone. */
const SPLIT_MIN_MACS = 1 << 17;

// Shapes big enough that every matmul is split (≥ 2^17 multiply-adds).
const BASE: SyntheticSpec = { dim: 512, nLayers: 2, nHeads: 8, nKvHeads: 2, ffn: 1024, vocab: 1000, ctx: 64, seed: 5, tied: false };

describe('threads: the same logits for 1, 2, 3 and 8 threads', () => {
  it('gemma3 (windows, q/k norms, GELU), Q8_0', async () => {
    const spec: SyntheticSpec = { ...BASE, architecture: 'gemma3', headDim: 128, nHeads: 4, nKvHeads: 1, window: 8, type: Q8_0, tied: true };
    await expectSameForThreadCounts(makeSyntheticLlama(spec, { keepWeights: false }).bytes, spec.vocab);
  });

  it('gemma3 with 2 KV heads and a window of 64 over 100 positions: the windowed attention splits by head', async () => {
    const spec: SyntheticSpec = { ...BASE, architecture: 'gemma3', headDim: 128, nHeads: 4, nKvHeads: 2, window: 64, ctx: 128, type: Q8_0, tied: true };
    jobs.clear();
    await expectSameForThreadCounts(makeSyntheticLlama(spec, { keepWeights: false }).bytes, spec.vocab, { length: 100, options: { contextLength: 128, kv: { pageTokens: 8 } } });
    expect(jobs.get('attend_head'), 'attention ran as parts').toBeGreaterThan(0);
  });

  const haveModels = announceSkipIfNoModels('threads: sotu-15m');
  // 130 positions: sotu-15m's attention (6 heads of 48) reaches the split's 2^16 multiply-adds from 114 positions on.
  // Its other files in prefill only, for time (the decode split of each weight type is checked below).
  for (const [file, batchSizes] of [['sotu-15m-q8_0.gguf', [16, 1]], ['sotu-15m-q4_0.gguf', [16]], ['sotu-15m-f16.gguf', [16]]] as const) {
    it.skipIf(!haveModels)(`${file}: logits over 130 positions, batches of ${batchSizes.join(' and ')}`, async () => {
      await expectSameForThreadCounts(modelPath(file), 32000, { length: 130, batchSizes: [...batchSizes] });
    });
  }

  it.skipIf(!haveModels)('sotu-15m-q8_0.gguf: 24 greedy tokens', async () => {
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
    const one = await greedy(1);
    for (const threads of THREADS) expect(await greedy(threads), `threads ${threads}`).toEqual(one);
  });
});

describe('threads: every weight type the loader runs, each a split matmul', () => {
  const types = [...WEIGHT_TYPES.keys()];
  // Every matrix of this shape is split even for one token: q, o, gate, up, down, output and (4 KV heads) k and v each
  // have at least 2^17 multiply-adds per token; the output's 998 rows leave a padded group of 4.
  const LAYER = ['attn_q', 'attn_k', 'attn_v', 'attn_output', 'ffn_gate', 'ffn_up', 'ffn_down'];
  const spec: SyntheticSpec = { dim: 512, nLayers: Math.ceil((types.length - 1) / LAYER.length), nHeads: 8, nKvHeads: 4, ffn: 1024, vocab: 998, ctx: 64, seed: 11, type: Q8_0 };
  const { dim, ffn, nHeads, nKvHeads, vocab } = spec;
  const kvDim = (dim / nHeads) * nKvHeads;
  const macs: Record<string, number> = {
    attn_q: dim * dim, attn_k: kvDim * dim, attn_v: kvDim * dim, attn_output: dim * dim, ffn_gate: ffn * dim, ffn_up: ffn * dim, ffn_down: dim * ffn, output: vocab * dim,
  };
  /** One type per matrix in turn, starting `rotation` into the table; `tied`: the output is token_embd. */
  const everyType = (rotation: number, tied: boolean): SyntheticSpec => {
    const slots = [tied ? 'token_embd.weight' : 'output.weight'];
    for (let l = 0; l < spec.nLayers; l++) slots.push(...LAYER.map((t) => `blk.${l}.${t}.weight`));
    return { ...spec, tied, types: Object.fromEntries(slots.map((name, i) => [name, types[(i + rotation) % types.length]])) };
  };

  // Two models: in the second each type sits on another matrix, and the output is the tied embedding.
  const MODELS: Array<[number, boolean]> = [[0, false], [8, true]];

  it('the matrices are big enough to split, and the models hold every type', () => {
    expect(types.length).toBeGreaterThanOrEqual(15);
    for (const [name, n] of Object.entries(macs)) expect(n, name).toBeGreaterThanOrEqual(SPLIT_MIN_MACS);
    for (const [rotation, tied] of MODELS) expect(new Set(Object.values(everyType(rotation, tied).types!)).size).toBe(types.length);
  });

  for (const [rotation, tied] of MODELS) {
    const s = everyType(rotation, tied);
    const output = typeName(s.types![tied ? 'token_embd.weight' : 'output.weight']);
    it(`every type, the output ${output}${tied ? ' (tied embedding)' : ''}`, async () => {
      await expectSameForThreadCounts(makeSyntheticLlama(s, { keepWeights: false }).bytes, s.vocab);
    });
  }
});

describe('threads: every KV type, in full and sparse attention, all pages hot and tiered', () => {
  // Attention over hot pages splits by KV head from 64 tokens read (2·tokens·64·8 ≥ 2^16), full or sparse; the tiers
  // stage pages into shared slots and stay on thread 0. 100 positions in pages of 8 let sparse selection (a sink page,
  // 32 tokens of window, the top 4 of the others) drop pages from position 80 on.
  const spec: SyntheticSpec = { dim: 256, headDim: 64, nLayers: 2, nHeads: 8, nKvHeads: 4, ffn: 512, vocab: 600, ctx: 128, seed: 13, type: Q8_0 };
  const bytes = makeSyntheticLlama(spec, { keepWeights: false }).bytes;
  const LENGTH = 100;
  const SPARSE: LoadOptions['attention'] = { mode: 'sparse', topKPages: 4, windowTokens: 32, sinkTokens: 4 };

  for (const type of KV_TYPES) {
    for (const attention of ['full', 'sparse'] as const) {
      for (const tiered of [false, true]) {
        it(`${type}, ${attention}${tiered ? ', tiered' : ''}`, async () => {
          const kv: LoadOptions['kv'] = { type, pageTokens: 8 };
          const policy = attention === 'sparse' ? SPARSE : { mode: attention };
          if (tiered) {
            // a third of the page slots hot, the rest warm
            const hot = await loadModel(bytes, { contextLength: spec.ctx, kv, attention: policy });
            const u = hot.memory().kv;
            hot.dispose();
            kv.hotBytes = u.hotBytes - Math.floor((2 * u.hotPageSlots) / 3) * u.pageBytes;
            kv.warmBytes = '4MB';
          }
          jobs.clear();
          const one = await expectSameForThreadCounts(bytes, spec.vocab, { length: LENGTH, options: { contextLength: spec.ctx, kv, attention: policy } });
          const parts = jobs.get('attend_head') ?? 0;
          if (tiered) expect(parts, 'tiered attention stays on one thread').toBe(0);
          else expect(parts, 'attention ran as parts').toBeGreaterThan(0);
          for (const stats of one.attention) {
            if (attention === 'sparse') expect(stats.meanTokensRead, 'sparse selection drops pages').toBeLessThan(stats.meanPositions);
            else expect(stats.meanTokensRead).toBe(stats.meanPositions);
          }
          for (const usage of one.kv) {
            expect(usage.type).toBe(type);
            if (tiered) expect([usage.warmPagesInUse > 0, usage.pagesStaged > 0], 'pages went warm and were read back').toEqual([true, true]);
            else expect(usage.warmPagesInUse).toBe(0);
          }
        });
      }
    }
  }
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
    // more threads than cores run, and say it costs
    const cores = os.availableParallelism();
    const many = await loadModel(bytes, { threads: cores + 1 });
    expect([many.info.threads, many.info.threading]).toEqual([cores + 1, `${cores + 1}: threads ${cores + 1} (more than the ${cores} cores: slower than ${cores})`]);
    many.dispose();
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
