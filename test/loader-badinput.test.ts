// The whole loadModel (header, config, tokenizer, tensor shapes and types, the memory plan, repacking) on bad files.
// test/gguf-badinput.test.ts covers the header reader alone; here every failure must surface as an EdgeLLMError with
// the loader's code, and corrupt real models must fail cleanly or load, never throw anything else or hang.
import { describe, expect, test } from 'vitest';
import { readFileSync } from 'node:fs';
import { loadModel, EdgeLLMError, type ErrorCode, type LoadOptions } from '../src/index.js';
import { GGMLType, memorySource, readGGUF, writeGGUF, type GGUFFile, type GGUFWriterKV } from '../src/gguf/index.js';
import { makeSyntheticLlama, type SyntheticSpec } from './util/synthetic.js';
import { rewriteGGUF } from './util/expect.js';
import { announceSkipIfNoModels, modelPath } from './util/shared.js';
import { Rng } from '../src/generate/rng.js';

/** Every code loadModel may throw for a bad file (as opposed to a bad argument or a failing source). */
const LOADER_CODES = new Set<ErrorCode>([
  'BAD_MAGIC', 'UNSUPPORTED_VERSION', 'TRUNCATED', 'BAD_METADATA', 'BAD_TENSOR', 'UNSUPPORTED_TYPE', 'UNSUPPORTED_ARCH',
  'MISSING_TENSOR', 'BUDGET',
]);

const SPEC: SyntheticSpec = { dim: 256, nLayers: 2, nHeads: 4, nKvHeads: 2, ffn: 128, vocab: 320, ctx: 128, seed: 3, type: GGMLType.Q8_0 };

/** Seeded (the project's xoshiro128**), so every case reproduces. */
function rng(seed: number): () => number {
  const r = new Rng(seed);
  return () => r.nextFloat();
}

async function header(bytes: Uint8Array): Promise<GGUFFile> {
  return readGGUF(memorySource(bytes));
}

const setValue = (key: string, value: unknown) => (kvs: GGUFWriterKV[]) => kvs.map((kv) => (kv.key === key ? { ...kv, value } : kv));

async function loadError(bytes: Uint8Array, options?: LoadOptions): Promise<EdgeLLMError> {
  let err: unknown;
  try {
    (await loadModel(bytes, options)).dispose();
  } catch (e) {
    err = e;
  }
  expect(err, 'loadModel should have thrown').toBeInstanceOf(EdgeLLMError);
  return err as EdgeLLMError;
}

async function expectLoadError(bytes: Uint8Array, code: ErrorCode, fragments: string[], options?: LoadOptions): Promise<void> {
  const err = await loadError(bytes, options);
  expect(err.code, err.message).toBe(code);
  for (const f of fragments) expect(err.message).toContain(f);
}

