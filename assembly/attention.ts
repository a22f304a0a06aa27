// Grouped-query attention of one token over the KV cache, with f32 or f16 entries.
// Cache layout per layer: K and V each [nKvHeads][ctx][headDim] (one contiguous run per KV head, the shape a KV page
// will take), so a head's keys are read sequentially.

import { f16_to_f32, f16x8_high_to_f32x4, f16x8_low_to_f32x4, hsum_f32x4 } from './common';
import { softmax } from './ops';

/**
 * out[h] = Σ_t softmax_t(q[h]·k[g][t] · scale) · v[g][t] for t < nPos, where g = h / (nHeads / nKvHeads).
 * q and out are [nHeads·headDim] f32; scores is scratch of nPos floats; headDim is a multiple of 4.
 */
export function attention_f32(
  out: usize, q: usize, k: usize, v: usize, scores: usize,
  nHeads: i32, nKvHeads: i32, headDim: i32, ctx: i32, nPos: i32, scale: f32,
): void {
  const group = nHeads / nKvHeads;
  const headBytes = <usize>headDim << 2;
  const kvHeadBytes = <usize>ctx * headBytes;
  for (let h = 0; h < nHeads; h++) {
    const g = h / group;
    const qh = q + <usize>h * headBytes;
    const kh = k + <usize>g * kvHeadBytes;
    const vh = v + <usize>g * kvHeadBytes;
    for (let t = 0; t < nPos; t++) {
      const kt = kh + <usize>t * headBytes;
      let acc = f32x4.splat(0);
      for (let i = 0; i < headDim; i += 4) {
        const o = <usize>i << 2;
        acc = f32x4.add(acc, f32x4.mul(v128.load(qh + o), v128.load(kt + o)));
      }
      store<f32>(scores + (<usize>t << 2), hsum_f32x4(acc) * scale);
    }
    softmax(scores, nPos);
    const oh = out + <usize>h * headBytes;
    memory.fill(oh, 0, headBytes);
    for (let t = 0; t < nPos; t++) {
      const p = f32x4.splat(load<f32>(scores + (<usize>t << 2)));
      const vt = vh + <usize>t * headBytes;
      for (let i = 0; i < headDim; i += 4) {
        const o = <usize>i << 2;
        v128.store(oh + o, f32x4.add(v128.load(oh + o), f32x4.mul(p, v128.load(vt + o))));
      }
    }
  }
}

/** The same over f16 K/V entries, widened to f32 in registers; headDim is a multiple of 4. */
export function attention_f16(
  out: usize, q: usize, k: usize, v: usize, scores: usize,
  nHeads: i32, nKvHeads: i32, headDim: i32, ctx: i32, nPos: i32, scale: f32,
): void {
  const group = nHeads / nKvHeads;
  const qBytes = <usize>headDim << 2;
  const kvBytes = <usize>headDim << 1;
  const kvHeadBytes = <usize>ctx * kvBytes;
  const body = headDim & ~7;
  for (let h = 0; h < nHeads; h++) {
    const g = h / group;
    const qh = q + <usize>h * qBytes;
    const kh = k + <usize>g * kvHeadBytes;
    const vh = v + <usize>g * kvHeadBytes;
    for (let t = 0; t < nPos; t++) {
      const kt = kh + <usize>t * kvBytes;
      let acc = f32x4.splat(0);
      for (let i = 0; i < body; i += 8) {
        const hk = v128.load(kt + (<usize>i << 1));
        const qo = qh + (<usize>i << 2);
        acc = f32x4.add(acc, f32x4.mul(v128.load(qo), f16x8_low_to_f32x4(hk)));
        acc = f32x4.add(acc, f32x4.mul(v128.load(qo, 16), f16x8_high_to_f32x4(hk)));
      }
      let s = hsum_f32x4(acc);
      for (let i = body; i < headDim; i++) s += load<f32>(qh + (<usize>i << 2)) * f16_to_f32(load<u16>(kt + (<usize>i << 1)));
      store<f32>(scores + (<usize>t << 2), s * scale);
    }
    softmax(scores, nPos);
    const oh = out + <usize>h * qBytes;
    memory.fill(oh, 0, qBytes);
    for (let t = 0; t < nPos; t++) {
      const p = load<f32>(scores + (<usize>t << 2));
      const pv = f32x4.splat(p);
      const vt = vh + <usize>t * kvBytes;
      for (let i = 0; i < body; i += 8) {
        const hv = v128.load(vt + (<usize>i << 1));
        const o = oh + (<usize>i << 2);
        v128.store(o, f32x4.add(v128.load(o), f32x4.mul(pv, f16x8_low_to_f32x4(hv))));
        v128.store(o, f32x4.add(v128.load(o, 16), f32x4.mul(pv, f16x8_high_to_f32x4(hv))), 16);
      }
      for (let i = body; i < headDim; i++) {
        const o = oh + (<usize>i << 2);
        store<f32>(o, load<f32>(o) + p * f16_to_f32(load<u16>(vt + (<usize>i << 1))));
      }
    }
  }
}
