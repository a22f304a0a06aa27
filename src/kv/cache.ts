import { EdgeLLMError } from '../errors.js';
import { formatBytes, parseBytes } from '../plan/arena.js';
import { FilePageStore, HostPageStore, type PageStore } from './tiers.js';
import { spillSupport, type ModelSpill } from '../plan/spill.js';
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
  /**
   * The hot tier: wasm bytes for the whole KV cache (page slots, staging slots, the full-precision tails, summaries
   * and page tables), e.g. '8MB'. Default: every page hot. Pages that do not fit live in the warm tier, then the cold tier.
   */
  hotBytes?: string | number;
  /** The warm tier: host bytes (ArrayBuffers outside wasm memory) for pages beyond the hot tier (default 0). */
  warmBytes?: string | number;
  /**
   * The cold tier: disk bytes for pages beyond the hot and warm tiers (default 0), in a file of the model's own
   * temporary directory (Node, Deno, Bun; OPFS in a browser's dedicated worker: loadModelInWorker).
   */
  coldBytes?: string | number;
  /** Where the model's spill directory goes, with the cold KV pages and any cold weights (Node, Deno, Bun; default os.tmpdir()). */
  coldDir?: string;
}

const DEFAULT_PAGE_TOKENS = 32;
const MAX_PAGE_TOKENS = 1024;
/** Hot slots a head's attention stages warm pages into, a batch at a time (more only saves kernel calls). */
const STAGING_SLOTS = 8;
/** Alignment padding the arena may add per KV region (64-byte alignment, 6 regions). */
const ALIGN_SLACK = 6 * 64;

/** Bytes of one page's data (keys and values of P tokens of one KV head), as the kernels lay it out. */
export function pageBytes(type: KVType, P: number, D: number): number {
  switch (type) {
    case 'f32': return 8 * P * D;
    case 'f16': return 4 * P * D;
    case 'int8': return 2 * P * D + 8 * P;
    case 'int4': return P * D + 8 * P;
  }
}

/** How a context's KV pages split between the tiers: sizes only, so it can be planned (and re-planned) freely. */
export interface KVPlan {
  type: KVType;
  P: number;
  pagesPerHead: number;
  pageBytes: number;
  /**
   * Per layer, the sliding window the cache applies: config.window, or 0 where the layer is global or its window
   * covers the whole context (it then never masks anything, and the layer is global in every respect).
   */
  window: number[];
  /** Per layer, the sealed pages each KV head keeps: a ring of windowPagesKept() for a windowed layer, else pagesPerHead. */
  layerPages: number[];
  /** page slots of the windowed layers' rings, all KV heads: always hot, never tiered */
  windowPages: number;
  /** pages of the global layers, all KV heads: the pages the tiers hold */
  pages: number;
  hotSlots: number;
  stagingSlots: number;
  warmSlots: number;
  coldSlots: number;
  /** wasm bytes of the KV regions (≤ hotBytes when it is given) */
  hotBytes: number;
  warmBytes: number;
  coldBytes: number;
}

/**
 * Sealed pages a KV head of a layer with window W must keep. The query at p reads keys p − W + 1..p. While p's page is
 * the tail (still filling, f32), the sealed pages it reaches are at most ceil((W − 1)/P); when p is the last slot of
 * its page, append seals that page before attend reads it, and the window then spans exactly ceil(W/P) sealed pages.
 * So a ring of ceil(W/P) (page n sealed into slot n mod ring, overwriting page n − ring, which the window of every
 * query from then on has left) is the least that is correct.
 */
export function windowPagesKept(W: number, P: number): number {
  return Math.ceil(W / P);
}

/**
 * Plans the tiers for ctx tokens. The pages holding the first `pinnedTokens` (the attention's sinks) never leave the
 * hot tier. Sliding-window layers keep only the ring their window reaches, always hot: their pages are bounded by the
 * window, so they take neither tiers nor sparse selection (attention/attend.ts); the tiers hold the global layers'
 * pages. Throws
 * BUDGET, saying what would fit, when the pages do not fit hot + warm + cold.
 */
