// The wasm kernels against a plain f64 forward pass (test/util/reference.ts) on small synthetic models: every shape
// family the loader accepts (GQA ratios, head dims, ffn widths, tied/untied) and every weight type, alone and mixed.
import { describe, expect, it } from 'vitest';
import { loadModel } from '../src/index.js';
import { GGMLType } from '../src/gguf/types.js';
import { makeSyntheticLlama, type SyntheticSpec } from './util/synthetic.js';
import { referenceForward } from './util/reference.js';
import { expectBatchesIdentical } from './util/builds.js';
import { compare, fmt, seededIds, type Errors } from './util/compare.js';

const { F32, F16, Q8_0, Q4_0 } = GGMLType;

/*
 * Tolerances, from the arithmetic and from measurement (the measured values are printed on every run). All errors are
 * max |Δlogit| divided by the largest |reference logit| (≈ 4 here).
 *
 * - F32/F16 weights: runtime and reference read the same stored values; they differ only in f32 vs f64 arithmetic
 *   (dot products over ≤ 512 terms, rmsnorm, softmax, the rope table rounded once to f32). Each step adds a few ulp
 *   (6e-8) of relative error; through 2 layers and the classifier that is the 5e-7 measured. Bound 5e-5: 100× the
 *   measured worst, and still 4 orders of magnitude below what a real bug gives.
 * - Q8_0/Q4_0 weights against the plain reference: the runtime rounds each matmul input to int8 per 32-block (as
 *   llama.cpp does), up to 1/254 of the block max per element, plus the block scale rounded to f16 (2^-11). Measured
 *   1.3e-2–1.8e-2, cosine ≥ 0.9998. Bound 4e-2 (about 2× the worst) and cosine > 0.999.
 * - Q8_0/Q4_0 weights against the reference with roundInput, which rounds the activations exactly as the runtime does: only f32 vs
 *   f64 arithmetic is left, measured ≤ 2.1e-7. A near-tie where f32 and f64 round one int8 code differently would
 *   move a logit by one quantization step of one element, ≈ (amax/127)·|w| ≈ 1e-4 of the scale at these shapes, so
 *   the bound is 2e-4: it tolerates such a flip, yet catches a missing f16 rounding of the scale or a wrong rounding
 *   mode, which the plain comparison cannot see under its 4e-2.
 * - A real bug (rope pairs wrongly ordered, a wrong GQA head mapping, a KV position off by one, a wrong scale) changes
 *   the attention pattern or the residual stream by O(1): measured 0.4–1.6, with argmax flips and cosines < 0.9.
 *   The "teeth" tests below check that two such deliberate mistakes fail the quantized bounds, the loosest ones.
 * Every row must also pick the same argmax as the reference.
 */
const TOL = { float: 5e-5, quantized: 4e-2, int8Emulated: 2e-4 };
const MIN_COS = { float: 0.99999, quantized: 0.999 };

interface Case {
  name: string;
  spec: SyntheticSpec;
}

const base = { nLayers: 2, ctx: 64, seed: 7 };
const CASES: Case[] = [
  { name: 'GQA 1:1, head dim 32, ffn 96, F32', spec: { ...base, dim: 128, nHeads: 4, nKvHeads: 4, ffn: 96, vocab: 320, type: F32 } },
  { name: 'GQA 3:1, head dim 48, ffn 160, F16, untied', spec: { ...base, dim: 144, nHeads: 3, nKvHeads: 1, ffn: 160, vocab: 400, type: F16, tied: false } },
  { name: 'GQA 8:1, head dim 64 (qDim 512 ≠ dim 128), Q8_0', spec: { ...base, dim: 128, nHeads: 8, nKvHeads: 1, headDim: 64, ffn: 160, vocab: 300, type: Q8_0 } },
  { name: 'GQA 1:1, head dim 128, ffn 192, Q4_0, untied', spec: { ...base, dim: 256, nHeads: 2, nKvHeads: 2, ffn: 192, vocab: 512, type: Q4_0, tied: false } },
  { name: 'GQA 2:1, head dim 48, ffn 100 (F16 ffn_down), F32', spec: { ...base, dim: 96, nHeads: 2, nKvHeads: 1, ffn: 100, vocab: 300, type: F32, types: { 'blk.0.ffn_down.weight': F16, 'blk.1.ffn_down.weight': F16 } } },
  {
    name: 'GQA 3:1, head dim 32, mixed Q8_0/Q4_0/F16/F32, untied',
    spec: {
      ...base, dim: 192, nHeads: 6, nKvHeads: 2, ffn: 160, vocab: 384, type: Q4_0, tied: false,
      types: {
        'token_embd.weight': Q8_0, 'output.weight': F16,
        'blk.0.attn_q.weight': F32, 'blk.0.attn_k.weight': F16, 'blk.0.attn_v.weight': Q8_0,
        'blk.1.attn_output.weight': F16, 'blk.1.ffn_down.weight': Q8_0, 'blk.0.ffn_gate.weight': F32,
      },
    },
  },
  {
    name: 'GQA 4:1, head dim 64, ffn 100 (F16 down, Q8_0 gate/up), mixed',
    spec: {
      ...base, dim: 256, nHeads: 4, nKvHeads: 1, ffn: 100, vocab: 300, type: Q8_0,
      types: { 'blk.0.ffn_down.weight': F16, 'blk.1.ffn_down.weight': F32, 'token_embd.weight': F16 },
    },
  },
];

