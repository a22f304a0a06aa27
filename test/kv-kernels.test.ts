// The paged KV kernels (assembly/kv_*.ts, attend_* and quest_scores in assembly/attention.ts) against plain TypeScript
// references, on both builds, which must agree bit for bit.
//
// References: sealing is checked byte for byte against the KIVI rule emulated with Math.fround at every step.
// Attention is checked (1) against f64 attention over the DEQUANTIZED keys and values with the exact query, within a
// worst-case bound for the one approximation the kernel adds (the query's integer quantization: attendRef's eps and
// outBound), shown to be tight enough to catch planted decoding bugs, and (2) against f64 attention that emulates that
// quantization, within f32 rounding (1e-5 of max |out|).
import { readFileSync } from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import type { Kernels } from '../src/runtime/kernels.js';

type KvKernels = Pick<Kernels, 'heap_base' | 'kv_seal_page' | 'attend_begin' | 'attend_pages' | 'attend_end' | 'quest_scores' | 'exp_f32'>;

const F32 = 0, F16 = 1, INT8 = 2, INT4 = 3;
const TYPE_NAMES = ['f32', 'f16', 'int8', 'int4'];
const f = Math.fround;
/** The query's integer range in prep_query (QI_MAX in assembly/kv_common.ts), capped so Σ qi·code stays exact in i32. */
const QI_MAX = 32767;
const qiMax = (D: number, L: number) => Math.min(QI_MAX, Math.floor(2147483647 / (D * L)));

// ---- the two builds, each over its own memory, with a bump allocator above heap_base ----

class Instance {
  k!: KvKernels;
  memory = new WebAssembly.Memory({ initial: 160 });
  top = 0;
  base = 0;
  async init(file: string) {
    const bytes = readFileSync(new URL(`../build/edgellm-${file}.wasm`, import.meta.url));
    const { instance } = await WebAssembly.instantiate(bytes, { env: { memory: this.memory } });
    this.k = instance.exports as unknown as KvKernels;
    this.base = (this.k.heap_base() + 63) & ~63;
    this.top = this.base;
  }
  reset() {
    this.top = this.base;
  }
  alloc(bytes: number): number {
    const p = this.top;
    this.top = (this.top + bytes + 63) & ~63;
    if (this.top > this.memory.buffer.byteLength) throw new Error('test memory too small');
    return p;
  }
  put(a: Float32Array | Int32Array | Uint8Array): number {
    const p = this.alloc(a.byteLength);
    new Uint8Array(this.memory.buffer, p, a.byteLength).set(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
    return p;
  }
  bytes(p: number, n: number): Uint8Array {
    return new Uint8Array(this.memory.buffer, p, n).slice();
  }
  f32(p: number, n: number): Float32Array {
    return new Float32Array(this.memory.buffer, p, n).slice();
  }
}

const builds: Instance[] = [new Instance(), new Instance()];
beforeAll(async () => {
  await builds[0].init('simd');
  await builds[1].init('relaxed');
});

/** Runs `fn` on both builds (from a fresh arena) and checks that every output byte agrees; returns the SIMD128 one. */
function both(fn: (x: Instance) => Uint8Array, what: string): Uint8Array {
  const out = builds.map((b) => {
    b.reset();
    return fn(b);
  });
  const differ = out[0].findIndex((v, i) => v !== out[1][i]);
  expect(differ, `${what}: builds differ at byte ${differ}`).toBe(-1);
  expect(out[0].length).toBe(out[1].length);
  return out[0];
}
const asF32 = (b: Uint8Array) => new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);

// ---- data ----

function rng(seed: number) {
  let s = seed >>> 0;
  const u = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const n = () => Math.sqrt(-2 * Math.log(u() + 1e-12)) * Math.cos(2 * Math.PI * u());
  return { u, n };
}

/**
 * One page of keys and values, f32 [P][D]: keys with per-channel offsets of both signs, an outlier channel (×12) and a
 * constant channel (step 0); values with per-token offsets, an outlier channel and one constant row (vstep 0).
 */
