// Every architecture against llama.cpp on the architecture conformance kit (../shared/conformance/arch, see its
// README): for llama3 (Llama 3 RoPE factors), qwen2, qwen3, gemma3, gemma2 and phi3, a synthetic-weight GGUF in f32,
// Q8_0 and Q4_K_M, run through edgellm and compared with the logits llama.cpp computed on the same bytes: the top-10 at
// every position of 3 short prompts (teacher-forced through llama.cpp's greedy continuation) and of a 300-token prompt
// (past the gemma fixtures' window of 64), and the mean NLL of two 512-token windows of dev.txt.
//
// The bars are issue 12's where llama.cpp's own arithmetic lets an exact implementation meet them (BARS says where
// and why they depart, with the evidence; docs/arch.md has the tables):
// - f32: top-1 ≥ 99.5%, mean NLL within 0.001 nats, every top-10 logit within 1e-3 relative of llama.cpp's where its
//   attention accumulated in f32 and 1e-2 where in f16, and greedy tokens identical or each divergence a near-tie;
// - Q8_0 and Q4_K_M: top-1 ≥ 95% / 93.5% and mean NLL within 0.01 nats, top-10 |Δ| within 1.0 / 1.2 (llama.cpp
//   rounds the activations of quantized matmuls to int8, see test/quant-conformance.test.ts).
// Then: crafted bad metadata gives the named errors, and the bench's synthetic models of these architectures
// (bench/synthetic.mjs) are laid out as the kit's files are.
//
// EDGELLM_ARCH=qwen2,gemma3 runs some architectures only. EDGELLM_ARCH_PENDING=1 turns UNSUPPORTED_ARCH at load into a
// loud "not yet supported" skip, for working on one architecture while the others are being written.
// EDGELLM_ARCH_REPORT=FILE.json saves the measured numbers (docs/arch.md is written from them).
import { afterAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadModel, EdgeLLMError, logSoftmaxAt, type LoadOptions, type Model } from '../src/index.js';
import { GGUFValueType, memorySource, readGGUF, type GGUFWriterKV, type GGUFWriterTensor } from '../src/gguf/index.js';
import { syntheticPrompt, writeSyntheticGGUF } from '../bench/synthetic.mjs';
import { argmax, greedyAgainst, quantile, type GreedyDivergence } from './util/compare.js';
import { expectCodeAsync, rewriteGGUF } from './util/expect.js';
import { announceSkipIfMissing, ROOT, SHARED } from './util/shared.js';

const KIT = path.join(SHARED, 'conformance/arch');
const MAKE = path.join(SHARED, 'conformance/make/make-arch.mjs');
const DEV = path.join(SHARED, 'eval/dev.txt');
const have = announceSkipIfMissing('arch conformance (test/arch-conformance.test.ts)', KIT) && announceSkipIfMissing('arch conformance: dev.txt', DEV);
const PENDING_OK = process.env.EDGELLM_ARCH_PENDING === '1';
const REPORT = process.env.EDGELLM_ARCH_REPORT;
const ARCHS = ['llama3', 'qwen2', 'qwen3', 'gemma3', 'gemma2', 'phi3'].filter((a) => !process.env.EDGELLM_ARCH || process.env.EDGELLM_ARCH.split(',').includes(a));
const FILES = ['f32', 'q8_0', 'q4_k_m'] as const;
type FileType = (typeof FILES)[number];

/**
 * The windows are 512 tokens; the library's default KV cache (f32), as for the quant kit. EDGELLM_ARCH_KV=f16 runs it
 * with f16 pages (llama.cpp's default cache type, which its references used).
 */
const LOAD: LoadOptions = { contextLength: 512, ...(process.env.EDGELLM_ARCH_KV ? { kv: { type: process.env.EDGELLM_ARCH_KV as 'f16' } } : {}) };

