/**
 * edgellm: Llama-family GGUF models in WebAssembly. A small facade over the engine: loadModel() reads and plans,
 * Model runs tokenize → forward → sample. Environment-neutral: each entry point (index.ts for Node, Deno and Bun,
 * browser.ts, workers.ts) supplies a Platform saying how files and wasm are reached there.
 */
import { EdgeLLMError } from './errors.js';
import { openSource, type ModelSource, type PathOpener, type UrlCache } from './gguf/source.js';
import { openGGUF } from './gguf/split.js';
import type { HubOptions } from './gguf/hub.js';
import { lazyCache, type ModelCache } from './gguf/cache.js';
import { readGGUF, type GGUFFile } from './gguf/reader.js';
import { typeName } from './gguf/types.js';
import { Arena, formatBytes, MemoryFull, parseBytes, WASM32_BYTES, type Region } from './plan/arena.js';
import { instanceConfig, splitLayers } from './plan/instances.js';
import { KernelProfile } from './runtime/profile.js';
import { chooseBuild, compileKernels, instantiateKernels, PREFETCH_SLACK, STATIC_RESERVE, type KernelBuild, type SimdOption, type WasmInput, type WasmLoader } from './runtime/kernels.js';
import { readLlamaConfig, type LlamaConfig } from './model/config.js';
import { availableCores, controlBytes, KernelPool, MAX_THREADS, threadSupport, WorkerStartError } from './runtime/pool.js';
import { planWeights, loadWeights, type LayerStager, type StagingUsage, type WeightsPlan } from './model/weights.js';
import { checkWeightsOption, chooseResidency, describeResidency, type Residency, type WeightsOption } from './plan/weights-plan.js';
import { ModelSpill, spillSupport } from './plan/spill.js';
import { Llama, planRunState, type KernelInstance } from './model/llama.js';
import { KVCache, planKV, type KVOptions, type KVType, type KVUsage } from './kv/cache.js';
import { attentionPolicy, planAttention, sinkTokens, type AttentionOptions, type AttentionPolicy, type AttentionStats } from './attention/attend.js';
import { ModelTokenizer, splitChatOptions, type ChatFormatOptions, type DetokenizeOptions, type TokenizeOptions, type TokenizerInfo } from './chat/model-tokenizer.js';
import { ChatSession, type ChatOptions, type SessionOptions } from './chat/session.js';
import type { ChatMessage } from './chat/template.js';
import { generate, checkAborted, CachedPrefix, type GenerateOptions } from './generate/generate.js';
import { yieldToEventLoop } from './generate/yield.js';

export { EdgeLLMError, type ErrorCode } from './errors.js';
export type { ModelSource } from './gguf/source.js';
export type { ModelCache, CacheEntry } from './gguf/cache.js';
export type { HubOptions } from './gguf/hub.js';
export type { GenerateOptions, GenerationStats } from './generate/generate.js';
export { applyChatTemplate, type ChatMessage, type ChatTemplateOptions } from './chat/template.js';
export { ModelTokenizer, type ChatFormatOptions, type TokenizeOptions, type DetokenizeOptions, type TokenizerInfo } from './chat/model-tokenizer.js';
export { ChatSession, type ChatOptions, type SessionOptions, type TurnStats } from './chat/session.js';
export type { SamplingOptions } from './generate/sampler.js';
export type { LlamaConfig } from './model/config.js';
export type { KVType, KVOptions, KVUsage } from './kv/cache.js';
export type { AttentionOptions, AttentionStats } from './attention/attend.js';
export type { KernelBuild, SimdOption } from './runtime/kernels.js';
export { supportedBuilds } from './runtime/kernels.js';

/** What differs between environments: how model paths open and how wasm is fetched or imported. */
export interface Platform extends WasmLoader {
  openPath: PathOpener;
  /** The download cache http(s) models go through unless `cache: false` (none where there is no storage: Workers). */
  defaultCache?: () => Promise<ModelCache | undefined>;
}