export function planKV(c: LlamaConfig, ctx: number, opts: KVOptions = {}, pinnedTokens = 0): KVPlan {
  const plan = splitTiers(c, ctx, opts, pinnedTokens);
  if (!('fail' in plan)) return plan;
  let lo = 0, hi = ctx; // the longest context that fits, by bisection (fitting is monotone in ctx)
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if ('fail' in splitTiers(c, mid, opts, pinnedTokens)) hi = mid;
    else lo = mid;
  }
  const hint = lo > 0 ? `a context of ${lo} tokens would fit` : 'no context fits: raise kv.hotBytes';
  throw new EdgeLLMError('BUDGET', `${plan.fail}; ${hint}`);
}

function splitTiers(c: LlamaConfig, ctx: number, opts: KVOptions, pinnedTokens: number): KVPlan | { fail: string } {
  const type = opts.type ?? 'f32';
  if (opts.coldDir !== undefined && (typeof opts.coldDir !== 'string' || opts.coldDir === '')) {
    throw new EdgeLLMError('BAD_ARGUMENT', `kv.coldDir must be a directory path, got ${JSON.stringify(opts.coldDir)}`);
  }
  if (!KV_TYPES.includes(type)) throw new EdgeLLMError('BAD_ARGUMENT', `kv.type must be one of ${KV_TYPES.join(', ')}, got ${JSON.stringify(type)}`);
  const P = opts.pageTokens ?? DEFAULT_PAGE_TOKENS;
  if (!Number.isSafeInteger(P) || P < 4 || P > MAX_PAGE_TOKENS || P % 4 !== 0) {
    throw new EdgeLLMError('BAD_ARGUMENT', `kv.pageTokens must be a multiple of 4 in 4..${MAX_PAGE_TOKENS}, got ${P}`);
  }
  const D = c.headDim;
  if ((type === 'int4' && D % 2 !== 0) || D % 4 !== 0) throw new EdgeLLMError('UNSUPPORTED_ARCH', `head dim ${D} is not a multiple of 4`);
  const heads = c.nLayers * c.nKvHeads;
  const pagesPerHead = Math.ceil(ctx / P);
  const bytes = pageBytes(type, P, D);
  const window = c.window.map((w) => (w > 0 && w < ctx ? w : 0));
  const layerPages = window.map((w) => (w > 0 ? Math.min(windowPagesKept(w, P), pagesPerHead) : pagesPerHead));
  const kept = c.nKvHeads * layerPages.reduce((n, r) => n + r, 0);
  const globalHeads = c.nKvHeads * window.filter((w) => w === 0).length;
  const pages = globalHeads * pagesPerHead;
  const windowPages = kept - pages;
  // Always hot: the windowed layers' rings, every kept page's summary, the full-precision tails, the page tables
  // (a head keeping r pages has r + 1 descriptors: see KVCache).
  const fixed = windowPages * bytes + kept * 8 * D + heads * 8 * P * D + (kept + heads) * DESC_INTS * 4;
  const plan = {
    type, P, pagesPerHead, pageBytes: bytes, window, layerPages, windowPages, pages,
    hotSlots: pages, stagingSlots: 0, warmSlots: 0, coldSlots: 0, hotBytes: fixed + pages * bytes, warmBytes: 0, coldBytes: 0,
  };
  // Checked even where every page is hot, so a bad size is an error whatever the budget leaves.
  const warmBytes = opts.warmBytes === undefined || opts.warmBytes === 0 ? 0 : parseBytes(opts.warmBytes, 'kv.warmBytes');
  const coldBytes = opts.coldBytes === undefined || opts.coldBytes === 0 ? 0 : parseBytes(opts.coldBytes, 'kv.coldBytes');
  if (opts.hotBytes === undefined) return plan;
  const hotBytes = parseBytes(opts.hotBytes, 'kv.hotBytes');
  const avail = hotBytes - fixed - ALIGN_SLACK;
  if (avail >= pages * bytes) return plan;
  const stagingSlots = Math.min(STAGING_SLOTS, pagesPerHead, pages);
  const hotSlots = Math.min(pages, Math.floor((avail - stagingSlots * bytes) / bytes));
  const minHot = globalHeads * (pinnedPages(P, pinnedTokens, pagesPerHead) + 1);
  if (hotSlots < minHot) {
    const what = windowPages > 0 ? 'sliding-window pages, page summaries, tails and tables' : 'page summaries, tails and tables';
    return {
      fail:
        `kv.hotBytes ${formatBytes(hotBytes)} is too small for a context of ${ctx} tokens: it needs ${formatBytes(fixed + ALIGN_SLACK)} of ${what}, ` +
        `${stagingSlots} staging slots and at least ${minHot} page slots of ${formatBytes(bytes)}`,
    };
  }
  const below = pages - hotSlots;
  if (coldBytes === 0 && below * bytes > warmBytes) {
    return {
      fail:
        `a context of ${ctx} tokens needs ${pages} KV pages of ${formatBytes(bytes)}: ${hotSlots} fit kv.hotBytes ${formatBytes(hotBytes)}, and the other ` +
        `${below} need ${formatBytes(below * bytes)} of kv.warmBytes, which is ${formatBytes(warmBytes)}`,
    };
  }
  const warmSlots = Math.min(below, Math.floor(warmBytes / bytes));
  const coldSlots = below - warmSlots;
  if (coldSlots * bytes > coldBytes) {
    return {
      fail:
        `a context of ${ctx} tokens needs ${pages} KV pages of ${formatBytes(bytes)}: ${hotSlots} fit kv.hotBytes ${formatBytes(hotBytes)}, ${warmSlots} fit ` +
        `kv.warmBytes ${formatBytes(warmBytes)}, and the other ${coldSlots} need ${formatBytes(coldSlots * bytes)} of kv.coldBytes, which is ${formatBytes(coldBytes)}`,
    };
  }
  if (coldSlots > 0) {
    const support = spillSupport();
    if (!support.ok) throw new EdgeLLMError('BAD_ARGUMENT', `kv.coldBytes: this plan puts ${coldSlots} KV pages on disk, but this runtime cannot spill to disk: ${support.reason}`);
  }
  return {
    ...plan, hotSlots, stagingSlots, warmSlots, coldSlots,
    hotBytes: fixed + (hotSlots + stagingSlots) * bytes, warmBytes: warmSlots * bytes, coldBytes: coldSlots * bytes,
  };
}