describe('crafted files, one per loader error', () => {
  const good = makeSyntheticLlama(SPEC).bytes;

  test('the rewrite helper alone keeps the model loadable', async () => {
    const model = await loadModel(await rewriteGGUF(good, {}));
    expect(model.info).toMatchObject({ dim: 256, nLayers: 2, nHeads: 4, nKvHeads: 2, ffn: 128, vocab: 320 });
    model.dispose();
  });

  test('UNSUPPORTED_ARCH: general.architecture "gpt2"', async () => {
    await expectLoadError(await rewriteGGUF(good, { metadata: setValue('general.architecture', 'gpt2') }), 'UNSUPPORTED_ARCH', ['"gpt2"', 'llama']);
  });

  test('MISSING_TENSOR: no blk.0.ffn_up.weight', async () => {
    const bytes = await rewriteGGUF(good, { tensors: (ts) => ts.filter((t) => t.name !== 'blk.0.ffn_up.weight') });
    await expectLoadError(bytes, 'MISSING_TENSOR', ['blk.0.ffn_up.weight']);
  });

  test('UNSUPPORTED_TYPE: an IQ2_XXS tensor names the tensor and the supported types', async () => {
    // IQ2_XXS: 256 elements in 66 bytes; ffn_gate's rows are dim = 256 long, one block each.
    const bytes = await rewriteGGUF(good, {
      tensors: (ts) => ts.map((t) => (t.name === 'blk.1.ffn_gate.weight' ? { ...t, type: GGMLType.IQ2_XXS, data: new Uint8Array(66 * SPEC.ffn) } : t)),
    });
    await expectLoadError(bytes, 'UNSUPPORTED_TYPE', ['blk.1.ffn_gate.weight', 'IQ2_XXS', 'F32', 'F16', 'Q8_0', 'Q4_0', 'Q4_K', 'Q6_K', 'IQ4_XS', 'BF16']);
  });

  test('BAD_TENSOR: attn_q with the wrong number of rows', async () => {
    const bytes = await rewriteGGUF(good, {
      tensors: (ts) => ts.map((t) => (t.name === 'blk.0.attn_q.weight' ? { ...t, dims: [256, 128], data: t.data!.subarray(0, 128 * 8 * 34) } : t)),
    });
    await expectLoadError(bytes, 'BAD_TENSOR', ['blk.0.attn_q.weight', '[256, 128]', '[256, 256]']);
  });

  test('BAD_TENSOR: a norm with two dims', async () => {
    const bytes = await rewriteGGUF(good, { tensors: (ts) => ts.map((t) => (t.name === 'output_norm.weight' ? { ...t, dims: [128, 2] } : t)) });
    await expectLoadError(bytes, 'BAD_TENSOR', ['output_norm.weight']);
  });

  test('BAD_METADATA: head_count 0', async () => {
    await expectLoadError(await rewriteGGUF(good, { metadata: setValue('llama.attention.head_count', 0) }), 'BAD_METADATA', ['llama.attention.head_count', '0']);
  });

  test('BAD_METADATA: a rope base that is not positive', async () => {
    await expectLoadError(await rewriteGGUF(good, { metadata: setValue('llama.rope.freq_base', -1) }), 'BAD_METADATA', ['llama.rope.freq_base']);
  });

  test('BAD_METADATA: tokenizer tokens count ≠ token_embd rows', async () => {
    const drop = (key: string) => (kvs: GGUFWriterKV[]) => kvs.map((kv) => (kv.key === key ? { ...kv, value: kv.value.slice(0, -1) } : kv));
    const bytes = await rewriteGGUF(good, {
      metadata: (kvs) => drop('tokenizer.ggml.token_type')(drop('tokenizer.ggml.scores')(drop('tokenizer.ggml.tokens')(kvs))),
    });
    await expectLoadError(bytes, 'BAD_METADATA', ['319', '320']);
  });

  test('BUDGET: the message says which context would fit', async () => {
    // Q8_0 weights ≈ 0.9 MB; a 4096-token KV cache is 2·2 layers·128·4096·4 B = 8 MB: 12 MB leaves room for ~2000 tokens.
    const big = makeSyntheticLlama({ ...SPEC, ctx: 4096 }).bytes;
    const err = await loadError(big, { memoryBudget: '3MB' });
    expect(err.code).toBe('BUDGET');
    const fit = Number(/a context of (\d+) tokens would fit/.exec(err.message)?.[1]);
    expect(fit, err.message).toBeGreaterThan(16);
    expect(fit).toBeLessThan(4096);
    // ...and that context does fit.
    const model = await loadModel(big, { memoryBudget: '3MB', contextLength: fit });
    expect(model.info.memoryBytes).toBeLessThanOrEqual(3 * 1024 * 1024);
    model.dispose();
  });

  test('BUDGET: 1MB when the weights alone do not fit', async () => {
    await expectLoadError(good, 'BUDGET', ['1.0 MiB', 'weights alone do not fit'], { memoryBudget: '1MB' });
  });

  test('BAD_ARGUMENT: contextLength -5, batchSize 0, a bad memoryBudget', async () => {
    await expectLoadError(good, 'BAD_ARGUMENT', ['contextLength', '-5'], { contextLength: -5 });
    await expectLoadError(good, 'BAD_ARGUMENT', ['batchSize', '0'], { batchSize: 0 });
    await expectLoadError(good, 'BAD_ARGUMENT', ['memoryBudget'], { memoryBudget: 'lots' });
  });

  test('context_length 2^24 in the file: the default context stays capped at 4096', async () => {
    const model = await loadModel(await rewriteGGUF(good, { metadata: setValue('llama.context_length', 1 << 24) }));
    expect(model.info.context).toBe(4096);
    expect(model.info.memoryBytes).toBeLessThan(64 << 20);
    model.dispose();
  });
});