export interface LoadOptions {
  /** Tokens of KV cache to plan for (default: the model's context_length, capped at 4096). */
  contextLength?: number;
  /**
   * The paged KV cache: `type` 'f32' (default, the reference), 'f16' (llama.cpp's default), 'int8' or 'int4' (keys
   * quantized per channel within a page, values per token); `pageTokens` per page (default 32); the tiers: `hotBytes`
   * of wasm memory for the whole cache (default: every page hot), `warmBytes` of host memory for the pages beyond,
   * and `coldBytes` of disk for the pages beyond those (a file in a directory of the model's own, under `coldDir`).
   */
  kv?: KVOptions;
  /**
   * Which KV pages each query reads: `mode` 'full' (default) or 'sparse' (Quest: `sinkTokens` 4, `windowTokens` 64
   * and the `topKPages` 4 pages whose key summaries score highest, per KV head; every position, prompt included).
   */
  attention?: AttentionOptions;
  /** Prompt tokens per forward batch (default 32). */
  batchSize?: number;
  /**
   * Threads for the matmuls (default 1): N, or 'auto' (the cores the runtime reports, at most 8). They share one
   * memory, so the runtime needs SharedArrayBuffer and workers (Node, Deno, Bun; browsers when cross-origin isolated);
   * elsewhere the model runs on one thread, and `info.threading` says why. The logits are the same bits for any count.
   */
  threads?: number | 'auto';
  /**
   * Upper bound on the memory the plan holds, e.g. '512MB': wasm memory, the warm weight images and KV pages in host
   * memory, and the loader's read buffer; loading fails with BUDGET, before allocating, if the plan exceeds it. With
   * weights 'auto' (default), the layers whose weights do not fit under it are streamed (see `weights`); with
   * kv.warmBytes or kv.coldBytes (and no kv.hotBytes), the KV pages that do not fit under it go to those tiers instead.
   */
  memoryBudget?: string | number;
  /**
   * The largest wasm memory of one kernel instance (default: wasm32's 4 GiB less a page). A model whose plan is larger
   * is split over several instances, each a memory of its own holding whole layers (the residual stream moves between
   * them once per instance per forward pass), with the same logits. Lower it where the engine refuses large memories
   * (32-bit devices, some mobile browsers).
   */
  memoryPerInstance?: string | number;
  /**
   * Whether a worker copies the next streamed layer into a second slot while the current one runs (default: where
   * workers and shared memory are available and the threads leave a core free; true insists, false turns it off).
   * Only matters when some layers are streamed; the second slot counts against memoryBudget (under a budget one more
   * layer may be streamed to make room for it; one slot where two never fit), and the logits are the same.
   */
  stageAhead?: boolean;
  /**
   * Where the blocks' weight matrices live (token embeddings, output and every norm stay in wasm): 'resident' in wasm
   * memory; 'warm', every layer in host ArrayBuffers; 'cold', every layer in a spill file on disk (Node, Deno, Bun;
   * OPFS in a dedicated worker); a streamed layer is copied into a planned wasm slot as the forward pass reaches it
   * (ahead of it with stageAhead), with the same logits. 'auto' (default) keeps them resident (past one wasm memory,
   * over several kernel instances: memoryPerInstance) unless memoryBudget forbids it, then streams the fewest layers
   * that fit: warm where the budget leaves room for them in host memory, else cold.
   */
  weights?: WeightsOption;
  /** Download and weight-loading progress. */
  onProgress?: (p: { phase: 'download' | 'weights'; loaded: number; total: number | undefined }) => void;
  signal?: AbortSignal;
  /** For hf: names (hf:OWNER/REPO/FILE.gguf, hf:OWNER/REPO:QUANT): the hub token and endpoint; default HF_TOKEN, HF_ENDPOINT. */
  hf?: HubOptions;
  /**
   * Where an http(s) or hf: model is kept between runs (default: the platform's, openModelCache(): a directory in
   * Node, Deno and Bun, OPFS or the Cache API in browsers; none in Workers). A cached model loads with no request;
   * `false` reads the URL with range requests and keeps nothing.
   */
  cache?: ModelCache | false;
  /**
   * Which packaged kernel build to run: 'auto' (default) takes the relaxed-SIMD build where the engine validates it,
   * else the SIMD128 one; 'baseline' forces SIMD128; 'relaxed' fails with WASM where the engine lacks relaxed SIMD.
   * Both give bit-identical results.
   */
  simd?: SimdOption;
  /** Time every kernel call by family, for Model.profile() (costs about 1 µs per call; the bench's breakdown). */
  profile?: boolean;
  /** One kernel build from elsewhere (bytes, a compiled module such as a Workers import, or a URL); overrides `simd`. */
  wasm?: WasmInput;
}

export interface ModelInfo extends LlamaConfig {
  /** KV positions planned */
  context: number;
  kvType: KVType;
  attention: 'full' | 'sparse';
  batchSize: number;
  tiedOutput: boolean;
  fileSize: number;
  ggufVersion: number;
  tensorCount: number;
  /** tensor count per ggml type, e.g. { Q4_0: 43, F32: 13 } */
  tensorTypes: Record<string, number>;
  /** wasm linear memory planned, in bytes */
  memoryBytes: number;
  /** the kernel build running: 'relaxed' (relaxed SIMD) or 'simd' (SIMD128) */
  build: KernelBuild;
  /** threads running the matmuls, and why that many (e.g. "1: no SharedArrayBuffer (not cross-origin isolated)") */
  threads: number;
  threading: string;
  /** the vocabulary: its kind, special ids, end-of-generation ids, and whether the file has a chat template */
  tokenizer: TokenizerInfo;
}

/** Where the weights live (Model.memory().weights): the plan per tier, and what streaming has done since load. */
export interface WeightsUsage extends StagingUsage {
  /** per layer: 'resident', 'warm' (host memory) or 'cold' (the spill file) */
  layers: Residency[];
  /** per layer, the bytes of its matrices in kernel layout: what staging it copies */
  layerBytes: number[];
  /** wasm bytes of the weights outside the slot: token embeddings, output, norms and the resident layers */
  residentBytes: number;
  /** bytes of the warm layers' images in host memory, and of the cold ones on disk */
  warmBytes: number;
  coldBytes: number;
  /** the wasm slots streamed layers are copied into before they run, all of them (0 when every layer is resident) */
  slotBytes: number;
  /** the largest read the loader held in JS at once (counted against memoryBudget with wasm and the warm images) */
  readBytes: number;
}

/** Model.memory(): the plan and what each tier holds now. */
export interface MemoryUsage {
  /** wasm memory in all, and its regions (each with its kernel instance when there are several) */
  totalBytes: number;
  regions: Array<Region & { instance?: number }>;
  /** per kernel instance (a wasm memory of its own; several only past one memory's limit): its layers [first, end) and bytes */
  instances: Array<{ layers: [number, number]; bytes: number }>;
  /** memoryBudget, and what the plan holds against it */
  budgetBytes?: number;
  plannedBytes: number;
  weights: WeightsUsage;
  kvBytesPerToken: number;
  kv: KVUsage;
}

export interface ScoreResult {
  /** logprobs[i] = log p(ids[i+1] | ids[0..i]), full log-softmax in f64 */
  logprobs: Float64Array;
  /** argmax[i]: the greedy prediction after ids[0..i] (the lowest id among equal logits) */
  argmax: Int32Array;
  /** mean negative log-likelihood over the scored tokens */
  nll: number;
  tokensScored: number;
}

export interface PerplexityWindow {
  firstToken: number;
  nll: number;
  ppl: number;
  tokensScored: number;
}

export interface PerplexityOptions {
  /** tokens per window, BOS included (default: the planned context, at most 2048) */
  window?: number;
  /** how many windows to score (default: as many as the text fills) */
  windows?: number;
  signal?: AbortSignal;
  /** after each window: its result, of `windows` */
  onWindow?: (w: PerplexityWindow, windows: number) => void;
  /** tokens evaluated so far, of every window's (as each batch is scored) */
  onProgress?: (p: { phase: 'perplexity'; loaded: number; total: number }) => void;
}

