/**
 * Row formats (see quantize.ts) of Q2_K, Q3_K and IQ4_XS: super-blocks of 256 values in ggml's block layouts
 * (ggml-common.h block_q2_K, block_q3_K, block_iq4_xs). Dequantizers are ggml's dequantize_row_*, float arithmetic
 * through Math.fround. Quantizers are plain round-to-nearest into valid blocks (ggml's reference quantizers search
 * scales; test models only need bytes that dequantize to what the reference reads).
 */
import { GGMLType } from './types.js';
import { f16Table, f32ToF16 } from './f16.js';
import { KVALUES_IQ4NL } from './quantize-legacy.js';
import type { RowFormat } from './quantize.js';

const QK_K = 256;
const f = Math.fround;
const clamp = (v: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, v));

/** Stores x as f16 at y[o] and returns the value it now stands for, so codes are chosen against the stored scale. */
function putF16(y: Uint8Array, o: number, x: number): number {
  const h = f32ToF16(x);
  y[o] = h & 0xff;
  y[o + 1] = h >>> 8;
  return f16Table()[h];
}

const f16At = (b: Uint8Array, o: number) => f16Table()[b[o] | (b[o + 1] << 8)];

/** The value of largest magnitude among x[base..base+n) (the first on ties). */
function signedMax(x: ArrayLike<number>, base: number, n: number): number {
  let amax = 0, max = 0;
  for (let j = 0; j < n; j++) {
    const v = f(x[base + j]);
    if (Math.abs(v) > amax) {
      amax = Math.abs(v);
      max = v;
    }
  }
  return max;
}

/** The 2-bit codes of a super-block in ggml's order: byte 32h + l holds elements 128h + l + 32p at bits 2p, 2p+1. */
function pack2(L: Uint8Array, y: Uint8Array, o: number): void {
  for (let n = 0; n < QK_K; n += 128) {
    for (let l = 0; l < 32; l++) y[o + n / 4 + l] = L[n + l] | (L[n + l + 32] << 2) | (L[n + l + 64] << 4) | (L[n + l + 96] << 6);
  }
}

/** Element e's 2-bit code from ggml's qs at o. */
const code2 = (b: Uint8Array, o: number, e: number) => (b[o + 32 * (e >> 7) + (e & 31)] >> (2 * ((e >> 5) & 3))) & 3;

/**
 * Q3_K's scale j (0..15) minus 32, from its 12 scale bytes at o, as ggml's kmask unpacking: the low nibble in byte j%8
 * (low nibble for j < 8, high for j ≥ 8), the top two bits in byte 8 + j%4 at bit 2·⌊j/4⌋.
 */
export function q3kScale(b: Uint8Array, o: number, j: number): number {
  const lo = (b[o + (j & 7)] >> (j < 8 ? 0 : 4)) & 0xf;
  const hi = (b[o + 8 + (j & 3)] >> (2 * (j >> 2))) & 3;
  return (lo | (hi << 4)) - 32;
}

/** IQ4_XS's scale ib (0..7) minus 32, from scales_h (u16 at o) and scales_l (4 bytes at o + 2). */
export function iq4xsScale(b: Uint8Array, o: number, ib: number): number {
  const h = b[o] | (b[o + 1] << 8);
  return (((b[o + 2 + (ib >> 1)] >> (4 * (ib & 1))) & 0xf) | (((h >> (2 * ib)) & 3) << 4)) - 32;
}

function nearestIq4(v: number): number {
  let best = 0;
  for (let i = 1; i < 16; i++) if (Math.abs(KVALUES_IQ4NL[i] - v) < Math.abs(KVALUES_IQ4NL[best] - v)) best = i;
  return best;
}

