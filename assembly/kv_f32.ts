// KV pages of f32: K[P][D] then V[P][D], 8·P·D bytes. The full-precision type: the host's tail page (filled token by
// token, always this layout) and any pages kept exact (attention sinks).

import { hsum_f32x4, hsum4_f32x4, hmax_f32x4 } from './common';

/** The page data from f32 [P][D] keys and values (a copy). */
export function seal_f32(k: usize, v: usize, P: i32, D: i32, data: usize): void {
  const half = (<usize>P * D) << 2;
  memory.copy(data, k, half);
  memory.copy(data + half, v, half);
}

/**
 * scores[t] = scale·(q·k_t) for t < ntok; returns the largest. Four tokens share each q load; their four sums are
 * reduced together in the one-token order, so a score does not depend on the token's place in a group.
 */
export function scores_f32(data: usize, q: usize, D: i32, ntok: i32, scale: f32, out: usize): f32 {
  const rowBytes = <usize>D << 2;
  let mx = f32x4.splat(-Infinity);
  let t = 0;
  for (; t + 4 <= ntok; t += 4) {
    const k0 = data + <usize>t * rowBytes;
    const k1 = k0 + rowBytes, k2 = k1 + rowBytes, k3 = k2 + rowBytes;
    let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
    for (let c = 0; c < D; c += 4) {
      const o = <usize>c << 2;
      const qv = v128.load(q + o);
      a0 = f32x4.add(a0, f32x4.mul(qv, v128.load(k0 + o)));
      a1 = f32x4.add(a1, f32x4.mul(qv, v128.load(k1 + o)));
      a2 = f32x4.add(a2, f32x4.mul(qv, v128.load(k2 + o)));
      a3 = f32x4.add(a3, f32x4.mul(qv, v128.load(k3 + o)));
    }
    const s = f32x4.mul(hsum4_f32x4(a0, a1, a2, a3), f32x4.splat(scale));
    v128.store(out + (<usize>t << 2), s);
    mx = f32x4.pmax(mx, s);
  }
  let m = hmax_f32x4(mx);
  for (; t < ntok; t++) {
    const k = data + <usize>t * rowBytes;
    let a = f32x4.splat(0);
    for (let c = 0; c < D; c += 4) {
      const o = <usize>c << 2;
      a = f32x4.add(a, f32x4.mul(v128.load(q + o), v128.load(k + o)));
    }
    const s = hsum_f32x4(a) * scale;
    store<f32>(out + (<usize>t << 2), s);
    m = max(m, s);
  }
  return m;
}

/** acc[c] += w_t·v_tc over t < ntok; blocks of 16 channels keep their accumulators in registers, tokens inner. */
export function accum_f32(acc: usize, data: usize, P: i32, D: i32, ntok: i32, w: usize): void {
  const rowBytes = <usize>D << 2;
  const v = data + <usize>P * rowBytes;
  let c = 0;
  for (; c + 16 <= D; c += 16) {
    const a = acc + (<usize>c << 2);
    let a0 = v128.load(a), a1 = v128.load(a, 16), a2 = v128.load(a, 32), a3 = v128.load(a, 48);
    let p = v + (<usize>c << 2);
    for (let t = 0; t < ntok; t++) {
      const wt = v128.load32_splat(w + (<usize>t << 2));
      a0 = f32x4.add(a0, f32x4.mul(wt, v128.load(p)));
      a1 = f32x4.add(a1, f32x4.mul(wt, v128.load(p, 16)));
      a2 = f32x4.add(a2, f32x4.mul(wt, v128.load(p, 32)));
      a3 = f32x4.add(a3, f32x4.mul(wt, v128.load(p, 48)));
      p += rowBytes;
    }
    v128.store(a, a0);
    v128.store(a, a1, 16);
    v128.store(a, a2, 32);
    v128.store(a, a3, 48);
  }
  for (; c < D; c += 4) {
    const a = acc + (<usize>c << 2);
    let a0 = v128.load(a);
    let p = v + (<usize>c << 2);
    for (let t = 0; t < ntok; t++) {
      a0 = f32x4.add(a0, f32x4.mul(v128.load32_splat(w + (<usize>t << 2)), v128.load(p)));
      p += rowBytes;
    }
    v128.store(a, a0);
  }
}
