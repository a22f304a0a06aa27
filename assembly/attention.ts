// Grouped-query attention of one token over an f32 KV cache.
// Cache layout per layer: K and V each [nKvHeads][ctx][headDim] (one contiguous run per KV head, the shape a KV page
// will take), so a head's keys are read sequentially.

import { hsum_f32x4 } from './common';
import { softmax } from './ops';

/**
 * out[h] = Σ_t softmax_t(q[h]·k[g][t] · scale) · v[g][t] for t < nPos, where g = h / (nHeads / nKvHeads).
 * q and out are [nHeads·headDim]; scores is scratch of nPos floats. headDim is a multiple of 4.
 */
export function attention(
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
