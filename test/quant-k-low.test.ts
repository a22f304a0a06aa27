// Q2_K, Q3_K and IQ4_XS (assembly/q2_k.ts, q3_k.ts, iq4_xs.ts): the kernels against an exact re-computation of
// llama.cpp's integer formula from the GGUF bytes, on both builds; dequant_row against the host dequantizer; synthetic
// models against the f64 reference forward pass; and a quick look at llama.cpp's own files of these types.
import { beforeAll, describe, expect, it } from 'vitest';
import { loadModel } from '../src/index.js';
import { GGMLType } from '../src/gguf/types.js';
import { dequantizeRow, quantizeRow, ROW_FORMATS } from '../src/gguf/quantize.js';
import { f16Table } from '../src/gguf/f16.js';
import { KVALUES_IQ4NL } from '../src/gguf/quantize-legacy.js';
import { iq4xsScale, q3kScale } from '../src/gguf/quantize-k-low.js';
import type { Matrix } from '../src/model/weight-types.js';
import { makeSyntheticLlama, type SyntheticSpec } from './util/synthetic.js';
import { referenceForward, runtimeRounding } from './util/reference.js';
import { compare, fmt, seededIds } from './util/compare.js';
import { expectBatchesIdentical, expectBuildsIdentical } from './util/builds.js';
import { KernelInstance } from './util/kernels.js';

const { F16, Q8_0, Q4_0, Q4_K, Q6_K, Q2_K, Q3_K, IQ4_XS } = GGMLType;
const TYPES = [Q2_K, Q3_K, IQ4_XS] as const;
const NAMES: Record<number, string> = { [Q2_K]: 'Q2_K', [Q3_K]: 'Q3_K', [IQ4_XS]: 'IQ4_XS' };
const f = Math.fround;

function rng(seed: number) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ---- the two builds, each over its own memory, with a bump allocator above heap_base ----

let builds: KernelInstance[];
beforeAll(async () => {
  builds = await KernelInstance.both();
});

// ---- weights ----

/** GGUF bytes of a rows × cols matrix of `type`: round-to-nearest from random floats, or raw random blocks. */
function makeWeights(type: number, rows: number, cols: number, seed: number, raw: boolean): Uint8Array {
  const fmt = ROW_FORMATS.get(type)!;
  const r = rng(seed);
  const rowBytes = (cols / fmt.blockSize) * fmt.blockBytes;
  const out = new Uint8Array(rows * rowBytes);
  const x = new Float32Array(cols);
  for (let row = 0; row < rows; row++) {
    if (raw) {
      // every byte random, the f16 scales then set to modest values of either sign: all code and scale extremes occur
      const o = row * rowBytes;
      for (let i = 0; i < rowBytes; i++) out[o + i] = Math.floor(r() * 256);
      const put = (at: number) => {
        const h = 0x2000 + Math.floor(r() * 0x1000) + (r() < 0.3 ? 0x8000 : 0);
        out[at] = h & 0xff;
        out[at + 1] = h >> 8;
      };
      for (let b = 0; b < cols / 256; b++) {
        const s = o + b * fmt.blockBytes;
        if (type === Q2_K) (put(s + 80), put(s + 82));
        else if (type === Q3_K) put(s + 108);
        else put(s);
      }
    } else {
      for (let i = 0; i < cols; i++) x[i] = (r() - 0.5) * (1 + (i % 37 === 0 ? 3 : 0));
      out.set(quantizeRow(type, x), row * rowBytes);
    }
  }
  return out;
}

// ---- activations ----

interface Q8K {
  q: Int8Array;
  d: Float32Array;
  s: Int16Array;
}

/** ntok activation vectors through the kernels' quantize_q8_k; returns pointers and a copy. */
function quantizeActivations(inst: KernelInstance, x: Float32Array, cols: number, ntok: number) {
  const xp = inst.alloc(x.byteLength);
  new Float32Array(inst.memory.buffer, xp, x.length).set(x);
  const kq = inst.alloc(ntok * cols), kd = inst.alloc(ntok * (cols / 256) * 4), ks = inst.alloc(ntok * (cols / 16) * 2);
  inst.k.quantize_q8_k(xp, cols, ntok, kq, kd, ks);
  const copy: Q8K = {
    q: new Int8Array(inst.memory.buffer.slice(kq, kq + ntok * cols)),
    d: new Float32Array(inst.memory.buffer.slice(kd, kd + ntok * (cols / 256) * 4)),
    s: new Int16Array(inst.memory.buffer.slice(ks, ks + ntok * (cols / 16) * 2)),
  };
  return { kq, kd, ks, copy };
}