export const K_LOW_FORMATS: RowFormat[] = [
  {
    // block_q2_K: scales[16] (low nibble scale, high nibble min, per 16 values), qs[64], d, dmin (f16): 84 bytes
    type: GGMLType.Q2_K,
    blockSize: QK_K,
    blockBytes: 84,
    quantize(x, y) {
      const L = new Uint8Array(QK_K), scale = new Float64Array(16), min = new Float64Array(16);
      for (let b = 0, o = 0; b < x.length; b += QK_K, o += 84) {
        for (let j = 0; j < 16; j++) {
          let lo = 0, hi = 0;
          for (let i = 0; i < 16; i++) {
            const v = f(x[b + 16 * j + i]);
            lo = Math.min(lo, v);
            hi = Math.max(hi, v);
          }
          scale[j] = (hi - lo) / 3;
          min[j] = -lo;
        }
        const d = putF16(y, o + 80, Math.max(...scale) / 15);
        const dmin = putF16(y, o + 82, Math.max(...min) / 15);
        for (let j = 0; j < 16; j++) {
          const sc = d > 0 ? clamp(Math.round(scale[j] / d), 0, 15) : 0;
          const m = dmin > 0 ? clamp(Math.round(min[j] / dmin), 0, 15) : 0;
          y[o + j] = sc | (m << 4);
          const dl = d * sc, ml = dmin * m;
          for (let i = 0; i < 16; i++) L[16 * j + i] = dl > 0 ? clamp(Math.round((x[b + 16 * j + i] + ml) / dl), 0, 3) : 0;
        }
        pack2(L, y, o + 16);
      }
    },
    dequantize(bytes, n, out) {
      for (let o = 0, e0 = 0; e0 < n; o += 84, e0 += QK_K) {
        const d = f16At(bytes, o + 80), dmin = f16At(bytes, o + 82);
        for (let j = 0; j < 16; j++) {
          const sc = bytes[o + j];
          const dl = f(d * (sc & 0xf)), ml = f(dmin * (sc >> 4));
          for (let i = 0; i < 16; i++) out[e0 + 16 * j + i] = f(f(dl * code2(bytes, o + 16, 16 * j + i)) - ml);
        }
      }
    },
  },
  {
    // block_q3_K: hmask[32] (element e's high bit at byte e%32, bit e/32), qs[64] (low 2 bits), scales[12] (16 6-bit
    // scales, offset 32), d (f16): 110 bytes. A value is d·(scale − 32)·(low + 4·high − 4).
    type: GGMLType.Q3_K,
    blockSize: QK_K,
    blockBytes: 110,
    quantize(x, y) {
      const L = new Uint8Array(QK_K), s = new Float64Array(16);
      for (let b = 0, o = 0; b < x.length; b += QK_K, o += 110) {
        y.fill(0, o, o + 110);
        // signed sub-block scales with the largest magnitude at code −4, as ggml's: negative scales occur
        for (let j = 0; j < 16; j++) s[j] = signedMax(x, b + 16 * j, 16) / -4;
        let S = 0;
        for (let j = 0; j < 16; j++) if (Math.abs(s[j]) > Math.abs(S)) S = s[j];
        const d = putF16(y, o + 108, S / -32);
        for (let j = 0; j < 16; j++) {
          const sc = d !== 0 ? clamp(Math.round(s[j] / d), -32, 31) : 0;
          const l = sc + 32;
          y[o + 96 + (j & 7)] |= (l & 0xf) << (j < 8 ? 0 : 4);
          y[o + 104 + (j & 3)] |= (l >> 4) << (2 * (j >> 2));
          const dl = d * sc;
          for (let i = 0; i < 16; i++) L[16 * j + i] = (dl !== 0 ? clamp(Math.round(x[b + 16 * j + i] / dl), -4, 3) : 0) + 4;
        }
        for (let e = 0; e < QK_K; e++) {
          if (L[e] > 3) {
            y[o + (e & 31)] |= 1 << (e >> 5);
            L[e] -= 4;
          }
        }
        pack2(L, y, o + 32);
      }
    },
    dequantize(bytes, n, out) {
      for (let o = 0, e0 = 0; e0 < n; o += 110, e0 += QK_K) {
        const d = f16At(bytes, o + 108);
        for (let j = 0; j < 16; j++) {
          const dl = f(d * q3kScale(bytes, o + 96, j));
          for (let i = 0; i < 16; i++) {
            const e = 16 * j + i;
            const high = (bytes[o + (e & 31)] >> (e >> 5)) & 1;
            out[e0 + e] = f(dl * (code2(bytes, o + 32, e) - (high ? 0 : 4)));
          }
        }
      }
    },
  },
  {
    // block_iq4_xs: d (f16), scales_h (u16: 2 high bits per 32 values), scales_l[4] (4 low bits per 32 values), qs[128]
    // (per 32 values: byte j holds element j's table index in its low nibble, element j+16's in its high): 136 bytes.
    // A value is d·(ls − 32)·kvalues_iq4nl[index].
    type: GGMLType.IQ4_XS,
    blockSize: QK_K,
    blockBytes: 136,
    quantize(x, y) {
      const s = new Float64Array(8);
      for (let b = 0, o = 0; b < x.length; b += QK_K, o += 136) {
        y.fill(0, o, o + 136);
        for (let ib = 0; ib < 8; ib++) s[ib] = signedMax(x, b + 32 * ib, 32) / KVALUES_IQ4NL[0];
        let S = 0;
        for (let ib = 0; ib < 8; ib++) if (Math.abs(s[ib]) > Math.abs(S)) S = s[ib];
        const d = putF16(y, o, S / -32);
        let h = 0;
        for (let ib = 0; ib < 8; ib++) {
          const l = d !== 0 ? clamp(Math.round(s[ib] / d), -32, 31) : 0;
          const ls = l + 32;
          h |= (ls >> 4) << (2 * ib);
          y[o + 4 + (ib >> 1)] |= (ls & 0xf) << (4 * (ib & 1));
          const dl = d * l;
          for (let j = 0; j < 16; j++) {
            const lo = nearestIq4(dl !== 0 ? x[b + 32 * ib + j] / dl : 0);
            const hi = nearestIq4(dl !== 0 ? x[b + 32 * ib + 16 + j] / dl : 0);
            y[o + 8 + 16 * ib + j] = lo | (hi << 4);
          }
        }
        y[o + 2] = h & 0xff;
        y[o + 3] = h >>> 8;
      }
    },
    dequantize(bytes, n, out) {
      for (let o = 0, e0 = 0; e0 < n; o += 136, e0 += QK_K) {
        const d = f16At(bytes, o);
        for (let ib = 0; ib < 8; ib++) {
          const dl = f(d * iq4xsScale(bytes, o + 2, ib));
          for (let j = 0; j < 16; j++) {
            const q = bytes[o + 8 + 16 * ib + j];
            out[e0 + 32 * ib + j] = f(dl * KVALUES_IQ4NL[q & 0xf]);
            out[e0 + 32 * ib + 16 + j] = f(dl * KVALUES_IQ4NL[q >> 4]);
          }
        }
      }
    },
  },
];