/** Pages of P tokens holding the first `tokens` positions, at most the pages of a head. */
export function pinnedPages(P: number, tokens: number, pagesPerHead: number): number {
  return Math.min(Math.ceil(tokens / P), pagesPerHead);
}

/** What the cache holds now, per tier. */
export interface KVUsage {
  type: KVType;
  pageTokens: number;
  /**
   * bytes of cache (page data + summaries) per token of the planned context, all layers: a global layer's pages grow
   * with the context, a sliding-window layer's ring does not, so its bytes count spread over the context
   */
  bytesPerToken: number;
  /** bytes of one page (P tokens of one layer × KV head) */
  pageBytes: number;
  /** wasm bytes planned for the KV cache */
  hotBytes: number;
  /** hot page slots, the sliding-window layers' rings included */
  hotPageSlots: number;
  hotPagesInUse: number;
  /** of hotPageSlots, the sliding-window layers' ring slots (always hot, never tiered) */
  windowPageSlots: number;
  stagingSlots: number;
  /** host bytes planned for the warm tier, and taken so far */
  warmBytes: number;
  warmBytesAllocated: number;
  warmPagesInUse: number;
  /** disk bytes planned for the cold tier, and written so far (the file's size) */
  coldBytes: number;
  coldBytesAllocated: number;
  coldPagesInUse: number;
  /** warm and cold pages copied into staging slots since load */
  pagesStaged: number;
  /** of pagesStaged, the cold ones (read from disk) */
  coldPagesStaged: number;
}

/** A page descriptor for the attention kernel: data, summary, tokens used, type code (4 × i32). */
export const DESC_INTS = 4;

