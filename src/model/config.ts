import { EdgeLLMError } from '../errors.js';
import type { GGUFFile } from '../gguf/reader.js';
import { architecture, SUPPORTED_ARCHITECTURES, type Architecture } from './arch.js';

export { SUPPORTED_ARCHITECTURES } from './arch.js';

/**
 * The hyperparameters of a model, all read from GGUF metadata (like llama2.c's Config), and its architecture's row
 * (arch.ts), which says which optional steps the forward pass runs.
 */
export interface LlamaConfig {
  architecture: string;
  arch: Architecture;
  name: string;
  dim: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  /** rotated dimensions per head (llama.rope.dimension_count), ≤ headDim */
  nRot: number;
  ffn: number;
  vocab: number;
  contextLength: number;
  /** RoPE base of global layers */
  ropeBase: number;
  /** RoPE base of sliding-window layers (Gemma 3's rope.freq_base_swa); ropeBase where there is none */
  ropeBaseLocal: number;
  /** linear RoPE scaling of sliding-window layers: 1 for Gemma 3's, ropeScale for the others */
  ropeScaleLocal: number;
  /** linear RoPE scaling (rope.scaling.type linear): positions × ropeScale = 1/rope.scaling.factor */
  ropeScale: number;
  /** rope.scaling.attn_factor: cos and sin are multiplied by it (Phi-3 LongRoPE's magnitude scaling), else 1 */
  ropeAttnFactor: number;
  /** rope.scaling.original_context_length: beyond it Phi-3 takes its long RoPE factors */
  ropeOriginalContext: number;
  ropeMode: 'norm' | 'neox';
  rmsEps: number;
  /** per layer: its sliding window in tokens (a query at p sees keys p−window+1..p), or 0 for full causal attention */
  window: number[];
  /** the attention scores' scale: 1/√headDim, but 1/√(dim/heads) for Gemma 2 and 3 at 27B (llama.cpp's choice) */
  attnScale: number;
  /** attention-score soft-cap s → c·tanh(s/c) (Gemma 2), or 0 */
  attnSoftcap: number;
  /** final-logit soft-cap (Gemma 2), or 0 */
  finalSoftcap: number;
}

/** Sane upper bounds: a value beyond these is a corrupt or hostile file, not a model. */
const LIMITS = { dim: 1 << 16, nLayers: 1024, nHeads: 1024, headDim: 1024, ffn: 1 << 20, vocab: 1 << 22, contextLength: 1 << 24 };