// ---- reference: llama.cpp's integer formula, from the GGUF bytes, with the kernels' f32 operation order ----

const f16 = (b: Uint8Array, o: number) => f16Table()[b[o] | (b[o + 1] << 8)];
const code2 = (b: Uint8Array, o: number, e: number) => (b[o + 32 * (e >> 7) + (e & 31)] >> (2 * ((e >> 5) & 3))) & 3;

/** y[t][r] as the kernels must compute it: per super-block an exact integer sum, then acc + (d·xd)·isum (− (dmin·xd)·msum). */
function referenceMatmul(type: number, w: Uint8Array, rows: number, cols: number, a: Q8K, ntok: number): Float32Array {
  const nsb = cols / 256;
  const bb = ROW_FORMATS.get(type)!.blockBytes;
  const y = new Float32Array(ntok * rows);
  for (let t = 0; t < ntok; t++) {
    for (let r = 0; r < rows; r++) {
      let acc = 0;
      for (let b = 0; b < nsb; b++) {
        const o = (r * nsb + b) * bb;
        const x = (e: number) => a.q[t * cols + b * 256 + e];
        const xd = a.d[t * nsb + b];
        let isum = 0;
        if (type === Q2_K) {
          let msum = 0;
          for (let j = 0; j < 16; j++) {
            let bsum = 0, dot = 0;
            for (let i = 0; i < 16; i++) {
              bsum += x(16 * j + i);
              dot += code2(w, o + 16, 16 * j + i) * x(16 * j + i);
            }
            expect(a.s[t * (cols / 16) + b * 16 + j]).toBe(bsum);
            isum += (w[o + j] & 15) * dot;
            msum += (w[o + j] >> 4) * bsum;
          }
          acc = f(acc + f(f(f(f16(w, o + 80) * xd) * f(isum)) - f(f(f16(w, o + 82) * xd) * f(msum))));
          continue;
        }
        if (type === Q3_K) {
          for (let j = 0; j < 16; j++) {
            let dot = 0;
            for (let i = 0; i < 16; i++) {
              const e = 16 * j + i;
              const high = (w[o + (e & 31)] >> (e >> 5)) & 1;
              dot += (code2(w, o + 32, e) + 4 * high - 4) * x(e);
            }
            isum += q3kScale(w, o + 96, j) * dot;
          }
          acc = f(acc + f(f(f16(w, o + 108) * xd) * f(isum)));
          continue;
        }
        for (let ib = 0; ib < 8; ib++) {
          let dot = 0;
          for (let j = 0; j < 16; j++) {
            const q = w[o + 8 + 16 * ib + j];
            dot += KVALUES_IQ4NL[q & 15] * x(32 * ib + j) + KVALUES_IQ4NL[q >> 4] * x(32 * ib + 16 + j);
          }
          isum += iq4xsScale(w, o + 2, ib) * dot;
        }
        acc = f(acc + f(f(f16(w, o) * xd) * f(isum)));
      }
      y[t * rows + r] = acc;
    }
  }
  return y;
}

function runMatmul(inst: KernelInstance, m: Matrix, act: { kq: number; kd: number; ks: number }, ntok: number): Float32Array {
  const y = inst.alloc(ntok * m.rows * 4);
  m.kernel.matmul(inst.k, m, { x: 0, q8_0: { q: 0, d: 0, s: 0 }, q8_k: { q: act.kq, d: act.kd, s: act.ks } }, y, ntok);
  return new Float32Array(inst.memory.buffer.slice(y, y + ntok * m.rows * 4));
}

/** Activations of order 1 with some large outliers, and one token of ±1 only (every code ±127: the i16 extremes). */
function makeActivations(cols: number, ntok: number, seed: number): Float32Array {
  const r = rng(seed);
  const x = new Float32Array(cols * ntok);
  for (let i = 0; i < x.length; i++) x[i] = (r() - 0.5) * (i % 53 === 0 ? 20 : 2);
  for (let i = 0; i < cols; i++) x[2 * cols + i] = i % 3 === 0 ? -1 : 1;
  return x;
}

/** A matrix whose every code, scale and table index is the largest (all bytes 0xff), scales f16 1.0. */
function extremeWeights(type: number, rows: number, cols: number): Uint8Array {
  const w = makeWeights(type, rows, cols, 1, true).fill(0xff);
  const bb = ROW_FORMATS.get(type)!.blockBytes;
  for (let s = 0; s < w.length; s += bb) {
    const at = type === Q2_K ? [80, 82] : type === Q3_K ? [108] : [0];
    for (const o of at) (w[s + o] = 0x00, w[s + o + 1] = 0x3c);
  }
  return w;
}