/**
 * The paged KV cache. A page holds P tokens of one layer × one KV head, keys and values apart. Tokens are appended
 * to a full-precision tail page per layer × KV head; when the tail fills it is sealed (quantized into its page, with
 * a per-channel key min/max summary that both dequantizes the keys and bounds q·k for page selection).
 *
 * A head that keeps r sealed pages (plan.layerPages) keeps them as a ring: page n in slot n mod r. For a global layer
 * r = pagesPerHead, so slot n is page n. A sliding-window layer keeps only windowPagesKept(W, P) pages, so its memory
 * is bounded by its window whatever the context.
 *
 * Every page also has a descriptor in a per-(layer, head) table of r + 1 entries, page n at entry n mod (r + 1): the
 * sealed pages and the tail (whose descriptor points into the f32 tail page until it is sealed). A global layer's
 * table is then page 0, 1, … in order, so full attention passes it as it is, and a sparse policy writes its own list;
 * a window's pages are at most r + 1 consecutive pages, so they lie in the table as one run or two (attend.ts).
 *
 * Tiers (global layers only): with every page hot (the default), page p of global head g lives at slot
 * g·pagesPerHead + p. With a hot budget, pages take hot slots as they are sealed, and when none is free the oldest
 * unpinned page moves down a tier (first in, first out: the recent window stays hot, the pinned sink pages never
 * move). Pages age hot → warm → cold: when the warm tier is full too, its oldest page moves to the cold tier (a file)
 * to make room. So each tier holds pages younger than the tier below; recent pages, which attention tends to favour
 * (and sparse selection's window always reads), sit in the faster tier, at the cost of one more page copy per sealed
 * page once warm is full. Summaries, tails, tables and the windowed layers' rings always stay hot; attention stages a
 * warm or cold page into a staging slot to read it (see attention/attend.ts).
 */
export class KVCache {
  readonly type: KVType;
  readonly P: number;
  readonly pagesPerHead: number;
  readonly pageBytes: number;
  /** bytes of cache (page data + summaries) per token of the planned context, all layers (see KVUsage) */
  readonly bytesPerToken: number;
  readonly plan: KVPlan;
  /** whether pages can be warm (the hot tier holds fewer slots than pages) */
  readonly tiered: boolean;
  private readonly data: number;
  private readonly windowData: number;
  private readonly staging: number;
  private readonly summaries: number;
  private readonly tails: number;
  private readonly table: number;
  private readonly D: number;
  get headDim(): number {
    return this.D;
  }
  private readonly heads: number;
  // Per layer: the first kept page (summaries), descriptor (table) and ring slot (windowData, windowed layers) of its
  // KV head 0, and its index among the global layers (tier keys), −1 for a windowed layer.
  private readonly pageBase: number[] = [];
  private readonly tableBase: number[] = [];
  private readonly windowBase: number[] = [];
  private readonly globalIndex: number[] = [];
  private readonly globalHeads: number;
  private heap!: Float32Array;
  private ints!: Int32Array;
  private bytes!: Uint8Array;
  // Tiered state: where each global page is (hot slot ≥ 0; −1 − warm slot; −1 − warmSlots − cold slot), the free
  // slots, and the FIFOs of pages that may move down (hot: unpinned ones; warm: all), by key g·pagesPerHead + page
  // (g: the global head).
  private readonly where: Int32Array;
  private readonly freeHot: Int32Array;
  private nFreeHot = 0;
  private readonly freeWarm: Int32Array;
  private nFreeWarm = 0;
  private readonly freeCold: Int32Array;
  private nFreeCold = 0;
  private readonly fifo: Fifo;
  private readonly warmFifo: Fifo;
  private readonly warm: PageStore | undefined;
  private cold: PageStore | undefined;
  /** a page on its way from warm to cold */
  private readonly moving: Uint8Array;
  private coldPagesStaged = 0;
  /** pages per head that stay hot: those holding the first pinnedTokens */
  private readonly pinned: number;
  private pagesStaged = 0;
  /** positions held: every layer has appended 0..length−1 */
  private length = 0;

