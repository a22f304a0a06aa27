/**
 * Bit-exact ports of ggml's reference quantizers (ggml-quants.c `quantize_row_q8_0_ref`, `quantize_row_q4_0_ref`)
 * and the matching dequantizers. C does this arithmetic in float, so every intermediate goes through Math.fround:
 * one rounding step differing from C's would change a byte.
 */
import { EdgeLLMError } from '../errors.js';
import { GGMLType, typeName } from './types.js';
import { f16Table, f32ToF16 } from './f16.js';
import { LEGACY_FORMATS } from './quantize-legacy.js';
import { K_FORMATS } from './quantize-k.js';
import { K_LOW_FORMATS } from './quantize-k-low.js';

export const QK = 32;
export const Q8_0_BLOCK_BYTES = 34;
export const Q4_0_BLOCK_BYTES = 18;

function checkRow(what: string, n: number, blockSize: number): void {
  if (!Number.isInteger(n) || n < 0 || n % blockSize !== 0) {
    throw new EdgeLLMError('BAD_ARGUMENT', `${what}: row length ${n} is not a multiple of the block size ${blockSize}`);
  }
}

function checkDst(what: string, dst: Uint8Array, need: number): void {
  if (dst.length < need) {
    throw new EdgeLLMError('BAD_ARGUMENT', `${what}: destination holds ${dst.length} bytes, needs ${need}`);
  }
}

/** C's roundf: half away from zero. */
function roundf(x: number): number {
  return x < 0 ? -Math.floor(-x + 0.5) : Math.floor(x + 0.5);
}

/** Q8_0 blocks: f16 scale d = amax/127, then 32 int8 round(x/d). */
export function quantizeRowQ8_0(x: ArrayLike<number>, dst?: Uint8Array): Uint8Array {
  const k = x.length;
  checkRow('quantizeRowQ8_0', k, QK);
  const nb = k / QK;
  const y = dst ?? new Uint8Array(nb * Q8_0_BLOCK_BYTES);
  checkDst('quantizeRowQ8_0', y, nb * Q8_0_BLOCK_BYTES);
  for (let i = 0; i < nb; i++) {
    const base = i * QK;
    let amax = 0;
    for (let j = 0; j < QK; j++) {
      const v = Math.abs(Math.fround(x[base + j]));
      if (v > amax) amax = v; // MAX(amax, fabsf(v))
    }
    const d = Math.fround(amax / 127);
    const id = d ? Math.fround(1 / d) : 0;
    const h = f32ToF16(d);
    const o = i * Q8_0_BLOCK_BYTES;
    y[o] = h & 0xff;
    y[o + 1] = h >>> 8;
    for (let j = 0; j < QK; j++) {
      y[o + 2 + j] = roundf(Math.fround(Math.fround(x[base + j]) * id)) & 0xff;
    }
  }
  return y;
}

/** Q4_0 blocks: f16 scale d = max/-8 (max = the value of largest magnitude), nibbles min(15, trunc(x/d + 8.5)). */
export function quantizeRowQ4_0(x: ArrayLike<number>, dst?: Uint8Array): Uint8Array {
  const k = x.length;
  checkRow('quantizeRowQ4_0', k, QK);
  const nb = k / QK;
  const y = dst ?? new Uint8Array(nb * Q4_0_BLOCK_BYTES);
  checkDst('quantizeRowQ4_0', y, nb * Q4_0_BLOCK_BYTES);
  for (let i = 0; i < nb; i++) {
    const base = i * QK;
    let amax = 0;
    let max = 0;
    for (let j = 0; j < QK; j++) {
      const v = Math.fround(x[base + j]);
      if (amax < Math.abs(v)) {
        amax = Math.abs(v);
        max = v;
      }
    }
    const d = Math.fround(max / -8);
    const id = d ? Math.fround(1 / d) : 0;
    const h = f32ToF16(d);
    const o = i * Q4_0_BLOCK_BYTES;
    y[o] = h & 0xff;
    y[o + 1] = h >>> 8;
    for (let j = 0; j < QK / 2; j++) {
      const x0 = Math.fround(Math.fround(x[base + j]) * id);
      const x1 = Math.fround(Math.fround(x[base + QK / 2 + j]) * id);
      // (int8_t)(x + 8.5f) truncates toward zero; the & 0xff mirrors the int8 -> uint8 conversion.
      const xi0 = Math.min(15, Math.trunc(Math.fround(x0 + 8.5)) << 24 >> 24) & 0xff;
      const xi1 = Math.min(15, Math.trunc(Math.fround(x1 + 8.5)) << 24 >> 24) & 0xff;
      y[o + 2 + j] = (xi0 | (xi1 << 4)) & 0xff;
    }
  }
  return y;
}

/**
 * One row per type the host can write and read: `quantize` (f32 → GGUF bytes: ggml's reference quantizer where the
 * project needs its exact bytes, else round-to-nearest, which is enough for test models whose reference reads the
 * same bytes back) and `dequantize` (GGUF bytes → f32, as ggml's dequantize_row_*). Families of types add their rows
 * from their own files.
 */
