// Helpers shared by the per-type kernels. Everything here is pure arithmetic on values and pointers.

/** Exact horizontal sum of an i32x4. Integer sums are exact, so every build (and every lane grouping) agrees. */
// @ts-ignore: decorator
@inline export function hsum_i32x4(v: v128): i32 {
  const s = i32x4.add(v, i8x16.shuffle(v, v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7));
  return i32x4.extract_lane(s, 0) + i32x4.extract_lane(s, 1);
}

/**
 * How far ahead (bytes of weight codes) the matmuls touch memory. Wasm has no prefetch instruction, and on the machines
 * measured the hardware prefetcher alone left a decode step waiting on DRAM (2–3 GB/s of weights against the 11 GB/s a
 * plain streaming loop reads). A load of one byte a fixed distance ahead keeps more cache lines in flight: decode
 * matmuls from DRAM ran about 2× faster with it. Loads may reach past the end of a matrix, into the next region; the
 * host plans PREFETCH_SLACK bytes after the last region so they never leave the memory.
 */
export const PREFETCH: usize = 1024;

/**
 * The four lane sums of four i32x4 (one per weight row), as one i32x4 [Σa, Σb, Σc, Σd]. Exact, like hsum_i32x4, so
 * it can sit between the integer block dot and the f32 block scale without changing a single result bit.
 */
// @ts-ignore: decorator
@inline export function hsum4_i32x4(a: v128, b: v128, c: v128, d: v128): v128 {
  const ab = i32x4.add(i32x4.shuffle(a, b, 0, 4, 1, 5), i32x4.shuffle(a, b, 2, 6, 3, 7));
  const cd = i32x4.add(i32x4.shuffle(c, d, 0, 4, 1, 5), i32x4.shuffle(c, d, 2, 6, 3, 7));
  return i32x4.add(i32x4.shuffle(ab, cd, 0, 1, 4, 5), i32x4.shuffle(ab, cd, 2, 3, 6, 7));
}

/**
 * Four rows' block results added into their f32 accumulators: acc + (wd·xd)·sumi per lane, the same operations in the
 * same order as a scalar `acc += wd * xd * sumi`, so every tile shape and every build gives identical bits.
 */
// @ts-ignore: decorator
@inline export function scale_add(acc: v128, wd4: v128, xd: f32, sumi4: v128): v128 {
  return f32x4.add(acc, f32x4.mul(f32x4.mul(wd4, f32x4.splat(xd)), f32x4.convert_i32x4_s(sumi4)));
}

/** Stores the four rows r..r+3 of one token's output, only those below `rows` (the last group may be padding). */
// @ts-ignore: decorator
@inline export function store_rows4(y: usize, acc: v128, r: i32, rows: i32): void {
  if (r + 4 <= rows) {
    v128.store(y, acc);
  } else {
    store<f32>(y, f32x4.extract_lane(acc, 0));
    if (r + 1 < rows) store<f32>(y, f32x4.extract_lane(acc, 1), 4);
    if (r + 2 < rows) store<f32>(y, f32x4.extract_lane(acc, 2), 8);
  }
}

/** Horizontal sum of an f32x4 in a fixed order ((0+2)+(1+3)), the same in every build. */
// @ts-ignore: decorator
@inline export function hsum_f32x4(v: v128): f32 {
  const s = f32x4.add(v, i8x16.shuffle(v, v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7));
  return f32x4.extract_lane(s, 0) + f32x4.extract_lane(s, 1);
}

/**
 * Eight f16 values (an i16x8) to two f32x4, exact for normals and subnormals: shifting the 15 magnitude bits into
 * an f32's exponent/mantissa position and multiplying by 2^112 rebiases the exponent, and the multiply by a power of two
 * also normalises f16 subnormals. Weights never hold inf/nan, which this does not special-case.
 */
// @ts-ignore: decorator
@inline export function f16x8_low_to_f32x4(h: v128): v128 {
  const w = i32x4.extend_low_i16x8_u(h);
  return f16_bits_to_f32x4(w);
}

// @ts-ignore: decorator
@inline export function f16x8_high_to_f32x4(h: v128): v128 {
  const w = i32x4.extend_high_i16x8_u(h);
  return f16_bits_to_f32x4(w);
}

// @ts-ignore: decorator
@inline function f16_bits_to_f32x4(w: v128): v128 {
  const mag = i32x4.shl(v128.and(w, i32x4.splat(0x7fff)), 13);
  const sign = i32x4.shl(v128.and(w, i32x4.splat(0x8000)), 16);
  const f = f32x4.mul(mag, f32x4.splat(reinterpret<f32>(0x77800000))); // 2^112
  return v128.or(f, sign);
}

/** Scalar f16 bits to f32, same trick as above. */
// @ts-ignore: decorator
@inline export function f16_to_f32(h: u32): f32 {
  const mag = reinterpret<f32>((h & 0x7fff) << 13) * reinterpret<f32>(0x77800000);
  return reinterpret<f32>(reinterpret<u32>(mag) | ((h & 0x8000) << 16));
}

/** f32 to the bits of the nearest f16 (round to nearest even), as GGML_FP32_TO_FP16. */
export function f32_to_f16_bits(x: f32): u32 {
  const bits = reinterpret<u32>(x);
  const sign = (bits >> 16) & 0x8000;
  const abs = bits & 0x7fffffff;
  let h: u32;
  if (abs >= 0x47800000) {
    // overflow to inf (or nan stays nan)
    h = abs > 0x7f800000 ? 0x7e00 : 0x7c00;
  } else if (abs < 0x38800000) {
    // subnormal f16: let the FPU round by adding a magic number (0.5 in f32 has the right ulp, 2^-24)
    const f = reinterpret<f32>(abs) + reinterpret<f32>(0x3f000000);
    h = reinterpret<u32>(f) - 0x3f000000;
  } else {
    const mantOdd = (abs >> 13) & 1;
    h = (abs + 0xc8000fff + mantOdd) >> 13; // rebias exponent (-112 << 23) and round half to even
  }
  return h | sign;
}

/**
 * f32 to the nearest f16 and back. ggml stores block scales as f16, so an activation block scale must be rounded
 * exactly the same way to reproduce llama.cpp's numbers.
 */
export function round_to_f16(x: f32): f32 {
  return f16_to_f32(f32_to_f16_bits(x));
}