describe('matmul: both builds equal the integer formula, bit for bit, decode and prefill', () => {
  const shapes = [
    { rows: 13, cols: 512, ntok: 9 }, // a padded row group; 2 prefill tiles and a decoded remainder
    { rows: 8, cols: 256, ntok: 1 },
    { rows: 6, cols: 768, ntok: 4 },
  ];
  for (const type of TYPES) {
    for (const raw of [false, true]) {
      it(`${NAMES[type]}, ${raw ? 'raw random blocks' : 'round-to-nearest weights'}`, () => {
        for (const [si, { rows, cols, ntok }] of shapes.entries()) {
          const w = makeWeights(type, rows, cols, 100 + si + (raw ? 50 : 0), raw);
          const x = makeActivations(cols, ntok, 7 + si);
          for (const inst of builds) {
            const m = inst.matrix(type, rows, cols, w);
            const act = quantizeActivations(inst, x, cols, ntok);
            const want = referenceMatmul(type, w, rows, cols, act.copy, ntok);
            const got = runMatmul(inst, m, act, ntok);
            const bad = got.findIndex((v, i) => !Object.is(v, want[i]));
            expect(bad, `${inst.build} ${rows}×${cols}, ${ntok} tokens: y[${bad}] = ${got[bad]}, want ${want[bad]}`).toBe(-1);
          }
        }
      });
    }
    it(`${NAMES[type]}, every code and scale at its extreme against activations of ±127`, () => {
      const rows = 4, cols = 256, ntok = 5;
      const w = extremeWeights(type, rows, cols);
      const x = new Float32Array(cols * ntok);
      for (let i = 0; i < x.length; i++) x[i] = Math.floor(i / cols) % 2 ? 1 : i % 2 ? -1 : 1;
      for (const inst of builds) {
        const m = inst.matrix(type, rows, cols, w);
        const act = quantizeActivations(inst, x, cols, ntok);
        const want = referenceMatmul(type, w, rows, cols, act.copy, ntok);
        expect(Array.from(runMatmul(inst, m, act, ntok)), inst.build).toEqual(Array.from(want));
      }
    });
  }
});

describe('dequant_row equals the host dequantizer (ggml dequantize_row_*), bit for bit', () => {
  for (const type of TYPES) {
    it(NAMES[type], () => {
      const rows = 7, cols = 512;
      for (const raw of [false, true]) {
        const w = makeWeights(type, rows, cols, 300, raw);
        const want = dequantizeRow(type, w, rows * cols);
        for (const inst of builds) {
          const m = inst.matrix(type, rows, cols, w);
          const out = inst.alloc(cols * 4);
          for (let r = 0; r < rows; r++) {
            m.kernel.dequantRow(inst.k, m, r, out);
            const got = new Float32Array(inst.memory.buffer.slice(out, out + cols * 4));
            expect(Array.from(got), `${inst.build} row ${r}`).toEqual(Array.from(want.subarray(r * cols, (r + 1) * cols)));
          }
        }
      }
    });
  }
});

describe('host formats', () => {
  it('round-to-nearest quantizers give blocks within half a step of the input', () => {
    const r = rng(5);
    const x = Float32Array.from({ length: 1024 }, () => (r() - 0.5) * 2);
    for (const [type, bits] of [[Q2_K, 2], [Q3_K, 3], [IQ4_XS, 4]] as const) {
      const back = dequantizeRow(type, quantizeRow(type, x), x.length);
      let err = 0, norm = 0;
      for (let i = 0; i < x.length; i++) {
        err += (back[i] - x[i]) ** 2;
        norm += x[i] ** 2;
      }
      const rel = Math.sqrt(err / norm);
      console.log(`${NAMES[type]} round trip: relative RMS error ${rel.toFixed(4)}`);
      // uniform codes over the range: RMS error ≈ step/√12, step ≈ 2/(2^bits − 1) of the range
      expect(rel).toBeLessThan(2.5 / (2 ** bits - 1));
    }
  });
});

// ---- synthetic models against the f64 reference ----

/*
 * Tolerances, as test/synthetic.test.ts argues them (max |Δlogit| over the largest |reference logit|):
 * - against the plain reference the difference is the int8 rounding of each matmul input, per 256 values here (Q8_K:
 *   up to 1/254 of the super-block's largest |x| per value): bound 4e-2 as for Q8_0/Q4_0, cosine > 0.999;
 * - against the reference that rounds each input as the runtime does, only f32-vs-f64 arithmetic is left, plus an
 *   occasional code rounded the other way at a near-tie: bound 2e-4 as there.
 */