export interface PerplexityResult {
  ppl: number;
  nll: number;
  tokensScored: number;
  textTokens: number;
  window: number;
  windows: PerplexityWindow[];
}

const DEFAULT_MAX_CONTEXT = 4096;

/**
 * The cache a URL goes through: the one given, none for `false`, else the platform's default, found only when a URL
 * is opened (a path or bytes touch no storage). `headerOnly`: use a cached copy, but download nothing into the cache.
 */
function cacheFor(platform: Platform, option: ModelCache | false | undefined, headerOnly = false): UrlCache | undefined {
  if (option === false) return undefined;
  const get = option ? async () => option : platform.defaultCache;
  return get && lazyCache(get, headerOnly);
}

/**
 * loadModel on a given platform; each entry point exports it bound to its own. `onHeader` gets the GGUF header of a
 * model that loaded (the model worker sends it to the page, which builds its tokenizer from it: no second read).
 */
export async function loadModelOn(platform: Platform, src: ModelSource, options: LoadOptions = {}, onHeader?: (gguf: GGUFFile) => void): Promise<Model> {
  const { onProgress, signal } = options;
  // A split GGUF (its first part) opens as one source over all its parts, with one merged tensor table.
  const { source, gguf } = await openGGUF(src, {
    signal,
    hf: options.hf,
    cache: cacheFor(platform, options.cache),
    onProgress: onProgress && ((loaded, total) => onProgress({ phase: 'download', loaded, total })),
  }, platform.openPath);
  try {
    const config = readLlamaConfig(gguf);
    const text = ModelTokenizer.fromGGUF(gguf);
    if (text.info.vocabSize !== config.vocab) {
      throw new EdgeLLMError('BAD_METADATA', `tokenizer.ggml.tokens has ${text.info.vocabSize} entries but token_embd.weight has ${config.vocab} rows`);
    }
    const context = options.contextLength ?? Math.min(config.contextLength, DEFAULT_MAX_CONTEXT);
    if (!Number.isSafeInteger(context) || context < 1 || context > 1 << 24) throw new EdgeLLMError('BAD_ARGUMENT', `contextLength must be an integer in 1..${1 << 24}, got ${context}`);
    const batchSize = options.batchSize ?? 32;
    if (!Number.isSafeInteger(batchSize) || batchSize < 1 || batchSize > 512) throw new EdgeLLMError('BAD_ARGUMENT', `batchSize must be an integer in 1..512, got ${batchSize}`);
    const cores = availableCores();
    let threading = planThreads(options.threads ?? 1, options.wasm !== undefined, cores);

    // The plan: every region of linear memory, sized from the header alone, checked before anything is allocated,
    // with each layer's weights resident or streamed (plan/weights-plan.ts) so that it fits.
    const kvOptions = options.kv ?? {};
    const policy = attentionPolicy(options.attention);
    planKV(config, context, kvOptions, sinkTokens(policy)); // KV options the context cannot meet fail here, as themselves
    const fit: PlanFit = {
      gguf, config, batchSize, policy, threads: threading.threads,
      budget: options.memoryBudget === undefined ? undefined : parseBudget(options.memoryBudget),
      weights: checkWeightsOption(options.weights ?? 'auto'),
      spill: spillSupport(),
      instanceLimit: options.memoryPerInstance === undefined ? WASM32_BYTES : parseInstanceLimit(options.memoryPerInstance),
      stageAhead: planStageAhead(options.stageAhead, threading.threads, options.wasm !== undefined, cores),
      ...measureWeights(gguf, config),
    };
    if (fit.weights === 'cold' && !fit.spill.ok) throw new EdgeLLMError('BAD_ARGUMENT', `weights: 'cold' needs a disk to spill to: ${fit.spill.reason}`);
    const chosen = fitWeights(fit, context, kvOptions);
    if (!chosen) throw budgetError(fit, context, kvOptions);
    const plan = chosen.plan;
    const { weights, pending } = plan;

    const threads = threading.threads;
    // threads and the staging worker share the memories
    const shared = threads > 1 || plan.weightsPlan.slotsPerInstance === 2;
    const module = options.wasm === undefined ? await platform.packagedKernels(chooseBuild(options.simd), shared) : await compileKernels(options.wasm, platform);
    checkAborted(signal);
    // One memory per kernel instance (one unless the model is larger than a wasm memory holds), each with its own pool.
    const memories = plan.instances.map((i) => i.arena.createMemory(shared));
    const pools: Array<KernelPool | undefined> = [];
    let stager: LayerStager | undefined;
    // One spill directory for the model (cold weights, and each instance's cold KV pages), opened if something spills.
    const spill = new ModelSpill(kvOptions.coldDir);
    try {
      for (const [n, i] of plan.instances.entries()) await i.kv.openColdTier(spill, plan.instances.length > 1 ? `kv-pages-${n}` : 'kv-pages');
      const profile = options.profile ? new KernelProfile() : undefined;
      const instances: KernelInstance[] = [];
      for (const [n, i] of plan.instances.entries()) {
        // With threads, thread 0's instance in the pool is the one the forward pass calls directly.
        let pool: KernelPool | undefined;
        if (threading.threads > 1) {
          try {
            pool = await KernelPool.start({ module, memory: memories[n], control: i.control, threads });
          } catch (e) {
            if (!(e instanceof WorkerStartError)) throw e;
            if (n > 0) throw new EdgeLLMError('WASM', `kernel instance ${n}'s threads: ${e.message}`, { cause: e });
            threading = { threads: 1, threading: `1: ${e.message} (threads ${threads} asked)` };
          }
        }
        pools.push(pool);
        const kernels = pool ? pool.kernels : await instantiateKernels(module, memories[n]);
        if (kernels.heap_base() > STATIC_RESERVE) throw new EdgeLLMError('WASM', `kernel static data ends at ${kernels.heap_base()}, above the ${STATIC_RESERVE} bytes reserved for it`);
        const { first, end, config: layers, kv, attention, state } = i;
        instances.push({ first, end, config: layers, kv, attention, state, kernels: profile ? profile.wrap(kernels) : kernels, memory: memories[n], pool });
      }
      stager = await loadWeights(source, memories, pending, plan.weightsPlan, spill, onProgress && ((loaded, total) => onProgress({ phase: 'weights', loaded, total })));
      await stager?.startAhead(fit.stageAhead.includes('cold'), options.stageAhead === true);
      checkAborted(signal);
      const llama = new Llama(config, weights, instances, batchSize, stager, spill);
      const regions = plan.instances.flatMap((i, n) => i.arena.regions.map((r) => (plan.instances.length > 1 ? { ...r, instance: n } : r)));
      const model = new Model(llama, text, gguf, regions, plan.wasmBytes, threading, {
        budget: fit.budget, plannedBytes: plannedBytes(plan), weights: plan.weightsPlan,
        instances: plan.instances.map((i) => ({ layers: [i.first, i.end] as [number, number], bytes: i.arena.totalBytes })),
      }, profile);
      onHeader?.(gguf);
      return model;
    } catch (e) {
      for (const pool of pools) void pool?.dispose();
      await stager?.dispose();
      await spill.dispose();
      throw e;
    }
  } finally {
    await source.close();
  }
}

