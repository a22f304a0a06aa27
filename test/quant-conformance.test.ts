// Every weight type against llama.cpp on the quantization conformance kit (../shared/conformance/quant, see its
// README): the GGUF bytes llama.cpp's own quantizer wrote, run through edgellm's kernels, compared with the logits
// llama.cpp computed on the same bytes. Only the arithmetic differs (activation rounding, accumulation order, the KV
// cache), so the bars are set from what that arithmetic can move, not from quantization error.
//
// A file with a tensor type edgellm does not run fails (UNSUPPORTED_TYPE). EDGELLM_QUANT_PENDING=1 turns that into a
// loud "not yet supported" skip, for working on one type family while the others are being written.
// EDGELLM_QUANT_REPORT=FILE.json saves the measured numbers (docs/quant.md is written from them).
// EDGELLM_QUANT_F64=1 also runs the f64 reference forward pass (test/util/reference.ts) on the synthetic files, with
// unrounded and with int8-rounded activations, against llama.cpp: what exact arithmetic reaches, the evidence for the
// bars below (about 30 s a file; not part of the normal run).
import { afterAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { brotliDecompressSync } from 'node:zlib';
import os from 'node:os';
import path from 'node:path';
import { loadModel, EdgeLLMError, logSoftmaxAt, type LoadOptions, type Model } from '../src/index.js';
import { dequantizeRow, memorySource, readGGUF } from '../src/gguf/index.js';
import { argmax, greedyAgainst, quantile, type GreedyDivergence } from './util/compare.js';
import { referenceForward } from './util/reference.js';
import { announceSkipIfMissing, ROOT, SHARED } from './util/shared.js';

const KIT = path.join(SHARED, 'conformance/quant');
const DEV = path.join(SHARED, 'eval/dev.txt');
const have = announceSkipIfMissing('quant conformance (test/quant-conformance.test.ts)', KIT) && announceSkipIfMissing('quant conformance: dev.txt', DEV);
const PENDING_OK = process.env.EDGELLM_QUANT_PENDING === '1';
const REPORT = process.env.EDGELLM_QUANT_REPORT;

/**
 * The library's default KV cache (f32), as the issue's baseline numbers were measured. llama.cpp's is F16, but
 * edgellm's f16 pages keep the newest 32 tokens in f32 (docs/kv.md), so it is no closer to llama.cpp's arithmetic:
 * measured, it moves the synthetic files' mean NLL by about +0.007 nats for Q8_0 and Q4_0 alike, away from llama.cpp.
 * EDGELLM_QUANT_KV=f16 runs it that way.
 */
const LOAD: LoadOptions = { contextLength: 512, ...(process.env.EDGELLM_QUANT_KV ? { kv: { type: process.env.EDGELLM_QUANT_KV as 'f16' } } : {}) };

interface Top10 { ids: number[]; logits: number[] }
interface Reference {
  tensor_type_counts: Record<string, number>;
  prompts: { text: string; ids: number[]; top10: Top10[]; greedy_ids: number[] }[];
  perplexity: {
    text_tokens: number;
    window: number;
    nll: number;
    ppl: number;
    windows: { first_text_token: number; tokens_scored: number; nll: number; top1_ids: number[] }[];
  }[];
}

/**
 * What llama.cpp's own arithmetic allows. Its CPU backend does not compute the exact product of the stored weights and
 * the activations: it rounds the activations (bf16 for BF16 weights, int8 per 32 (Q8_0/Q8_1) for the 32-blocks, int8
 * per 256 (Q8_K) for the K-quants and IQ4_XS), and its attention rounds K, V and Q to f16 and accumulates V in f16
 * (flash attention, F16 KV cache). edgellm rounds the activations the same way but attends in f32. A difference of
 * 2^-11 in an attention output is enough to move some of the next matmul's int8 codes by one step, so two correct
 * implementations disagree by about as much as the int8 rounding itself changes the logits.
 *
 * Measured against an f64 forward pass on the dequantized weights (test/util/reference.ts) over the prompts' top-10
 * logits: rounding the activations the way both sides do moves the logits by max 0.34 (Q8_0) and 0.59-0.85 (Q8_K)
 * from the unrounded result; llama.cpp is that far from both (max 0.40-0.45 / 0.64-0.77), and edgellm is exactly on the
 * rounded reference (p50 0.0000) for every type but IQ4_XS. Hence the top-10 bounds, with about 1.5x margin on the
 * measured max |Δ| against llama.cpp:
 * - f32: the f16 KV rounding alone (max 0.015, p99 0.011);
 * - bf16: llama.cpp rounds the activations to bf16 (relative 2^-9), edgellm multiplies by f32 (max 0.12);
 * - 32-block types, Q8_0 activations: max 0.42-0.51;
 * - K-quants and IQ4_XS, Q8_K activations (one scale per 256 values: coarser codes): max 0.63-0.79;
 * - sotu-15m: logits 5x smaller than the synthetic model's: max 0.11.
 * The synthetic logits are large (top-1 ≈ 20..30: output weights std 0.5 over dim 256), so 1.1 is about 4% of them.
 *
 * Top-1 agreement is bounded by the same thing: over all 1078 positions, the f64 reference with unrounded activations
 * (the exact result) agrees with llama.cpp at 96.3-97.9% on the 32-block files (Q8_0 97.7), but only 94.2-96.2% on
 * the Q8_K files (Q2_K 95.4, Q3_K 95.2, Q4_K 95.6, Q5_K 95.3, Q6_K 95.7, IQ4_XS 94.2, the mixes 96.2 and 95.5), and
 * two correct implementations differ by ±0.7 points among themselves (f64 vs f32 accumulation flips codes too). So
 * the bars are 95.5% for the 32-block files (the issue's 96% less that spread: IQ4_NL gets 95.8%, its f64 references
 * 96.5-96.8%) and 93.5% for the Q8_K files (exact arithmetic: 94.2-96.2%; edgellm 93.9-96.2%). docs/quant.md has
 * the tables.
 * What holds for every file: each position where edgellm's top-1 is not llama.cpp's is a near-tie, within 2·tol in
 * our logits (teacher-forced, both sides see the same tokens, so each logit is within tol of llama.cpp's).
 */
type Family = 'f32' | 'bf16' | 'q8_0' | 'q8_k' | 'sotu';
const TOL: Record<Family, number> = { f32: 0.03, bf16: 0.25, q8_0: 0.75, q8_k: 1.1, sotu: 0.25 };
const TOP1: Record<Family, number> = { f32: 0.999, bf16: 0.98, q8_0: 0.955, q8_k: 0.935, sotu: 0.98 };

interface Case {
  name: string;
  /** where the GGUF comes from */
  source: () => string | Uint8Array;
  family: Family;
  /** |mean NLL − llama.cpp's| over the two windows, nats */
  nll: number;
  /** perplexity ratio bound, where the issue sets one */
  ppl?: number;
}

let tmp: string | undefined;
/** The f32 master, regenerated byte-identically by the kit's own recipe (about 0.1 s) and checked by sha256. */
function master(): string {
  tmp ??= mkdtempSync(path.join(os.tmpdir(), 'edgellm-quant-'));
  const out = path.join(tmp, 'synth-kq256-f32.gguf');
  if (!existsSync(out)) {
    const r = spawnSync(process.execPath, [path.join(SHARED, 'conformance/make/synth-master.mjs'), out], { cwd: ROOT, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`synth-master.mjs failed: ${r.stderr}`);
    expect(sha256(readFileSync(out))).toBe(readFileSync(path.join(KIT, 'synth-kq256-f32.gguf.sha256'), 'utf8').trim().split(/\s+/)[0]);
  }
  return out;
}
function bf16(): Uint8Array {
  const bytes = brotliDecompressSync(readFileSync(path.join(KIT, 'synth-kq256-bf16.gguf.br')));
  expect(sha256(bytes)).toBe(readFileSync(path.join(KIT, 'synth-kq256-bf16.gguf.sha256'), 'utf8').trim().split(/\s+/)[0]);
  return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const kitFile = (name: string) => () => path.join(KIT, `${name}.gguf`);

const synth = (t: string, family: Family, source: Case['source'] = kitFile(`synth-kq256-${t}`)): Case => ({ name: `synth-kq256-${t}`, source, family, nll: 0.01 });
const CASES: Case[] = [
  synth('f32', 'f32', master),
  synth('bf16', 'bf16', bf16),
  ...['q8_0', 'q4_0', 'q4_1', 'q5_0', 'q5_1', 'iq4_nl'].map((t) => synth(t, 'q8_0')),
  ...['q2_k', 'q3_k_m', 'q4_k_m', 'q5_k_m', 'q6_k', 'q4_k_m-mix', 'q3_k_m-mix'].map((t) => synth(t, 'q8_k')),
  // The issue's 0.01 nats is below this file's noise floor: the f64 reference forward pass with the same Q8_K rounding
  // (EDGELLM_QUANT_F64=1) is itself −0.0115 from llama.cpp, and edgellm −0.0108; its matmul and dequant kernels
  // equal llama.cpp's integer formula bit for bit on every tensor of this file (test/quant-k-low.test.ts). Its
  // activations sit on exact Q8_K rounding ties, which f32 and f64 break differently (docs/quant.md).
  { ...synth('iq4_xs', 'q8_k'), nll: 0.015 },
  { name: 'sotu-15m-q4_k_m', source: kitFile('sotu-15m-q4_k_m'), family: 'sotu', nll: 0.005, ppl: 0.005 },
  // the real model's f16 master, for scale: what its K-quant mix is compared with (the issue: 99.8% today)
  { name: 'sotu-15m-f16', source: () => path.join(SHARED, 'models/sotu-15m-f16.gguf'), family: 'sotu', nll: 0.005, ppl: 0.005 },
];

interface Result {
  name: string;
  types: string;
  top1: number;
  positions: number;
  dNll: number;
  dNllWindows: number[];
  pplRatio: number;
  maxDelta: number;
  p50Delta: number;
  p99Delta: number;
  /** the largest of our logit gaps between our top-1 and llama.cpp's where they differ */
  maxDisagreeGap: number;
  greedy: number[];
  divergences: GreedyDivergence[];
  decodeAgrees: boolean;
  seconds: number;
}
const results: Result[] = [];

/** dev.txt's text tokens (no BOS), once per vocabulary: the synthetic files share one. */
const devIds = new Map<number, number[]>();

async function measure(c: Case, model: Model, ref: Reference): Promise<Result> {
  const t0 = performance.now();
  const V = model.info.vocab;
  let agree = 0, positions = 0, maxDisagreeGap = 0;
  const deltas: number[] = [];
  /** one position: our top-1 against llama.cpp's, and how close the two were in our logits where they differ */
  const top1 = (logits: Float32Array, row: number, theirs: number) => {
    positions++;
    const ours = argmax(logits, row * V, V);
    if (ours === theirs) agree++;
    else maxDisagreeGap = Math.max(maxDisagreeGap, logits[row * V + ours] - logits[row * V + theirs]);
  };
  const greedy: number[] = [];
  const divergences: GreedyDivergence[] = [];
  let decodeAgrees = true;

  for (const [pi, p] of ref.prompts.entries()) {
    // One teacher-forced pass over the prompt and llama.cpp's greedy continuation: rows 0..n−1 are the prompt's
    // positions; row n−1+k is where llama.cpp chose greedy_ids[k] after the same k tokens.
    const seq = [...p.ids, ...p.greedy_ids];
    const logits = await model.evaluate(seq);
    for (const [i, t] of p.top10.entries()) {
      top1(logits, i, t.ids[0]);
      for (let j = 0; j < t.ids.length; j++) deltas.push(Math.abs(logits[i * V + t.ids[j]] - t.logits[j]));
    }
    const g = await greedyAgainst(model, p, pi, logits, V);
    greedy.push(g.matched);
    if (g.divergence) divergences.push(g.divergence);
    if (!g.decodeAgrees) decodeAgrees = false;
  }

  const pr = ref.perplexity[0];
  let ids = devIds.get(V);
  if (!ids) {
    ids = model.tokenize(readFileSync(DEV, 'utf8'), { bos: false, eos: false });
    devIds.set(V, ids);
  }
  expect(ids.length, 'dev.txt tokens').toBe(pr.text_tokens);
  const bos = model.info.tokenizer.bos;
  let nllSum = 0, scored = 0;
  const dNllWindows: number[] = [];
  for (const w of pr.windows) {
    const seq = [bos, ...ids.slice(w.first_text_token, w.first_text_token + pr.window - 1)];
    const logits = await model.evaluate(seq);
    let wsum = 0;
    for (let r = 0; r + 1 < seq.length; r++) {
      top1(logits, r, w.top1_ids[r]);
      wsum -= logSoftmaxAt(logits.subarray(r * V, (r + 1) * V), seq[r + 1]);
    }
    expect(seq.length - 1).toBe(w.tokens_scored);
    dNllWindows.push(wsum / (seq.length - 1) - w.nll);
    nllSum += wsum;
    scored += seq.length - 1;
  }
  const nll = nllSum / scored;
  return {
    name: c.name,
    types: Object.entries(model.info.tensorTypes).map(([t, n]) => `${t}×${n}`).join(' '),
    top1: agree / positions,
    positions,
    dNll: nll - pr.nll,
    dNllWindows,
    pplRatio: Math.exp(nll) / pr.ppl,
    maxDelta: Math.max(...deltas),
    p50Delta: quantile(deltas, 0.5),
    p99Delta: quantile(deltas, 0.99),
    maxDisagreeGap,
    greedy,
    divergences,
    decodeAgrees,
    seconds: (performance.now() - t0) / 1000,
  };
}

describe.skipIf(!have)('quantized files against llama.cpp (conformance/quant)', () => {
  afterAll(() => {
    if (tmp) rmSync(tmp, { recursive: true, force: true });
    if (!results.length) return;
    const rows = results.map((r) => [
      r.name,
      `${(100 * r.top1).toFixed(1)}%`,
      `${r.dNll >= 0 ? '+' : ''}${r.dNll.toFixed(4)}`,
      r.maxDelta.toFixed(4),
      r.p99Delta.toFixed(4),
      r.maxDisagreeGap.toFixed(3),
      r.greedy.join('/'),
      r.divergences.map((d) => `p${d.prompt}@${d.at} gap ${d.gap.toFixed(3)}${d.refGap !== undefined ? ` (llama.cpp ${d.refGap.toFixed(3)})` : ''}`).join('; ') || '—',
    ]);
    const head = ['file', 'top-1', 'ΔNLL', 'max|Δ| top10', 'p99|Δ|', 'max gap', 'greedy', 'divergences (our top-1 − llama.cpp\'s token, our logits)'];
    const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
    console.log(['', ...[head, ...rows].map((r) => r.map((x, i) => (i === 0 || i === 7 ? x.padEnd(w[i]) : x.padStart(w[i]))).join('  '))].join('\n'));
    if (REPORT) writeFileSync(REPORT, JSON.stringify({ kv: LOAD.kv, results }, null, 1));
  });

  for (const c of CASES) {
    it(c.name, async (ctx) => {
      const ref: Reference = JSON.parse(readFileSync(path.join(KIT, `${c.name}.json`), 'utf8'));
      let model: Model;
      try {
        model = await loadModel(c.source(), LOAD);
      } catch (e) {
        if (e instanceof EdgeLLMError && e.code === 'UNSUPPORTED_TYPE' && PENDING_OK) {
          const line = '!'.repeat(100);
          console.warn(`\n${line}\n!!! NOT YET SUPPORTED: ${c.name}: ${e.message}\n${line}\n`);
          ctx.skip();
        }
        throw e;
      }
      try {
        expect(model.info.tensorTypes).toEqual(ref.tensor_type_counts);
        const r = await measure(c, model, ref);
        results.push(r);
        const tol = TOL[c.family];
        expect(r.top1, 'top-1 agreement').toBeGreaterThanOrEqual(TOP1[c.family]);
        expect(Math.abs(r.dNll), 'mean NLL − llama.cpp\'s').toBeLessThanOrEqual(c.nll);
        if (c.ppl !== undefined) expect(Math.abs(r.pplRatio - 1), 'perplexity ratio − 1').toBeLessThanOrEqual(c.ppl);
        expect(r.maxDelta, 'max |Δ| of the top-10 logits').toBeLessThanOrEqual(tol);
        // Teacher-forced, both sides have the same tokens before each position, so each logit is within tol of
        // llama.cpp's: choosing another token than llama.cpp needs the two to be within 2·tol in our logits.
        expect(r.maxDisagreeGap, 'largest gap where the top-1 differs').toBeLessThanOrEqual(2 * tol);
        for (const d of r.divergences) expect(d.gap, JSON.stringify(d)).toBeLessThanOrEqual(2 * tol);
        expect(r.decodeAgrees, 'decode (one token per forward) chooses what the teacher-forced rows say').toBe(true);
      } finally {
        model.dispose();
      }
    });
  }
});

describe.skipIf(!have || process.env.EDGELLM_QUANT_F64 !== '1')('the f64 reference against llama.cpp (EDGELLM_QUANT_F64=1)', () => {
  const spec = { dim: 256, nLayers: 4, nHeads: 4, nKvHeads: 2, ffn: 768, vocab: 512, tied: false };
  for (const c of CASES.filter((x) => x.name.startsWith('synth-'))) {
    it(c.name, async () => {
      const ref: Reference = JSON.parse(readFileSync(path.join(KIT, `${c.name}.json`), 'utf8'));
      const src = c.source();
      const bytes = typeof src === 'string' ? new Uint8Array(readFileSync(src)) : src;
      const g = await readGGUF(memorySource(bytes));
      const W = new Map<string, Float32Array>();
      for (const t of g.tensors) W.set(t.name, dequantizeRow(t.type, bytes.subarray(t.offset, t.offset + t.byteSize), t.elements));
      const model = await loadModel(bytes, LOAD);
      const ids = model.tokenize(readFileSync(DEV, 'utf8'), { bos: false, eos: false });
      model.dispose();
      // the activations of every matmul rounded as both llama.cpp and edgellm round them for this file's types
      const act = c.family === 'q8_0' ? 'q8_0' : c.family === 'q8_k' ? 'q8_k' : false;
      const variants: Array<[string, (name: string) => false | 'q8_0' | 'q8_k']> = [['exact', () => false]];
      if (act) variants.push([act, () => act]);
      const pr = ref.perplexity[0];
      const seqs = [
        ...ref.prompts.map((p) => ({ seq: p.ids, want: p.top10.map((t) => t.ids[0]), nll: false })),
        ...pr.windows.map((w) => ({ seq: [1, ...ids.slice(w.first_text_token, w.first_text_token + pr.window - 1)], want: w.top1_ids, nll: true })),
      ];
      const line: string[] = [];
      for (const [label, round] of variants) {
        let agree = 0, total = 0, nll = 0, scored = 0;
        for (const { seq, want, nll: score } of seqs) {
          const logits = referenceForward(spec, W, seq, round);
          for (let i = 0; i < want.length; i++) {
            const row = logits[i];
            let best = 0;
            for (let v = 1; v < row.length; v++) if (row[v] > row[best]) best = v;
            total++;
            if (best === want[i]) agree++;
            if (score && i + 1 < seq.length) {
              let max = -Infinity, sum = 0;
              for (const v of row) max = Math.max(max, v);
              for (const v of row) sum += Math.exp(v - max);
              nll -= row[seq[i + 1]] - max - Math.log(sum);
              scored++;
            }
          }
        }
        line.push(`${label} activations: top-1 ${((100 * agree) / total).toFixed(1)}%, ΔNLL ${(nll / scored - pr.nll).toFixed(4)}`);
      }
      console.log(`f64 reference, ${c.name} against llama.cpp: ${line.join('; ')}`);
    });
  }
});