  constructor(arena: Arena, private readonly c: LlamaConfig, readonly ctx: number, opts: KVOptions = {}, pinnedTokens = 0) {
    const plan = (this.plan = planKV(c, ctx, opts, pinnedTokens));
    this.pinned = pinnedPages(plan.P, pinnedTokens, plan.pagesPerHead);
    this.type = plan.type;
    const P = (this.P = plan.P);
    const D = (this.D = c.headDim);
    this.heads = c.nLayers * c.nKvHeads;
    this.pagesPerHead = plan.pagesPerHead;
    this.pageBytes = plan.pageBytes;
    this.tiered = plan.warmSlots + plan.coldSlots > 0;
    let kept = 0, windowSlots = 0, globalLayers = 0;
    for (let l = 0; l < c.nLayers; l++) {
      const r = plan.layerPages[l];
      this.pageBase.push(kept);
      this.tableBase.push(kept + l * c.nKvHeads);
      this.windowBase.push(plan.window[l] > 0 ? windowSlots : -1);
      this.globalIndex.push(plan.window[l] > 0 ? -1 : globalLayers++);
      kept += c.nKvHeads * r;
      if (plan.window[l] > 0) windowSlots += c.nKvHeads * r;
    }
    this.globalHeads = globalLayers * c.nKvHeads;
    this.data = arena.reserve(`kv.pages (${plan.type}, ${P} tokens)`, plan.hotSlots * this.pageBytes);
    this.windowData = arena.reserve('kv.window pages', plan.windowPages * this.pageBytes);
    this.staging = arena.reserve('kv.staging', plan.stagingSlots * this.pageBytes);
    this.summaries = arena.reserve('kv.summaries', kept * 8 * D);
    this.tails = arena.reserve('kv.tails', this.heads * 8 * P * D);
    this.table = arena.reserve('kv.page table', (kept + this.heads) * DESC_INTS * 4);
    const perPage = this.pageBytes + 8 * D;
    this.bytesPerToken = (this.globalHeads * perPage) / P + (plan.windowPages * perPage) / ctx;
    const tiered = this.tiered ? 1 : 0;
    this.where = new Int32Array(plan.pages * tiered);
    this.freeHot = new Int32Array(plan.hotSlots * tiered);
    this.freeWarm = new Int32Array(plan.warmSlots);
    this.freeCold = new Int32Array(plan.coldSlots);
    this.fifo = new Fifo(plan.hotSlots * tiered);
    this.warmFifo = new Fifo(plan.coldSlots > 0 ? plan.warmSlots : 0);
    this.warm = plan.warmSlots > 0 ? new HostPageStore(this.pageBytes, plan.warmSlots) : undefined;
    this.moving = new Uint8Array(plan.coldSlots > 0 && plan.warmSlots > 0 ? this.pageBytes : 0);
    this.reset();
  }

  /**
   * Opens the cold tier's file (`name`) in the model's spill directory (plan/spill.ts), where the plan has a cold tier.
   * Asynchronous (OPFS opens so), so the loader calls it once after planning, before anything is appended. The
   * directory is the model's: its dispose removes it.
   */
  async openColdTier(spill: ModelSpill, name = 'kv-pages'): Promise<void> {
    if (this.plan.coldSlots === 0 || this.cold) return;
    const dir = await spill.get();
    this.cold = new FilePageStore(await dir.create(name), this.pageBytes, this.plan.coldSlots);
  }

  /** Views of the memory, once it exists. */
  bind(memory: WebAssembly.Memory): void {
    this.heap = new Float32Array(memory.buffer);
    this.ints = new Int32Array(memory.buffer);
    this.bytes = new Uint8Array(memory.buffer);
  }

  /** A new sequence: every page slot free again. */
  reset(): void {
    // Free lists as stacks popping the lowest slot first, so low slots (and the first warm chunks) are used first.
    for (let i = 0; i < this.freeHot.length; i++) this.freeHot[i] = this.freeHot.length - 1 - i;
    this.nFreeHot = this.freeHot.length;
    for (let i = 0; i < this.freeWarm.length; i++) this.freeWarm[i] = this.freeWarm.length - 1 - i;
    this.nFreeWarm = this.freeWarm.length;
    for (let i = 0; i < this.freeCold.length; i++) this.freeCold[i] = this.freeCold.length - 1 - i;
    this.nFreeCold = this.freeCold.length;
    this.fifo.clear();
    this.warmFifo.clear();
    this.length = 0;
  }

