import { EdgeLLMError } from '../errors.js';
import type { Arena } from '../plan/arena.js';
import type { Kernels } from '../runtime/kernels.js';
import { DESC_INTS, pinnedPages, type KVCache } from '../kv/cache.js';
import type { LlamaConfig } from '../model/config.js';
import type { KernelPool } from '../runtime/pool.js';

/** Attention multiply-adds of a token below which a layer's heads stay on one thread (a dispatch costs a few µs). */
const SPLIT_MIN_MACS = 1 << 16;

/**
 * Which pages a query reads. 'full': every page. 'sparse' (Quest): the sink pages (the first sinkTokens tokens),
 * the pages of the recent window (the last windowTokens tokens, and always the page being filled), and the topKPages
 * other pages whose key summaries bound q·k highest for the head group's queries. Both run the same kernels over a
 * list of pages; a sparse selection that covers every page is full attention, bit for bit. Either applies to the global
 * layers: a sliding-window layer always reads exactly its window (see attend).
 */
export interface AttentionOptions {
  mode?: 'full' | 'sparse';
  topKPages?: number;
  windowTokens?: number;
  sinkTokens?: number;
  /**
   * Also run full attention beside the selection and record the share of the softmax mass the selection keeps, per
   * layer (attentionStats().massRecall). A diagnostic: it doubles the attention work.
   */
  measureRecall?: boolean;
}

/** Measured defaults: about 256 tokens read per query with pages of 32 (a sink page, 64 + a page of window, 4 pages). */
export const SPARSE_DEFAULTS = { topKPages: 4, windowTokens: 64, sinkTokens: 4 } as const;

export interface AttentionPolicy {
  sparse: boolean;
  topKPages: number;
  windowTokens: number;
  sinkTokens: number;
  measureRecall: boolean;
}

export function attentionPolicy(opts: AttentionOptions = {}): AttentionPolicy {
  const mode = opts.mode ?? 'full';
  if (mode !== 'full' && mode !== 'sparse') throw new EdgeLLMError('BAD_ARGUMENT', `attention.mode must be 'full' or 'sparse', got ${JSON.stringify(mode)}`);
  const int = (name: 'topKPages' | 'windowTokens' | 'sinkTokens') => {
    const v = opts[name] ?? SPARSE_DEFAULTS[name];
    if (!Number.isSafeInteger(v) || v < 0 || v > 1 << 24) throw new EdgeLLMError('BAD_ARGUMENT', `attention.${name} must be an integer in 0..${1 << 24}, got ${v}`);
    return v;
  };
  return { sparse: mode === 'sparse', topKPages: int('topKPages'), windowTokens: int('windowTokens'), sinkTokens: int('sinkTokens'), measureRecall: opts.measureRecall === true };
}

/** The positions a policy always reads from the start of the context (the KV cache keeps their pages hot). */
export function sinkTokens(policy: AttentionPolicy): number {
  return policy.sparse ? policy.sinkTokens : 0;
}

/** Counters since the last attentionStats() call. */
export interface AttentionStats {
  /** (token, layer, KV head) attention calls */
  queries: number;
  /** mean tokens read per call (every position under full attention; its window on a sliding-window layer) */
  meanTokensRead: number;
  /** mean positions available per call */
  meanPositions: number;
  /** page summaries scored */
  pagesScored: number;
  /** with measureRecall: per layer, the mean share of full attention's softmax mass on the selected tokens */
  massRecall?: number[];
}

/** Working memory of the attention kernels, and the policy with its counters. */
export interface AttentionState {
  policy: AttentionPolicy;
  /** online-softmax state per query head of a group; a second one for measureRecall */
  state: number;
  fullState: number;
  scratch: number;
  /** Quest scores of one head's pages (f32) */
  scores: number;
  /** a page list for attend_pages: descriptors copied from the table, staged pages redirected */
  list: number;
  listLength: number;
  /** the selected page indices, reused across calls */
  selected: Int32Array;
  /** the pool, when there is one (Llama sets it), and per KV head the state, scratch and page list its part attends with */
  pool?: KernelPool;
  headState: number[];
  headScratch: number[];
  headList: number[];
  counters: { queries: number; tokensRead: number; positions: number; pagesScored: number; massSum: Float64Array; massCount: Float64Array };
  /** views of the memory (bindAttention) */
  f32: Float32Array;
  i32: Int32Array;
}

export function bindAttention(a: AttentionState, memory: WebAssembly.Memory): void {
  a.f32 = new Float32Array(memory.buffer);
  a.i32 = new Int32Array(memory.buffer);
}

