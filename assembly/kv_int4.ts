// KV pages of int4 (KIVI, kv_common.ts): Kc[P][D/2] (channel 2j in the low nibble of byte j, 2j+1 in the high one;
// per-channel steps from the page summary), then Vc[P][D/2], then Vp[P] = (vmin_t, vstep_t) f32 per token;
// P·D + 8·P bytes, an eighth of f32's code bytes.

import { accum_codes, INV_15, key_step, prep_query, quantize4, row_min_max, score_codes, value_step, value_weights } from './kv_common';

/** Four codes (0..15 in i32 lanes) as two bytes: c0 | c1 << 4, c2 | c3 << 4. */
// @ts-ignore: decorator
@inline function store_codes4(p: usize, c: v128): void {
  // in each i64 lane (c_even + c_odd·2^32), the shift brings c_odd down to bit 4 of the low byte
  const b = v128.or(c, i64x2.shr_u(c, 28));
  v128.store16_lane(p, i8x16.shuffle(b, b, 0, 8, 0, 8, 0, 8, 0, 8, 0, 8, 0, 8, 0, 8, 0, 8), 0);
}

/** The page data from f32 [P][D] keys and values; the summary (kmin, kmax) must already be written. */
export function seal_int4(k: usize, v: usize, P: i32, D: i32, data: usize, summary: usize): void {
  const rowBytes = <usize>D << 2;
  const codeBytes = <usize>D >> 1;
  for (let c = 0; c < D; c += 4) {
    const lo = v128.load(summary + (<usize>c << 2));
    const step = key_step(lo, v128.load(summary + rowBytes + (<usize>c << 2)), INV_15);
    for (let t = 0; t < P; t++) {
      store_codes4(data + <usize>t * codeBytes + (c >> 1), quantize4(v128.load(k + <usize>t * rowBytes + (<usize>c << 2)), lo, step, 15));
    }
  }
  const vc = data + <usize>P * codeBytes;
  const vp = vc + <usize>P * codeBytes;
  for (let t = 0; t < P; t++) {
    const vt = v + <usize>t * rowBytes;
    const mm = row_min_max(vt, D);
    const vmin = f32x4.extract_lane(mm, 0);
    const vstep = value_step(vmin, f32x4.extract_lane(mm, 1), INV_15);
    store<f32>(vp + (<usize>t << 3), vmin);
    store<f32>(vp + (<usize>t << 3), vstep, 4);
    const lo = f32x4.splat(vmin), step = f32x4.splat(vstep);
    for (let c = 0; c < D; c += 4) {
      store_codes4(vc + <usize>t * codeBytes + (c >> 1), quantize4(v128.load(vt + (<usize>c << 2)), lo, step, 15));
    }
  }
}

/** scores[t] for t < ntok by the integer Q·K (kv_common.ts); returns the largest. qi: scratch for prep_query. */
export function scores_int4(data: usize, summary: usize, q: usize, D: i32, ntok: i32, scale: f32, out: usize, qi: usize): f32 {
  const baseSq = prep_query(q, summary, D, 15, qi, true);
  return score_codes(data, qi, D, ntok, baseSq, scale, out, true);
}

/** acc[c] += p_t·vstep_t·code_tc over t < ntok (p, in place, becomes p_t·vstep_t); returns Σ p_t·vmin_t. */
export function accum_int4(acc: usize, data: usize, P: i32, D: i32, ntok: i32, p: usize): f32 {
  const vc = data + ((<usize>P * D) >> 1);
  const b = value_weights(p, vc + ((<usize>P * D) >> 1), ntok);
  accum_codes(acc, vc, D, ntok, p, true);
  return b;
}
