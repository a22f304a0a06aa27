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

/**
 * The four lane sums of four f32x4 as one f32x4, each in hsum_f32x4's order ((0+2)+(1+3)): a score computed in a group
 * of four tokens has the same bits as the same token scored alone.
 */
// @ts-ignore: decorator
@inline export function hsum4_f32x4(a: v128, b: v128, c: v128, d: v128): v128 {
  const ab = f32x4.add(i32x4.shuffle(a, b, 0, 4, 1, 5), i32x4.shuffle(a, b, 2, 6, 3, 7));
  const cd = f32x4.add(i32x4.shuffle(c, d, 0, 4, 1, 5), i32x4.shuffle(c, d, 2, 6, 3, 7));
  return f32x4.add(i32x4.shuffle(ab, cd, 0, 1, 4, 5), i32x4.shuffle(ab, cd, 2, 3, 6, 7));
}

/** Largest lane (pmax: NaN-free inputs, one instruction on x86). Exact, so the lane order does not matter. */
// @ts-ignore: decorator
@inline export function hmax_f32x4(v: v128): f32 {
  const s = f32x4.pmax(v, i8x16.shuffle(v, v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7));
  return max(f32x4.extract_lane(s, 0), f32x4.extract_lane(s, 1));
}

/** Smallest lane, as hmax_f32x4. */
// @ts-ignore: decorator
@inline export function hmin_f32x4(v: v128): f32 {
  const s = f32x4.pmin(v, i8x16.shuffle(v, v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7));
  return min(f32x4.extract_lane(s, 0), f32x4.extract_lane(s, 1));
}

/** ln(FLT_MIN): below it e^x is subnormal, and exp_f32x4 returns 0 instead. */
export const EXP_MIN: f32 = -87.33654475;

/**
 * e^x per lane, Cephes expf: x = n·ln2 + r with n = nearest(x·log2e) and ln2 split in two constants (C1 has 9
 * significant bits, so n·C1 and x − n·C1 are exact for |n| ≤ 127), e^r by a degree-6 polynomial on |r| ≤ ln2/2, and
 * 2^n built in the exponent bits. Max relative error 7.9e-8 over [−87, 0] (test/kv-kernels.test.ts). Plain mul/add, no
 * FMA, so every build gives the same bits.
 *
 * Made for softmax weights, where x ≤ 0: x < EXP_MIN (including −inf, as in e^(M − m) with M = −inf on the first page)
 * and NaN give +0, never a subnormal or a NaN; x is clamped at 88 above (e^88 ≈ 1.7e38).
 */
// @ts-ignore: decorator
@inline export function exp_f32x4(x: v128): v128 {
  // pmin/pmax: plain minps/maxps; −inf clamps to −88, NaN stays NaN and is masked off at the end
  const xc = f32x4.pmax(f32x4.pmin(x, f32x4.splat(88.0)), f32x4.splat(-88.0));
  const n = f32x4.nearest(f32x4.mul(xc, f32x4.splat(1.44269504088896341)));
  const r = f32x4.sub(f32x4.sub(xc, f32x4.mul(n, f32x4.splat(0.693359375))), f32x4.mul(n, f32x4.splat(-2.12194440e-4)));
  let p = f32x4.splat(1.9875691500e-4);
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1.3981999507e-3));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(8.3334519073e-3));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(4.1665795894e-2));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1.6666665459e-1));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(5.0000001201e-1));
  const y = f32x4.add(f32x4.add(f32x4.mul(p, f32x4.mul(r, r)), r), f32x4.splat(1.0));
  // n ∈ [−127, 127]; −127 gives the bits of +0, but only for x < EXP_MIN, which the mask zeroes anyway
  const pow2n = i32x4.shl(i32x4.add(i32x4.trunc_sat_f32x4_s(n), i32x4.splat(127)), 23);
  return v128.and(f32x4.mul(y, pow2n), f32x4.ge(x, f32x4.splat(EXP_MIN)));
}