/**
 * How llama.cpp's own arithmetic moves the references, measured with the f64 reference forward pass
 * (test/util/reference.ts, every architecture) on the same files:
 * - Its CPU flash attention over the F16 KV cache (ggml-cpu ops.cpp, ggml_compute_forward_flash_attn_ext_f16) takes
 *   a tiled path with f32 accumulators for a batch of at least GGML_FA_TILE_Q = 64 queries, and otherwise accumulates
 *   softmax·V in f16 (VKQ16). It evaluated each sequence in chunks of 128, so the long prompt's positions 0..255 were
 *   accumulated in f32, and the short prompts (16 to 30 tokens), the long prompt's last chunk (256..299: 44 tokens) and
 *   the greedy tokens (one at a time) in f16.
 * - Exact f64 arithmetic is within 7.7e-4 relative of llama.cpp's top-10 logits in the f32-accumulated chunks of all six
 *   f32 files, but up to 2.3e-3 off in the short prompts and 5.2e-3 past 256. An f64 reference with f16 K, V and an f16
 *   accumulator comes within 3.4e-4–5.4e-4 of llama3's short prompts and 1.2e-3 past 256, where with an f32
 *   accumulator it stays up to 1.4e-3 and 4.6e-3 off (and in the 128-token chunks the f16 accumulator puts it 2e-3 to
 *   4.5e-3 off: the two paths are told apart by the numbers too).
 * - So the issue's 1e-3 relative holds where llama.cpp accumulates in f32, and is out of reach of any exact
 *   implementation where it does not: there the bar is 1e-2 (twice the f64 reference's worst). The summary prints how
 *   many top-10 logits are beyond 1e-3 anyway.
 * - Top-1 of the quantized files: the f64 reference with the activations rounded as llama.cpp rounds them agrees with
 *   llama.cpp at 95.7–98.9% on the Q8_0 files and 94.6–97.3% on the Q4_K_M ones (94.6%: gemma3; with exact activations
 *   95.4–98.4% and 94.6–98.1%), below the issue's 96%: two correct implementations disagree on near-ties. The bars
 *   are those minima less the ±0.7-point spread seen on the quant kit.
 * - What does catch an error on the quantized files is the size of the top-10 differences: llama.cpp's int8 rounding of
 *   the activations moves its logits by up to 0.64 (Q8_0) and 0.78 (Q4_K_M) from ours (measured on all six
 *   architectures; the quant kit: 0.45 and 0.77), so the bound is about 1.5 times that, and each top-1 disagreement
 *   must be within twice it in our logits. Ignoring llama3's rope_freqs (issue 12's starting point) gives 1.9 and 1.6.
 */
interface Bars {
  top1: number;
  /** |mean NLL − llama.cpp's|, nats */
  nll: number;
  /** every top-10 logit within this much relative of llama.cpp's where llama.cpp accumulated attention in f32 */
  rel?: number;
  /** the same where it accumulated in f16 (see f16Accumulated); greedy divergences within twice it */
  relF16?: number;
  /** every top-10 logit within this much of llama.cpp's (absolute); each top-1 disagreement within twice it */
  delta?: number;
}
const BARS: Record<FileType, Bars> = {
  f32: { top1: 0.995, nll: 0.001, rel: 1e-3, relF16: 1e-2 },
  q8_0: { top1: 0.95, nll: 0.01, delta: 1.0 },
  q4_k_m: { top1: 0.935, nll: 0.01, delta: 1.2 },
};
/** The issue's relative bar, reported for every file. */
const ISSUE_REL = 1e-3;

/**
 * llama.cpp's logits without flash attention (test/fixtures/arch-llamacpp-nofa.json, written by
 * bench/anchors/llamacpp-logits.mjs on the same f32 masters): its attention path of separate ops, which accumulates in
 * f32 everywhere. The f32 files must be within the issue's 1e-3 relative of it at every position, prompts and the long
 * prompt included: where llama.cpp's two paths differ (f16-accumulated positions, up to 4e-3), ours is its exact one.
 */
interface NoFlashReference { prompts: number[][][]; long_prompt: number[][]; sha256: string }
const NO_FLASH: Record<string, NoFlashReference> = JSON.parse(readFileSync(path.join(ROOT, 'test/fixtures/arch-llamacpp-nofa.json'), 'utf8')).archs;

/** llama.cpp evaluated each sequence in chunks of 128 tokens; a batch of fewer than 64 accumulated softmax·V in f16. */
const CHUNK = 128, FA_TILE_Q = 64;
function f16Accumulated(length: number, pos: number): boolean {
  const start = pos - (pos % CHUNK);
  return Math.min(CHUNK, length - start) < FA_TILE_Q;
}

