import type { Kernels } from '../runtime/kernels.js';
import type { KVCache } from '../kv/cache.js';
import type { LlamaConfig } from '../model/config.js';

/**
 * Exact attention of one token (query q, all heads) over the first nPos cached positions of a layer, into out.
 * scores is scratch of at least nPos floats.
 */
export function attendFull(k: Kernels, c: LlamaConfig, kv: KVCache, layer: number, out: number, q: number, scores: number, nPos: number): void {
  const kernel = kv.type === 'f16' ? k.attention_f16 : k.attention_f32;
  kernel(out, q, kv.keys(layer), kv.values(layer), scores, c.nHeads, c.nKvHeads, c.headDim, kv.ctx, nPos, 1 / Math.sqrt(c.headDim));
}