/**
 * The tokenizer and chat template of a GGUF, from its header alone: no weights are read and no wasm is started, so a
 * vocab-only file works. A URL transfers about the header (range requests); a split GGUF's first part has it all.
 */
export async function loadTokenizerOn(platform: Platform, src: ModelSource, options: HeaderOptions = {}): Promise<ModelTokenizer> {
  return ModelTokenizer.fromGGUF(await readHeaderOn(platform, src, options));
}

export type HeaderOptions = Pick<LoadOptions, 'signal' | 'onProgress' | 'hf' | 'cache'>;

/** A GGUF's header (no tensor data is read): a cached copy's, or about the header's bytes of a URL. */
export async function readHeaderOn(platform: Platform, src: ModelSource, options: HeaderOptions = {}): Promise<GGUFFile> {
  const { onProgress, signal } = options;
  // A header is no reason to download a model: a cached one is read from the cache, any other by ranges.
  const source = await openSource(src, { signal, hf: options.hf, cache: cacheFor(platform, options.cache, true), onProgress: onProgress && ((loaded, total) => onProgress({ phase: 'download', loaded, total })) }, platform.openPath);
  try {
    return await readGGUF(source);
  } finally {
    await source.close();
  }
}

/**
 * Weights, KV cache and run state, laid out in the arenas of `count` kernel instances, each holding a run of whole
 * layers (splitLayers) with their KV cache and run state, instance 0 the embeddings and output too. Cheap: it only adds
 * up sizes. The KV tiers' byte options are shared out by layers.
 */
function planMemory(f: PlanFit, context: number, kvOptions: KVOptions, residency: Residency[], count: number, slots: 1 | 2) {
  const { gguf, config, policy, threads } = f;
  const arenas = Array.from({ length: count }, () => new Arena(STATIC_RESERVE, f.instanceLimit));
  const instanceOf = splitLayers(f.layerBytes, f.headBytes, count);
  const { weights, pending, plan: weightsPlan } = planWeights(gguf, config, arenas, residency, instanceOf, slots);
  const instances = arenas.map((arena, i) => {
    const first = instanceOf.indexOf(i), end = instanceOf.lastIndexOf(i) + 1;
    const layers = instanceConfig(config, first, end);
    const share = (bytes: string | number | undefined) => (bytes === undefined || count === 1 ? bytes : Math.floor((parseBytes(bytes, 'kv') * (end - first)) / config.nLayers));
    const kv = new KVCache(arena, layers, context, { ...kvOptions, hotBytes: share(kvOptions.hotBytes), warmBytes: share(kvOptions.warmBytes), coldBytes: share(kvOptions.coldBytes) }, sinkTokens(policy));
    const attention = planAttention(arena, layers, kv, policy, threads);
    const state = planRunState(arena, config, f.batchSize, context);
    const control = threads > 1 ? arena.reserve('threads.control', controlBytes(threads)) : 0;
    arena.reserve('prefetch slack', PREFETCH_SLACK);
    return { arena, first, end, config: layers, kv, attention, state, control };
  });
  const sum = (bytes: (i: (typeof instances)[number]) => number) => instances.reduce((total, i) => total + bytes(i), 0);
  return {
    instances, weights, pending, weightsPlan,
    wasmBytes: sum((i) => i.arena.totalBytes),
    kvHotBytes: sum((i) => i.kv.plan.hotBytes),
    kvWarmBytes: sum((i) => i.kv.plan.warmBytes),
  };
}

type MemoryPlan = ReturnType<typeof planMemory>;

/** What memoryBudget bounds: wasm memory and what lives in host memory (warm weights and KV pages, the read buffer). */
function plannedBytes(plan: MemoryPlan): number {
  return plan.wasmBytes + plan.weightsPlan.warmBytes + plan.kvWarmBytes + plan.weightsPlan.readBytes;
}

/** Most kernel instances a model is split over (each a wasm memory of up to 4 GiB). */
const MAX_INSTANCES = 64;

/**
 * The plan in as few kernel instances as hold it: one, unless one memory's limit (wasm32's 4 GiB, or
 * memoryPerInstance) is what refuses it; then two, three, … Splitting never helps a budget (it adds a run state per
 * instance), so only MemoryFull asks for more.
 */
function planInstances(f: PlanFit, context: number, kvOptions: KVOptions, residency: Residency[], slots: 1 | 2 = 1): MemoryPlan {
  for (let count = 1; ; count++) {
    try {
      return planMemory(f, context, kvOptions, residency, count, slots);
    } catch (err) {
      if (!(err instanceof MemoryFull) || count >= Math.min(MAX_INSTANCES, f.config.nLayers)) throw err;
    }
  }
}