/** Whether any 2-D weight is quantized: then activations go through int8 and the looser bound applies. */
const isQuantized = (s: SyntheticSpec) => [s.type ?? F32, ...Object.values(s.types ?? {})].some((t) => t === Q8_0 || t === Q4_0);

describe('kernels vs the f64 reference', () => {
  for (const c of CASES) {
    it(c.name, async () => {
      const { bytes, weights } = makeSyntheticLlama(c.spec);
      const model = await loadModel(bytes);
      const ids = seededIds(16, c.spec.vocab, 1234);
      const got = await model.evaluate(ids);
      const e = compare(got, referenceForward(c.spec, weights, ids), c.spec.vocab);
      const kind = isQuantized(c.spec) ? 'quantized' : 'float';
      console.log(`synthetic ${c.name}: ${fmt(e)} (bound ${TOL[kind]})`);
      expect(e.relMax).toBeLessThan(TOL[kind]);
      expect(e.minCos).toBeGreaterThan(MIN_COS[kind]);
      expect(e.argmaxMiss).toBe(0);
      if (kind === 'quantized') {
        // Same check against a reference that rounds the activations as the runtime does: only f32 arithmetic is left.
        const quantized = (name: string) => [Q8_0, Q4_0].includes(c.spec.types?.[name] ?? c.spec.type ?? F32);
        const eq = compare(got, referenceForward(c.spec, weights, ids, quantized), c.spec.vocab);
        console.log(`synthetic ${c.name}, int8-rounding reference: ${fmt(eq)} (bound ${TOL.int8Emulated})`);
        expect(eq.relMax).toBeLessThan(TOL.int8Emulated);
        expect(eq.minCos).toBeGreaterThan(MIN_COS.float);
        expect(eq.argmaxMiss).toBe(0);
      }
      model.dispose();
    });
  }
});

describe('batched prefill vs one token at a time', () => {
  // The same kernels in a different grouping: every token's arithmetic is the same sequence of f32 operations
  // whatever the batch, so the logits should be bit-identical. Measured: 0 difference for float and quantized.
  for (const c of [CASES[1], CASES[5]]) {
    it(c.name, async () => {
      // 40 > 32: two batches, the second partial
      await expectBatchesIdentical(makeSyntheticLlama(c.spec).bytes, seededIds(40, c.spec.vocab, 99));
    });
  }
});

describe('the comparison has teeth', () => {
  const c = CASES[5]; // quantized, 3:1 GQA with 2 KV heads: the looser bound, the harder case to fail
  const ids = seededIds(16, c.spec.vocab, 1234);
  const { bytes, weights } = makeSyntheticLlama(c.spec);
  const check = (e: Errors) => e.relMax < TOL.quantized && e.minCos > MIN_COS.quantized && e.argmaxMiss === 0;

  it('a reference with RoPE base 500000 instead of 10000 fails the bounds', async () => {
    const got = await (await loadModel(bytes)).evaluate(ids);
    const e = compare(got, referenceForward({ ...c.spec, ropeBase: 500000 }, weights, ids), c.spec.vocab);
    console.log(`teeth, wrong rope base: ${fmt(e)}`);
    expect(check(e)).toBe(false);
  });

  it('a reference with the two KV heads swapped (a wrong GQA mapping) fails the bounds', async () => {
    const got = await (await loadModel(bytes)).evaluate(ids);
    // Swapping KV heads 0 and 1 in both layers' k and v makes query head h read KV head 1 - h/3: a wrong mapping.
    const hd = c.spec.dim / c.spec.nHeads;
    const swapped = new Map(weights);
    for (const name of ['blk.0.attn_k.weight', 'blk.0.attn_v.weight', 'blk.1.attn_k.weight', 'blk.1.attn_v.weight']) {
      const w = weights.get(name)!, rowLen = c.spec.dim, headRows = hd * rowLen;
      const s = new Float32Array(w.length);
      s.set(w.subarray(0, headRows), headRows);
      s.set(w.subarray(headRows, 2 * headRows), 0);
      swapped.set(name, s);
    }
    const e = compare(got, referenceForward(c.spec, swapped, ids), c.spec.vocab);
    console.log(`teeth, wrong GQA mapping: ${fmt(e)}`);
    expect(check(e)).toBe(false);
  });
});
