/**
 * IEEE 754 half precision <-> single precision, bit-exact with ggml (GGML_FP16_TO_FP32 / GGML_FP32_TO_FP16):
 * round-to-nearest-even, overflow to infinity, gradual underflow through the subnormals, NaN stays NaN.
 */

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** Half bits (0..0xffff) to the exact number they denote. */
export function f16ToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 31) return mant ? NaN : sign * Infinity;
  return sign * (1024 + mant) * 2 ** (exp - 25);
}

/** A number, first rounded to f32 (as C would hold it in a float), to half bits with round-to-nearest-even. */
export function f32ToF16(x: number): number {
  f32Scratch[0] = x;
  const bits = u32Scratch[0];
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  const mant = bits & 0x7fffff;
  // ggml maps every NaN to the quiet NaN 0x7e00 (keeping the sign).
  if (exp === 255) return sign | (mant ? 0x7e00 : 0x7c00);
  const e = exp - 112; // rebias 127 -> 15
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    // Subnormal half: the value in units of 2^-24, from the 24-bit significand.
    const shift = 14 - e;
    if (shift > 24) return sign;
    const m = mant | 0x800000;
    let q = m >>> shift;
    const rest = m & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rest > half || (rest === half && q & 1)) q++;
    return sign | q; // a carry lands on the smallest normal, which is right
  }
  let q = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && q & 1)) q++; // a carry may reach infinity, which is right
  return sign | q;
}

let table: Float32Array | undefined;

/** All 65536 halves as f32, built by bit pattern so NaN payloads survive as in ggml's table. */
export function f16Table(): Float32Array {
  if (table) return table;
  const t = new Float32Array(65536);
  const bits = new Uint32Array(t.buffer);
  for (let h = 0; h < 65536; h++) {
    const exp = (h >>> 10) & 0x1f;
    if (exp === 31) {
      bits[h] = ((h & 0x8000) << 16) | 0x7f800000 | ((h & 0x3ff) << 13);
    } else {
      t[h] = f16ToF32(h);
    }
  }
  table = t;
  return t;
}

/** Bulk conversion; dst must hold at least src.length values. */
export function f16ArrayToF32(src: Uint16Array, dst: Float32Array): Float32Array {
  const t = f16Table();
  const n = src.length;
  for (let i = 0; i < n; i++) dst[i] = t[src[i]];
  return dst;
}

