// Attention of one token over the paged KV cache: for each KV head, a list of pages (any mix of types) runs through
// an online softmax. Per query head the state is the running max M, the running sum of exp L, the running Σ p·vmin
// B (for values quantized per token) and the unnormalized output acc; attend_end gives out = (acc + B) / L.

import { exp_f32x4, hsum_f32x4 } from './common';
import { accum_f32, scores_f32 } from './kv_f32';
import { accum_f16, scores_f16 } from './kv_f16';
import { accum_int8, scores_int8 } from './kv_int8';
import { accum_int4, scores_int4 } from './kv_int4';

export const KV_F32 = 0;
export const KV_F16 = 1;
export const KV_INT8 = 2;
export const KV_INT4 = 3;

/** Empty states for nq heads: M = −inf, L = B = 0, acc = 0. */
export function attend_begin(state: usize, nq: i32, D: i32): void {
  const headBytes = <usize>(4 + D) << 2;
  for (let j = 0; j < nq; j++) {
    const st = state + <usize>j * headBytes;
    memory.fill(st, 0, headBytes);
    store<f32>(st, -Infinity);
  }
}

/**
 * Adds pages to nq heads' states. q: f32 [nq][D] (RoPE'd). descs: i32 [ndesc][4] = {data, summary, ntok, type}: the
 * first ntok (1..P) tokens of each page count. Pages outer and heads inner, so a page comes from memory once for
 * the whole group and its other heads read it from L1. scratch: 4·P + 4·D + 64 bytes (scores, then the quantized
 * query).
 *
 * skip: the first descriptor's leading tokens that are masked out (a sliding window starting inside that page): their
 * scores become −inf, so their weights are exactly 0. softcap c > 0: each score s = scale·q·k becomes c·tanh(s/c)
 * (Gemma 2), in ggml's order (× the f32 1/c, tanhf, × c); 0 (or NaN, from a caller that passes no value) is none.
 */
export function attend_pages(
  state: usize, q: usize, nq: i32, D: i32, P: i32, descs: usize, ndesc: i32, scale: f32, scratch: usize,
  skip: i32, softcap: f32,
): void {
  const headBytes = <usize>(4 + D) << 2;
  const qBytes = <usize>D << 2;
  const qi = scratch + (<usize>P << 2);
  for (let i = 0; i < ndesc; i++) {
    const d = descs + (<usize>i << 4);
    const data = <usize>load<u32>(d);
    const summary = <usize>load<u32>(d, 4);
    const ntok = min(load<i32>(d, 8), P);
    const type = load<i32>(d, 12);
    const masked = i == 0 ? max(skip, 0) : 0;
    if (ntok <= masked) continue;
    for (let j = 0; j < nq; j++) {
      const st = state + <usize>j * headBytes;
      const qj = q + <usize>j * qBytes;
      let m: f32;
      if (type == KV_INT8) m = scores_int8(data, summary, qj, D, ntok, scale, scratch, qi);
      else if (type == KV_INT4) m = scores_int4(data, summary, qj, D, ntok, scale, scratch, qi);
      else if (type == KV_F16) m = scores_f16(data, qj, D, ntok, scale, scratch);
      else m = scores_f32(data, qj, D, ntok, scale, scratch);
      if (masked > 0 || softcap > 0) m = mask_and_cap(scratch, ntok, masked, softcap);
      let M = load<f32>(st);
      if (m > M) {
        // e^(M − m) is 0 on the first page (M = −inf), which zeroes the empty state without a NaN
        rescale(st, D, f32x4.extract_lane(exp_f32x4(f32x4.splat(M - m)), 0));
        M = m;
        store<f32>(st, M);
      }
      store<f32>(st, load<f32>(st, 4) + softmax_weights(scratch, ntok, M), 4);
      let b: f32 = 0;
      if (type == KV_INT8) b = accum_int8(st + 16, data, P, D, ntok, scratch);
      else if (type == KV_INT4) b = accum_int4(st + 16, data, P, D, ntok, scratch);
      else if (type == KV_F16) accum_f16(st + 16, data, P, D, ntok, scratch);
      else accum_f32(st + 16, data, P, D, ntok, scratch);
      if (type == KV_INT8 || type == KV_INT4) store<f32>(st, load<f32>(st, 8) + b, 8);
    }
  }
}

/**
 * Scores t < masked become −inf, the others c·tanh(s/c) when softcap c > 0; returns the largest of the others (taken
 * after capping, so the running max is the max of what softmax_weights exponentiates, whatever tanhf's rounding).
 */
function mask_and_cap(s: usize, ntok: i32, masked: i32, softcap: f32): f32 {
  for (let t = 0; t < masked; t++) store<f32>(s + (<usize>t << 2), -Infinity);
  let m: f32 = -Infinity;
  if (softcap > 0) {
    const inv: f32 = <f32>1 / softcap;
    for (let t = masked; t < ntok; t++) {
      const p = s + (<usize>t << 2);
      const x = Mathf.tanh(load<f32>(p) * inv) * softcap;
      store<f32>(p, x);
      m = max(m, x);
    }
  } else {
    for (let t = masked; t < ntok; t++) m = max(m, load<f32>(s + (<usize>t << 2)));
  }
  return m;
}