/** What fitting a plan to the budget depends on besides the context and the KV options. */
interface PlanFit {
  gguf: GGUFFile;
  config: LlamaConfig;
  batchSize: number;
  policy: AttentionPolicy;
  threads: number;
  budget: number | undefined;
  weights: WeightsOption;
  spill: ReturnType<typeof spillSupport>;
  /** the largest memory of one kernel instance */
  instanceLimit: number;
  /**
   * the tiers whose layers a staging worker can copy in ahead (none: one slot per instance; warm, and cold where the
   * worker can open the spill file by path)
   */
  stageAhead: Residency[];
  /** per layer, the bytes of its weight matrices; and the weights outside the layers (embeddings, output, norms) */
  layerBytes: number[];
  headBytes: number;
}

function parseInstanceLimit(v: string | number): number {
  const bytes = parseBytes(v, 'memoryPerInstance');
  if (bytes < 1 << 20 || bytes > WASM32_BYTES) {
    throw new EdgeLLMError('BAD_ARGUMENT', `memoryPerInstance must be a byte count from 1MB to 4GiB less a 64 KiB page, got ${JSON.stringify(v)}`);
  }
  return bytes;
}

function parseBudget(v: string | number): number {
  const budget = parseBytes(v, 'memoryBudget');
  if (budget < 1) throw new EdgeLLMError('BAD_ARGUMENT', `memoryBudget must be a positive byte count like 512MB or 2GiB, got ${JSON.stringify(v)}`);
  return budget;
}

/**
 * The plan with the given layers streamed and slots per instance, if it fits the budget (in as many kernel instances
 * as one memory's limit asks for: planInstances).
 * With kv.warmBytes or kv.coldBytes (and no kv.hotBytes), the KV cache first takes what the rest of the plan leaves
 * of the budget, so KV pages leave wasm before weights do.
 */
function fitPlan(f: PlanFit, context: number, kvOptions: KVOptions, residency: Residency[], slots: 1 | 2 = 1): MemoryPlan | undefined {
  let count = 0;
  // the first plan finds how many instances hold it; the KV tiers' re-plans below keep that many
  const plan = (kv: KVOptions) => {
    if (count > 0) return planMemory(f, context, kv, residency, count, slots);
    const p = planInstances(f, context, kv, residency, slots);
    count = p.instances.length;
    return p;
  };
  try {
    let p = plan(kvOptions);
    const { budget } = f;
    if (budget === undefined) return p;
    if (plannedBytes(p) > budget && (kvOptions.warmBytes !== undefined || kvOptions.coldBytes !== undefined) && kvOptions.hotBytes === undefined) {
      // The KV cache takes what the rest of the plan leaves of the budget (less a wasm page of rounding).
      const hotBytes = budget - (plannedBytes(p) - p.kvHotBytes) - 65536 * p.instances.length;
      if (hotBytes > 0) p = plan({ ...kvOptions, hotBytes });
      // Warm pages count against the budget too: they take what is left of it, and the cold tier the rest.
      if (hotBytes > 0 && plannedBytes(p) > budget && p.kvWarmBytes > 0 && kvOptions.coldBytes !== undefined) {
        p = plan({ ...kvOptions, hotBytes, warmBytes: Math.max(0, budget - (plannedBytes(p) - p.kvWarmBytes)) });
      }
    }
    return plannedBytes(p) <= budget ? p : undefined;
  } catch (err) {
    if (err instanceof EdgeLLMError && err.code === 'BUDGET') return undefined;
    throw err;
  }
}

/** Each layer's weights resident, warm or cold, as the weights option and the budget allow (chooseResidency). */
function fitWeights(f: PlanFit, context: number, kvOptions: KVOptions, option = f.weights) {
  // Staging ahead takes a second slot per instance. Where the streamed layers can be staged ahead, the fewest that
  // fit with two slots, though that may stream one more layer than one slot would: a copy overlapped with compute
  // costs less than one on the pass's thread (docs/memory.md). Else the fewest with one slot.
  const fit = (slots: 1 | 2) => (r: Residency[]) => {
    if (r.every((x) => x === 'resident')) return fitPlan(f, context, kvOptions, r);
    return slots === 1 || r.some((x) => f.stageAhead.includes(x)) ? fitPlan(f, context, kvOptions, r, slots) : undefined;
  };
  return (f.stageAhead.length ? chooseResidency(option, f.layerBytes, fit(2), f.spill.ok) : undefined) ?? chooseResidency(option, f.layerBytes, fit(1), f.spill.ok);
}

/** Each layer's weight bytes, and those outside the layers: measured with every layer streamed, so any size measures. */
function measureWeights(gguf: GGUFFile, config: LlamaConfig): { layerBytes: number[]; headBytes: number } {
  const arena = new Arena(STATIC_RESERVE, Number.MAX_SAFE_INTEGER);
  const { plan } = planWeights(gguf, config, [arena], new Array<Residency>(config.nLayers).fill('cold'));
  return { layerBytes: plan.layerBytes, headBytes: plan.residentBytes };
}

/**
 * Which streamed tiers a worker stages ahead: asked (true: an error where it cannot run), refused (false), or by
 * default where it can run and the threads leave a core free: with a thread per core the copy takes a core from the
 * matmuls (2 threads on 2 cores, cold layers: 15.0–17.0 tok/s without, 13.9–16.3 with; 1 thread: 12.3 → 20.6;
 * docs/memory.md). Cold layers only where the worker can open the spill file by path (Node, Deno, Bun; not OPFS).
 */