export interface RowFormat {
  type: GGMLType;
  /** elements per block and bytes per block (as TYPE_TRAITS) */
  blockSize: number;
  blockBytes: number;
  quantize?(x: ArrayLike<number>, y: Uint8Array): void;
  dequantize(bytes: Uint8Array, n: number, out: Float32Array): void;
}

const BASIC_FORMATS: RowFormat[] = [
  {
    type: GGMLType.F32,
    blockSize: 1,
    blockBytes: 4,
    quantize(x, y) {
      const dv = new DataView(y.buffer, y.byteOffset, x.length * 4);
      for (let i = 0; i < x.length; i++) dv.setFloat32(i * 4, x[i], true);
    },
    dequantize(bytes, n, out) {
      const dv = new DataView(bytes.buffer, bytes.byteOffset, n * 4);
      for (let i = 0; i < n; i++) out[i] = dv.getFloat32(i * 4, true);
    },
  },
  {
    type: GGMLType.F16,
    blockSize: 1,
    blockBytes: 2,
    quantize(x, y) {
      for (let i = 0; i < x.length; i++) {
        const h = f32ToF16(x[i]);
        y[2 * i] = h & 0xff;
        y[2 * i + 1] = h >>> 8;
      }
    },
    dequantize(bytes, n, out) {
      const t = f16Table();
      for (let i = 0; i < n; i++) out[i] = t[bytes[2 * i] | (bytes[2 * i + 1] << 8)];
    },
  },
  {
    type: GGMLType.Q8_0,
    blockSize: QK,
    blockBytes: Q8_0_BLOCK_BYTES,
    quantize: (x, y) => void quantizeRowQ8_0(x, y),
    dequantize(bytes, n, out) {
      const t = f16Table();
      for (let b = 0, o = 0; o < n; b += Q8_0_BLOCK_BYTES, o += QK) {
        const d = t[bytes[b] | (bytes[b + 1] << 8)];
        for (let j = 0; j < QK; j++) out[o + j] = ((bytes[b + 2 + j] << 24) >> 24) * d;
      }
    },
  },
  {
    type: GGMLType.Q4_0,
    blockSize: QK,
    blockBytes: Q4_0_BLOCK_BYTES,
    quantize: (x, y) => void quantizeRowQ4_0(x, y),
    dequantize(bytes, n, out) {
      const t = f16Table();
      for (let b = 0, o = 0; o < n; b += Q4_0_BLOCK_BYTES, o += QK) {
        const d = t[bytes[b] | (bytes[b + 1] << 8)];
        for (let j = 0; j < QK / 2; j++) {
          const q = bytes[b + 2 + j];
          out[o + j] = ((q & 0x0f) - 8) * d;
          out[o + j + QK / 2] = ((q >>> 4) - 8) * d;
        }
      }
    },
  },
];

export const ROW_FORMATS: ReadonlyMap<number, RowFormat> = new Map(
  [...BASIC_FORMATS, ...LEGACY_FORMATS, ...K_FORMATS, ...K_LOW_FORMATS].map((f) => [f.type, f]),
);

const names = (pick: (f: RowFormat) => boolean) => [...ROW_FORMATS.values()].filter(pick).map((f) => typeName(f.type)).join(', ');

/** f32 values to GGUF bytes of the given type. */
export function quantizeRow(type: number, x: ArrayLike<number>, dst?: Uint8Array): Uint8Array {
  const f = ROW_FORMATS.get(type);
  if (!f?.quantize) throw new EdgeLLMError('UNSUPPORTED_TYPE', `quantizeRow: type ${typeName(type)} (${type}) is not one of ${names((g) => !!g.quantize)}`);
  checkRow(`quantizeRow(${typeName(type)})`, x.length, f.blockSize);
  const size = (x.length / f.blockSize) * f.blockBytes;
  const y = dst ?? new Uint8Array(size);
  checkDst(`quantizeRow(${typeName(type)})`, y, size);
  f.quantize(x, y);
  return y;
}

/** n values of the given type from GGUF bytes to f32, as ggml's dequantize_row_*. */
export function dequantizeRow(type: number, bytes: Uint8Array, n: number, dst?: Float32Array): Float32Array {
  const f = ROW_FORMATS.get(type);
  if (!f) throw new EdgeLLMError('UNSUPPORTED_TYPE', `dequantizeRow: type ${typeName(type)} (${type}) is not one of ${names(() => true)}`);
  const out = dst ?? new Float32Array(n);
  if (out.length < n) throw new EdgeLLMError('BAD_ARGUMENT', `dequantizeRow: destination holds ${out.length} values, needs ${n}`);
  checkRow(`dequantizeRow(${typeName(type)})`, n, f.blockSize);
  const size = (n / f.blockSize) * f.blockBytes;
  if (bytes.length < size) throw new EdgeLLMError('TRUNCATED', `dequantizeRow(${typeName(type)}): ${n} values need ${size} bytes, got ${bytes.length}`);
  f.dequantize(bytes, n, out);
  return out;
}