function makePage(P: number, D: number, seed: number) {
  const r = rng(seed);
  const k = new Float32Array(P * D), v = new Float32Array(P * D);
  const off = Array.from({ length: D }, () => 3 * (2 * r.u() - 1));
  const sc = Array.from({ length: D }, (_, c) => (c === 1 ? 12 : 0.5 + r.u()));
  for (let t = 0; t < P; t++) {
    const voff = 2 * (2 * r.u() - 1);
    for (let c = 0; c < D; c++) {
      k[t * D + c] = c === D - 1 ? 0.7 : off[c] + sc[c] * r.n();
      v[t * D + c] = t === 3 ? -1.25 : voff + (c === 2 ? 8 : 1) * r.n();
    }
  }
  return { k, v };
}

function makeQuery(nq: number, D: number, seed: number): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: nq * D }, () => r.n());
}

// ---- references ----

/** Round half to even, as f32x4.nearest. */
function roundEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x - Math.trunc(x)) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

const LEVELS = [0, 0, 255, 15];
const INV_L = [0, 0, f(1 / 255), f(1 / 15)];

/** IEEE half bits of an f32, round to nearest even (written from the format, not from common.ts). */
function f16Bits(x: number): number {
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  if (a < 2 ** -14) return sign | roundEven(a / 2 ** -24); // subnormal (2^-14 exactly rounds up into the normals)
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  if (2 ** (e + 1) <= a) e++;
  let m = roundEven((a / 2 ** e - 1) * 1024);
  if (m === 1024) {
    m = 0;
    e++;
  }
  if (e > 15) return sign | 0x7c00;
  return sign | ((e + 15) << 10) | m;
}
function f16Value(h: number): number {
  const e = (h >> 10) & 31, m = h & 1023;
  const v = e === 0 ? m * 2 ** -24 : e === 31 ? Infinity : (1 + m / 1024) * 2 ** (e - 15);
  return h & 0x8000 ? -v : v;
}

interface Sealed {
  data: Uint8Array;
  summary: Float32Array;
  /** keys and values as the kernel's type represents them (f32 values) */
  kd: Float32Array;
  vd: Float32Array;
  /** quantized types: codes [P][D], steps per channel, (vmin, vstep) per token */
  kc?: Int32Array;
  vc?: Int32Array;
  kstep?: Float32Array;
  vp?: Float32Array;
}