function planStageAhead(option: boolean | undefined, threads: number, ownWasm: boolean, cores: number): Residency[] {
  if (option !== undefined && typeof option !== 'boolean') throw new EdgeLLMError('BAD_ARGUMENT', `stageAhead must be true or false, got ${JSON.stringify(option)}`);
  if (option === false) return [];
  const support = threadSupport();
  const why = ownWasm ? 'the wasm option gives one unshared kernel module' : 'reason' in support ? support.reason : undefined;
  if (option === true && why) throw new EdgeLLMError('BAD_ARGUMENT', `stageAhead: true cannot run here: ${why}`);
  if (why !== undefined || (option === undefined && cores <= threads)) return [];
  return 'platform' in support && support.platform === 'node' ? ['warm', 'cold'] : ['warm'];
}

/** Most threads 'auto' takes: past the physical cores, extra threads slow decoding down (as llama.cpp's do). */
const AUTO_MAX_THREADS = 8;

/** How many threads run the matmuls, and why (for info.threading). */
function planThreads(option: number | 'auto', ownWasm: boolean, cores: number): { threads: number; threading: string } {
  if (option !== 'auto' && (!Number.isSafeInteger(option) || option < 1 || option > MAX_THREADS)) {
    throw new EdgeLLMError('BAD_ARGUMENT', `threads must be 'auto' or an integer in 1..${MAX_THREADS}, got ${JSON.stringify(option)}`);
  }
  const asked = option === 'auto' ? Math.min(AUTO_MAX_THREADS, cores) : option;
  const label = option === 'auto' ? `'auto' (${asked} cores)` : String(option);
  if (asked === 1) return { threads: 1, threading: `1: threads ${label}` };
  if (ownWasm) return { threads: 1, threading: `1: the wasm option gives one unshared kernel module (threads ${label} asked)` };
  const support = threadSupport();
  if ('reason' in support) return { threads: 1, threading: `1: ${support.reason} (threads ${label} asked)` };
  // More threads than cores run (the same bits), but a thread waiting for a part spins on a core another needs.
  const over = asked > cores ? ` (more than the ${cores} cores: slower than ${cores})` : '';
  return { threads: asked, threading: `${asked}: threads ${label}${over}` };
}

/**
 * Says what would fit: the longest context under the budget (found by re-planning, weights streamed as the weights
 * option allows), streamed weights where the option kept them resident, or that the weights alone do not fit.
 */
function budgetError(f: PlanFit, context: number, kvOptions: KVOptions): EdgeLLMError {
  const n = f.config.nLayers;
  // A part no memory holds, however many instances: even the smallest plan (1 token, every layer streamed) is refused.
  try {
    planInstances(f, 1, { ...kvOptions, hotBytes: undefined }, new Array<Residency>(n).fill(f.spill.ok ? 'cold' : 'warm'));
  } catch (err) {
    if (!(err instanceof MemoryFull)) throw err;
    const largest = Math.max(0, ...f.layerBytes);
    const raise = f.instanceLimit < WASM32_BYTES ? 'raise memoryPerInstance' : 'use a smaller or more quantized model';
    return new EdgeLLMError(
      'BUDGET',
      `one wasm memory of ${formatBytes(f.instanceLimit)} (memoryPerInstance) cannot hold a kernel instance's least: instance 0 holds the token ` +
        `embeddings, output and norms (${formatBytes(f.headBytes)}) and the run state (logits of a batch of ${f.batchSize}: ` +
        `${formatBytes(f.batchSize * f.config.vocab * 4)}), and an instance at least one layer (the largest ${formatBytes(largest)}); ${raise}`,
    );
  }
  const needs = (ctx: number, kv: KVOptions, r: Residency) => {
    try {
      return formatBytes(plannedBytes(planInstances(f, ctx, kv, new Array<Residency>(n).fill(r))));
    } catch (err) {
      if (err instanceof EdgeLLMError && err.code === 'BUDGET') return `more than a wasm memory (${formatBytes(f.instanceLimit)}) holds in one part`;
      throw err;
    }
  };
  const streamed = f.spill.ok ? 'cold' : 'warm';
  const need = needs(context, kvOptions, f.weights === 'auto' ? 'resident' : f.weights);
  const limit = f.budget === undefined ? `a wasm memory holds ${formatBytes(f.instanceLimit)}` : `memoryBudget is ${formatBytes(f.budget)}`;
  const allStreamed = f.weights === 'auto' ? ` (with every layer's weights ${streamed}, ${needs(context, kvOptions, streamed)})` : '';
  const noDisk = f.spill.ok ? '' : `; weights cannot be streamed from disk here: ${f.spill.reason}`;
  const best = (ctx: number, option = f.weights) => fitWeights(f, ctx, kvOptions, option);
  const layers = (r: Residency[]) => (r.every((x) => x === 'resident') ? '' : ` (weights: ${describeResidency(r)} layers)`);
  const auto = f.weights === 'auto' ? undefined : best(context, 'auto');
  const stream = auto ? `all of it with weights: 'auto' (${describeResidency(auto.residency)} layers)` : '';
  let hint: string;
  if (!best(1)) {
    const smallest = f.weights === 'auto' ? streamed : f.weights;
    const floor = needs(1, { ...kvOptions, hotBytes: undefined }, smallest);
    const parts = smallest === 'resident' ? '' : `: the token embeddings, output, norms and a slot for the largest layer, with every layer ${smallest}`;
    const instead = stream ? `; ${stream} would fit` : `; use a smaller or more quantized model${noDisk}`;
    hint = `the weights alone do not fit (with a 1-token context the plan needs ${floor}${parts})${instead}`;
  } else {
    let lo = 1, hi = context; // best(lo) && !best(hi)
    while (hi - lo > 1) {
      const mid = Math.floor((lo + hi) / 2);
      if (best(mid)) lo = mid;
      else hi = mid;
    }
    const smaller = kvOptions.type === 'int4' ? '' : `, or more with kv: { type: '${kvOptions.type === 'int8' ? 'int4' : 'int8'}' }`;
    // host memory counts against the budget as wasm does: only disk takes KV pages out of it
    const cold = kvOptions.coldBytes === undefined && f.spill.ok ? ', or all of it with KV pages on disk (kv: { coldBytes })' : '';
    hint = `a context of ${lo} tokens would fit${layers(best(lo)!.residency)}${smaller}${cold}${stream && `, or ${stream}`}${noDisk}`;
  }
  const against = need.startsWith('more than') ? '' : ` but ${limit}`;
  return new EdgeLLMError('BUDGET', `the plan for a context of ${context} tokens needs ${need}${against}${allStreamed}; ${hint}`);
}