export function planAttention(arena: Arena, c: LlamaConfig, kv: KVCache, policy: AttentionPolicy, threads = 1): AttentionState {
  const group = c.nHeads / c.nKvHeads;
  const stateBytes = group * (4 + c.headDim) * 4;
  // attend_pages: P scores and the quantized query; quest_scores: the group's query folded into 2·D floats
  const scratchBytes = Math.max(4 * kv.P + 4 * c.headDim + 64, 8 * c.headDim);
  const listLength = Math.min(kv.pagesPerHead, Math.max(kv.plan.stagingSlots, 64));
  const state = arena.reserve('attention.state', stateBytes);
  const scratch = arena.reserve('attention.scratch', scratchBytes);
  // with threads, the KV heads are parts of one job, run by any thread at once: each its own state, scratch and list
  // (of every page: a window's or a selection's pages are fewer)
  const heads = Array.from({ length: threads > 1 ? c.nKvHeads : 0 }, (_, h) => [
    arena.reserve(`attention.state (head ${h})`, stateBytes), arena.reserve(`attention.scratch (head ${h})`, scratchBytes),
    arena.reserve(`attention.page list (head ${h})`, kv.pagesPerHead * DESC_INTS * 4),
  ]);
  return {
    policy,
    state,
    fullState: arena.reserve('attention.state (recall)', policy.measureRecall ? stateBytes : 0),
    scratch,
    headState: heads.map(([s]) => s),
    headScratch: heads.map(([, s]) => s),
    headList: heads.map(([, , l]) => l),
    scores: arena.reserve('attention.page scores', policy.sparse ? kv.pagesPerHead * 4 : 0),
    list: arena.reserve('attention.page list', listLength * DESC_INTS * 4),
    listLength,
    selected: new Int32Array(kv.pagesPerHead),
    counters: { queries: 0, tokensRead: 0, positions: 0, pagesScored: 0, massSum: new Float64Array(c.nLayers), massCount: new Float64Array(c.nLayers) },
    f32: new Float32Array(0),
    i32: new Int32Array(0),
  };
}

/** The counters since the last call, then zeroed. */
export function takeAttentionStats(a: AttentionState): AttentionStats {
  const n = a.counters;
  const stats: AttentionStats = {
    queries: n.queries,
    meanTokensRead: n.queries ? n.tokensRead / n.queries : 0,
    meanPositions: n.queries ? n.positions / n.queries : 0,
    pagesScored: n.pagesScored,
  };
  if (a.policy.measureRecall) stats.massRecall = Array.from(n.massSum, (s, l) => (n.massCount[l] ? s / n.massCount[l] : 1));
  n.queries = n.tokensRead = n.positions = n.pagesScored = 0;
  n.massSum.fill(0);
  n.massCount.fill(0);
  return stats;
}

/**
 * Attention of one token (query q, all heads) over positions 0..nPos-1 of a layer, into out, with the model's score
 * soft-cap (config.attnSoftcap) applied in the kernel. For each KV head the policy picks pages, and the kernels run an
 * online softmax over them, each page read once for the whole query group. With every page hot and every page
 * selected, the head's table goes to the kernel as it is.
 *
 * A sliding-window layer (kv.window(layer) = W > 0) reads exactly its window, positions nPos − W..nPos − 1, and takes
 * no sparse selection: its pages are already bounded by W and always hot (kv/cache.ts), and the window is the model's
 * own attention, not an approximation of it.
 */
export function attend(k: Kernels, c: LlamaConfig, kv: KVCache, a: AttentionState, layer: number, out: number, q: number, nPos: number): void {
  const D = c.headDim, group = c.nHeads / c.nKvHeads, P = kv.P;
  const pages = Math.ceil(nPos / P);
  const scale = c.attnScale, cap = c.attnSoftcap;
  const W = kv.window(layer);
  const n = a.counters;
  const pool = a.pool;
  const reads = W > 0 ? Math.min(nPos, W) : a.policy.sparse ? Math.min(nPos, a.policy.topKPages * P + a.policy.windowTokens) : nPos;
  if (pool && c.nKvHeads > 1 && !kv.tiered && !a.policy.measureRecall && 2 * reads * D * c.nHeads >= SPLIT_MIN_MACS) {
    attendHeadsInParts(k, c, kv, a, pool, layer, out, q, nPos);
    return;
  }
  for (let h = 0; h < c.nKvHeads; h++) {
    const qh = q + h * group * D * 4;
    n.queries++;
    n.positions += nPos;
    k.attend_begin(a.state, group, D);
    if (W > 0) {
      n.tokensRead += attendWindow(k, kv, a, layer, h, qh, group, nPos, W, scale, cap);
    } else {
      const count = a.policy.sparse ? selectPages(k, kv, a, layer, h, qh, group, nPos) : pages;
      if (count === pages && !kv.tiered) {
        k.attend_pages(a.state, qh, group, D, P, kv.descriptors(layer, h), pages, scale, a.scratch, 0, cap);
        n.tokensRead += nPos;
      } else {
        n.tokensRead += runPages(k, kv, a, layer, h, qh, group, count === pages ? null : a.selected, count, a.state, scale, cap);
        if (a.policy.measureRecall && count < pages) {
          k.attend_begin(a.fullState, group, D);
          runPages(k, kv, a, layer, h, qh, group, null, pages, a.fullState, scale, cap);
          recordRecall(a, layer, group, D);
        }
      }
    }
    k.attend_end(a.state, out + h * group * D * 4, group, D);
  }
}