/** The page data and summary by the rules in assembly/kv_common.ts, every f32 operation rounded with Math.fround. */
function sealRef(type: number, k: Float32Array, v: Float32Array, P: number, D: number): Sealed {
  const summary = new Float32Array(2 * D);
  for (let c = 0; c < D; c++) {
    let lo = Infinity, hi = -Infinity;
    for (let t = 0; t < P; t++) {
      lo = Math.min(lo, k[t * D + c]);
      hi = Math.max(hi, k[t * D + c]);
    }
    summary[c] = lo;
    summary[D + c] = hi;
  }
  if (type === F32) {
    const data = new Uint8Array(8 * P * D);
    data.set(new Uint8Array(k.buffer, k.byteOffset, k.byteLength));
    data.set(new Uint8Array(v.buffer, v.byteOffset, v.byteLength), 4 * P * D);
    return { data, summary, kd: k, vd: v };
  }
  if (type === F16) {
    const bits = new Uint16Array(2 * P * D);
    const kd = new Float32Array(P * D), vd = new Float32Array(P * D);
    for (let i = 0; i < P * D; i++) {
      bits[i] = f16Bits(k[i]);
      bits[P * D + i] = f16Bits(v[i]);
      kd[i] = f16Value(bits[i]);
      vd[i] = f16Value(bits[P * D + i]);
    }
    return { data: new Uint8Array(bits.buffer), summary, kd, vd };
  }
  const L = LEVELS[type], inv = INV_L[type];
  const code = (x: number, lo: number, step: number) => (step === 0 ? 0 : Math.min(L, Math.max(0, roundEven(f(f(x - lo) / step)))));
  const kstep = new Float32Array(D);
  for (let c = 0; c < D; c++) kstep[c] = f(f(summary[D + c] - summary[c]) * inv);
  const kc = new Int32Array(P * D), vc = new Int32Array(P * D), vp = new Float32Array(2 * P);
  const kd = new Float32Array(P * D), vd = new Float32Array(P * D);
  for (let t = 0; t < P; t++) {
    let lo = Infinity, hi = -Infinity;
    for (let c = 0; c < D; c++) {
      lo = Math.min(lo, v[t * D + c]);
      hi = Math.max(hi, v[t * D + c]);
    }
    const vstep = f(f(hi - lo) * inv);
    vp[2 * t] = lo;
    vp[2 * t + 1] = vstep;
    for (let c = 0; c < D; c++) {
      const i = t * D + c;
      kc[i] = code(k[i], summary[c], kstep[c]);
      kd[i] = f(summary[c] + f(kstep[c] * kc[i]));
      vc[i] = code(v[i], lo, vstep);
      vd[i] = f(lo + f(vstep * vc[i]));
    }
  }
  const data = new Uint8Array(type === INT8 ? 2 * P * D + 8 * P : P * D + 8 * P);
  if (type === INT8) {
    data.set(Uint8Array.from(kc), 0);
    data.set(Uint8Array.from(vc), P * D);
  } else {
    for (let i = 0; i < (P * D) / 2; i++) {
      data[i] = kc[2 * i] | (kc[2 * i + 1] << 4);
      data[(P * D) / 2 + i] = vc[2 * i] | (vc[2 * i + 1] << 4);
    }
  }
  data.set(new Uint8Array(vp.buffer), data.length - 8 * P);
  return { data, summary, kd, vd, kc, vc, kstep, vp };
}

interface RefPage {
  type: number;
  ntok: number;
  s: Sealed;
}

/**
 * f64 attention of nq heads over the first ntok tokens of each page, on the pages' dequantized keys and values.
 * `emulate`: quantized pages score with the kernel's integer query (prep_query), else with the exact query.
 * `plant` replaces a page's dequantized keys/values (a planted bug).
 */
function attendRef(q: Float32Array, nq: number, D: number, pages: RefPage[], scale: number, emulate: boolean,
  plant?: (p: RefPage) => { kd: Float32Array; vd: Float32Array }) {
  const out = new Float64Array(nq * D);
  const eps = new Float64Array(nq); // the qBound of each head: max over tokens of the score error bound
  for (let j = 0; j < nq; j++) {
    const qj = q.subarray(j * D, (j + 1) * D);
    const scores: number[] = [];
    const vals: Float32Array[] = [];
    for (const p of pages) {
      const { kd, vd } = plant ? plant(p) : p.s;
      const quant = p.type === INT8 || p.type === INT4;
      let qi: number[] = [], sq = 0, base = 0;
      if (quant) {
        const L = LEVELS[p.type], { summary, kstep } = p.s;
        const qp = Array.from(qj, (x, c) => f(x * kstep![c]));
        const amax = Math.max(...qp.map(Math.abs));
        const QM = qiMax(D, L);
        const inv = amax === 0 ? 0 : f(QM / amax);
        qi = qp.map((x) => roundEven(f(x * inv)));
        sq = f(amax / QM);
        for (let c = 0; c < D; c++) base += qj[c] * summary[c];
      }
      for (let t = 0; t < p.ntok; t++) {
        let s = 0, exactish = 0;
        if (quant && emulate) {
          let dot = 0;
          for (let c = 0; c < D; c++) dot += qi[c] * p.s.kc![t * D + c];
          s = base + sq * dot;
        } else {
          for (let c = 0; c < D; c++) s += qj[c] * kd[t * D + c];
        }
        if (quant) {
          // |q'_c − sq·qi_c| ≤ sq/2 per channel, times the code; plus f32 rounding of the dequantized keys
          let codes = 0;
          for (let c = 0; c < D; c++) {
            codes += p.s.kc![t * D + c];
            exactish += Math.abs(qj[c] * kd[t * D + c]);
          }
          eps[j] = Math.max(eps[j], scale * ((sq / 2) * codes + 4e-7 * exactish));
        }
        scores.push(scale * s);
        vals.push(vd.subarray(t * D, (t + 1) * D));
      }
    }
    const m = Math.max(...scores);
    const w = scores.map((s) => Math.exp(s - m));
    const sum = w.reduce((a, b) => a + b, 0);
    for (let c = 0; c < D; c++) {
      let acc = 0;
      for (let i = 0; i < w.length; i++) acc += w[i] * vals[i][c];
      out[j * D + c] = acc / sum;
    }
  }
  return { out, eps };
}