export class Model {
  readonly info: ModelInfo;
  private busy = false;
  private disposed = false;

  /** The ids whose KV the cache holds, which the next prompt may reuse. */
  private readonly cache = new CachedPrefix();

  constructor(
    private llama: Llama,
    /** The tokenizer and chat template. */
    readonly text: ModelTokenizer,
    gguf: GGUFFile,
    private readonly regions: Region[],
    memoryBytes: number,
    threading: { threads: number; threading: string },
    /** the budget, the bytes the plan holds against it, where the weights live, and each kernel instance's layers */
    private readonly planned: { budget: number | undefined; plannedBytes: number; weights: WeightsPlan; instances: MemoryUsage['instances'] },
    private readonly kernelProfile?: KernelProfile,
  ) {
    const tensorTypes: Record<string, number> = {};
    for (const t of gguf.tensors) tensorTypes[typeName(t.type)] = (tensorTypes[typeName(t.type)] ?? 0) + 1;
    this.info = {
      ...llama.config,
      context: llama.kv.ctx,
      kvType: llama.kv.type,
      attention: llama.attentionPolicy.sparse ? 'sparse' : 'full',
      batchSize: llama.maxBatch,
      tiedOutput: llama.weights.tied,
      fileSize: gguf.fileSize,
      ggufVersion: gguf.version,
      tensorCount: gguf.tensors.length,
      tensorTypes,
      memoryBytes,
      build: llama.kernels.kernel_build() === 1 ? 'relaxed' : 'simd',
      ...threading,
      tokenizer: text.info,
    };
  }

  tokenize(text: string, opts: TokenizeOptions = {}): number[] {
    this.live();
    return this.text.tokenize(text, opts);
  }

  detokenize(ids: ArrayLike<number>, opts: DetokenizeOptions = {}): string {
    this.live();
    return this.text.detokenize(ids, opts);
  }

  /**
   * Streams generated text. A prompt string is tokenized with BOS (per the model) and no special tokens; an id array
   * is used as is. The KV of the longest prefix shared with the previous call is reused, not computed again.
   */
  generate(prompt: string | number[], opts: GenerateOptions = {}): AsyncIterable<string> {
    const model = this;
    return {
      async *[Symbol.asyncIterator]() {
        const ids = model.promptIds(prompt);
        yield* model.exclusive(() => generate(model.llama, model.text.tokenizer, model.cache, ids, opts));
      },
    };
  }

  /** Renders messages with the model's chat template (or `opts.template`), ending with the assistant's prompt. */
  applyChatTemplate(messages: ChatMessage[], opts: ChatFormatOptions = {}): string {
    this.live();
    return this.text.applyChatTemplate(messages, opts);
  }

  /** Streams the assistant's reply to messages, rendered with the chat template; the same options as generate. */
  chat(messages: ChatMessage[], opts: ChatOptions = {}): AsyncIterable<string> {
    const model = this;
    return {
      async *[Symbol.asyncIterator]() {
        const { format, rest } = splitChatOptions(opts);
        model.live();
        yield* model.generate(model.text.chatIds(messages, format), rest);
      },
    };
  }

  /** A conversation that keeps its KV cache between turns: see ChatSession. */
  session(opts: SessionOptions = {}): ChatSession {
    this.live();
    const model = this;
    return new ChatSession(
      {
        text: this.text,
        get contextLength() {
          return model.info.context;
        },
        generate: (ids, o) => model.generate(ids, o),
      },
      opts,
    );
  }

  async complete(prompt: string | number[], opts: GenerateOptions = {}): Promise<string> {
    let out = '';
    for await (const chunk of this.generate(prompt, opts)) out += chunk;
    return out;
  }

  /** Teacher-forced logits for every position of ids: a [ids.length × vocab] array, row i predicting ids[i+1]. */
  async evaluate(ids: ArrayLike<number>, opts: { signal?: AbortSignal } = {}): Promise<Float32Array> {
    this.live();
    const vocab = this.llama.config.vocab;
    const out = new Float32Array(ids.length * vocab);
    await this.forEachLogits(ids, opts.signal, (row, logits) => out.set(logits, row * vocab));
    return out;
  }

  /** Teacher-forced log-probabilities of each next token of ids (e.g. for perplexity), without keeping all logits. */
  async score(ids: ArrayLike<number>, opts: { signal?: AbortSignal; onProgress?: (rows: number, total: number) => void } = {}): Promise<ScoreResult> {
    const logprobs = new Float64Array(Math.max(0, ids.length - 1));
    const argmax = new Int32Array(ids.length);
    await this.forEachLogits(ids, opts.signal, (row, logits) => {
      let best = 0;
      for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
      argmax[row] = best;
      if (row + 1 < ids.length) logprobs[row] = logSoftmaxAt(logits, ids[row + 1]);
      opts.onProgress?.(row + 1, ids.length);
    });
    let sum = 0;
    for (const lp of logprobs) sum -= lp;
    return { logprobs, argmax, nll: logprobs.length ? sum / logprobs.length : 0, tokensScored: logprobs.length };
  }