/**
 * What each fixture's metadata makes of its layers (the kit's README): the sliding window per layer (0 = full causal;
 * gemma3's pattern 3 over 4 layers makes layer 2 the global one, gemma2's default pattern 2 layer 1), the RoPE bases,
 * the RoPE mode llama.cpp picks by architecture, and Gemma 2's soft-caps.
 */
const PARTICULARS: Record<string, { window: number[]; ropeBase: number; ropeBaseLocal: number; ropeMode: 'norm' | 'neox'; attnSoftcap: number; finalSoftcap: number }> = {
  llama3: { window: [0, 0], ropeBase: 500000, ropeBaseLocal: 500000, ropeMode: 'norm', attnSoftcap: 0, finalSoftcap: 0 },
  qwen2: { window: [0, 0], ropeBase: 1e6, ropeBaseLocal: 1e6, ropeMode: 'neox', attnSoftcap: 0, finalSoftcap: 0 },
  qwen3: { window: [0, 0], ropeBase: 1e6, ropeBaseLocal: 1e6, ropeMode: 'neox', attnSoftcap: 0, finalSoftcap: 0 },
  gemma3: { window: [64, 64, 0, 64], ropeBase: 1e6, ropeBaseLocal: 10000, ropeMode: 'neox', attnSoftcap: 0, finalSoftcap: 0 },
  gemma2: { window: [64, 0], ropeBase: 10000, ropeBaseLocal: 10000, ropeMode: 'neox', attnSoftcap: 10, finalSoftcap: 30 },
  phi3: { window: [0, 0], ropeBase: 10000, ropeBaseLocal: 10000, ropeMode: 'neox', attnSoftcap: 0, finalSoftcap: 0 },
};

interface Top10 { ids: number[]; logits: number[] }
interface Reference {
  model: string;
  /** of the GGUF the references were computed on (the f32 master's is checked after regenerating it) */
  sha256: string;
  architecture: string;
  tensors: { name: string; type: string; dims: number[] }[];
  bos_id: number;
  prompts: { text: string; ids: number[]; top10: Top10[]; greedy_ids: number[] }[];
  long_prompt: { ids: number[]; top10: Top10[] };
  perplexity: { text_tokens: number; window: number; nll: number; ppl: number; per_window: { first_text_token: number; tokens_scored: number; nll: number }[] };
}

