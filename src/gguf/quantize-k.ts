/**
 * Row formats (see quantize.ts) of Q4_K, Q5_K and Q6_K: 256-value super-blocks in ggml's block layouts.
 *
 * - Q4_K (144 bytes): f16 d, f16 dmin, 12 bytes of 6-bit scales and mins for 8 sub-blocks of 32, 128 bytes of nibbles;
 *   value = d·sc·q − dmin·m.
 * - Q5_K (176 bytes): as Q4_K plus 32 bytes of fifth bits (qh) before the nibbles.
 * - Q6_K (210 bytes): 128 bytes of low nibbles (ql), 64 of 2-bit highs (qh), 16 int8 scales (one per 16 values), f16 d;
 *   value = d·sc·(q − 32).
 *
 * The dequantizers do ggml's float operations in ggml's order (each product rounded to f32 before the subtraction), so
 * they give the values llama.cpp's dequantize_row_q{4,5,6}_K give. The quantizers are plain round-to-nearest: they make
 * valid blocks for test models (whose references read the same bytes back), not ggml's searched scales.
 */
import { f16Table, f32ToF16 } from './f16.js';
import { GGMLType } from './types.js';
import type { RowFormat } from './quantize.js';

export const QK_K = 256;
export const Q4_K_BLOCK_BYTES = 144;
export const Q5_K_BLOCK_BYTES = 176;
export const Q6_K_BLOCK_BYTES = 210;

const fr = Math.fround;

/** ggml's get_scale_min_k4: the 6-bit scale and min of sub-block j (0..7) from the 12 packed bytes at q[o..o+12). */
export function scaleMinK4(j: number, q: Uint8Array, o: number): [number, number] {
  if (j < 4) return [q[o + j] & 63, q[o + j + 4] & 63];
  return [(q[o + j + 4] & 0xf) | ((q[o + j - 4] >> 6) << 4), (q[o + j + 4] >> 4) | ((q[o + j] >> 6) << 4)];
}

/** The inverse of scaleMinK4: 8 scales and 8 mins (0..63) into 12 bytes at y[o..o+12). */
function packScaleMinK4(ls: ArrayLike<number>, lm: ArrayLike<number>, y: Uint8Array, o: number): void {
  for (let j = 0; j < 12; j++) y[o + j] = 0;
  for (let j = 0; j < 8; j++) {
    if (j < 4) {
      y[o + j] = ls[j];
      y[o + j + 4] = lm[j];
    } else {
      y[o + j + 4] = (ls[j] & 0xf) | ((lm[j] & 0xf) << 4);
      y[o + j - 4] |= (ls[j] >> 4) << 6;
      y[o + j] |= (lm[j] >> 4) << 6;
    }
  }
}

function putF16(y: Uint8Array, o: number, v: number): number {
  const h = f32ToF16(v);
  y[o] = h & 0xff;
  y[o + 1] = h >>> 8;
  return f16Table()[h];
}

/**
 * Round-to-nearest codes 0..nmax for one super-block with per-32 scales and mins (Q4_K: 15, Q5_K: 31): each sub-block
 * spans [min(0, lo), hi]; the sub-block scales and mins are 6-bit multiples of the f16 d and dmin. Writes d, dmin and
 * the packed scales at y[o..o+16) and returns the codes.
 */