  /**
   * Perplexity as llama.cpp's reference measures it: the text is tokenized without BOS; each window is BOS + the next
   * window−1 tokens, consecutive and non-overlapping; every next-token position is scored by full log-softmax.
   */
  async perplexity(text: string, opts: PerplexityOptions = {}): Promise<PerplexityResult> {
    this.live();
    const window = opts.window ?? Math.min(2048, this.llama.kv.ctx);
    if (!Number.isSafeInteger(window) || window < 2 || window > this.llama.kv.ctx) {
      throw new EdgeLLMError('BAD_ARGUMENT', `window must be an integer in 2..${this.llama.kv.ctx} (the planned context), got ${window}`);
    }
    const ids = this.tokenize(text, { bos: false, eos: false });
    const available = Math.floor(ids.length / (window - 1));
    const count = opts.windows ?? available;
    if (!Number.isSafeInteger(count) || count < 1 || count > available) {
      throw new EdgeLLMError('BAD_ARGUMENT', `the text has ${ids.length} tokens: room for ${available} windows of ${window}, asked for ${count}`);
    }
    const windows: PerplexityWindow[] = [];
    let nllSum = 0, scored = 0;
    for (let w = 0; w < count; w++) {
      const first = w * (window - 1);
      const seq = [this.text.info.bos, ...ids.slice(first, first + window - 1)];
      const onProgress = opts.onProgress && ((rows: number) => opts.onProgress!({ phase: 'perplexity', loaded: w * window + rows, total: count * window }));
      const r = await this.score(seq, { signal: opts.signal, onProgress });
      const win = { firstToken: first, nll: r.nll, ppl: Math.exp(r.nll), tokensScored: r.tokensScored };
      windows.push(win);
      opts.onWindow?.(win, count);
      nllSum += r.nll * r.tokensScored;
      scored += r.tokensScored;
    }
    return { ppl: Math.exp(nllSum / scored), nll: nllSum / scored, tokensScored: scored, textTokens: ids.length, window, windows };
  }

  /**
   * The memory plan (every region of wasm memory and its size), the bytes it holds against memoryBudget, where the
   * weights live and what streaming them has done, and the KV cache's use of its tiers now.
   */
  memory(): MemoryUsage {
    this.live();
    const w = this.planned.weights;
    const weights: WeightsUsage = {
      layers: w.residency.slice(), layerBytes: w.layerBytes.slice(), residentBytes: w.residentBytes, warmBytes: w.warmBytes, coldBytes: w.coldBytes, slotBytes: w.slotBytes,
      readBytes: w.readBytes,
      ...(this.llama.stager?.usage() ?? { stages: 0, stagedBytes: 0, stagedAhead: 0, stageMs: 0 }),
    };
    return {
      totalBytes: this.info.memoryBytes, regions: this.regions.map((r) => ({ ...r })), instances: this.planned.instances.map((i) => ({ ...i })),
      budgetBytes: this.planned.budget, plannedBytes: this.planned.plannedBytes,
      weights, kvBytesPerToken: this.llama.kv.bytesPerToken, kv: this.llama.kv.usage(),
    };
  }

  /** Attention counters since the last call: calls, tokens read per call, pages scored, and (measureRecall) mass recall per layer. */
  attentionStats(): AttentionStats {
    this.live();
    return this.llama.takeAttentionStats();
  }

  /**
   * Kernel time by family (matmul, quantize, attention, norms/rope/silu) in ms since the last call; needs
   * `loadModel(..., { profile: true })`. Sampling time is in GenerationStats.sampleMs.
   */
  profile(): Record<string, number> {
    this.live();
    if (!this.kernelProfile) throw new EdgeLLMError('BAD_ARGUMENT', 'profile() needs the model loaded with { profile: true }');
    return this.kernelProfile.take();
  }

  /**
   * Releases the wasm memory (by dropping every reference to it), stops the model's workers and removes its spill
   * directory; the model cannot be used afterwards. The promise resolves once the workers have ended and the files
   * are gone.
   */
  dispose(): Promise<void> {
    if (this.disposed) return Promise.resolve();
    this.disposed = true;
    const released = this.llama.release();
    this.llama = undefined as unknown as Llama;
    return released;
  }

  private promptIds(prompt: string | number[]): number[] {
    this.live();
    if (typeof prompt === 'string') return this.text.tokenize(prompt);
    if (Array.isArray(prompt) && prompt.every((id) => Number.isInteger(id) && id >= 0 && id < this.llama.config.vocab)) return prompt.slice();
    throw new EdgeLLMError('BAD_ARGUMENT', 'a prompt is a string or an array of token ids within the vocabulary');
  }

  private async forEachLogits(ids: ArrayLike<number>, signal: AbortSignal | undefined, fn: (row: number, logits: Float32Array) => void): Promise<void> {
    this.live();
    if (ids.length > this.llama.kv.ctx) throw new EdgeLLMError('CONTEXT_FULL', `${ids.length} tokens exceed the context of ${this.llama.kv.ctx}`);
    const cache = this.cache;
    const run = async function* (llama: Llama) {
      const vocab = llama.config.vocab;
      cache.clear();
      for (let pos = 0; pos < ids.length; pos += llama.maxBatch) {
        checkAborted(signal);
        const batch = Array.prototype.slice.call(ids, pos, pos + llama.maxBatch) as number[];
        const at = cache.forward(llama, batch, true);
        for (let t = 0; t < batch.length; t++) fn(pos + t, llama.heap.subarray(at + t * vocab, at + (t + 1) * vocab));
        await yieldToEventLoop();
      }
    };
    for await (const _ of this.exclusive(() => run(this.llama)));
  }

  /** One KV cache, so one computation at a time. */
  private async *exclusive<T>(body: () => AsyncGenerator<T>): AsyncGenerator<T> {
    this.live();
    if (this.busy) throw new EdgeLLMError('BUSY', 'the model is already generating; await the running call first (one model runs one sequence at a time)');
    this.busy = true;
    try {
      yield* body();
    } finally {
      this.busy = false;
    }
  }

  private live(): void {
    if (this.disposed) throw new EdgeLLMError('DISPOSED', 'the model was disposed');
  }
}

/** log softmax(logits)[target], in f64 with the max subtracted. */
export function logSoftmaxAt(logits: Float32Array, target: number): number {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i] - max);
  return logits[target] - max - Math.log(sum);
}

