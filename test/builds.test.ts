// The two kernel builds (SIMD128 and relaxed SIMD) must give bit-identical logits: the relaxed build differs only in
// how exact integer block dot products are formed, so any difference at all is a bug. Checked on every real fixture
// and on synthetic models of every weight type, with batched prefill and single-token decode both exercised.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { loadModel, supportedBuilds, EdgeLLMError } from '../src/index.js';
import { GGMLType } from '../src/gguf/types.js';
import { makeSyntheticLlama, type SyntheticSpec } from './util/synthetic.js';
import { announceSkipIfNoModels, modelPath } from './util/shared.js';
import { expectBuildsIdentical as expectIdentical } from './util/builds.js';

const { F32, F16, Q8_0, Q4_0 } = GGMLType;

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
