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

/**
 * relaxed: the exact Σ w·x of one token's 32-block against 4 rows of signed int8 weights (ra0/ra1: row a's values
 * 0..15 and 16..31, and so on), as an i32x4 [a, b, c, d]. x points at the block's activations (quantize_q8_0 codes,
 * −127..127) and xs at its code sums, where Σ_{x<0} |x| is the second i16.
 *
 * |x| is the relaxed dot's 7-bit operand and the sign moves to the weights: w ⊕ m with m = −1 where x < 0 is −w − 1
 * there, so (w ⊕ m)·|x| = w·x − |x| on those lanes and Σ_{x<0} |x| puts the difference back once per block. w ⊕ m is
 * any int8 (−128 too) and a pair of products is at most 2·128·127 = 32512 in magnitude, so the i16 lanes are exact on
 * every implementation: one xor and one relaxed dot per 16 products, where the SIMD128 path widens both operands and
 * multiplies twice (Q8_0 prefill 18 → 23 GMAC/s, docs/kernels.md).
 */
// @ts-ignore: decorator
@inline export function signed_block_sums4(
  ra0: v128, ra1: v128, rb0: v128, rb1: v128, rc0: v128, rc1: v128, rd0: v128, rd1: v128, x: usize, xs: usize,
): v128 {
  const x0 = v128.load(x), x1 = v128.load(x, 16);
  const z = i8x16.splat(0);
  const m0 = i8x16.lt_s(x0, z), m1 = i8x16.lt_s(x1, z);
  const a0 = i8x16.abs(x0), a1 = i8x16.abs(x1);
  return i32x4.add(
    hsum4_i32x4(
      signed_dot32(ra0, ra1, m0, a0, m1, a1),
      signed_dot32(rb0, rb1, m0, a0, m1, a1),
      signed_dot32(rc0, rc1, m0, a0, m1, a1),
      signed_dot32(rd0, rd1, m0, a0, m1, a1),
    ),
    i32x4.splat(<i32>load<i16>(xs, 2)),
  );
}