  /** Positions the cache holds for every layer. */
  get positions(): number {
    return this.length;
  }

  /** The sliding window attention applies on a layer (keys p − W + 1..p), or 0 for full causal attention. */
  window(layer: number): number {
    return this.plan.window[layer];
  }

  /** Sealed pages each KV head of a layer keeps (its table has one entry more, for the tail). */
  pagesKept(layer: number): number {
    return this.plan.layerPages[layer];
  }

  /**
   * Keeps the first n positions, so the next append is at the position returned: n itself where the f32 tail still
   * holds the cut page (the current page, or the page just sealed), else the start of n's page, since a sealed page
   * is quantized and cannot be unsealed exactly. Pages from the cut on give their slots back. Sessions call this to
   * reuse the prefix a new prompt shares with what is cached.
   *
   * A sliding-window layer's ring has overwritten its older pages: if the window of the next query (at the position
   * kept) reaches one of them, no prefix can continue (an earlier position's window reaches further back still), so
   * the cache starts over and this returns 0.
   */
  truncate(n: number): number {
    const { P } = this;
    if (!Number.isSafeInteger(n) || n < 0) throw new EdgeLLMError('BAD_ARGUMENT', `cannot keep ${n} KV positions`);
    if (n >= this.length) return this.length;
    const tailStart = this.length === 0 ? 0 : Math.ceil(this.length / P) * P - P;
    let keep = n >= tailStart ? n : n - (n % P);
    const sealedBefore = Math.floor(this.length / P);
    for (let l = 0; l < this.c.nLayers && keep > 0; l++) {
      const W = this.plan.window[l];
      // The ring holds sealed pages sealedBefore − r..sealedBefore − 1; later queries' windows start later.
      if (W > 0 && Math.floor(Math.max(0, keep + 1 - W) / P) < sealedBefore - this.plan.layerPages[l]) keep = 0;
    }
    if (keep === 0) {
      this.reset();
      return 0;
    }
    const cutPage = Math.floor(keep / P);
    if (cutPage < sealedBefore) this.releasePages(cutPage, sealedBefore);
    this.length = keep;
    return keep;
  }

  /** Frees the slots of the global layers' sealed pages [from, to), in whichever tier, and drops them from the FIFOs. */
  private releasePages(from: number, to: number): void {
    if (!this.tiered) return;
    const before = (key: number) => key % this.pagesPerHead < from;
    this.fifo.keep(before);
    this.warmFifo.keep(before);
    const warmSlots = this.plan.warmSlots;
    for (let g = 0; g < this.globalHeads; g++) {
      for (let page = from; page < to; page++) {
        const at = this.where[g * this.pagesPerHead + page];
        if (at >= 0) this.freeHot[this.nFreeHot++] = at;
        else if (-1 - at < warmSlots) this.freeWarm[this.nFreeWarm++] = -1 - at;
        else this.freeCold[this.nFreeCold++] = -1 - at - warmSlots;
      }
    }
  }

  private head(layer: number, h: number): number {
    return layer * this.c.nKvHeads + h;
  }

  /** The tier key of a global layer's page: g·pagesPerHead + page, g the global head. */
  private key(layer: number, h: number, page: number): number {
    return (this.globalIndex[layer] * this.c.nKvHeads + h) * this.pagesPerHead + page;
  }

  /** kmin[D], kmax[D] of a sealed page; a global head's summaries are back to back in page order (stride 8·D). */
  summary(layer: number, h: number, page: number): number {
    const r = this.plan.layerPages[layer];
    return this.summaries + (this.pageBase[layer] + h * r + (page % r)) * 8 * this.D;
  }

  /** The tail page: f32 keys [P][D] then values [P][D], the f32 page layout. */
  private tail(layer: number, h: number): number {
    return this.tails + this.head(layer, h) * 8 * this.P * this.D;
  }

  /** The descriptor table of one head: pagesKept(layer) + 1 entries, page n at entry n mod (pagesKept + 1). */
  descriptors(layer: number, h: number): number {
    return this.table + (this.tableBase[layer] + h * (this.plan.layerPages[layer] + 1)) * DESC_INTS * 4;
  }

