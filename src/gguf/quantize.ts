/**
 * Bit-exact ports of ggml's reference quantizers (ggml-quants.c `quantize_row_q8_0_ref`, `quantize_row_q4_0_ref`)
 * and the matching dequantizers. C does this arithmetic in float, so every intermediate goes through Math.fround:
 * one rounding step differing from C's would change a byte.
 */
import { EdgeLLMError } from '../errors.js';
import { GGMLType, typeName } from './types.js';
import { f16ToF32, f32ToF16 } from './f16.js';

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

/** f32 values to GGUF bytes of the given type (F32, F16, Q8_0, Q4_0). */
export function quantizeRow(type: number, x: ArrayLike<number>, dst?: Uint8Array): Uint8Array {
  const n = x.length;
  switch (type) {
    case GGMLType.F32: {
      const y = dst ?? new Uint8Array(n * 4);
      checkDst('quantizeRow(F32)', y, n * 4);
      const dv = new DataView(y.buffer, y.byteOffset, n * 4);
      for (let i = 0; i < n; i++) dv.setFloat32(i * 4, x[i], true);
      return y;
    }
    case GGMLType.F16: {
      const y = dst ?? new Uint8Array(n * 2);
      checkDst('quantizeRow(F16)', y, n * 2);
      for (let i = 0; i < n; i++) {
        const h = f32ToF16(x[i]);
        y[2 * i] = h & 0xff;
        y[2 * i + 1] = h >>> 8;
      }
      return y;
    }
    case GGMLType.Q8_0:
      return quantizeRowQ8_0(x, dst);
    case GGMLType.Q4_0:
      return quantizeRowQ4_0(x, dst);
    default:
      throw new EdgeLLMError('UNSUPPORTED_TYPE', `quantizeRow: type ${typeName(type)} (${type}) is not one of F32, F16, Q8_0, Q4_0`);
  }
}

let f16Lut: Float32Array | undefined;
function lut(): Float32Array {
  if (!f16Lut) {
    f16Lut = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) f16Lut[h] = f16ToF32(h);
  }
  return f16Lut;
}

/** n values of the given type from GGUF bytes to f32 (F32, F16, Q8_0, Q4_0), as ggml's dequantize_row_*. */
export function dequantizeRow(type: number, bytes: Uint8Array, n: number, dst?: Float32Array): Float32Array {
  const out = dst ?? new Float32Array(n);
  if (out.length < n) throw new EdgeLLMError('BAD_ARGUMENT', `dequantizeRow: destination holds ${out.length} values, needs ${n}`);
  const need = (bytesPer: number, block: number): void => {
    checkRow(`dequantizeRow(${typeName(type)})`, n, block);
    const size = (n / block) * bytesPer;
    if (bytes.length < size) {
      throw new EdgeLLMError('TRUNCATED', `dequantizeRow(${typeName(type)}): ${n} values need ${size} bytes, got ${bytes.length}`);
    }
  };
  switch (type) {
    case GGMLType.F32: {
      need(4, 1);
      const dv = new DataView(bytes.buffer, bytes.byteOffset, n * 4);
      for (let i = 0; i < n; i++) out[i] = dv.getFloat32(i * 4, true);
      return out;
    }
    case GGMLType.F16: {
      need(2, 1);
      const t = lut();
      for (let i = 0; i < n; i++) out[i] = t[bytes[2 * i] | (bytes[2 * i + 1] << 8)];
      return out;
    }
    case GGMLType.Q8_0: {
      need(Q8_0_BLOCK_BYTES, QK);
      const t = lut();
      for (let b = 0, o = 0; o < n; b += Q8_0_BLOCK_BYTES, o += QK) {
        const d = t[bytes[b] | (bytes[b + 1] << 8)];
        for (let j = 0; j < QK; j++) out[o + j] = ((bytes[b + 2 + j] << 24) >> 24) * d;
      }
      return out;
    }
    case GGMLType.Q4_0: {
      need(Q4_0_BLOCK_BYTES, QK);
      const t = lut();
      for (let b = 0, o = 0; o < n; b += Q4_0_BLOCK_BYTES, o += QK) {
        const d = t[bytes[b] | (bytes[b + 1] << 8)];
        for (let j = 0; j < QK / 2; j++) {
          const q = bytes[b + 2 + j];
          out[o + j] = ((q & 0x0f) - 8) * d;
          out[o + j + QK / 2] = ((q >>> 4) - 8) * d;
        }
      }
      return out;
    }
    default:
      throw new EdgeLLMError('UNSUPPORTED_TYPE', `dequantizeRow: type ${typeName(type)} (${type}) is not one of F32, F16, Q8_0, Q4_0`);
  }
}