/** L, B and acc of one head times r (the old max's weights re-expressed against the new max). */
function rescale(st: usize, D: i32, r: f32): void {
  store<f32>(st, load<f32>(st, 4) * r, 4);
  store<f32>(st, load<f32>(st, 8) * r, 8);
  const rv = f32x4.splat(r);
  const acc = st + 16;
  for (let c = 0; c < D; c += 4) {
    const a = acc + (<usize>c << 2);
    v128.store(a, f32x4.mul(v128.load(a), rv));
  }
}

/**
 * p_t = e^(s_t − M) in place over t < ntok, four at a time (the scores past ntok, up to the next multiple of 4, are
 * set to −inf first, so they give 0 and the loop needs no tail); returns Σ p_t (4 lanes, then hsum_f32x4).
 */
function softmax_weights(s: usize, ntok: i32, M: f32): f32 {
  const n4 = (ntok + 3) & ~3;
  for (let t = ntok; t < n4; t++) store<f32>(s + (<usize>t << 2), -Infinity);
  const mv = f32x4.splat(M);
  let sum = f32x4.splat(0);
  for (let t = 0; t < n4; t += 4) {
    const p = s + (<usize>t << 2);
    const e = exp_f32x4(f32x4.sub(v128.load(p), mv));
    v128.store(p, e);
    sum = f32x4.add(sum, e);
  }
  return hsum_f32x4(sum);
}

/**
 * One KV head's whole attention in one call: attend_begin, attend_pages over descs, attend_end into out. The same
 * operations in the same order as the three calls, so the same bits; one call is what a thread runs (threads split
 * attention by KV head, each with its own state and scratch).
 */
export function attend_head(
  state: usize, q: usize, nq: i32, D: i32, P: i32, descs: usize, ndesc: i32, scale: f32, scratch: usize,
  skip: i32, softcap: f32, out: usize,
): void {
  attend_begin(state, nq, D);
  attend_pages(state, q, nq, D, P, descs, ndesc, scale, scratch, skip, softcap);
  attend_end(state, out, nq, D);
}

/** out_j = (acc_j + B_j) / L_j, f32 [nq][D]. */
export function attend_end(state: usize, out: usize, nq: i32, D: i32): void {
  const headBytes = <usize>(4 + D) << 2;
  for (let j = 0; j < nq; j++) {
    const st = state + <usize>j * headBytes;
    const L = f32x4.splat(load<f32>(st, 4));
    const B = f32x4.splat(load<f32>(st, 8));
    const o = out + ((<usize>j * D) << 2);
    for (let c = 0; c < D; c += 4) {
      const x = <usize>c << 2;
      v128.store(o + x, f32x4.div(f32x4.add(v128.load(st + 16 + x), B), L));
    }
  }
}

/**
 * Quest page scores: out[p] = Σ_j Σ_c max(q_jc·kmin_c, q_jc·kmax_c), an upper bound of Σ_j q_j·k over every key k of
 * page p (its summary at summaries + p·8·D). Since kmax ≥ kmin, each term is q_jc·kmax_c when q_jc > 0 and q_jc·kmin_c
 * otherwise, so the group folds first into qpos_c = Σ_j max(q_jc, 0) and qneg_c = Σ_j min(q_jc, 0) (in scratch, 8·D
 * bytes), and a page costs one 2·D dot product, whatever the group size: out[p] = Σ_c qneg_c·kmin_c + qpos_c·kmax_c.
 */
export function quest_scores(q: usize, nq: i32, D: i32, summaries: usize, npages: i32, out: usize, scratch: usize): void {
  const rowBytes = <usize>D << 2;
  const qneg = scratch, qpos = scratch + rowBytes;
  const zero = f32x4.splat(0);
  for (let c = 0; c < D; c += 4) {
    const o = <usize>c << 2;
    let neg = zero, pos = zero;
    for (let j = 0; j < nq; j++) {
      const qv = v128.load(q + <usize>j * rowBytes + o);
      neg = f32x4.add(neg, f32x4.pmin(qv, zero));
      pos = f32x4.add(pos, f32x4.pmax(qv, zero));
    }
    v128.store(qneg + o, neg);
    v128.store(qpos + o, pos);
  }
  // [qneg | qpos] and [kmin | kmax] line up: one dot product of 2·D lanes per page.
  const n = D << 1;
  for (let p = 0; p < npages; p++) {
    const s = summaries + (<usize>p * rowBytes << 1);
    let acc = zero;
    for (let c = 0; c < n; c += 4) {
      const o = <usize>c << 2;
      acc = f32x4.add(acc, f32x4.mul(v128.load(scratch + o), v128.load(s + o)));
    }
    store<f32>(out + (<usize>p << 2), hsum_f32x4(acc));
  }
}

/** out[i] = exp_f32x4(x[i]) for n floats (a test hook for the softmax's exp). */
export function exp_f32(x: usize, out: usize, n: i32): void {
  let i = 0;
  for (; i + 4 <= n; i += 4) v128.store(out + (<usize>i << 2), exp_f32x4(v128.load(x + (<usize>i << 2))));
  for (; i < n; i++) store<f32>(out + (<usize>i << 2), f32x4.extract_lane(exp_f32x4(f32x4.splat(load<f32>(x + (<usize>i << 2)))), 0));
}
