// The two kernel builds (SIMD128 and relaxed SIMD) must give bit-identical logits: the relaxed build differs only in
// how exact integer block dot products are formed, so any difference at all is a bug. Checked on every real fixture
// and on synthetic models of every weight type, with batched prefill and single-token decode both exercised.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { loadModel, supportedBuilds, EdgeLLMError } from '../src/index.js';
import { GGMLType } from '../src/gguf/types.js';
import { makeSyntheticLlama, type SyntheticSpec } from './util/synthetic.js';
import { announceSkipIfNoModels, modelPath } from './util/shared.js';

const { F32, F16, Q8_0, Q4_0 } = GGMLType;

/** Logits of `ids` (a 37-token prefill in batches of 16, then 3 decoded one at a time) under one build. */
async function logits(bytes: Uint8Array, ids: number[], simd: 'baseline' | 'relaxed'): Promise<Buffer> {
  const model = await loadModel(bytes, { simd, batchSize: 16, contextLength: 64 });
  expect(model.info.build).toBe(simd === 'relaxed' ? 'relaxed' : 'simd');
  const prefill = await model.evaluate(ids.slice(0, 37));
  const out = [new Uint8Array(prefill.buffer.slice(0))];
  // evaluate() restarts at position 0, so decode steps are the growing prefix's last rows
  for (let n = 38; n <= ids.length; n++) {
    const all = await model.evaluate(ids.slice(0, n));
    out.push(new Uint8Array(all.buffer.slice((n - 1) * model.info.vocab * 4)));
  }
  model.dispose();
  return Buffer.concat(out);
}

function ids(n: number, vocab: number): number[] {
  return Array.from({ length: n }, (_, i) => (i * 7919 + 13) % vocab);
}

async function expectIdentical(bytes: Uint8Array, vocab: number) {
  const tokens = ids(40, vocab);
  const simd = await logits(bytes, tokens, 'baseline');
  const relaxed = await logits(bytes, tokens, 'relaxed');
  expect(simd.length).toBe(relaxed.length);
  const a = new Uint32Array(simd.buffer, simd.byteOffset, simd.length / 4);
  const b = new Uint32Array(relaxed.buffer, relaxed.byteOffset, relaxed.length / 4);
  const differing = a.filter((bits, i) => bits !== b[i]).length;
  expect(differing, `${differing} of ${a.length} logits differ between the builds`).toBe(0);
}

describe('kernel builds', () => {
  it('this Node runs both builds (vitest passes --experimental-wasm-relaxed-simd where Node 20 needs it)', () => {
    expect(supportedBuilds()).toEqual({ simd: true, relaxed: true });
  });

  it("'auto' takes the relaxed build where the engine has it; a bad value is a BAD_ARGUMENT", async () => {
    const { bytes } = makeSyntheticLlama({ dim: 64, nHeads: 2, nKvHeads: 1, ffn: 96, vocab: 96, nLayers: 1, ctx: 16, seed: 1, type: Q4_0 });
    const model = await loadModel(bytes);
    expect(model.info.build).toBe('relaxed');
    model.dispose();
    // @ts-expect-error: not an option value
    await expect(loadModel(bytes, { simd: 'avx' })).rejects.toMatchObject({ code: 'BAD_ARGUMENT' });
    await expect(loadModel(bytes, { simd: 'avx' as never })).rejects.toBeInstanceOf(EdgeLLMError);
  });
});

describe('SIMD128 and relaxed builds give bit-identical logits', () => {
  const base = { nLayers: 2, ctx: 64, seed: 11 };
  const synthetic: [string, SyntheticSpec][] = [
    ['Q4_0, vocab 301 (a padded row group)', { ...base, dim: 128, nHeads: 4, nKvHeads: 2, ffn: 160, vocab: 301, type: Q4_0, tied: false }],
    ['Q8_0, GQA 3:1, ffn 96', { ...base, dim: 192, nHeads: 6, nKvHeads: 2, ffn: 96, vocab: 258, type: Q8_0 }],
    ['mixed F32/F16/Q8_0/Q4_0', {
      ...base, dim: 128, nHeads: 2, nKvHeads: 1, ffn: 128, vocab: 299, type: Q4_0, tied: false,
      types: { 'token_embd.weight': Q8_0, 'output.weight': F16, 'blk.0.attn_q.weight': F32, 'blk.1.ffn_down.weight': Q8_0 },
    }],
  ];
  for (const [name, spec] of synthetic) {
    it(`synthetic ${name}`, async () => {
      await expectIdentical(makeSyntheticLlama(spec).bytes, spec.vocab);
    });
  }

  const have = announceSkipIfNoModels('kernel builds on the real fixtures');
  for (const file of ['tiny-260k-f32.gguf', 'tiny-260k-q8_0.gguf', 'sotu-15m-f16.gguf', 'sotu-15m-q8_0.gguf', 'sotu-15m-q4_0.gguf']) {
    it.skipIf(!have)(file, async () => {
      const bytes = new Uint8Array(readFileSync(modelPath(file)));
      const vocab = file.startsWith('tiny') ? 512 : 32000;
      await expectIdentical(bytes, vocab);
    });
  }
});