/**
 * The output bound implied by score errors |δ_t| ≤ ε: every softmax weight moves by a factor within e^(±2ε), so
 * |Δout_c| ≤ (e^(2ε) − 1)·(max_t v_tc − min_t v_tc)/2.
 */
function outBound(eps: number, pages: RefPage[], D: number, c: number): number {
  let lo = Infinity, hi = -Infinity;
  for (const p of pages) for (let t = 0; t < p.ntok; t++) {
    lo = Math.min(lo, p.s.vd[t * D + c]);
    hi = Math.max(hi, p.s.vd[t * D + c]);
  }
  return Math.expm1(2 * eps) * (hi - lo) / 2;
}

// ---- running the kernels ----

interface Case {
  P: number;
  D: number;
  nq: number;
  pages: { type: number; ntok: number; k: Float32Array; v: Float32Array }[];
  q: Float32Array;
  /** attend_pages calls: descriptor index ranges */
  calls: [number, number][];
}

/** Seals every page, then begin/pages.../end; returns the outputs (f32 [nq][D]) and the sealed pages. */
function runAttention(x: Instance, cs: Case, scale: number): Uint8Array {
  const { P, D, nq } = cs;
  const k = x.k;
  const descs = new Int32Array(4 * cs.pages.length);
  cs.pages.forEach((pg, i) => {
    const kp = x.put(pg.k), vp = x.put(pg.v);
    const data = x.alloc(8 * P * D + 64), summary = x.alloc(8 * D);
    if (pg.type === F32) {
      // a partly filled f32 page: the unused tokens are NaN, which must never reach the result
      const kk = pg.k.slice(), vv = pg.v.slice();
      kk.fill(NaN, pg.ntok * D);
      vv.fill(NaN, pg.ntok * D);
      new Float32Array(x.memory.buffer, kp, P * D).set(kk);
      new Float32Array(x.memory.buffer, vp, P * D).set(vv);
    }
    k.kv_seal_page(pg.type, kp, vp, P, D, data, summary);
    descs.set([data, summary, pg.ntok, pg.type], 4 * i);
  });
  const dp = x.put(descs), qp = x.put(cs.q);
  const state = x.alloc(nq * (4 + D) * 4), out = x.alloc(nq * D * 4), scratch = x.alloc(4 * P + 4 * D + 64);
  k.attend_begin(state, nq, D);
  for (const [a, b] of cs.calls) k.attend_pages(state, qp, nq, D, P, dp + 16 * a, b - a, scale, scratch);
  k.attend_end(state, out, nq, D);
  return x.bytes(out, nq * D * 4);
}

const DS = [8, 12, 48, 64, 128];
const PS = [16, 32];
const NQS = [1, 3, 4];

