/**
 * Row formats (see quantize.ts) of Q4_1, Q5_0, Q5_1, IQ4_NL and BF16. Dequantizers are ggml's dequantize_row_*; the
 * quantizers of Q4_1/Q5_0/Q5_1 are ports of ggml's reference ones (quantize_row_*_ref, float arithmetic through
 * Math.fround), IQ4_NL's is round-to-nearest into the table at the block's first scale (ggml then searches scales; test
 * models only need bytes that dequantize to what the reference reads), BF16's is ggml's round-to-nearest-even.
 */
import { GGMLType } from './types.js';
import { f16Table, f32ToF16 } from './f16.js';
import type { RowFormat } from './quantize.js';

const QK = 32;
const f = Math.fround;

/** ggml's kvalues_iq4nl: the 16 values an IQ4_NL code stands for, in units of the block scale. */
export const KVALUES_IQ4NL: readonly number[] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

function putF16(y: Uint8Array, o: number, v: number): void {
  const h = f32ToF16(v);
  y[o] = h & 0xff;
  y[o + 1] = h >>> 8;
}

const u32 = (b: Uint8Array, o: number) => (b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24)) >>> 0;

/** C's (int8_t)(float): truncation toward zero, wrapped to int8 (the values here are in range). */
const toInt8 = (v: number) => (Math.trunc(v) << 24) >> 24;

/** Min and max of block i, as ggml's q4_1/q5_1 reference quantizers (starting from ±FLT_MAX). */
function minMax(x: ArrayLike<number>, base: number): [number, number] {
  let min = 3.4028234663852886e38, max = -3.4028234663852886e38;
  for (let j = 0; j < QK; j++) {
    const v = f(x[base + j]);
    if (v < min) min = v;
    if (v > max) max = v;
  }
  return [min, max];
}

/** The value of largest magnitude of block i (the first on ties), as ggml's q4_0/q5_0 reference quantizers. */
function signedMax(x: ArrayLike<number>, base: number): number {
  let amax = 0, max = 0;
  for (let j = 0; j < QK; j++) {
    const v = f(x[base + j]);
    if (amax < Math.abs(v)) {
      amax = Math.abs(v);
      max = v;
    }
  }
  return max;
}

/** ggml's best_index_int8: the index of the table value nearest x (the upper one of a tie). */
function bestIndex(x: number): number {
  const v = KVALUES_IQ4NL;
  if (x <= v[0]) return 0;
  if (x >= v[15]) return 15;
  let ml = 0, mu = 15;
  while (mu - ml > 1) {
    const mav = (ml + mu) >> 1;
    if (x < v[mav]) mu = mav;
    else ml = mav;
  }
  return x - v[mu - 1] < v[mu] - x ? mu - 1 : mu;
}

/** ggml's fp32 → bf16: round to nearest even, NaNs kept quiet. */
export function f32ToBF16(x: number): number {
  const i = new Uint32Array(new Float32Array([x]).buffer)[0];
  if ((i & 0x7fffffff) > 0x7f800000) return ((i >>> 16) | 64) & 0xffff;
  return ((i + (0x7fff + ((i >>> 16) & 1))) >>> 16) & 0xffff;
}

