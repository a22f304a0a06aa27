import { EdgeLLMError } from '../errors.js';
import type { Arena } from '../plan/arena.js';
import type { Kernels } from '../runtime/kernels.js';
import type { LlamaConfig } from '../model/config.js';

/**
 * Entry types. f32 is the reference; f16 halves the memory and is llama.cpp's default cache type, so its numbers
 * (and greedy tokens) come closest to llama.cpp's.
 */
export type KVType = 'f32' | 'f16';
export const KV_TYPES: readonly KVType[] = ['f32', 'f16'];
const BYTES: Record<KVType, number> = { f32: 4, f16: 2 };

/**
 * The KV cache: keys and values per layer as [nKvHeads][ctx][headDim], each KV head's run contiguous (the shape a KV
 * page takes). The model appends into it; attention reads it through keys()/values().
 */
export class KVCache {
  readonly bytesPerToken: number;
  private readonly kBase: number;
  private readonly vBase: number;
  private readonly layerBytes: number;

  constructor(arena: Arena, private readonly c: LlamaConfig, readonly ctx: number, readonly type: KVType = 'f32') {
    if (!KV_TYPES.includes(type)) throw new EdgeLLMError('BAD_ARGUMENT', `kv.type must be one of ${KV_TYPES.join(', ')}, got ${JSON.stringify(type)}`);
    this.layerBytes = c.nKvHeads * ctx * c.headDim * BYTES[type];
    this.kBase = arena.reserve('kv.keys', c.nLayers * this.layerBytes);
    this.vBase = arena.reserve('kv.values', c.nLayers * this.layerBytes);
    this.bytesPerToken = 2 * c.nLayers * c.nKvHeads * c.headDim * BYTES[type];
  }

  keys(layer: number): number {
    return this.kBase + layer * this.layerBytes;
  }

  values(layer: number): number {
    return this.vBase + layer * this.layerBytes;
  }

  /** Stores ntok tokens' keys and values ([ntok][nKvHeads·headDim] f32 at k and v) at positions pos..pos+ntok-1. */
  append(kernels: Kernels, layer: number, k: number, v: number, pos: number, ntok: number): void {
    const store = this.type === 'f16' ? kernels.kv_store_f16 : kernels.kv_store_f32;
    const { nKvHeads, headDim } = this.c;
    store(this.keys(layer), k, nKvHeads, headDim, this.ctx, pos, ntok);
    store(this.values(layer), v, nKvHeads, headDim, this.ctx, pos, ntok);
  }
}