  /** The hot address of a sealed page, or −1 if it is warm or cold (stage it to read it). */
  hotAddress(layer: number, h: number, page: number): number {
    if (this.plan.window[layer] > 0) {
      const r = this.plan.layerPages[layer];
      return this.windowData + (this.windowBase[layer] + h * r + (page % r)) * this.pageBytes;
    }
    const key = this.key(layer, h, page);
    if (!this.tiered) return this.data + key * this.pageBytes;
    const at = this.where[key];
    return at >= 0 ? this.data + at * this.pageBytes : -1;
  }

  /** Copies a warm or cold page into staging slot `slot` (0..stagingSlots−1) and returns its address. */
  stage(layer: number, h: number, page: number, slot: number): number {
    const at = this.plan.window[layer] > 0 || !this.tiered ? 0 : this.where[this.key(layer, h, page)];
    if (at >= 0 || slot < 0 || slot >= this.plan.stagingSlots) throw new EdgeLLMError('BAD_ARGUMENT', `cannot stage page ${page} of layer ${layer} head ${h} into slot ${slot}`);
    const addr = this.staging + slot * this.pageBytes;
    const into = this.bytes.subarray(addr, addr + this.pageBytes);
    const lower = -1 - at;
    if (lower < this.plan.warmSlots) {
      this.warm!.read(lower, into);
    } else {
      this.coldStore().read(lower - this.plan.warmSlots, into);
      this.coldPagesStaged++;
    }
    this.pagesStaged++;
    return addr;
  }

  /**
   * Stores one token's keys and values (f32 [nKvHeads·D] at k and v) at position pos of a layer, sealing the page it
   * completes. Positions are appended in order, and position 0 starts a new sequence; attention then reads pos + 1
   * positions, so a batch interleaves append and attend token by token and gives the same bits as one at a time.
   */
  append(kernels: Kernels, layer: number, k: number, v: number, pos: number): void {
    const { P, D } = this;
    if (pos === 0 && layer === 0) this.reset();
    // Layer 0 goes first for every token of a batch, so it alone says where the sequence ends.
    if (layer === 0 && pos !== this.length) {
      throw new EdgeLLMError('BAD_ARGUMENT', `KV append at position ${pos}, but the cache holds ${this.length} positions`);
    }
    const slot = pos % P;
    const page = (pos - slot) / P;
    const entry = page % (this.plan.layerPages[layer] + 1);
    const windowed = this.plan.window[layer] > 0;
    for (let h = 0; h < this.c.nKvHeads; h++) {
      const tail = this.tail(layer, h) / 4;
      this.heap.copyWithin(tail + slot * D, k / 4 + h * D, k / 4 + (h + 1) * D);
      this.heap.copyWithin(tail + (P + slot) * D, v / 4 + h * D, v / 4 + (h + 1) * D);
      const desc = this.descriptors(layer, h) / 4 + entry * DESC_INTS;
      if (slot === P - 1) {
        // A windowed layer's ring slot holds page − r, which no query from this one on reads.
        const data = windowed ? this.hotAddress(layer, h, page) : this.takeHotSlot(layer, h, page);
        const summary = this.summary(layer, h, page);
        kernels.kv_seal_page(KV_TYPE_CODE[this.type], tail * 4, (tail + P * D) * 4, P, D, data, summary);
        this.setDescriptor(desc, data, summary, P, KV_TYPE_CODE[this.type]);
      } else {
        this.setDescriptor(desc, tail * 4, 0, slot + 1, KV_TYPE_CODE.f32);
      }
    }
    if (layer === 0) this.length = pos + 1;
  }