export const LEGACY_FORMATS: RowFormat[] = [
  {
    type: GGMLType.Q4_1,
    blockSize: QK,
    blockBytes: 20,
    quantize(x, y) {
      for (let b = 0, o = 0; b < x.length; b += QK, o += 20) {
        const [min, max] = minMax(x, b);
        const d = f((max - min) / 15);
        const id = d ? f(1 / d) : 0;
        putF16(y, o, d);
        putF16(y, o + 2, min);
        for (let j = 0; j < QK / 2; j++) {
          const x0 = f(f(f(x[b + j]) - min) * id);
          const x1 = f(f(f(x[b + QK / 2 + j]) - min) * id);
          const q0 = Math.min(15, toInt8(f(x0 + 0.5))) & 0xff;
          const q1 = Math.min(15, toInt8(f(x1 + 0.5))) & 0xff;
          y[o + 4 + j] = (q0 | (q1 << 4)) & 0xff;
        }
      }
    },
    dequantize(bytes, n, out) {
      const t = f16Table();
      for (let b = 0, o = 0; o < n; b += 20, o += QK) {
        const d = t[bytes[b] | (bytes[b + 1] << 8)];
        const m = t[bytes[b + 2] | (bytes[b + 3] << 8)];
        for (let j = 0; j < QK / 2; j++) {
          const q = bytes[b + 4 + j];
          out[o + j] = (q & 0x0f) * d + m;
          out[o + j + QK / 2] = (q >>> 4) * d + m;
        }
      }
    },
  },
  {
    type: GGMLType.Q5_0,
    blockSize: QK,
    blockBytes: 22,
    quantize(x, y) {
      for (let b = 0, o = 0; b < x.length; b += QK, o += 22) {
        const d = f(signedMax(x, b) / -16);
        const id = d ? f(1 / d) : 0;
        putF16(y, o, d);
        let qh = 0;
        for (let j = 0; j < QK / 2; j++) {
          const x0 = f(f(x[b + j]) * id);
          const x1 = f(f(x[b + QK / 2 + j]) * id);
          const q0 = Math.min(31, toInt8(f(x0 + 16.5))) & 0xff;
          const q1 = Math.min(31, toInt8(f(x1 + 16.5))) & 0xff;
          y[o + 6 + j] = (q0 & 0x0f) | ((q1 & 0x0f) << 4);
          qh |= ((q0 & 0x10) >>> 4) << j;
          qh |= ((q1 & 0x10) >>> 4) << (j + QK / 2);
        }
        y[o + 2] = qh & 0xff;
        y[o + 3] = (qh >>> 8) & 0xff;
        y[o + 4] = (qh >>> 16) & 0xff;
        y[o + 5] = qh >>> 24;
      }
    },
    dequantize(bytes, n, out) {
      const t = f16Table();
      for (let b = 0, o = 0; o < n; b += 22, o += QK) {
        const d = t[bytes[b] | (bytes[b + 1] << 8)];
        const qh = u32(bytes, b + 2);
        for (let j = 0; j < QK / 2; j++) {
          const q = bytes[b + 6 + j];
          out[o + j] = (((q & 0x0f) | (((qh >>> j) << 4) & 0x10)) - 16) * d;
          out[o + j + QK / 2] = (((q >>> 4) | ((qh >>> (j + 12)) & 0x10)) - 16) * d;
        }
      }
    },
  },
  {
    type: GGMLType.Q5_1,
    blockSize: QK,
    blockBytes: 24,
    quantize(x, y) {
      for (let b = 0, o = 0; b < x.length; b += QK, o += 24) {
        const [min, max] = minMax(x, b);
        const d = f((max - min) / 31);
        const id = d ? f(1 / d) : 0;
        putF16(y, o, d);
        putF16(y, o + 2, min);
        let qh = 0;
        for (let j = 0; j < QK / 2; j++) {
          const x0 = f(f(f(x[b + j]) - min) * id);
          const x1 = f(f(f(x[b + QK / 2 + j]) - min) * id);
          // (uint8_t)(x + 0.5f): x ≥ 0 here, at most 31.5 by rounding, so truncation is the conversion
          const q0 = Math.trunc(f(x0 + 0.5)) & 0xff;
          const q1 = Math.trunc(f(x1 + 0.5)) & 0xff;
          y[o + 8 + j] = (q0 & 0x0f) | ((q1 & 0x0f) << 4);
          qh |= ((q0 & 0x10) >>> 4) << j;
          qh |= ((q1 & 0x10) >>> 4) << (j + QK / 2);
        }
        y[o + 4] = qh & 0xff;
        y[o + 5] = (qh >>> 8) & 0xff;
        y[o + 6] = (qh >>> 16) & 0xff;
        y[o + 7] = qh >>> 24;
      }
    },
    dequantize(bytes, n, out) {
      const t = f16Table();
      for (let b = 0, o = 0; o < n; b += 24, o += QK) {
        const d = t[bytes[b] | (bytes[b + 1] << 8)];
        const m = t[bytes[b + 2] | (bytes[b + 3] << 8)];
        const qh = u32(bytes, b + 4);
        for (let j = 0; j < QK / 2; j++) {
          const q = bytes[b + 8 + j];
          out[o + j] = ((q & 0x0f) | (((qh >>> j) << 4) & 0x10)) * d + m;
          out[o + j + QK / 2] = ((q >>> 4) | ((qh >>> (j + 12)) & 0x10)) * d + m;
        }
      }
    },
  },
  {
    type: GGMLType.IQ4_NL,
    blockSize: QK,
    blockBytes: 18,
    quantize(x, y) {
      for (let b = 0, o = 0; b < x.length; b += QK, o += 18) {
        const d = f(signedMax(x, b) / KVALUES_IQ4NL[0]);
        const id = d ? f(1 / d) : 0;
        putF16(y, o, d);
        for (let j = 0; j < QK / 2; j++) {
          const q0 = bestIndex(f(f(x[b + j]) * id));
          const q1 = bestIndex(f(f(x[b + QK / 2 + j]) * id));
          y[o + 2 + j] = q0 | (q1 << 4);
        }
      }
    },
    dequantize(bytes, n, out) {
      const t = f16Table();
      for (let b = 0, o = 0; o < n; b += 18, o += QK) {
        const d = t[bytes[b] | (bytes[b + 1] << 8)];
        for (let j = 0; j < QK / 2; j++) {
          const q = bytes[b + 2 + j];
          out[o + j] = d * KVALUES_IQ4NL[q & 0x0f];
          out[o + j + QK / 2] = d * KVALUES_IQ4NL[q >>> 4];
        }
      }
    },
  },
  {
    type: GGMLType.BF16,
    blockSize: 1,
    blockBytes: 2,
    quantize(x, y) {
      for (let i = 0; i < x.length; i++) {
        const h = f32ToBF16(x[i]);
        y[2 * i] = h & 0xff;
        y[2 * i + 1] = h >>> 8;
      }
    },
    dequantize(bytes, n, out) {
      const bits = new Uint32Array(out.buffer, out.byteOffset, n);
      for (let i = 0; i < n; i++) bits[i] = (bytes[2 * i] << 16) | (bytes[2 * i + 1] << 24);
    },
  },
];