describe('kv_seal_page', () => {
  for (const type of [F32, F16, INT8, INT4]) {
    it(`${TYPE_NAMES[type]}: summary is the exact min/max, page bytes follow the rule exactly`, () => {
      for (const D of DS) for (const P of PS) {
        const { k, v } = makePage(P, D, D * 100 + P);
        const ref = sealRef(type, k, v, P, D);
        const got = both((x) => {
          const data = x.alloc(ref.data.length), summary = x.alloc(8 * D);
          x.k.kv_seal_page(type, x.put(k), x.put(v), P, D, data, summary);
          return new Uint8Array([...x.bytes(summary, 8 * D), ...x.bytes(data, ref.data.length)]);
        }, `seal ${TYPE_NAMES[type]} D=${D} P=${P}`);
        expect(asF32(got.slice(0, 8 * D))).toEqual(ref.summary);
        const data = got.slice(8 * D);
        const bad = data.findIndex((b, i) => b !== ref.data[i]);
        expect(bad, `${TYPE_NAMES[type]} D=${D} P=${P}: first differing byte`).toBe(-1);
        if (ref.kstep) {
          // and the rule itself: every dequantized entry within half a step of the original
          for (let t = 0; t < P; t++) for (let c = 0; c < D; c++) {
            const i = t * D + c;
            expect(Math.abs(ref.kd[i] - k[i])).toBeLessThanOrEqual(ref.kstep[c] / 2 * (1 + 1e-5) + 1e-6 * Math.abs(k[i]));
            expect(Math.abs(ref.vd[i] - v[i])).toBeLessThanOrEqual(ref.vp![2 * t + 1] / 2 * (1 + 1e-5) + 1e-6 * Math.abs(v[i]));
          }
        }
      }
    });
  }
});

/** The page sets: one type throughout (4 pages, one partial, split over two calls), and a mix of all four. */
function cases(P: number, D: number, nq: number): [string, Case][] {
  const page = (type: number, ntok: number, seed: number) => ({ type, ntok, ...makePage(P, D, seed) });
  const q = makeQuery(nq, D, 7 * D + P + nq);
  const out: [string, Case][] = [];
  for (const type of [F32, F16, INT8, INT4]) {
    const pages = [page(type, P, 1), page(type, 3, 2), page(type, P, 3), page(type, P - 5, 4)];
    out.push([TYPE_NAMES[type], { P, D, nq, pages, q, calls: [[0, 2], [2, 4]] }]);
  }
  const mixed = [page(F32, P, 5), page(INT8, P, 6), page(INT4, P, 7), page(F16, P, 8), page(INT4, 6, 9), page(F32, P - 2, 10)];
  out.push(['mixed', { P, D, nq, pages: mixed, q, calls: [[0, 6]] }]);
  return out;
}