/** One row's part of signed_block_sums4, in four i32 lanes (widened by pmaddwd with ones, which V8 keeps in a register). */
// @ts-ignore: decorator
@inline function signed_dot32(w0: v128, w1: v128, m0: v128, a0: v128, m1: v128, a1: v128): v128 {
  const ones = i16x8.splat(1);
  const p0 = i16x8.relaxed_dot_i8x16_i7x16_s(v128.xor(w0, m0), a0);
  const p1 = i16x8.relaxed_dot_i8x16_i7x16_s(v128.xor(w1, m1), a1);
  return i32x4.add(i32x4.dot_i16x8_s(p0, ones), i32x4.dot_i16x8_s(p1, ones));
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

/** The 4-token prefill tile's outputs: token i's 4 rows (acc fi) at yt + i·rowBytes, each through store_rows4. */
// @ts-ignore: decorator
@inline export function store_tile4(yt: usize, rowBytes: usize, f0: v128, f1: v128, f2: v128, f3: v128, r: i32, rows: i32): void {
  store_rows4(yt, f0, r, rows);
  store_rows4(yt + rowBytes, f1, r, rows);
  store_rows4(yt + 2 * rowBytes, f2, r, rows);
  store_rows4(yt + 3 * rowBytes, f3, r, rows);
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

// ---- K-quants (q4_k.ts, q5_k.ts, q6_k.ts): integer sub-block dots against Q8_K activations ----

/**
 * i16 lanes whose total is Σ c·x over 16 unsigned codes c (0..63) and 16 int8 activations x; each lane holds two
 * products (at most 2·63·127 = 16002). The relaxed build is one relaxed_dot with the codes as its 7-bit operand. The
 * SIMD128 build multiplies halves widened to i16 (xl, xh: x widened, computed once per token), so its lanes pair
 * products j and j+8 instead of 2j and 2j+1: other lanes, the same total, so the same integer in the end.
 */
// @ts-ignore: decorator
@inline export function kdot16(c: v128, x: v128, xl: v128, xh: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return i16x8.relaxed_dot_i8x16_i7x16_s(x, c);
  return i16x8.add(i16x8.mul(i16x8.extend_low_i8x16_u(c), xl), i16x8.mul(i16x8.extend_high_i8x16_u(c), xh));
}

/**
 * Four rows' sub-block dots (sa..sd: i16 lanes of rows a..d) folded into two vectors of lanes [a,a,b,b,c,c,d,d]
 * (each lane the sum of two input lanes), then multiplied by the rows' integer sub-block scales s4
 * ([sa,sa,sb,sb,sc,sc,sd,sd]) with i32x4.dot_i16x8_s: an i32x4 of the 4 rows' scale·dot, exact. The input lanes must
 * stay ≤ 16383 in magnitude so their pair sums fit i16 (Q5_K: 4·31·127, Q6_K: 2·63·127).
 */
// @ts-ignore: decorator
@inline export function kscale_rows4(sa: v128, sb: v128, sc: v128, sd: v128, s4: v128): v128 {
  const ab = i16x8.add(i32x4.shuffle(sa, sb, 0, 4, 1, 5), i32x4.shuffle(sa, sb, 2, 6, 3, 7)); // [a,a,b,b,a,a,b,b]
  const cd = i16x8.add(i32x4.shuffle(sc, sd, 0, 4, 1, 5), i32x4.shuffle(sc, sd, 2, 6, 3, 7));
  return i32x4.add(
    i32x4.dot_i16x8_s(i32x4.shuffle(ab, cd, 0, 1, 4, 5), s4),
    i32x4.dot_i16x8_s(i32x4.shuffle(ab, cd, 2, 3, 6, 7), s4),
  );
}

/**
 * kscale_rows4 with one more fold before the multiply, for input lanes ≤ 8191 (Q4_K: 4·15·127 = 7620, so each of the
 * final lanes holds at most 30480).
 */
// @ts-ignore: decorator
@inline export function kscale_rows4_narrow(sa: v128, sb: v128, sc: v128, sd: v128, s4: v128): v128 {
  const ab = i16x8.add(i32x4.shuffle(sa, sb, 0, 4, 1, 5), i32x4.shuffle(sa, sb, 2, 6, 3, 7));
  const cd = i16x8.add(i32x4.shuffle(sc, sd, 0, 4, 1, 5), i32x4.shuffle(sc, sd, 2, 6, 3, 7));
  return i32x4.dot_i16x8_s(i16x8.add(i32x4.shuffle(ab, cd, 0, 1, 4, 5), i32x4.shuffle(ab, cd, 2, 3, 6, 7)), s4);
}

/**
 * The repacked sub-block scales of two sub-blocks, 8 bytes [a,b,c,d] (sub-block j) then [a,b,c,d] (j+1), widened to
 * i16 as [a,b,c,d,a',b',c',d']: k_pair_lo gives sub-block j's [a,a,b,b,c,c,d,d], k_pair_hi sub-block j+1's (one
 * punpcklwd/punpckhwd each).
 */
// @ts-ignore: decorator
@inline export function k_pair_lo(v: v128): v128 {
  return i8x16.shuffle(v, v, 0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23);
}

// @ts-ignore: decorator
@inline export function k_pair_hi(v: v128): v128 {
  return i8x16.shuffle(v, v, 8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31);
}

/**
 * Four rows' super-block result added to their f32 accumulators, with a min term: acc + (d·kd)·sumi − (dmin·kd)·summ,
 * in this order in every build and tile shape (the K-quants' one float step per super-block).
 */
// @ts-ignore: decorator
@inline export function kscale_add_min(acc: v128, d4: v128, m4: v128, kd: f32, sumi: v128, summ: v128): v128 {
  const k = f32x4.splat(kd);
  return f32x4.sub(
    f32x4.add(acc, f32x4.mul(f32x4.mul(d4, k), f32x4.convert_i32x4_s(sumi))),
    f32x4.mul(f32x4.mul(m4, k), f32x4.convert_i32x4_s(summ)),
  );
}

/**
 * Σ_j m_j·bsum_j for four rows (lanes), where bsum_j is the Q8_K code sum of 32-sub-block j (two of the 16 i16 sums at
 * ks) and mins holds 32 bytes: per pair of sub-blocks (j, j+1) the rows' mins as [a_j,a_j+1,b_j,b_j+1,c..,d..].
 */
// @ts-ignore: decorator
@inline export function kmins_rows4(mins: usize, ks: usize): v128 {
  const bs = i16x8.narrow_i32x4_s(i32x4.extadd_pairwise_i16x8_s(v128.load(ks)), i32x4.extadd_pairwise_i16x8_s(v128.load(ks, 16)));
  let r = i32x4.dot_i16x8_s(v128.load8x8_u(mins), i32x4.shuffle(bs, bs, 0, 0, 0, 0));
  r = i32x4.add(r, i32x4.dot_i16x8_s(v128.load8x8_u(mins, 8), i32x4.shuffle(bs, bs, 1, 1, 1, 1)));
  r = i32x4.add(r, i32x4.dot_i16x8_s(v128.load8x8_u(mins, 16), i32x4.shuffle(bs, bs, 2, 2, 2, 2)));
  return i32x4.add(r, i32x4.dot_i16x8_s(v128.load8x8_u(mins, 24), i32x4.shuffle(bs, bs, 3, 3, 3, 3)));
}

// ---- the rows in the lanes (q6_k.ts, q3_k.ts): code vectors of 4 rows × 4 consecutive values, [a0..a3 b0..b3 c0..c3 d0..d3] ----

/**
 * Σ c·x for one code vector c (unsigned codes ≤ 63) and 4 activations xb (broadcast to every row), as i16 lanes
 * [a0+a1, a2+a3, b0+b1, ...] (each at most 2·63·127 = 16002). relaxed: one dot with the codes as the 7-bit operand.
 * SIMD128: the same pair sums by pmaddwd on the widened values, narrowed back (exact: they fit).
 */
// @ts-ignore: decorator
@inline export function kdot4_rows(c: v128, xb: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return i16x8.relaxed_dot_i8x16_i7x16_s(xb, c);
  const xw = i16x8.extend_low_i8x16_s(xb);
  return i16x8.narrow_i32x4_s(
    i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_u(c), xw),
    i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_u(c), xw),
  );
}

