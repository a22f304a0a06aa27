import type { Arena } from '../plan/arena.js';
import type { Kernels } from '../runtime/kernels.js';
import type { KVCache } from '../kv/cache.js';
import type { LlamaConfig } from '../model/config.js';

/** Working memory of the attention kernels: per query head of a group, the online-softmax state; and scratch. */
export interface AttentionState {
  state: number;
  scratch: number;
}

export function planAttention(arena: Arena, c: LlamaConfig, kv: KVCache): AttentionState {
  const group = c.nHeads / c.nKvHeads;
  return {
    state: arena.reserve('attention.state', group * (4 + c.headDim) * 4),
    scratch: arena.reserve('attention.scratch', 4 * kv.P + 4 * c.headDim + 64),
  };
}

/**
 * Exact attention of one token (query q, all heads) over positions 0..nPos-1 of a layer, into out: for each KV head,
 * every page of its table (sealed pages, then the tail) through the kernels' online softmax, read once for the
 * whole query group.
 */
export function attend(k: Kernels, c: LlamaConfig, kv: KVCache, a: AttentionState, layer: number, out: number, q: number, nPos: number): void {
  const D = c.headDim, group = c.nHeads / c.nKvHeads;
  const pages = Math.ceil(nPos / kv.P);
  const scale = 1 / Math.sqrt(D);
  for (let h = 0; h < c.nKvHeads; h++) {
    const at = h * group * D * 4;
    k.attend_begin(a.state, group, D);
    k.attend_pages(a.state, q + at, group, D, kv.P, kv.descriptors(layer, h), pages, scale, a.scratch);
    k.attend_end(a.state, out + at, group, D);
  }
}