function quantizeScaleMin(x: ArrayLike<number>, base: number, nmax: number, y: Uint8Array, o: number): Uint8Array {
  const scales = new Float64Array(8), mins = new Float64Array(8);
  let maxScale = 0, maxMin = 0;
  for (let j = 0; j < 8; j++) {
    let lo = 0, hi = -Infinity;
    for (let l = 0; l < 32; l++) {
      const v = fr(x[base + 32 * j + l]);
      lo = Math.min(lo, v);
      hi = Math.max(hi, v);
    }
    scales[j] = Math.max(0, hi - lo) / nmax;
    mins[j] = -lo;
    maxScale = Math.max(maxScale, scales[j]);
    maxMin = Math.max(maxMin, mins[j]);
  }
  const d = putF16(y, o, maxScale / 63);
  const dmin = putF16(y, o + 2, maxMin / 63);
  const ls = new Uint8Array(8), lm = new Uint8Array(8);
  for (let j = 0; j < 8; j++) {
    ls[j] = d > 0 ? Math.min(63, Math.round(scales[j] / d)) : 0;
    lm[j] = dmin > 0 ? Math.min(63, Math.round(mins[j] / dmin)) : 0;
  }
  packScaleMinK4(ls, lm, y, o + 4);
  const L = new Uint8Array(QK_K);
  for (let j = 0; j < 8; j++) {
    const dd = fr(d * ls[j]), dm = fr(dmin * lm[j]);
    if (dd === 0) continue;
    for (let l = 0; l < 32; l++) {
      L[32 * j + l] = Math.max(0, Math.min(nmax, Math.round((fr(x[base + 32 * j + l]) + dm) / dd)));
    }
  }
  return L;
}

function quantizeQ4_K(x: ArrayLike<number>, y: Uint8Array): void {
  for (let b = 0; b * QK_K < x.length; b++) {
    const o = b * Q4_K_BLOCK_BYTES;
    const L = quantizeScaleMin(x, b * QK_K, 15, y, o);
    for (let c = 0; c < 4; c++) {
      for (let l = 0; l < 32; l++) y[o + 16 + 32 * c + l] = L[64 * c + l] | (L[64 * c + 32 + l] << 4);
    }
  }
}

function quantizeQ5_K(x: ArrayLike<number>, y: Uint8Array): void {
  for (let b = 0; b * QK_K < x.length; b++) {
    const o = b * Q5_K_BLOCK_BYTES;
    const L = quantizeScaleMin(x, b * QK_K, 31, y, o);
    for (let l = 0; l < 32; l++) y[o + 16 + l] = 0;
    for (let c = 0; c < 4; c++) {
      for (let l = 0; l < 32; l++) {
        const l1 = L[64 * c + l], l2 = L[64 * c + 32 + l];
        y[o + 48 + 32 * c + l] = (l1 & 0xf) | ((l2 & 0xf) << 4);
        y[o + 16 + l] |= ((l1 >> 4) << (2 * c)) | ((l2 >> 4) << (2 * c + 1));
      }
    }
  }
}

function quantizeQ6_K(x: ArrayLike<number>, y: Uint8Array): void {
  for (let b = 0; b * QK_K < x.length; b++) {
    const base = b * QK_K, o = b * Q6_K_BLOCK_BYTES;
    // per 16 values, the value of largest magnitude maps to −32 (as Q4_0 maps it to −8)
    const scales = new Float64Array(16);
    let maxScale = 0;
    for (let j = 0; j < 16; j++) {
      let max = 0;
      for (let l = 0; l < 16; l++) {
        const v = fr(x[base + 16 * j + l]);
        if (Math.abs(v) > Math.abs(max)) max = v;
      }
      scales[j] = max / -32;
      if (Math.abs(scales[j]) > Math.abs(maxScale)) maxScale = scales[j];
    }
    const d = putF16(y, o + 208, maxScale / -128);
    const L = new Uint8Array(QK_K).fill(32);
    for (let j = 0; j < 16; j++) {
      const sc = d !== 0 ? Math.max(-128, Math.min(127, Math.round(scales[j] / d))) : 0;
      y[o + 192 + j] = sc & 0xff;
      const dd = fr(d * sc);
      if (dd === 0) continue;
      for (let l = 0; l < 16; l++) L[16 * j + l] = 32 + Math.max(-32, Math.min(31, Math.round(fr(x[base + 16 * j + l]) / dd)));
    }
    for (let n = 0; n < 2; n++) {
      for (let l = 0; l < 32; l++) {
        const q = (k: number) => L[128 * n + 32 * k + l];
        y[o + 64 * n + l] = (q(0) & 0xf) | ((q(2) & 0xf) << 4);
        y[o + 64 * n + 32 + l] = (q(1) & 0xf) | ((q(3) & 0xf) << 4);
        y[o + 128 + 32 * n + l] = (q(0) >> 4) | ((q(1) >> 4) << 2) | ((q(2) >> 4) << 4) | ((q(3) >> 4) << 6);
      }
    }
  }
}

