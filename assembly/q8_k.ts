// Q8_K: the activation format of the K-quants and IQ4_XS, as ggml's quantize_row_q8_K: per 256-value super-block one
// f32 scale and int8 codes, plus the code sums of each 16 values (the K-quants' sub-block mins and offsets need them).
// One scale per 256 values lets a super-block's integer sub-block dots, times their integer scales, add up exactly in
// i32 before a single float multiply.

/**
 * Quantize ntok activation vectors of n floats (n a multiple of 256) to int8 codes kq [ntok][n], f32 scales
 * kd [ntok][n/256] and i16 code sums ks [ntok][n/16]. Exactly ggml's quantize_row_q8_K_ref: max = the value of
 * largest magnitude (the first one on ties), iscale = −127/max, codes = min(127, round-half-even(iscale·x)),
 * d = 1/iscale, all in f32; an all-zero super-block gets d = 0 and zero codes.
 */
export function quantize_q8_k(x: usize, n: i32, ntok: i32, kq: usize, kd: usize, ks: usize): void {
  const total = (n >> 8) * ntok;
  for (let b = 0; b < total; b++) {
    const src = x + (<usize>b << 10);
    const dst = kq + (<usize>b << 8);
    let amax: f32 = 0;
    let max: f32 = 0;
    for (let j = 0; j < 256; j++) {
      const v = load<f32>(src + (<usize>j << 2));
      const a = abs<f32>(v);
      if (a > amax) {
        amax = a;
        max = v;
      }
    }
    if (amax == 0) {
      store<f32>(kd + (<usize>b << 2), 0);
      for (let j = 0; j < 256; j += 16) v128.store(dst + j, i8x16.splat(0));
      for (let j = 0; j < 16; j++) store<i16>(ks + (<usize>(b * 16 + j) << 1), 0);
      continue;
    }
    const iscale: f32 = <f32>-127.0 / max;
    const is = f32x4.splat(iscale);
    for (let j = 0; j < 256; j += 16) {
      const p = src + (<usize>j << 2);
      const q0 = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v128.load(p), is)));
      const q1 = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v128.load(p, 16), is)));
      const q2 = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v128.load(p, 32), is)));
      const q3 = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v128.load(p, 48), is)));
      // |x| ≤ |max|, so the codes lie in −127..127: the narrowing never saturates and ggml's min(127, ·) never bites.
      const codes = i8x16.narrow_i16x8_s(i16x8.narrow_i32x4_s(q0, q1), i16x8.narrow_i32x4_s(q2, q3));
      v128.store(dst + j, codes);
      const s = i32x4.extadd_pairwise_i16x8_s(i16x8.extadd_pairwise_i8x16_s(codes));
      const sum = i32x4.extract_lane(s, 0) + i32x4.extract_lane(s, 1) + i32x4.extract_lane(s, 2) + i32x4.extract_lane(s, 3);
      store<i16>(ks + (<usize>(b * 16 + (j >> 4)) << 1), <i16>sum);
    }
    store<f32>(kd + (<usize>b << 2), <f32>1.0 / iscale);
  }
}