/**
 * Σ_j v_j·bsum_j over a pair of sub-blocks (j, j+1) for 4 rows: v holds the rows' values as i16 [a_j,b_j,c_j,d_j,
 * a_j+1,...] and ks the token's (bsum_j, bsum_j+1); reordered to [a_j,a_j+1,b_j,b_j+1,...] they meet in one pmaddwd.
 */
// @ts-ignore: decorator
@inline export function kpair_bsums_rows4(v: v128, ks: usize): v128 {
  const pairs = i8x16.shuffle(v, i32x4.shuffle(v, v, 2, 3, 2, 3), 0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23);
  return i32x4.dot_i16x8_s(pairs, v128.load32_splat(ks));
}

/**
 * (Σ_j sc_j·bsum_j) << shift for the 4 rows of one super-block, its 16 sub-block scales at sc + 16 as
 * [16 sub-blocks][4 rows] int8, and one token's 16 code sums at ks. The K-quants' offset for codes kept unsigned
 * (Q6_K: q − 32, shift 5; Q3_K: q − 4, shift 2), once per super-block and token.
 */
// @ts-ignore: decorator
@inline export function koffset_rows4(sc: usize, ks: usize, shift: i32): v128 {
  let off = i32x4.splat(0);
  for (let p: usize = 0; p < 8; p++) off = i32x4.add(off, kpair_bsums_rows4(v128.load8x8_s(sc + 16 + (p << 3)), ks + (p << 2)));
  return i32x4.shl(off, shift);
}