/**
 * The pages of a sliding-window layer's head for positions nPos − W..nPos − 1 (all of them while nPos ≤ W). They are
 * consecutive and at most pagesKept + 1, the size of the head's descriptor ring, so they sit in it as one run or two
 * (wrapping): `run` pages from ring entry `at`, then the rest from entry 0, in page order. The tokens of the first page
 * before the window (`skip`) are masked in the kernel.
 */
function windowPages(kv: KVCache, layer: number, nPos: number, W: number) {
  const P = kv.P;
  const first = Math.max(0, nPos - W);
  const firstPage = Math.floor(first / P);
  const count = Math.ceil(nPos / P) - firstPage;
  const at = firstPage % (kv.pagesKept(layer) + 1);
  return { count, at, run: Math.min(count, kv.pagesKept(layer) + 1 - at), skip: first - firstPage * P, tokens: nPos - first };
}

/** One KV head of a sliding-window layer (windowPages) through attend_pages. Returns the tokens read. */
function attendWindow(
  k: Kernels, kv: KVCache, a: AttentionState, layer: number, h: number, q: number, group: number, nPos: number,
  W: number, scale: number, cap: number,
): number {
  const { P, headDim: D } = kv;
  const { count, at, run, skip, tokens } = windowPages(kv, layer, nPos, W);
  const table = kv.descriptors(layer, h);
  k.attend_pages(a.state, q, group, D, P, table + at * DESC_INTS * 4, run, scale, a.scratch, skip, cap);
  if (run < count) k.attend_pages(a.state, q, group, D, P, table, count - run, scale, a.scratch, 0, cap);
  return tokens;
}

/**
 * With threads: a layer's KV heads as the parts of one job, each attending with its own state, scratch and page list
 * (attend_head: begin, pages and end in one call, the operations of the one-thread path in the same order, so the same
 * bits). The lists are made first, on this thread: a window's one or two runs of its ring, a sparse selection (its
 * scores are computed here, head by head), or, with every page read, the head's table as it is. A tiered cache stages
 * warm pages into shared slots, so it stays on one thread (attend's caller checks).
 */
function attendHeadsInParts(k: Kernels, c: LlamaConfig, kv: KVCache, a: AttentionState, pool: KernelPool, layer: number, out: number, q: number, nPos: number): void {
  const D = c.headDim, group = c.nHeads / c.nKvHeads, P = kv.P, W = kv.window(layer), n = a.counters;
  const pages = Math.ceil(nPos / P);
  const ints = a.i32;
  const copy = (to: number, table: number, entries: ArrayLike<number> | null, from: number, count: number, offset: number) => {
    let tokens = 0;
    for (let i = 0; i < count; i++) {
      const src = table / 4 + (entries ? entries[i] : from + i) * DESC_INTS, dst = to / 4 + (offset + i) * DESC_INTS;
      for (let j = 0; j < DESC_INTS; j++) ints[dst + j] = ints[src + j];
      tokens += ints[src + 2];
    }
    return tokens;
  };
  const lists: Array<[list: number, count: number, skip: number]> = [];
  for (let h = 0; h < c.nKvHeads; h++) {
    const table = kv.descriptors(layer, h), list = a.headList[h];
    n.queries++;
    n.positions += nPos;
    if (W > 0) {
      const { count, at, run, skip, tokens } = windowPages(kv, layer, nPos, W);
      copy(list, table, null, at, run, 0);
      copy(list, table, null, 0, count - run, run);
      lists.push([list, count, skip]);
      n.tokensRead += tokens;
      continue;
    }
    const count = a.policy.sparse ? selectPages(k, kv, a, layer, h, q + h * group * D * 4, group, nPos) : pages;
    if (count === pages) {
      lists.push([table, pages, 0]);
      n.tokensRead += nPos;
    } else {
      n.tokensRead += copy(list, table, a.selected, 0, count, 0);
      lists.push([list, count, 0]);
    }
  }
  for (let h0 = 0; h0 < c.nKvHeads; h0 += pool.maxParts) {
    pool.runParts(Array.from({ length: Math.min(pool.maxParts, c.nKvHeads - h0) }, (_, i) => {
      const h = h0 + i, at = h * group * D * 4, [list, count, skip] = lists[h];
      return (t: Kernels) => t.attend_head(a.headState[h], q + at, group, D, P, list, count, c.attnScale, a.headScratch[h], skip, c.attnSoftcap, out + at);
    }));
  }
}