const have = announceSkipIfNoModels('real-model loader fuzzing (test/loader-badinput.test.ts)');

/** The largest plan a corrupt-but-loadable file got, for the log. */
let largestPlan = 0;

/** Runs loadModel; returns 'ok' or the EdgeLLMError code, and fails on anything else, including a stall. */
async function outcome(bytes: Uint8Array, what: string): Promise<string> {
  let timer: NodeJS.Timeout | undefined;
  const stall = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: loadModel did not settle within 10 s`)), 10_000);
  });
  try {
    const model = await Promise.race([loadModel(bytes), stall]);
    // A corrupt-but-valid file may change the plan, but only within the default context cap: never gigabytes.
    expect(model.info.context, what).toBeLessThanOrEqual(4096);
    expect(model.info.memoryBytes, what).toBeLessThan(128 << 20);
    largestPlan = Math.max(largestPlan, model.info.memoryBytes);
    model.dispose();
    return 'ok';
  } catch (err) {
    if (!(err instanceof EdgeLLMError) || !LOADER_CODES.has(err.code)) {
      throw new Error(`${what}: expected success or an EdgeLLMError with a loader code, got ${(err as Error)?.name}: ${(err as Error)?.message}`, { cause: err });
    }
    return err.code;
  } finally {
    clearTimeout(timer);
  }
}

function tally(outcomes: string[]): string {
  const counts: Record<string, number> = {};
  for (const o of outcomes) counts[o] = (counts[o] ?? 0) + 1;
  return JSON.stringify(counts);
}

describe.skipIf(!have)('real models, truncated', () => {
  for (const [i, name] of ['tiny-260k-f32.gguf', 'tiny-260k-q8_0.gguf', 'sotu-15m-q4_0.gguf'].entries()) {
    test(`${name}: 20 cuts (10 in the header, 10 anywhere) all fail cleanly`, async () => {
      const bytes = new Uint8Array(readFileSync(modelPath(name)));
      const { dataOffset } = await header(bytes);
      const rand = rng(1000 + i);
      const cuts = [
        ...Array.from({ length: 10 }, () => Math.floor(rand() * dataOffset)),
        ...Array.from({ length: 10 }, () => Math.floor(rand() * bytes.length)),
      ];
      const seen: string[] = [];
      for (const cut of cuts) {
        const code = await outcome(bytes.subarray(0, cut), `${name} cut at ${cut}`);
        expect(code, `${name} cut at ${cut} of ${bytes.length} loaded`).not.toBe('ok');
        seen.push(code);
      }
      console.log(`${name} truncated: ${tally(seen)}`);
    });
  }
});

describe.skipIf(!have)('real models, random byte flips in the header', () => {
  for (const [name, flips, seed] of [['tiny-260k-q8_0.gguf', 300, 7], ['sotu-15m-q4_0.gguf', 200, 8]] as const) {
    test(`${name}: ${flips} flips load or fail with a loader code`, async () => {
      const bytes = new Uint8Array(readFileSync(modelPath(name)));
      const { dataOffset } = await header(bytes);
      const rand = rng(seed);
      const seen: string[] = [];
      largestPlan = 0;
      for (let n = 0; n < flips; n++) {
        // Flip in place and restore: no copy of the file per case.
        const at = Math.floor(rand() * dataOffset);
        const mask = 1 + Math.floor(rand() * 255);
        const was = bytes[at];
        bytes[at] ^= mask;
        try {
          seen.push(await outcome(bytes, `${name} byte ${at} ^= 0x${mask.toString(16)}`));
        } finally {
          bytes[at] = was;
        }
      }
      console.log(`${name} header flips: ${tally(seen)}; largest plan that loaded ${(largestPlan / 2 ** 20).toFixed(1)} MiB`);
    });
  }
});