/** dequantize_row_q4_K / q5_K: d1 = d·sc, m1 = dmin·m, value = d1·q − m1, each step rounded to f32 as in C. */
function dequantizeScaleMin(bytes: Uint8Array, n: number, out: Float32Array, five: boolean): void {
  const t = f16Table();
  const blockBytes = five ? Q5_K_BLOCK_BYTES : Q4_K_BLOCK_BYTES;
  const qs = five ? 48 : 16;
  for (let b = 0, o = 0; o < n; b += blockBytes, o += QK_K) {
    const d = t[bytes[b] | (bytes[b + 1] << 8)];
    const min = t[bytes[b + 2] | (bytes[b + 3] << 8)];
    for (let c = 0; c < 4; c++) {
      const [s1, m1i] = scaleMinK4(2 * c, bytes, b + 4);
      const [s2, m2i] = scaleMinK4(2 * c + 1, bytes, b + 4);
      const d1 = fr(d * s1), m1 = fr(min * m1i), d2 = fr(d * s2), m2 = fr(min * m2i);
      for (let l = 0; l < 32; l++) {
        const q = bytes[b + qs + 32 * c + l];
        const h = five ? bytes[b + 16 + l] >> (2 * c) : 0;
        out[o + 64 * c + l] = fr(d1 * ((q & 0xf) + ((h & 1) << 4))) - m1;
        out[o + 64 * c + 32 + l] = fr(d2 * ((q >> 4) + ((h & 2) << 3))) - m2;
      }
    }
  }
}

/** dequantize_row_q6_K: value = (d·sc)·(q − 32), the product d·sc rounded to f32 first as in C. */
function dequantizeQ6_K(bytes: Uint8Array, n: number, out: Float32Array): void {
  const t = f16Table();
  for (let b = 0, o = 0; o < n; b += Q6_K_BLOCK_BYTES, o += QK_K) {
    const d = t[bytes[b + 208] | (bytes[b + 209] << 8)];
    const ds = new Float32Array(16);
    for (let j = 0; j < 16; j++) ds[j] = d * ((bytes[b + 192 + j] << 24) >> 24);
    for (let n2 = 0; n2 < 2; n2++) {
      const ql = b + 64 * n2, qh = b + 128 + 32 * n2, e = o + 128 * n2, s = 8 * n2;
      for (let l = 0; l < 32; l++) {
        const h = bytes[qh + l];
        const is = l >> 4;
        out[e + l] = ds[s + is] * (((bytes[ql + l] & 0xf) | ((h & 3) << 4)) - 32);
        out[e + 32 + l] = ds[s + is + 2] * (((bytes[ql + 32 + l] & 0xf) | (((h >> 2) & 3) << 4)) - 32);
        out[e + 64 + l] = ds[s + is + 4] * (((bytes[ql + l] >> 4) | (((h >> 4) & 3) << 4)) - 32);
        out[e + 96 + l] = ds[s + is + 6] * (((bytes[ql + 32 + l] >> 4) | ((h >> 6) << 4)) - 32);
      }
    }
  }
}

export const K_FORMATS: RowFormat[] = [
  { type: GGMLType.Q4_K, blockSize: QK_K, blockBytes: Q4_K_BLOCK_BYTES, quantize: quantizeQ4_K, dequantize: (b, n, out) => dequantizeScaleMin(b, n, out, false) },
  { type: GGMLType.Q5_K, blockSize: QK_K, blockBytes: Q5_K_BLOCK_BYTES, quantize: quantizeQ5_K, dequantize: (b, n, out) => dequantizeScaleMin(b, n, out, true) },
  { type: GGMLType.Q6_K, blockSize: QK_K, blockBytes: Q6_K_BLOCK_BYTES, quantize: quantizeQ6_K, dequantize: dequantizeQ6_K },
];