describe('attend_pages', () => {
  // worst errors relative to max |out|: vs the emulating reference, vs exact-query attention on the dequantized cache
  // (and the largest share of its bound used), and vs attention on the unquantized keys and values
  const worst: Record<string, { emul: number; exact: number; boundUse: number; cache: number }> = {};
  for (const D of DS) for (const P of PS) for (const nq of NQS) {
    it(`D=${D} P=${P} nq=${nq}`, () => {
      const scale = 1 / Math.sqrt(D);
      for (const [name, cs] of cases(P, D, nq)) {
        const got = asF32(both((x) => runAttention(x, cs, scale), `attention ${name} D=${D} P=${P} nq=${nq}`));
        const refPages: RefPage[] = cs.pages.map((p) => ({ type: p.type, ntok: p.ntok, s: sealRef(p.type, p.k, p.v, P, D) }));
        const exact = attendRef(cs.q, nq, D, refPages, scale, false);
        const emul = attendRef(cs.q, nq, D, refPages, scale, true);
        const maxOut = Math.max(...Array.from(exact.out, Math.abs));
        // for the log: how far the cache's own quantization moves the output (attention on the f32 originals)
        const orig = attendRef(cs.q, nq, D, cs.pages.map((p) => ({ type: F32, ntok: p.ntok, s: sealRef(F32, p.k, p.v, P, D) })), scale, false);
        const w = (worst[name] ??= { emul: 0, exact: 0, boundUse: 0, cache: 0 });
        for (let i = 0; i < nq * D; i++) w.cache = Math.max(w.cache, Math.abs(got[i] - orig.out[i]) / maxOut);
        for (let j = 0; j < nq; j++) for (let c = 0; c < D; c++) {
          const i = j * D + c;
          expect(Number.isFinite(got[i])).toBe(true);
          // within f32 rounding of the emulating reference
          const eEmul = Math.abs(got[i] - emul.out[i]);
          expect(eEmul, `${name} head ${j} ch ${c} vs emulation`).toBeLessThanOrEqual(1e-5 * maxOut);
          w.emul = Math.max(w.emul, eEmul / maxOut);
          // within the query-quantization bound of exact attention on the dequantized cache
          const eExact = Math.abs(got[i] - exact.out[i]);
          const bound = outBound(exact.eps[j], refPages, D, c) + 1e-5 * maxOut;
          expect(eExact, `${name} head ${j} ch ${c} vs exact query`).toBeLessThanOrEqual(bound);
          w.exact = Math.max(w.exact, eExact / maxOut);
          if (exact.eps[j] > 0) w.boundUse = Math.max(w.boundUse, eExact / bound);
        }
      }
    });
  }
  it('(worst errors, logged)', () => {
    const fmt = (x: number) => x.toExponential(1);
    for (const [name, w] of Object.entries(worst)) {
      console.log(`attend_pages ${name.padEnd(5)}: vs emulation ${fmt(w.emul)}, vs exact query ${fmt(w.exact)} ` +
        `(≤ ${fmt(w.boundUse)} of the bound), vs unquantized cache ${fmt(w.cache)}`);
    }
  });

  // The bound is loose (a worst case over every channel's rounding), so it has to be shown still to catch the bugs a
  // quantized kernel would plausibly have: each planted into the reference, the kernel's output must break the bound.
  const planted: [string, number, (s: Sealed, P: number, D: number) => { kd: Float32Array; vd: Float32Array }][] = [
    ['int4 key nibbles swapped', INT4, (s, P, D) => ({ kd: requant(s, P, D, 'k', (c) => c ^ 1), vd: s.vd })],
    ['int4 value nibbles swapped', INT4, (s, P, D) => ({ kd: s.kd, vd: requant(s, P, D, 'v', (c) => c ^ 1) })],
    ['int8 key channels off by one', INT8, (s, P, D) => ({ kd: requant(s, P, D, 'k', (c) => (c + 1) % D), vd: s.vd })],
    ['int8 value codes + 1', INT8, (s, P, D) => ({ kd: s.kd, vd: requant(s, P, D, 'v', (c) => c, 1) })],
    ['int4 key codes + 1', INT4, (s, P, D) => ({ kd: requant(s, P, D, 'k', (c) => c, 1), vd: s.vd })],
  ];
  for (const [bug, type, plant] of planted) {
    it(`the bound catches a planted bug: ${bug}`, () => {
      const ratios: string[] = [];
      for (const [D, P, nq] of [[48, 32, 3], [8, 16, 1], [128, 16, 4]]) {
        const scale = 1 / Math.sqrt(D);
        const cs = cases(P, D, nq).find(([name]) => name === TYPE_NAMES[type])![1];
        const got = asF32(both((x) => runAttention(x, cs, scale), bug));
        const refPages: RefPage[] = cs.pages.map((p) => ({ type: p.type, ntok: p.ntok, s: sealRef(p.type, p.k, p.v, P, D) }));
        const exact = attendRef(cs.q, nq, D, refPages, scale, false);
        const buggy = attendRef(cs.q, nq, D, refPages, scale, false, (p) => plant(p.s, P, D));
        const maxOut = Math.max(...Array.from(exact.out, Math.abs));
        let worstRatio = 0;
        for (let j = 0; j < nq; j++) for (let c = 0; c < D; c++) {
          const bound = outBound(exact.eps[j], refPages, D, c) + 1e-5 * maxOut;
          worstRatio = Math.max(worstRatio, Math.abs(got[j * D + c] - buggy.out[j * D + c]) / bound);
        }
        expect(worstRatio, `${bug}, D=${D} P=${P} nq=${nq}: error / bound`).toBeGreaterThan(1);
        ratios.push(worstRatio.toFixed(1));
      }
      console.log(`planted ${bug}: error / bound = ${ratios.join(', ')}`);
    });
  }
});

