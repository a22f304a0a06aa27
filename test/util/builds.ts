/** Running one model under both kernel builds (SIMD128 and relaxed SIMD), whose logits must agree bit for bit. */
import { expect } from 'vitest';
import { loadModel } from '../../src/index.js';

/** Logits of `ids` (a 37-token prefill in batches of 16, then 3 decoded one at a time) under one build. */
export async function buildLogits(bytes: Uint8Array, ids: number[], simd: 'baseline' | 'relaxed'): Promise<Buffer> {
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

/** Both builds' logits of 40 tokens (prefill and decode) are bit-identical. */
export async function expectBuildsIdentical(bytes: Uint8Array, vocab: number): Promise<void> {
  const tokens = ids(40, vocab);
  const simd = await buildLogits(bytes, tokens, 'baseline');
  const relaxed = await buildLogits(bytes, tokens, 'relaxed');
  expect(simd.length).toBe(relaxed.length);
  const a = new Uint32Array(simd.buffer, simd.byteOffset, simd.length / 4);
  const b = new Uint32Array(relaxed.buffer, relaxed.byteOffset, relaxed.length / 4);
  const differing = a.filter((bits, i) => bits !== b[i]).length;
  expect(differing, `${differing} of ${a.length} logits differ between the builds`).toBe(0);
}

/** Batched prefill (batches of 32 and of 7) gives the same logits, bit for bit, as one token at a time. */
export async function expectBatchesIdentical(bytes: Uint8Array, ids: number[]): Promise<void> {
  const batched = await (await loadModel(bytes)).evaluate(ids);
  const odd = await (await loadModel(bytes, { batchSize: 7 })).evaluate(ids);
  const single = await (await loadModel(bytes, { batchSize: 1 })).evaluate(ids);
  expect(Buffer.from(batched.buffer).equals(Buffer.from(single.buffer))).toBe(true);
  expect(Buffer.from(batched.buffer).equals(Buffer.from(odd.buffer))).toBe(true);
}
