// KV pages of f16: K[P][D] then V[P][D] as IEEE half bits (round to nearest even, like llama.cpp's f16 cache),
// 4·P·D bytes. Widened to f32 in registers; D = 8k + 4 ends each row with a half chunk read by an 8-byte load.
// Entries beyond f16 range round to inf, which the widening reads as ±65536: large, but never a NaN in the softmax.

import {
  f16x8_high_to_f32x4, f16x8_low_to_f32x4, f32_to_f16_bits, hmax_f32x4, hsum_f32x4, hsum4_f32x4,
} from './common';

/** The page data from f32 [P][D] keys and values (once per page: scalar rounding is fine). */
export function seal_f16(k: usize, v: usize, P: i32, D: i32, data: usize): void {
  const n = P * D;
  const vd = data + (<usize>n << 1);
  for (let i = 0; i < n; i++) {
    store<u16>(data + (<usize>i << 1), <u16>f32_to_f16_bits(load<f32>(k + (<usize>i << 2))));
    store<u16>(vd + (<usize>i << 1), <u16>f32_to_f16_bits(load<f32>(v + (<usize>i << 2))));
  }
}

/** q·k over one f16 row: 8 channels per load, then the 4-channel tail. */
// @ts-ignore: decorator
@inline function dot_row(q: usize, k: usize, body: i32, D: i32): v128 {
  let a = f32x4.splat(0);
  for (let c = 0; c < body; c += 8) {
    const h = v128.load(k + (<usize>c << 1));
    const qc = q + (<usize>c << 2);
    a = f32x4.add(a, f32x4.add(f32x4.mul(v128.load(qc), f16x8_low_to_f32x4(h)), f32x4.mul(v128.load(qc, 16), f16x8_high_to_f32x4(h))));
  }
  if (body < D) {
    a = f32x4.add(a, f32x4.mul(v128.load(q + (<usize>body << 2)), f16x8_low_to_f32x4(v128.load64_zero(k + (<usize>body << 1)))));
  }
  return a;
}

/** scores[t] = scale·(q·k_t) for t < ntok, as scores_f32 (4 tokens per q load); returns the largest. */
export function scores_f16(data: usize, q: usize, D: i32, ntok: i32, scale: f32, out: usize): f32 {
  const rowBytes = <usize>D << 1;
  const body = D & ~7;
  let mx = f32x4.splat(-Infinity);
  let t = 0;
  for (; t + 4 <= ntok; t += 4) {
    const k0 = data + <usize>t * rowBytes;
    const k1 = k0 + rowBytes, k2 = k1 + rowBytes, k3 = k2 + rowBytes;
    let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
    for (let c = 0; c < body; c += 8) {
      const o = <usize>c << 1;
      const ql = v128.load(q + (o << 1)), qh = v128.load(q + (o << 1), 16);
      const h0 = v128.load(k0 + o), h1 = v128.load(k1 + o), h2 = v128.load(k2 + o), h3 = v128.load(k3 + o);
      a0 = f32x4.add(a0, f32x4.add(f32x4.mul(ql, f16x8_low_to_f32x4(h0)), f32x4.mul(qh, f16x8_high_to_f32x4(h0))));
      a1 = f32x4.add(a1, f32x4.add(f32x4.mul(ql, f16x8_low_to_f32x4(h1)), f32x4.mul(qh, f16x8_high_to_f32x4(h1))));
      a2 = f32x4.add(a2, f32x4.add(f32x4.mul(ql, f16x8_low_to_f32x4(h2)), f32x4.mul(qh, f16x8_high_to_f32x4(h2))));
      a3 = f32x4.add(a3, f32x4.add(f32x4.mul(ql, f16x8_low_to_f32x4(h3)), f32x4.mul(qh, f16x8_high_to_f32x4(h3))));
    }
    if (body < D) {
      const o = <usize>body << 1;
      const qv = v128.load(q + (o << 1));
      a0 = f32x4.add(a0, f32x4.mul(qv, f16x8_low_to_f32x4(v128.load64_zero(k0 + o))));
      a1 = f32x4.add(a1, f32x4.mul(qv, f16x8_low_to_f32x4(v128.load64_zero(k1 + o))));
      a2 = f32x4.add(a2, f32x4.mul(qv, f16x8_low_to_f32x4(v128.load64_zero(k2 + o))));
      a3 = f32x4.add(a3, f32x4.mul(qv, f16x8_low_to_f32x4(v128.load64_zero(k3 + o))));
    }
    const s = f32x4.mul(hsum4_f32x4(a0, a1, a2, a3), f32x4.splat(scale));
    v128.store(out + (<usize>t << 2), s);
    mx = f32x4.pmax(mx, s);
  }
  let m = hmax_f32x4(mx);
  for (; t < ntok; t++) {
    const s = hsum_f32x4(dot_row(q, data + <usize>t * rowBytes, body, D)) * scale;
    store<f32>(out + (<usize>t << 2), s);
    m = max(m, s);
  }
  return m;
}

/** acc[c] += w_t·v_tc over t < ntok, as accum_f32 (16 channels per block, tokens inner). */
export function accum_f16(acc: usize, data: usize, P: i32, D: i32, ntok: i32, w: usize): void {
  const rowBytes = <usize>D << 1;
  const v = data + <usize>P * rowBytes;
  let c = 0;
  for (; c + 16 <= D; c += 16) {
    const a = acc + (<usize>c << 2);
    let a0 = v128.load(a), a1 = v128.load(a, 16), a2 = v128.load(a, 32), a3 = v128.load(a, 48);
    let p = v + (<usize>c << 1);
    for (let t = 0; t < ntok; t++) {
      const wt = v128.load32_splat(w + (<usize>t << 2));
      const h0 = v128.load(p), h1 = v128.load(p, 16);
      a0 = f32x4.add(a0, f32x4.mul(wt, f16x8_low_to_f32x4(h0)));
      a1 = f32x4.add(a1, f32x4.mul(wt, f16x8_high_to_f32x4(h0)));
      a2 = f32x4.add(a2, f32x4.mul(wt, f16x8_low_to_f32x4(h1)));
      a3 = f32x4.add(a3, f32x4.mul(wt, f16x8_high_to_f32x4(h1)));
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
    let p = v + (<usize>c << 1);
    for (let t = 0; t < ntok; t++) {
      a0 = f32x4.add(a0, f32x4.mul(v128.load32_splat(w + (<usize>t << 2)), f16x8_low_to_f32x4(v128.load64_zero(p))));
      p += rowBytes;
    }
    v128.store(a, a0);
  }
}