describe('attend_pages with an all-zero q\' (every quantized score is scale·base)', () => {
  it('a zero query, and a query only on the constant key channel (step 0)', () => {
    for (const D of [12, 48]) for (const onConst of [false, true]) {
      const P = 16, nq = 2, scale = 1 / Math.sqrt(D);
      const q = new Float32Array(nq * D);
      if (onConst) for (let j = 0; j < nq; j++) q[j * D + D - 1] = j + 1.5;
      const pages = [INT8, INT4, F32, INT4].map((type, i) => ({ type, ntok: i === 3 ? 7 : P, ...makePage(P, D, 50 + i) }));
      const cs: Case = { P, D, nq, pages, q, calls: [[0, 1], [1, 4]] };
      const got = asF32(both((x) => runAttention(x, cs, scale), `zero q' D=${D}`));
      const refPages: RefPage[] = pages.map((p) => ({ type: p.type, ntok: p.ntok, s: sealRef(p.type, p.k, p.v, P, D) }));
      const ref = attendRef(q, nq, D, refPages, scale, false).out;
      const maxOut = Math.max(...Array.from(ref, Math.abs));
      for (let i = 0; i < nq * D; i++) expect(Math.abs(got[i] - ref[i])).toBeLessThanOrEqual(1e-5 * maxOut);
    }
  });
});

/** A sealed page's keys or values dequantized with a wrong code: code of channel map(c), plus `add`. */
function requant(s: Sealed, P: number, D: number, which: 'k' | 'v', map: (c: number) => number, add = 0): Float32Array {
  const out = new Float32Array(P * D);
  for (let t = 0; t < P; t++) for (let c = 0; c < D; c++) {
    const code = (which === 'k' ? s.kc! : s.vc!)[t * D + map(c)] + add;
    out[t * D + c] = which === 'k' ? f(s.summary[c] + f(s.kstep![c] * code)) : f(s.vp![2 * t] + f(s.vp![2 * t + 1] * code));
  }
  return out;
}

describe('quest_scores', () => {
  it('matches Σ_j Σ_c max(q·kmin, q·kmax) and bounds q·k for every key of its page', () => {
    for (const D of DS) for (const P of PS) for (const nq of NQS) {
      const npages = 7;
      const pages = Array.from({ length: npages }, (_, i) => makePage(P, D, 31 * i + D + P));
      const q = makeQuery(nq, D, D + nq);
      const summaries = new Float32Array(2 * D * npages);
      pages.forEach((p, i) => summaries.set(sealRef(F32, p.k, p.v, P, D).summary, 2 * D * i));
      const got = asF32(both((x) => {
        const out = x.alloc(4 * npages);
        // the summaries as the kernel writes them, back to back
        const sp = x.alloc(summaries.byteLength);
        pages.forEach((p, i) => x.k.kv_seal_page(INT8, x.put(p.k), x.put(p.v), P, D, x.alloc(2 * P * D + 8 * P), sp + 8 * D * i));
        x.k.quest_scores(x.put(q), nq, D, sp, npages, out, x.alloc(8 * D));
        return new Uint8Array([...x.bytes(out, 4 * npages), ...x.bytes(sp, summaries.byteLength)]);
      }, `quest D=${D} P=${P} nq=${nq}`));
      expect(got.subarray(npages)).toEqual(summaries);
      for (let p = 0; p < npages; p++) {
        let ref = 0, mag = 0;
        for (let j = 0; j < nq; j++) for (let c = 0; c < D; c++) {
          const x = q[j * D + c];
          ref += Math.max(x * summaries[2 * D * p + c], x * summaries[2 * D * p + D + c]);
          mag += Math.abs(x) * Math.max(Math.abs(summaries[2 * D * p + c]), Math.abs(summaries[2 * D * p + D + c]));
        }
        expect(Math.abs(got[p] - ref)).toBeLessThanOrEqual(1e-6 * mag);
        for (let t = 0; t < P; t++) {
          let dot = 0;
          for (let j = 0; j < nq; j++) for (let c = 0; c < D; c++) dot += q[j * D + c] * pages[p].k[t * D + c];
          expect(dot).toBeLessThanOrEqual(got[p] + 1e-6 * mag);
        }
      }
    }
  });
});