const TOL = { quantized: 4e-2, emulated: 2e-4 };
const base = { nLayers: 2, ctx: 64, seed: 3, dim: 256, nHeads: 4, nKvHeads: 2, headDim: 64, ffn: 512 };
const CASES: [string, SyntheticSpec][] = [
  ['Q2_K, vocab 301 (a padded row group), untied', { ...base, vocab: 301, type: Q2_K, tied: false }],
  ['Q3_K, tied', { ...base, vocab: 298, type: Q3_K }],
  ['IQ4_XS, untied', { ...base, vocab: 262, type: IQ4_XS, tied: false }],
  ['Q3_K_M-like: Q3_K with IQ4_XS, Q2_K, Q4_K, Q6_K output, Q8_0 and F16', {
    ...base, vocab: 303, type: Q3_K, tied: false,
    types: {
      'output.weight': Q6_K, 'token_embd.weight': IQ4_XS, 'blk.0.attn_v.weight': Q4_K, 'blk.1.ffn_down.weight': Q8_0,
      'blk.0.attn_output.weight': F16, 'blk.1.attn_q.weight': Q2_K, 'blk.0.ffn_up.weight': IQ4_XS, 'blk.1.ffn_gate.weight': Q4_0,
    },
  }],
  ['tied Q2_K embedding, IQ4_XS/Q3_K layers', {
    ...base, vocab: 300, type: IQ4_XS,
    types: { 'token_embd.weight': Q2_K, 'blk.0.ffn_gate.weight': Q3_K, 'blk.1.attn_k.weight': Q3_K, 'blk.1.ffn_down.weight': Q2_K },
  }],
];

/** Positions whose argmax differs from the reference's although its top-1 leads by more than 2·max|Δlogit|. */
function unexplainedArgmaxMisses(got: Float32Array, ref: Float64Array[], vocab: number): string[] {
  let maxDiff = 0;
  ref.forEach((row, p) => row.forEach((r, i) => (maxDiff = Math.max(maxDiff, Math.abs(got[p * vocab + i] - r)))));
  const out: string[] = [];
  ref.forEach((row, p) => {
    let g = 0, r1 = 0;
    for (let i = 1; i < vocab; i++) {
      if (got[p * vocab + i] > got[p * vocab + g]) g = i;
      if (row[i] > row[r1]) r1 = i;
    }
    const second = Math.max(...row.filter((_, i) => i !== r1));
    if (g !== r1 && row[r1] - second > 2 * maxDiff) out.push(`position ${p}: gap ${row[r1] - second}, max|Δ| ${maxDiff}`);
  });
  return out;
}

describe('Q2_K/Q3_K/IQ4_XS synthetic models vs the f64 reference', () => {
  for (const [name, spec] of CASES) {
    it(name, async () => {
      const { bytes, weights } = makeSyntheticLlama(spec);
      const model = await loadModel(bytes);
      const ids = seededIds(16, spec.vocab, 1234);
      const got = await model.evaluate(ids);
      model.dispose();
      const plain = referenceForward(spec, weights, ids);
      const e = compare(got, plain, spec.vocab);
      console.log(`${name}: ${fmt(e)} (bound ${TOL.quantized})`);
      expect(e.relMax).toBeLessThan(TOL.quantized);
      expect(e.minCos).toBeGreaterThan(0.999);
      // Q2_K's coarse weights give near-ties: a different argmax is allowed only where the two logits are closer
      // than twice the largest difference measured, which the int8 activations can reorder
      expect(unexplainedArgmaxMisses(got, plain, spec.vocab)).toEqual([]);
      const eq = compare(got, referenceForward(spec, weights, ids, runtimeRounding(spec)), spec.vocab);
      console.log(`${name}, activation-rounding reference: ${fmt(eq)} (bound ${TOL.emulated})`);
      expect(eq.relMax).toBeLessThan(TOL.emulated);
      expect(eq.minCos).toBeGreaterThan(0.99999);
      expect(eq.argmaxMiss).toBe(0);
    });
  }
});

describe('Q2_K/Q3_K/IQ4_XS models: both builds bit-identical, batched prefill = one token at a time', () => {
  for (const [name, spec] of CASES) {
    it(`builds: ${name}`, async () => {
      await expectBuildsIdentical(makeSyntheticLlama(spec).bytes, spec.vocab);
    });
  }
  for (const [name, spec] of [CASES[0], CASES[3], CASES[4]]) {
    it(`batches: ${name}`, async () => {
      // 40 > 32: two batches, the second partial
      await expectBatchesIdentical(makeSyntheticLlama(spec).bytes, seededIds(40, spec.vocab, 99));
    });
  }
});

// ---- llama.cpp's conformance kit: a quick check of this family's pure files (the full test is quant-conformance) ----
