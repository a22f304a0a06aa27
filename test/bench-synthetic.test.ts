// The benchmark's synthetic models (bench/synthetic.mjs) at a tiny shape: they load, every word of the bench text is
// one token, the bytes are reproducible, and greedy decoding never reaches EOS with finite logits throughout. The
// big shapes are the same code with bigger numbers; their sizes are checked without writing them.
import { describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadModel } from '../src/index.js';
import {
  MIN_VOCAB,
  SHAPES,
  SYNTHETIC_TEXT,
  TYPES,
  syntheticModel,
  syntheticPrompt,
  syntheticSize,
  syntheticVocab,
  writeSyntheticGGUF,
} from '../bench/synthetic.mjs';

const TINY = { name: 'tiny', dim: 64, nLayers: 2, nHeads: 4, nKvHeads: 2, ffn: 128, vocab: 600, ctx: 256, tied: true };
const EOS = 2;
const TYPE_NAME: Record<string, string> = { q4_0: 'Q4_0', q8_0: 'Q8_0', f16: 'F16' };

const sha256 = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');

function withTmp<T>(run: (dir: string) => Promise<T>): Promise<T> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'edgellm-synthetic-'));
  return run(dir).finally(() => rmSync(dir, { recursive: true, force: true }));
}

describe('synthetic bench models', () => {
  for (const type of TYPES) {
    for (const tied of [true, false]) {
      it(`${type}, ${tied ? 'tied' : 'untied'}: loads, one token per word, deterministic, never EOS, finite logits`, () =>
        withTmp(async (dir) => {
          const shape = { ...TINY, tied, name: `tiny-${tied ? 'tied' : 'untied'}` };
          const file = await syntheticModel(shape, type, { dir, log: () => {} });
          const again = path.join(dir, 'again.gguf');
          writeSyntheticGGUF(again, shape, type);
          expect(sha256(again)).toBe(sha256(file));
          const { header, data } = syntheticSize(shape, type);
          expect(statSync(file).size).toBe(header + data);
          // present and the right size: reused, not rewritten
          const mtime = statSync(file).mtimeMs;
          expect(await syntheticModel(shape, type, { dir, log: () => {} })).toBe(file);
          expect(statSync(file).mtimeMs).toBe(mtime);

          const model = await loadModel(file, { contextLength: 256 });
          try {
            expect(model.info.vocab).toBe(TINY.vocab);
            expect(model.info.nLayers).toBe(TINY.nLayers);
            expect(Object.keys(model.info.tensorTypes).sort()).toEqual(['F32', TYPE_NAME[type]].sort());

            for (const k of [1, 2, 17, 200]) {
              const ids = model.tokenize(syntheticPrompt(k));
              expect(ids.length, `${k} words`).toBe(k + 1);
              expect(ids[0]).toBe(1);
              // word pieces only: no <unk>, control or byte-fallback tokens
              expect(ids.slice(1).every((id) => id >= 259)).toBe(true);
            }
            expect(model.tokenize(SYNTHETIC_TEXT).length).toBe(SYNTHETIC_TEXT.split(' ').length + 1);

            const prompt = model.tokenize(syntheticPrompt(24));
            const generated: number[] = [];
            let stop = '';
            for await (const _ of model.generate(prompt, {
              maxTokens: 16,
              temperature: 0,
              onToken: (id) => generated.push(id),
              onStats: (s) => (stop = s.stopReason),
            }));
            expect(generated.length).toBe(16);
            expect(stop).toBe('maxTokens');
            expect(generated).not.toContain(EOS);

            // every position of prompt + generated text: finite logits, EOS's exactly 0 and below the max
            const all = [...prompt, ...generated];
            const logits = await model.evaluate(all);
            const V = TINY.vocab;
            for (let p = 0; p < all.length; p++) {
              const row = logits.subarray(p * V, (p + 1) * V);
              expect(row.every(Number.isFinite), `position ${p}`).toBe(true);
              expect(row[EOS]).toBe(0);
              expect(Math.max(...row)).toBeGreaterThan(0);
            }
          } finally {
            model.dispose();
          }
        }));
    }
  }

  it('the vocabulary is exactly the asked size and refuses one too small for the text', () => {
    for (const v of [MIN_VOCAB, 600, 32000]) {
      const { tokens, scores, types } = syntheticVocab(v);
      expect([tokens.length, scores.length, types.length]).toEqual([v, v, v]);
      expect(new Set(tokens).size).toBe(v);
    }
    expect(() => syntheticVocab(MIN_VOCAB - 1)).toThrow(/smaller than/);
  });

  it('the real shapes have the sizes of the real models', () => {
    // file bytes / parameters: Q4_0 18/32, Q8_0 34/32, F16 2 bytes per weight, plus header and F32 norms
    const expected: Record<string, number> = {
      'smollm-135m': 134.5e6, 'tinyllama-1.1b': 1.1e9, 'llama-3.2-1b': 1.236e9, 'qwen2.5-0.5b': 494.0e6, 'qwen3-0.6b': 596.0e6, 'gemma-3-1b': 999.9e6,
      'llama-3.1-8b': 8.03e9,
    };
    const perWeight: Record<string, number> = { q4_0: 18 / 32, q8_0: 34 / 32, f16: 2 };
    for (const [name, shape] of Object.entries(SHAPES)) {
      for (const type of TYPES) {
        const { header, data } = syntheticSize(shape, type);
        const params = data / perWeight[type];
        expect(Math.abs(params / expected[name] - 1), `${name} ${type}: ${params} weights`).toBeLessThan(0.01);
        expect(header).toBeLessThan(8e6); // gemma's 262144-token vocabulary takes 6 MB
      }
    }
  });
});
