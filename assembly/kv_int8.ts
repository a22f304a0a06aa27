// KV pages of int8 (KIVI, kv_common.ts): Kc[P][D] u8 codes (per-channel steps from the page summary), then Vc[P][D]
// u8 codes, then Vp[P] = (vmin_t, vstep_t) f32 per token; 2·P·D + 8·P bytes, a quarter of f32's code bytes.

import { accum_codes, INV_255, key_step, prep_query, quantize4, row_min_max, score_codes, value_step, value_weights } from './kv_common';

/** Four codes (0..255 in i32 lanes) as four bytes. */
// @ts-ignore: decorator
@inline function store_codes4(p: usize, c: v128): void {
  const h = i16x8.narrow_i32x4_u(c, c);
  v128.store32_lane(p, i8x16.narrow_i16x8_u(h, h), 0);
}

/** The page data from f32 [P][D] keys and values; the summary (kmin, kmax) must already be written. */
export function seal_int8(k: usize, v: usize, P: i32, D: i32, data: usize, summary: usize): void {
  const rowBytes = <usize>D << 2;
  for (let c = 0; c < D; c += 4) {
    const lo = v128.load(summary + (<usize>c << 2));
    const step = key_step(lo, v128.load(summary + rowBytes + (<usize>c << 2)), INV_255);
    for (let t = 0; t < P; t++) {
      store_codes4(data + <usize>t * D + c, quantize4(v128.load(k + <usize>t * rowBytes + (<usize>c << 2)), lo, step, 255));
    }
  }
  const vc = data + <usize>P * D;
  const vp = vc + <usize>P * D;
  for (let t = 0; t < P; t++) {
    const vt = v + <usize>t * rowBytes;
    const mm = row_min_max(vt, D);
    const vmin = f32x4.extract_lane(mm, 0);
    const vstep = value_step(vmin, f32x4.extract_lane(mm, 1), INV_255);
    store<f32>(vp + (<usize>t << 3), vmin);
    store<f32>(vp + (<usize>t << 3), vstep, 4);
    const lo = f32x4.splat(vmin), step = f32x4.splat(vstep);
    for (let c = 0; c < D; c += 4) {
      store_codes4(vc + <usize>t * D + c, quantize4(v128.load(vt + (<usize>c << 2)), lo, step, 255));
    }
  }
}

/** scores[t] for t < ntok by the integer Q·K (kv_common.ts); returns the largest. qi: scratch for prep_query. */
export function scores_int8(data: usize, summary: usize, q: usize, D: i32, ntok: i32, scale: f32, out: usize, qi: usize): f32 {
  const baseSq = prep_query(q, summary, D, 255, qi, false);
  return score_codes(data, qi, D, ntok, baseSq, scale, out, false);
}

/** acc[c] += p_t·vstep_t·code_tc over t < ntok (p, in place, becomes p_t·vstep_t); returns Σ p_t·vmin_t. */
export function accum_int8(acc: usize, data: usize, P: i32, D: i32, ntok: i32, p: usize): f32 {
  const vc = data + <usize>P * D;
  const b = value_weights(p, vc + <usize>P * D, ntok);
  accum_codes(acc, vc, D, ntok, p, false);
  return b;
}
