import { EdgeLLMError } from '../errors.js';
import type { GGUFFile } from '../gguf/reader.js';

/** The hyperparameters of a llama model, all read from GGUF metadata (like llama2.c's Config). */
export interface LlamaConfig {
  architecture: string;
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
  ropeBase: number;
  rmsEps: number;
}

export const SUPPORTED_ARCHITECTURES = ['llama'];

/** Sane upper bounds: a value beyond these is a corrupt or hostile file, not a model. */
const LIMITS = { dim: 1 << 16, nLayers: 1024, nHeads: 1024, headDim: 1024, ffn: 1 << 20, vocab: 1 << 22, contextLength: 1 << 24 };

export function readLlamaConfig(gguf: GGUFFile): LlamaConfig {
  const arch = gguf.string('general.architecture');
  if (!SUPPORTED_ARCHITECTURES.includes(arch)) {
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

  return {
    architecture: arch,
    name: gguf.string('general.name', ''),
    dim, nLayers, nHeads, nKvHeads, headDim, nRot, ffn, vocab, contextLength, ropeBase, rmsEps,
  };
}
