import type { Arena } from '../plan/arena.js';
import type { LlamaConfig } from '../model/config.js';

/**
 * The KV cache: f32 keys and values, per layer [nKvHeads][ctx][headDim], each KV head's run contiguous (the shape a
 * KV page takes). The model appends into it; attention reads it through keys()/values().
 */
export class KVCache {
  readonly bytesPerToken: number;
  private readonly kBase: number;
  private readonly vBase: number;
  private readonly layerBytes: number;

  constructor(arena: Arena, private readonly c: LlamaConfig, readonly ctx: number) {
    this.layerBytes = c.nKvHeads * ctx * c.headDim * 4;
    this.kBase = arena.reserve('kv.keys', c.nLayers * this.layerBytes);
    this.vBase = arena.reserve('kv.values', c.nLayers * this.layerBytes);
    this.bytesPerToken = 2 * c.nLayers * c.nKvHeads * c.headDim * 4;
  }

  keys(layer: number): number {
    return this.kBase + layer * this.layerBytes;
  }

  values(layer: number): number {
    return this.vBase + layer * this.layerBytes;
  }

  /** Stores ntok tokens' keys and values ([ntok][nKvHeads·headDim] at k and v) at positions pos..pos+ntok-1. */
  append(heap: Float32Array, layer: number, k: number, v: number, pos: number, ntok: number): void {
    const { nKvHeads, headDim } = this.c;
    const kvDim = nKvHeads * headDim;
    for (const [src, base] of [[k, this.keys(layer)], [v, this.values(layer)]]) {
      for (let t = 0; t < ntok; t++) {
        for (let g = 0; g < nKvHeads; g++) {
          const from = (src >> 2) + t * kvDim + g * headDim;
          const to = (base >> 2) + (g * this.ctx + pos + t) * headDim;
          heap.copyWithin(to, from, from + headDim);
        }
      }
    }
  }
}