let tmp: string | undefined;
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
/** The f32 master, regenerated byte-identically by the kit's generator (well under a second) and checked by sha256. */
function master(arch: string, ref: Reference): string {
  tmp ??= mkdtempSync(path.join(os.tmpdir(), 'edgellm-arch-'));
  const out = path.join(tmp, `${arch}-f32.gguf`);
  if (!existsSync(out)) {
    const r = spawnSync(process.execPath, [MAKE, '--out', tmp, '--arch', arch], { cwd: ROOT, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`make-arch.mjs --arch ${arch} failed: ${r.stderr}`);
  }
  expect(sha256(readFileSync(out)), `${out}: the bytes llama.cpp's references were computed on`).toBe(ref.sha256);
  return out;
}

/** One top-10 logit (or an id that entered our top-10) off llama.cpp's: where, and by how much. */
interface Miss { where: string; pos: number; id: number; rank: number | 'not in its top-10'; ours: number; theirs: number; rel: number; tol: number }
interface Result {
  name: string;
  types: string;
  top1: number;
  positions: number;
  /** the top-1 disagreements: where, and our logit gap between our top-1 and llama.cpp's */
  top1Misses: { where: string; pos: number; ours: number; theirs: number; gap: number }[];
  dNll: number;
  dNllWindows: number[];
  maxDelta: number;
  /** where the largest |Δ| is */
  worstDelta: Miss;
  p99Delta: number;
  /** max relative |Δ| of the top-10 logits where llama.cpp accumulated attention in f32, and where in f16 */
  maxRel: number;
  maxRelF16: number;
  /** top-10 logits beyond the issue's 1e-3 relative */
  overIssueRel: number;
  /** max relative |Δ| of the top-10 logits against llama.cpp without flash attention (f32 files), at every position */
  maxRelNoFlash: number;
  /** the top-10 logits beyond the file's relative bars, worst first (relative to its bar), and how many */
  worst: Miss[];
  beyond: number;
  /** the largest of our logit gaps between our top-1 and llama.cpp's where they differ */
  maxDisagreeGap: number;
  greedy: number[];
  divergences: GreedyDivergence[];
  decodeAgrees: boolean;
  seconds: number;
}
const results: Result[] = [];

/** dev.txt's text tokens (no BOS): every fixture has the same 512-token vocabulary, but each file's tokenizer is checked. */
let devText: string | undefined;

async function measure(name: string, model: Model, ref: Reference, bars: Bars, noFlash?: NoFlashReference): Promise<Result> {
  const t0 = performance.now();
  const V = model.info.vocab;
  let agree = 0, positions = 0, beyond = 0, overIssueRel = 0, maxRel = 0, maxRelF16 = 0, maxRelNoFlash = 0;
  const deltas: number[] = [];
  let worstDelta: Miss | undefined;
  const top1Misses: Result['top1Misses'] = [];
  const misses: Miss[] = [];

  /**
   * One position with llama.cpp's top-10 (of a sequence of `length` tokens): top-1, every top-10 logit, and any id
   * that entered our top-10.
   */
  const position = (logits: Float32Array, length: number, where: string, pos: number, t: Top10, strict?: number[]) => {
    const row = pos * V;
    positions++;
    if (strict) {
      // relative to the position's largest logit: the error of the logit vector, as a logit near 0 has no meaningful
      // relative error of its own
      const scale = Math.max(...strict.map(Math.abs));
      for (let j = 0; j < t.ids.length; j++) {
        const rel = Math.abs(logits[row + t.ids[j]] - strict[j]) / scale;
        maxRelNoFlash = Math.max(maxRelNoFlash, rel);
        if (rel > ISSUE_REL) {
          beyond++;
          misses.push({ where: `${where} (llama.cpp without flash attention)`, pos, id: t.ids[j], rank: j + 1, ours: logits[row + t.ids[j]], theirs: strict[j], rel, tol: ISSUE_REL });
        }
      }
    }
    const ours = argmax(logits, row, V);
    if (ours === t.ids[0]) agree++;
    else top1Misses.push({ where, pos, ours, theirs: t.ids[0], gap: logits[row + ours] - logits[row + t.ids[0]] });
    const f16 = f16Accumulated(length, pos);
    const tol = (f16 ? bars.relF16 : bars.rel) ?? Infinity;
    const off = (m: Omit<Miss, 'tol'>) => {
      if (f16) maxRelF16 = Math.max(maxRelF16, m.rel);
      else maxRel = Math.max(maxRel, m.rel);
      if (m.rel > ISSUE_REL) overIssueRel++;
      if (m.rel > tol) {
        beyond++;
        misses.push({ ...m, tol });
      }
    };
    for (let j = 0; j < t.ids.length; j++) {
      const theirs = Math.fround(t.logits[j]), mine = logits[row + t.ids[j]];
      const m = { where, pos, id: t.ids[j], rank: j + 1, ours: mine, theirs, rel: Math.abs(mine - theirs) / Math.abs(theirs) };
      deltas.push(Math.abs(mine - theirs));
      if (!worstDelta || Math.abs(mine - theirs) > Math.abs(worstDelta.ours - worstDelta.theirs)) worstDelta = { ...m, tol: bars.delta ?? Infinity };
      off(m);
    }
    // An id outside llama.cpp's top-10 has its logit there at most the 10th's: ours may exceed that by the tolerance.
    const tenth = Math.fround(t.logits[t.logits.length - 1]);
    const order = Array.from({ length: V }, (_, i) => i).sort((a, b) => logits[row + b] - logits[row + a] || a - b);
    for (const id of order.slice(0, t.ids.length)) {
      if (t.ids.includes(id) || logits[row + id] <= tenth) continue;
      off({ where, pos, id, rank: 'not in its top-10', ours: logits[row + id], theirs: tenth, rel: (logits[row + id] - tenth) / Math.abs(tenth) });
    }
  };

  const greedy: number[] = [];
  const divergences: GreedyDivergence[] = [];
  let decodeAgrees = true;
  for (const [pi, p] of ref.prompts.entries()) {
    expect(model.tokenize(p.text), `prompt ${pi} tokenized as llama.cpp did`).toEqual(p.ids);
    // One teacher-forced pass over the prompt and llama.cpp's greedy continuation: rows 0..n−1 are the prompt's
    // positions; row n−1+k is where llama.cpp chose greedy_ids[k] after the same k tokens.
    const seq = [...p.ids, ...p.greedy_ids];
    const logits = await model.evaluate(seq);
    for (const [i, t] of p.top10.entries()) position(logits, p.ids.length, `prompt ${pi}`, i, t, noFlash?.prompts[pi][i]);
    const g = await greedyAgainst(model, p, pi, logits, V);
    greedy.push(g.matched);
    if (g.divergence) divergences.push(g.divergence);
    if (!g.decodeAgrees) decodeAgrees = false;
  }

  devText ??= readFileSync(DEV, 'utf8');
  const ids = model.tokenize(devText, { bos: false, eos: false });
  const pr = ref.perplexity;
  expect(ids.length, 'dev.txt tokens').toBe(pr.text_tokens);
  const bos = model.info.tokenizer.bos;
  expect(bos).toBe(ref.bos_id);

  const long = ref.long_prompt;
  expect(long.ids, 'the long prompt is BOS + dev.txt\'s first tokens').toEqual([bos, ...ids.slice(0, long.ids.length - 1)]);
  const longLogits = await model.evaluate(long.ids);
  for (const [i, t] of long.top10.entries()) position(longLogits, long.ids.length, 'long prompt', i, t, noFlash?.long_prompt[i]);

  let nllSum = 0, scored = 0;
  const dNllWindows: number[] = [];
  for (const w of pr.per_window) {
    const seq = [bos, ...ids.slice(w.first_text_token, w.first_text_token + pr.window - 1)];
    expect(seq.length - 1).toBe(w.tokens_scored);
    const logits = await model.evaluate(seq);
    let wsum = 0;
    for (let r = 0; r + 1 < seq.length; r++) wsum -= logSoftmaxAt(logits.subarray(r * V, (r + 1) * V), seq[r + 1]);
    dNllWindows.push(wsum / (seq.length - 1) - w.nll);
    nllSum += wsum;
    scored += seq.length - 1;
  }
  return {
    name,
    types: Object.entries(model.info.tensorTypes).map(([t, n]) => `${t}×${n}`).join(' '),
    top1: agree / positions,
    positions,
    top1Misses,
    dNll: nllSum / scored - pr.nll,
    dNllWindows,
    maxDelta: Math.max(...deltas),
    worstDelta: worstDelta!,
    p99Delta: quantile(deltas, 0.99),
    maxRel,
    maxRelF16,
    overIssueRel,
    maxRelNoFlash,
    worst: misses.sort((a, b) => b.rel / b.tol - a.rel / a.tol).slice(0, 5),
    beyond,
    maxDisagreeGap: Math.max(0, ...top1Misses.map((m) => m.gap)),
    greedy,
    divergences,
    decodeAgrees,
    seconds: (performance.now() - t0) / 1000,
  };
}

const describeMiss = (m: Miss) =>
  `${m.where} position ${m.pos}: token ${m.id} (llama.cpp rank ${m.rank}) ours ${m.ours.toFixed(5)} vs llama.cpp ${m.theirs.toFixed(5)}, rel ${m.rel.toExponential(2)} (bar ${m.tol})`;

describe.skipIf(!have)('architectures against llama.cpp (conformance/arch)', () => {
  afterAll(() => {
    if (tmp) rmSync(tmp, { recursive: true, force: true });
    if (!results.length) return;
    const sign = (x: number, d: number) => `${x >= 0 ? '+' : ''}${x.toFixed(d)}`;
    const rows = results.map((r) => [
      r.name,
      `${(100 * r.top1).toFixed(1)}%`,
      sign(r.dNll, 4),
      r.maxDelta.toFixed(4),
      r.p99Delta.toFixed(4),
      r.maxRel.toExponential(1),
      r.maxRelF16.toExponential(1),
      String(r.overIssueRel),
      r.maxRelNoFlash ? r.maxRelNoFlash.toExponential(1) : '—',
      r.maxDisagreeGap.toFixed(3),
      r.greedy.join('/'),
      r.divergences.map((d) => `p${d.prompt}@${d.at} gap ${d.gap.toFixed(3)}${d.refGap !== undefined ? ` (llama.cpp ${d.refGap.toFixed(3)})` : ''}`).join('; ') || '—',
    ]);
    const head = ['file', 'top-1', 'ΔNLL', 'max|Δ| top10', 'p99|Δ|', 'rel f32-acc', 'rel f16-acc', `>${ISSUE_REL}`, 'rel no-FA', 'max gap', 'greedy', 'divergences (our top-1 − llama.cpp\'s token, our logits)'];
    const last = head.length - 1;
    const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
    console.log(['', ...[head, ...rows].map((r) => r.map((x, i) => (i === 0 || i === last ? x.padEnd(w[i]) : x.padStart(w[i]))).join('  '))].join('\n'));
    if (REPORT) writeFileSync(REPORT, JSON.stringify({ load: LOAD, results }, null, 1));
  });

  for (const arch of ARCHS) {
    for (const file of FILES) {
      const name = `${arch}-${file}`;
      it(name, async (ctx) => {
        const ref: Reference = JSON.parse(readFileSync(path.join(KIT, `${name}-llamacpp.json`), 'utf8'));
        const bars = BARS[file];
        let model: Model;
        try {
          model = await loadModel(file === 'f32' ? master(arch, ref) : path.join(KIT, `${name}.gguf`), LOAD);
        } catch (e) {
          if (e instanceof EdgeLLMError && e.code === 'UNSUPPORTED_ARCH' && PENDING_OK) {
            const line = '!'.repeat(100);
            console.warn(`\n${line}\n!!! NOT YET SUPPORTED: ${name}: ${e.message}\n${line}\n`);
            ctx.skip();
          }
          throw e;
        }
        try {
          const counts: Record<string, number> = {};
          for (const t of ref.tensors) counts[t.type] = (counts[t.type] ?? 0) + 1;
          expect(model.info.tensorTypes).toEqual(counts);
          expect(model.info.architecture).toBe(ref.architecture);
          const { window, ropeBase, ropeBaseLocal, ropeMode, attnSoftcap, finalSoftcap } = model.info;
          expect({ window, ropeBase, ropeBaseLocal, ropeMode, attnSoftcap, finalSoftcap }, 'what the metadata makes of the layers').toEqual(PARTICULARS[arch]);

          const noFlash = file === 'f32' ? NO_FLASH[arch] : undefined;
          if (noFlash) expect(noFlash.sha256, 'the no-flash-attention fixture was made on this master').toBe(ref.sha256);
          const r = await measure(name, model, ref, bars, noFlash);
          results.push(r);
          const misses = r.top1Misses.slice(0, 8).map((m) => `${m.where} @${m.pos}: ours ${m.ours}, llama.cpp ${m.theirs}, gap ${m.gap.toFixed(4)}`).join('; ');
          expect(r.top1, `top-1 agreement over ${r.positions} positions; ${r.top1Misses.length} misses: ${misses}`).toBeGreaterThanOrEqual(bars.top1);
          expect(Math.abs(r.dNll), `mean NLL − llama.cpp's (per window ${r.dNllWindows.map((x) => x.toFixed(4)).join(', ')})`).toBeLessThanOrEqual(bars.nll);
          expect(r.beyond, `top-10 logits beyond the relative bars; worst: ${r.worst.map(describeMiss).join('; ')}`).toBe(0);
          // Teacher-forced, both sides see the same tokens, so choosing another token than llama.cpp's is only right
          // where the two are close in our logits: within twice the tolerance of each (llama.cpp decoded the greedy
          // tokens one at a time: f16-accumulated).
          const nearTie = (logit: number) => Math.min(2 * (bars.delta ?? Infinity), 2 * (bars.relF16 ?? Infinity) * Math.abs(logit));
          for (const d of r.divergences) expect(d.gap, `greedy divergence ${JSON.stringify(d)}: not a near-tie`).toBeLessThanOrEqual(nearTie(d.logit));
          if (bars.delta !== undefined) {
            expect(r.maxDelta, `max |Δ| of the top-10 logits; worst: ${describeMiss(r.worstDelta)}`).toBeLessThanOrEqual(bars.delta);
            expect(r.maxDisagreeGap, `largest gap where the top-1 differs; misses: ${misses}`).toBeLessThanOrEqual(2 * bars.delta);
          }
          expect(r.decodeAgrees, 'decode (one token per forward) chooses what the teacher-forced rows say').toBe(true);
        } finally {
          model.dispose();
        }
      });
    }
  }
});

/**
 * Crafted variants of the kit's Q8_0 files: each architecture's required tensors and keys are checked at load, and a
 * missing or impossible one is named. The unedited rewrite of each file loads (so the edit is what fails).
 */
describe.skipIf(!have)('bad architecture metadata (conformance/arch files, rewritten)', () => {
  const kit = (arch: string) => new Uint8Array(readFileSync(path.join(KIT, `${arch}-q8_0.gguf`)));
  const load = (bytes: Uint8Array) => async () => (await loadModel(bytes, LOAD)).dispose();
  const without = (name: string) => ({ tensors: (ts: GGUFWriterTensor[]) => ts.filter((t) => t.name !== name) });
  const setKey = (key: string, kv: Omit<GGUFWriterKV, 'key'>) => ({
    metadata: (kvs: GGUFWriterKV[]) => {
      expect(kvs.some((x) => x.key === key), `${key} in the kit's file`).toBe(true);
      return kvs.map((x) => (x.key === key ? { key, ...kv } : x));
    },
  });

  it.each(['qwen2', 'qwen3', 'gemma3'])('%s: the unedited rewrite loads', async (arch) => {
    const model = await loadModel(await rewriteGGUF(kit(arch), {}), LOAD);
    expect(model.info.architecture).toBe(arch);
    model.dispose();
  });

  it.each([
    ['qwen2', 'a Q/K/V bias', 'blk.0.attn_q.bias'],
    ['qwen2', 'a Q/K/V bias', 'blk.1.attn_v.bias'],
    ['qwen3', 'a q/k norm', 'blk.0.attn_k_norm.weight'],
    ['gemma3', 'a q/k norm', 'blk.3.attn_q_norm.weight'],
    ['gemma3', 'a post-attention norm', 'blk.1.post_attention_norm.weight'],
    ['gemma3', 'a post-FFN norm', 'blk.2.post_ffw_norm.weight'],
    ['gemma2', 'a post-attention norm', 'blk.0.post_attention_norm.weight'],
  ])('%s without %s (%s): MISSING_TENSOR naming it', async (arch, _what, tensor) => {
    await expectCodeAsync(load(await rewriteGGUF(kit(arch), without(tensor))), 'MISSING_TENSOR', tensor);
  });

  it('gemma3 with a sliding window of 0: BAD_METADATA', async () => {
    const bytes = await rewriteGGUF(kit('gemma3'), setKey('gemma3.attention.sliding_window', { type: GGUFValueType.UINT32, value: 0 }));
    await expectCodeAsync(load(bytes), 'BAD_METADATA', 'gemma3.attention.sliding_window');
  });

  it('gemma3 with a per-layer pattern of the wrong length: BAD_METADATA', async () => {
    // 4 layers, 3 bools
    const bytes = await rewriteGGUF(
      kit('gemma3'),
      setKey('gemma3.attention.sliding_window_pattern', { type: GGUFValueType.ARRAY, arrayType: GGUFValueType.BOOL, value: [true, true, false] }),
    );
    await expectCodeAsync(load(bytes), 'BAD_METADATA', 'gemma3.attention.sliding_window_pattern', '4');
  });

  it('gemma3 with the pattern as one bool per layer: the same layers as the period', async () => {
    // llama.cpp reads the key either way; the kit's u32 3 over 4 layers is local, local, global, local
    const bytes = await rewriteGGUF(
      kit('gemma3'),
      setKey('gemma3.attention.sliding_window_pattern', { type: GGUFValueType.ARRAY, arrayType: GGUFValueType.BOOL, value: [true, true, false, true] }),
    );
    const model = await loadModel(bytes, LOAD);
    expect(model.info.window).toEqual(PARTICULARS.gemma3.window);
    model.dispose();
  });

  it('an unknown architecture: UNSUPPORTED_ARCH listing the supported ones', async () => {
    const bytes = await rewriteGGUF(kit('qwen2'), setKey('general.architecture', { type: GGUFValueType.STRING, value: 'mamba' }));
    await expectCodeAsync(load(bytes), 'UNSUPPORTED_ARCH', '"mamba"', 'llama', 'qwen2', 'qwen3', 'gemma2', 'gemma3', 'phi3');
  });
});

/**
 * The bench's synthetic models of the new architectures (bench/synthetic.mjs: qwen2.5-0.5b, qwen3-0.6b, gemma-3-1b,
 * llama-3.2-1b) at the kit's small shapes: every tensor named, shaped and (in Q8_0 and Q4_K_M) typed as in the kit's
 * files, which llama.cpp's converter layout and quantizer wrote; and they load and decode in edgellm. (llama.cpp
 * loading the full-size files is checked by running the bench's llama.cpp anchor on them: docs/arch.md.)
 */
describe.skipIf(!have)('the bench generator writes each architecture as llama.cpp does (conformance/arch)', () => {
  // The kit's shapes in the generator's terms; the vocabulary is the generator's own (the kit's 512 tokens are too few
  // for its text), so token_embd has VOCAB rows instead of 512.
  const VOCAB = 600;
  const base = { dim: 256, nHeads: 4, ffn: 768, ctx: 512, tied: true, vocab: VOCAB };
  const KIT_SHAPES: Record<string, object> = {
    llama3: { ...base, name: 'kit-llama3', nLayers: 2, nKvHeads: 2, ropeBase: 500000, ropeFreqs: true },
    qwen2: { ...base, name: 'kit-qwen2', arch: 'qwen2', nLayers: 2, nKvHeads: 2, ropeBase: 1e6, eps: 1e-6 },
    qwen3: { ...base, name: 'kit-qwen3', arch: 'qwen3', nLayers: 2, nKvHeads: 2, headDim: 128, ropeBase: 1e6, eps: 1e-6 },
    gemma3: { ...base, name: 'kit-gemma3', arch: 'gemma3', nLayers: 4, nKvHeads: 1, headDim: 64, slidingWindow: 64, ropeBase: 1e6, eps: 1e-6 },
  };
  it.each(Object.keys(KIT_SHAPES))('%s', async (arch) => {
    const shape = KIT_SHAPES[arch];
    const dir = mkdtempSync(path.join(os.tmpdir(), 'edgellm-arch-bench-'));
    try {
      for (const type of ['q8_0', 'q4_k_m']) {
        const ref: Reference = JSON.parse(readFileSync(path.join(KIT, `${arch}-${type}-llamacpp.json`), 'utf8'));
        const file = path.join(dir, `${arch}-${type}.gguf`);
        writeSyntheticGGUF(file, shape, type);
        const g = await readGGUF(memorySource(new Uint8Array(readFileSync(file))));
        const layout = (ts: { name: string; dims: number[]; type: string }[]) =>
          ts.map((t) => `${t.name} ${t.name === 'token_embd.weight' ? [t.dims[0], 'V'] : t.dims} ${t.type}`).sort();
        expect(layout(g.tensors.map((t) => ({ name: t.name, dims: t.dims, type: t.typeName }))), `${arch} ${type}`).toEqual(layout(ref.tensors));

        const model = await loadModel(file, { contextLength: 256 });
        try {
          expect(model.info.architecture).toBe(ref.architecture);
          const prompt = model.tokenize(syntheticPrompt(24));
          expect(prompt.length).toBe(25);
          const generated: number[] = [];
          await model.complete(prompt, { maxTokens: 8, temperature: 0, onToken: (id) => generated.push(id) });
          expect(generated.length).toBe(8);
          const logits = await model.evaluate([...prompt, ...generated]);
          expect(logits.every(Number.isFinite)).toBe(true);
        } finally {
          model.dispose();
        }
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