  /** A hot slot for a global page about to be sealed: a free one, or the oldest unpinned page's, which moves to warm. */
  private takeHotSlot(layer: number, h: number, page: number): number {
    const key = this.key(layer, h, page);
    if (!this.tiered) return this.data + key * this.pageBytes;
    let slot: number;
    if (this.nFreeHot > 0) {
      slot = this.freeHot[--this.nFreeHot];
    } else {
      // The plan keeps more hot slots than pinned pages, so the FIFO is not empty, and enough slots below for the rest.
      const victim = this.fifo.shift();
      slot = this.where[victim];
      const addr = this.data + slot * this.pageBytes;
      const pageData = this.bytes.subarray(addr, addr + this.pageBytes);
      if (this.plan.warmSlots === 0) {
        this.where[victim] = this.toCold(pageData);
      } else {
        let warmSlot: number;
        if (this.nFreeWarm > 0) {
          warmSlot = this.freeWarm[--this.nFreeWarm];
        } else {
          // Warm is full (so the plan has cold slots): its oldest page goes down to make room.
          const old = this.warmFifo.shift();
          warmSlot = -1 - this.where[old];
          this.warm!.read(warmSlot, this.moving);
          this.where[old] = this.toCold(this.moving);
        }
        this.warm!.write(warmSlot, pageData);
        this.where[victim] = -1 - warmSlot;
        if (this.warmFifo.capacity > 0) this.warmFifo.push(victim);
      }
    }
    this.where[key] = slot;
    if (page >= this.pinned) this.fifo.push(key);
    return this.data + slot * this.pageBytes;
  }

  /** Writes a page into a free cold slot and returns its `where` code. */
  private toCold(page: Uint8Array): number {
    const coldSlot = this.freeCold[--this.nFreeCold];
    this.coldStore().write(coldSlot, page);
    return -1 - this.plan.warmSlots - coldSlot;
  }

  private coldStore(): PageStore {
    if (!this.cold) throw new EdgeLLMError('BAD_ARGUMENT', 'the KV plan has a cold tier but no cold store was attached');
    return this.cold;
  }

  usage(): KVUsage {
    const p = this.plan;
    const sealed = Math.floor(this.length / this.P);
    let windowInUse = 0;
    for (let l = 0; l < this.c.nLayers; l++) if (p.window[l] > 0) windowInUse += this.c.nKvHeads * Math.min(sealed, p.layerPages[l]);
    const globalInUse = this.tiered ? p.hotSlots - this.nFreeHot : this.globalHeads * sealed;
    return {
      type: this.type,
      pageTokens: this.P,
      bytesPerToken: this.bytesPerToken,
      pageBytes: this.pageBytes,
      hotBytes: p.hotBytes,
      hotPageSlots: p.hotSlots + p.windowPages,
      hotPagesInUse: globalInUse + windowInUse,
      windowPageSlots: p.windowPages,
      stagingSlots: p.stagingSlots,
      warmBytes: p.warmBytes,
      warmBytesAllocated: this.warm?.bytesAllocated() ?? 0,
      warmPagesInUse: p.warmSlots - this.nFreeWarm,
      coldBytes: p.coldBytes,
      coldBytesAllocated: this.cold?.bytesAllocated() ?? 0,
      coldPagesInUse: p.coldSlots - this.nFreeCold,
      pagesStaged: this.pagesStaged,
      coldPagesStaged: this.coldPagesStaged,
    };
  }

  private setDescriptor(at: number, data: number, summary: number, ntok: number, type: number): void {
    this.ints[at] = data;
    this.ints[at + 1] = summary;
    this.ints[at + 2] = ntok;
    this.ints[at + 3] = type;
  }
}

/** A fixed-capacity ring of page keys, oldest first. */
class Fifo {
  private readonly keys: Int32Array;
  private head = 0;
  private length = 0;

  constructor(readonly capacity: number) {
    this.keys = new Int32Array(capacity);
  }

  clear(): void {
    this.head = this.length = 0;
  }

  push(key: number): void {
    this.keys[(this.head + this.length++) % this.capacity] = key;
  }

  shift(): number {
    const key = this.keys[this.head];
    this.head = (this.head + 1) % this.capacity;
    this.length--;
    return key;
  }

  /** Keeps, in order, the keys `keep` accepts. */
  keep(keep: (key: number) => boolean): void {
    let kept = 0;
    for (let i = 0; i < this.length; i++) {
      const key = this.keys[(this.head + i) % this.capacity];
      if (keep(key)) this.keys[(this.head + kept++) % this.capacity] = key;
    }
    this.length = kept;
  }
}
