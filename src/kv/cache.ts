import { EdgeLLMError } from '../errors.js';
import type { Arena } from '../plan/arena.js';
import type { Kernels } from '../runtime/kernels.js';
import type { LlamaConfig } from '../model/config.js';

/**
 * Page types. f32 is the reference; f16 halves it (llama.cpp's default cache type); int8 and int4 quantize keys per
 * channel within a page and values per token (KIVI), with integer Q·K in the attention kernel.
 */
export type KVType = 'f32' | 'f16' | 'int8' | 'int4';
export const KV_TYPES: readonly KVType[] = ['f32', 'f16', 'int8', 'int4'];
/** The kernels' type codes (assembly/attention.ts). */
export const KV_TYPE_CODE: Record<KVType, number> = { f32: 0, f16: 1, int8: 2, int4: 3 };

export interface KVOptions {
  /** page type (default 'f32') */
  type?: KVType;
  /** tokens per page (default 32) */
  pageTokens?: number;
}

export const DEFAULT_PAGE_TOKENS = 32;
const MAX_PAGE_TOKENS = 1024;

/** Bytes of one page's data (keys and values of P tokens of one KV head), as the kernels lay it out. */
export function pageBytes(type: KVType, P: number, D: number): number {
  switch (type) {
    case 'f32': return 8 * P * D;
    case 'f16': return 4 * P * D;
    case 'int8': return 2 * P * D + 8 * P;
    case 'int4': return P * D + 8 * P;
  }
}

/** A page descriptor for the attention kernel: data, summary, tokens used, type code (4 × i32). */
export const DESC_INTS = 4;

/**
 * The paged KV cache. A page holds P tokens of one layer × one KV head, keys and values apart. Tokens are appended
 * to a full-precision tail page per layer × KV head; when the tail fills it is sealed (quantized into its page, with
 * a per-channel key min/max summary that both dequantizes the keys and bounds q·k for page selection).
 *
 * Every sealed page also has a descriptor in a per-(layer, head) table, followed by one slot for the tail, so full
 * attention passes the table as it is, and a sparse policy writes its own list.
 */
export class KVCache {
  readonly P: number;
  readonly pagesPerHead: number;
  readonly pageBytes: number;
  /** bytes of cache (page data + summaries) per token, all layers */
  readonly bytesPerToken: number;
  private readonly data: number;
  private readonly summaries: number;
  private readonly tails: number;
  private readonly table: number;
  private readonly D: number;
  private readonly heads: number;
  private heap!: Float32Array;
  private ints!: Int32Array;

  constructor(arena: Arena, private readonly c: LlamaConfig, readonly ctx: number, opts: KVOptions = {}) {
    const type = (this.type = opts.type ?? 'f32');
    if (!KV_TYPES.includes(type)) throw new EdgeLLMError('BAD_ARGUMENT', `kv.type must be one of ${KV_TYPES.join(', ')}, got ${JSON.stringify(type)}`);
    const P = (this.P = opts.pageTokens ?? DEFAULT_PAGE_TOKENS);
    if (!Number.isSafeInteger(P) || P < 4 || P > MAX_PAGE_TOKENS || P % 4 !== 0) {
      throw new EdgeLLMError('BAD_ARGUMENT', `kv.pageTokens must be a multiple of 4 in 4..${MAX_PAGE_TOKENS}, got ${P}`);
    }
    const D = (this.D = c.headDim);
    if ((type === 'int4' && D % 2 !== 0) || D % 4 !== 0) throw new EdgeLLMError('UNSUPPORTED_ARCH', `head dim ${D} is not a multiple of 4`);
    this.heads = c.nLayers * c.nKvHeads;
    this.pagesPerHead = Math.ceil(ctx / P);
    this.pageBytes = pageBytes(type, P, D);
    const pages = this.heads * this.pagesPerHead;
    this.data = arena.reserve(`kv.pages (${type}, ${P} tokens)`, pages * this.pageBytes);
    this.summaries = arena.reserve('kv.summaries', pages * 8 * D);
    this.tails = arena.reserve('kv.tails', this.heads * 8 * P * D);
    this.table = arena.reserve('kv.page table', this.heads * (this.pagesPerHead + 1) * DESC_INTS * 4);
    this.bytesPerToken = (this.heads * (this.pageBytes + 8 * D)) / P;
  }

  readonly type: KVType;

  /** Views of the memory, once it exists. */
  bind(memory: WebAssembly.Memory): void {
    this.heap = new Float32Array(memory.buffer);
    this.ints = new Int32Array(memory.buffer);
  }

  private head(layer: number, h: number): number {
    return layer * this.c.nKvHeads + h;
  }

  pageData(layer: number, h: number, page: number): number {
    return this.data + (this.head(layer, h) * this.pagesPerHead + page) * this.pageBytes;
  }

  /** kmin[D], kmax[D] of a sealed page; the summaries of one head are back to back (stride 8·D). */
  summary(layer: number, h: number, page: number): number {
    return this.summaries + (this.head(layer, h) * this.pagesPerHead + page) * 8 * this.D;
  }

  /** The tail page: f32 keys [P][D] then values [P][D], the f32 page layout. */
  private tail(layer: number, h: number): number {
    return this.tails + this.head(layer, h) * 8 * this.P * this.D;
  }

  /** The descriptor table of one head: sealed pages in order, then room for the tail. */
  descriptors(layer: number, h: number): number {
    return this.table + this.head(layer, h) * (this.pagesPerHead + 1) * DESC_INTS * 4;
  }

  /**
   * Stores one token's keys and values (f32 [nKvHeads·D] at k and v) at position pos of a layer, sealing the page it
   * completes. Positions are appended in order (a new sequence starts again at 0); attention then reads pos + 1
   * positions, so a batch interleaves append and attend token by token and gives the same bits as one at a time.
   */
  append(kernels: Kernels, layer: number, k: number, v: number, pos: number): void {
    const { P, D } = this;
    const slot = pos % P;
    const page = (pos - slot) / P;
    for (let h = 0; h < this.c.nKvHeads; h++) {
      const tail = this.tail(layer, h) / 4;
      this.heap.copyWithin(tail + slot * D, k / 4 + h * D, k / 4 + (h + 1) * D);
      this.heap.copyWithin(tail + (P + slot) * D, v / 4 + h * D, v / 4 + (h + 1) * D);
      const desc = this.descriptors(layer, h) / 4 + page * DESC_INTS;
      if (slot === P - 1) {
        const data = this.pageData(layer, h, page), summary = this.summary(layer, h, page);
        kernels.kv_seal_page(KV_TYPE_CODE[this.type], tail * 4, (tail + P * D) * 4, P, D, data, summary);
        this.setDescriptor(desc, data, summary, P, KV_TYPE_CODE[this.type]);
      } else {
        this.setDescriptor(desc, tail * 4, 0, slot + 1, KV_TYPE_CODE.f32);
      }
    }
  }

  private setDescriptor(at: number, data: number, summary: number, ntok: number, type: number): void {
    this.ints[at] = data;
    this.ints[at + 1] = summary;
    this.ints[at + 2] = ntok;
    this.ints[at + 3] = type;
  }
}