/**
 * Quest selection for one KV head: the sink pages, the window pages and the top-k others by page-summary score,
 * in page order, into a.selected; returns how many (every page when the policy covers them all).
 */
export function selectPages(k: Kernels, kv: KVCache, a: AttentionState, layer: number, h: number, q: number, group: number, nPos: number): number {
  const { P } = kv;
  const { topKPages, windowTokens, sinkTokens } = a.policy;
  const pages = Math.ceil(nPos / P);
  const sinks = pinnedPages(P, sinkTokens, pages);
  const windowStart = Math.max(sinks, Math.min(pages - 1, Math.floor(Math.max(0, nPos - windowTokens) / P)));
  const candidates = windowStart - sinks;
  const sel = a.selected;
  if (candidates <= topKPages) {
    for (let p = 0; p < pages; p++) sel[p] = p;
    return pages;
  }
  let n = 0;
  for (let p = 0; p < sinks; p++) sel[n++] = p;
  // Scores of the candidate pages (between the sinks and the window), then the top k of them, kept in page order.
  k.quest_scores(q, group, kv.headDim, kv.summary(layer, h, sinks), candidates, a.scores, a.scratch);
  a.counters.pagesScored += candidates;
  const chosen = topK(a.f32.subarray(a.scores / 4, a.scores / 4 + candidates), topKPages);
  for (const i of chosen) sel[n++] = sinks + i;
  for (let p = windowStart; p < pages; p++) sel[n++] = p;
  return n;
}

/** Indices of the k largest scores, ascending by index; ties go to the earlier page. */
function topK(scores: Float32Array, k: number): number[] {
  const best: number[] = []; // indices, by descending score
  for (let i = 0; i < scores.length; i++) {
    const s = scores[i];
    if (best.length === k && !(s > scores[best[k - 1]])) continue;
    let at = best.length < k ? best.length : k - 1;
    while (at > 0 && s > scores[best[at - 1]]) at--;
    best.splice(at, 0, i);
    if (best.length > k) best.pop();
  }
  return best.sort((x, y) => x - y);
}

/**
 * Runs pages (a list of page indices, or 0..count−1 when null) through attend_pages into state: descriptors copied
 * from the table into the page list, warm pages staged into staging slots, flushed to the kernel whenever the list or
 * the staging slots are full (the online softmax carries across calls, so the bits do not depend on where). Returns
 * the tokens read.
 */
function runPages(
  k: Kernels, kv: KVCache, a: AttentionState, layer: number, h: number, q: number, group: number,
  pages: Int32Array | null, count: number, state: number, scale: number, cap: number,
): number {
  const D = kv.headDim, P = kv.P, ints = a.i32;
  const table = kv.descriptors(layer, h) / 4;
  const list = a.list / 4;
  const stagingSlots = kv.plan.stagingSlots;
  let n = 0, staged = 0, tokens = 0;
  const flush = () => {
    k.attend_pages(state, q, group, D, P, a.list, n, scale, a.scratch, 0, cap);
    n = staged = 0;
  };
  for (let i = 0; i < count; i++) {
    const p = pages ? pages[i] : i;
    const from = table + p * DESC_INTS;
    const ntok = ints[from + 2];
    let data = ints[from];
    if (ntok === P && kv.tiered) {
      data = kv.hotAddress(layer, h, p);
      if (data < 0) {
        if (staged === stagingSlots) flush();
        data = kv.stage(layer, h, p, staged++);
      }
    }
    const to = list + n * DESC_INTS;
    ints[to] = data;
    ints[to + 1] = ints[from + 1];
    ints[to + 2] = ntok;
    ints[to + 3] = ints[from + 3];
    n++;
    tokens += ntok;
    if (n === a.listLength) flush();
  }
  if (n > 0) flush();
  return tokens;
}

/** Share of the full softmax mass on the selection, per query head: L_sel·e^(M_sel − M_all) / L_all. */
function recordRecall(a: AttentionState, layer: number, group: number, D: number): void {
  const f = a.f32;
  for (let j = 0; j < group; j++) {
    const sel = (a.state + j * (4 + D) * 4) / 4, all = (a.fullState + j * (4 + D) * 4) / 4;
    a.counters.massSum[layer] += (f[sel + 1] * Math.exp(f[sel] - f[all])) / f[all + 1];
    a.counters.massCount[layer]++;
  }
}