describe('exp_f32x4 (the softmax exp)', () => {
  it('is within 2e-7 relative of Math.exp over [−87, 0], gives 0 below ln(FLT_MIN), never a subnormal or NaN', () => {
    const n = 1 << 20;
    const r = rng(5);
    const x = new Float32Array(n);
    for (let i = 0; i < n; i++) x[i] = i < n / 2 ? -87 * (i / (n / 2)) : -87 * r.u();
    // ln2 multiples and their neighbours, where the range reduction switches n
    for (let m = 0; m <= 125; m++) {
      x[3 * m] = f(-m * Math.LN2);
      x[3 * m + 1] = f(-(m + 0.5) * Math.LN2);
      x[3 * m + 2] = f(-(m + 0.5) * Math.LN2 * (1 + 2 ** -23));
    }
    const y = asF32(both((b) => {
      const out = b.alloc(4 * n);
      b.k.exp_f32(b.put(x), out, n);
      return b.bytes(out, 4 * n);
    }, 'exp'));
    let worst = 0, at = 0;
    for (let i = 0; i < n; i++) {
      const e = Math.exp(x[i]);
      const rel = Math.abs(y[i] - e) / e;
      if (rel > worst) {
        worst = rel;
        at = x[i];
      }
    }
    console.log(`exp_f32x4: max relative error ${worst.toExponential(3)} (at x = ${at}) over ${n} points in [−87, 0]`);
    expect(worst).toBeLessThanOrEqual(2e-7);

    const special = Float32Array.from([-Infinity, NaN, -1000, -88, -87.34, -87.336, -87.3, 0, -0, 1e-30, -1e-30, -1e-7, 3, 88, 89]);
    const s = asF32(both((b) => {
      const out = b.alloc(4 * special.length);
      b.k.exp_f32(b.put(special), out, special.length); // 15 values: the 3 past the last group of 4 take the scalar tail
      return b.bytes(out, 4 * special.length);
    }, 'exp special'));
    expect(Array.from(s.subarray(0, 5))).toEqual([0, 0, 0, 0, 0]);
    expect(s[5]).toBeGreaterThanOrEqual(2 ** -126);
    expect(Math.abs(s[6] / Math.exp(special[6]) - 1)).toBeLessThan(2e-7);
    expect(Array.from(s.subarray(7, 11))).toEqual([1, 1, 1, 1]);
    expect(Math.abs(s[11] / Math.exp(special[11]) - 1)).toBeLessThan(1e-7);
    expect(Math.abs(s[12] / Math.exp(3) - 1)).toBeLessThan(2e-7);
    expect(Math.abs(s[13] / Math.exp(88) - 1)).toBeLessThan(2e-7);
    expect(s[14]).toBe(s[13]); // clamped
    // no subnormal anywhere below 0
    const fine = Float32Array.from({ length: 4096 }, (_, i) => -85 - (5 * i) / 4096);
    const g = asF32(both((b) => {
      const out = b.alloc(4 * fine.length);
      b.k.exp_f32(b.put(fine), out, fine.length);
      return b.bytes(out, 4 * fine.length);
    }, 'exp near the cutoff'));
    for (let i = 0; i < fine.length; i++) {
      expect(g[i] === 0 || g[i] >= 2 ** -126, `exp(${fine[i]}) = ${g[i]}`).toBe(true);
      expect(g[i] === 0).toBe(fine[i] < -87.33654475);
    }
  });
});