export function readLlamaConfig(gguf: GGUFFile): LlamaConfig {
  const arch = gguf.string('general.architecture');
  const row = architecture(arch);
  if (!row) {
    throw new EdgeLLMError('UNSUPPORTED_ARCH', `general.architecture is "${arch}"; edgellm runs: ${SUPPORTED_ARCHITECTURES.join(', ')}`);
  }
  const key = (k: string) => `${arch}.${k}`;
  const int = (k: string, max: number, fallback?: number) => {
    const v = gguf.int(key(k), fallback);
    if (!Number.isInteger(v) || v < 1 || v > max) throw new EdgeLLMError('BAD_METADATA', `${key(k)} = ${v} is out of range 1..${max}`);
    return v;
  };
  const dim = int('embedding_length', LIMITS.dim);
  const nLayers = int('block_count', LIMITS.nLayers);
  const nHeads = int('attention.head_count', LIMITS.nHeads);
  const nKvHeads = int('attention.head_count_kv', LIMITS.nHeads, nHeads);
  const ffn = int('feed_forward_length', LIMITS.ffn);
  const contextLength = int('context_length', LIMITS.contextLength);
  const headDim = int('attention.key_length', LIMITS.headDim, Math.floor(dim / nHeads));
  const valueDim = int('attention.value_length', LIMITS.headDim, headDim);
  const nRot = int('rope.dimension_count', LIMITS.headDim, headDim);
  const ropeBase = gguf.float(key('rope.freq_base'), 10000);
  const rmsEps = gguf.float(key('attention.layer_norm_rms_epsilon'), 1e-5);

  const embd = gguf.tensor('token_embd.weight');
  const vocab = embd.dims[1] ?? 0;
  if (vocab < 1 || vocab > LIMITS.vocab) throw new EdgeLLMError('BAD_TENSOR', `token_embd.weight has ${vocab} rows; expected 1..${LIMITS.vocab}`);

  const fail = (what: string) => {
    throw new EdgeLLMError('UNSUPPORTED_ARCH', `${arch} model with ${what} is not supported`);
  };
  if (nHeads % nKvHeads !== 0) fail(`head_count ${nHeads} not a multiple of head_count_kv ${nKvHeads}`);
  if (valueDim !== headDim) fail(`attention.value_length ${valueDim} ≠ key_length ${headDim}`);
  if (headDim % 4 !== 0) fail(`head dim ${headDim} (must be a multiple of 4)`);
  if (dim % 4 !== 0) fail(`embedding_length ${dim} (must be a multiple of 4)`);
  if (nRot % 2 !== 0 || nRot > headDim) fail(`rope.dimension_count ${nRot} with head dim ${headDim}`);
  if (!(ropeBase > 0) || !Number.isFinite(ropeBase)) throw new EdgeLLMError('BAD_METADATA', `${key('rope.freq_base')} = ${ropeBase} must be positive`);
  if (!(rmsEps > 0) || !(rmsEps < 1)) throw new EdgeLLMError('BAD_METADATA', `${key('attention.layer_norm_rms_epsilon')} = ${rmsEps} must be in (0, 1)`);
  const positive = (k: string, fallback: number) => {
    const v = gguf.float(key(k), fallback);
    if (!(v > 0) || !Number.isFinite(v)) throw new EdgeLLMError('BAD_METADATA', `${key(k)} = ${v} must be a positive number`);
    return v;
  };

  // Sliding-window layers, as llama.cpp lays them out: the window, and which layers are local (a period or a list).
  const window = new Array<number>(nLayers).fill(0);
  let ropeBaseLocal = ropeBase;
  if (row.swaPattern > 0) {
    const size = int('attention.sliding_window', LIMITS.contextLength, row.swaWindowDefault || undefined);
    const local = localLayers(gguf, key('attention.sliding_window_pattern'), nLayers, row.swaPattern);
    for (let l = 0; l < nLayers; l++) if (local[l]) window[l] = size;
    ropeBaseLocal = positive('rope.freq_base_swa', row.swaRopeBase || ropeBase);
  }
  const attnScale = nLayers === row.wideQueryScaleLayers ? 1 / Math.sqrt(dim / nHeads) : 1 / Math.sqrt(headDim);
  const softcap = (k: string, fallback: number) => (!row.softcaps ? 0 : gguf.has(key(k)) ? positive(k, fallback) : fallback);
  const attnSoftcap = softcap('attn_logit_softcapping', row.attnSoftcapDefault);
  const finalSoftcap = softcap('final_logit_softcapping', row.finalSoftcapDefault);

  // RoPE scaling as llama.cpp reads it: the type defaults to linear, whose factor (or the older rope.scale_linear)
  // stretches the positions of global layers; Llama 3's scaling is the rope_freqs tensor, Phi-3's the LongRoPE factor
  // tensors (weights.ts). Other types (YaRN) would be silently wrong, so they are refused.
  const scaling = gguf.has(key('rope.scaling.type')) ? gguf.string(key('rope.scaling.type')) : 'linear';
  if (scaling !== 'linear' && scaling !== 'none' && !(scaling === 'llama3' && row.ropeFreqs) && !(scaling === 'longrope' && row.longRope)) {
    fail(`rope.scaling.type "${scaling}"`);
  }
  const factor = gguf.has(key('rope.scaling.factor')) ? positive('rope.scaling.factor', 1) : positive('rope.scale_linear', 1);
  const ropeScale = scaling === 'linear' ? 1 / factor : 1;
  const ropeScaleLocal = row.swaRopeBase ? 1 : ropeScale;
  const ropeAttnFactor = positive('rope.scaling.attn_factor', 1);
  const ropeOriginalContext = int('rope.scaling.original_context_length', LIMITS.contextLength, contextLength);

  return {
    architecture: arch,
    arch: row,
    name: gguf.string('general.name', ''),
    dim, nLayers, nHeads, nKvHeads, headDim, nRot, ffn, vocab, contextLength,
    ropeBase, ropeBaseLocal, ropeScale, ropeScaleLocal, ropeAttnFactor, ropeOriginalContext, ropeMode: row.ropeMode, rmsEps, window, attnScale, attnSoftcap, finalSoftcap,
  };
}

/**
 * Which layers use the sliding window: attention.sliding_window_pattern is a period n (layer l is local iff
 * l % n < n − 1) or one bool per layer; absent, the architecture's default period.
 */
function localLayers(gguf: GGUFFile, k: string, nLayers: number, defaultPattern: number): boolean[] {
  const v = gguf.get(k);
  if (Array.isArray(v)) {
    if (v.length !== nLayers || v.some((b) => typeof b !== 'boolean')) {
      throw new EdgeLLMError('BAD_METADATA', `${k} must be ${nLayers} bools (one per layer), found ${v.length} values`);
    }
    return v as boolean[];
  }
  const n = v === undefined ? defaultPattern : gguf.int(k);
  if (v !== undefined && !(n >= 1 && n <= nLayers)) throw new EdgeLLMError('BAD_METADATA', `${k} = ${n} does not fit ${nLayers} layers (1..${nLayers})`);
  return Array.from({ length: nLayers }, (_, l) => l % n < n - 1);
}
