/**
 * Deterministic synthetic GGUF models, shaped like real ones, for tests and benchmarks where the weight values do not
 * matter but the layout, metadata and numerics (activations of order 1, non-degenerate logits) do. Every architecture
 * of src/model/arch.ts: its metadata keys and tensors, the optional ones on request. The default (a llama with none of
 * the options) writes the same bytes as before the architectures came.
 */
import { GGMLType, typeName } from '../../src/gguf/types.js';
import { GGUFValueType } from '../../src/gguf/reader.js';
import { writeGGUF, type GGUFWriterKV, type GGUFWriterTensor } from '../../src/gguf/writer.js';
import { dequantizeRow, quantizeRow, ROW_FORMATS } from '../../src/gguf/quantize.js';
import { f16ToF32, f32ToF16 } from '../../src/gguf/f16.js';
import { architecture, type Architecture } from '../../src/model/arch.js';
import type { RefConfig } from './reference.js';

export interface SyntheticSpec {
  /** general.architecture, a row of src/model/arch.ts (default 'llama'): which keys and tensors are written */
  architecture?: string;
  dim: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  /** default dim/nHeads; if set, <arch>.attention.key_length/value_length are written and q/k/v/o sized by it */
  headDim?: number;
  /**
   * rotated dims per head, default headDim; < headDim is partial rotary. llama always writes rope.dimension_count,
   * the other architectures only when this is set (else the reader's default, the head dim, applies).
   */
  nRot?: number;
  ffn: number;
  vocab: number;
  ctx: number;
  ropeBase?: number;
  eps?: number;
  tied?: boolean;
  seed?: number;
  /** GGMLType for 2-D weights, default F32 */
  type?: number;
  /** per-tensor override by name */
  types?: Record<string, number>;
  /** llama: write attn_q/k/v.bias (qwen2 always has them, the others never) */
  qkvBias?: boolean;
  /** llama: write rope_freqs.weight, one factor in [1, 32) per rotated pair (Llama 3's RoPE scaling tensor) */
  ropeFreqs?: boolean;
  /** attention.sliding_window (written when set; read by the architectures with local layers) */
  window?: number;
  /** attention.sliding_window_pattern, a period or one bool per layer (written when set) */
  swaPattern?: number | boolean[];
  /** rope.freq_base_swa (written when set) */
  ropeBaseLocal?: number;
  /**
   * phi3: LongRoPE, rope_factors_short/long.weight (one factor in [1, 32) per rotated pair each) with
   * rope.scaling.original_context_length and rope.scaling.attn_factor
   */
  longRope?: { originalContext: number; attnFactor: number };
  /** rope.scaling.type "linear" with this rope.scaling.factor (written when set) */
  ropeScalingFactor?: number;
  /** attn_logit_softcapping / final_logit_softcapping (written when set; read by gemma2) */
  attnSoftcap?: number;
  finalSoftcap?: number;
}

export interface SyntheticModel {
  bytes: Uint8Array;
  spec: SyntheticSpec;
  /** dequantized f32 weights exactly as stored (after quantization), by tensor name, ggml row-major [dims[1]][dims[0]] */
  weights: Map<string, Float32Array>;
}

export interface SyntheticOptions {
  /** Keep the dequantized weights (default true); turn off for big models to save time and memory. */
  keepWeights?: boolean;
}

/** llama.cpp's general.file_type (LLAMA_FTYPE_*) for a model whose matrices are all of one type. */
const FILE_TYPE: Record<number, number> = {
  [GGMLType.F32]: 0, [GGMLType.F16]: 1, [GGMLType.Q4_0]: 2, [GGMLType.Q4_1]: 3, [GGMLType.Q8_0]: 7, [GGMLType.Q5_0]: 8,
  [GGMLType.Q5_1]: 9, [GGMLType.Q2_K]: 10, [GGMLType.Q3_K]: 12, [GGMLType.Q4_K]: 15, [GGMLType.Q5_K]: 17,
  [GGMLType.Q6_K]: 18, [GGMLType.IQ4_NL]: 25, [GGMLType.IQ4_XS]: 30, [GGMLType.BF16]: 32,
};

/** A tiny fast PRNG (mulberry32): floats in [0, 1). */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** FNV-1a: each tensor gets its own stream, so its values do not change when other tensors change type or shape. */
function hash(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

const WORDS = [
  'the', 'a', 'and', 'of', 'to', 'in', 'is', 'it', 'that', 'was', 'he', 'she', 'for', 'on', 'with', 'as', 'his', 'her',
  'they', 'at', 'be', 'this', 'from', 'have', 'or', 'by', 'one', 'had', 'not', 'but', 'what', 'all', 'were', 'when',
  'we', 'there', 'can', 'an', 'your', 'which', 'their', 'said', 'if', 'do', 'will', 'each', 'about', 'how', 'up', 'out',
  'them', 'then', 'many', 'some', 'so', 'these', 'would', 'other', 'into', 'has', 'more', 'two', 'like', 'him', 'see',
  'time', 'could', 'no', 'make', 'than', 'first', 'been', 'its', 'who', 'now', 'people', 'my', 'made', 'over', 'did',
  'down', 'only', 'way', 'find', 'use', 'may', 'water', 'long', 'little', 'very', 'after', 'words', 'called', 'just',
  'where', 'most', 'know', 'Once', 'upon', 'day', 'happy', 'play', 'friend', 'park', 'girl', 'boy', 'named', 'loved',
];

/** SentencePiece-like vocabulary: specials, 256 byte tokens, then pieces with descending scores. */
export function syntheticVocab(vocab: number): { tokens: string[]; scores: Float32Array; types: Int32Array } {
  const tokens = ['<unk>', '<s>', '</s>'];
  const types = [2, 3, 3];
  for (let b = 0; b < 256; b++) {
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
    types.push(6);
  }
  const seen = new Set(tokens);
  const pieces: string[] = [];
  const add = (p: string) => {
    if (!seen.has(p)) {
      seen.add(p);
      pieces.push(p);
    }
  };
  const letters = 'abcdefghijklmnopqrstuvwxyz';
  for (const w of WORDS) add(`▁${w}`);
  add('▁');
  for (const c of letters) add(c);
  for (const c of letters) add(`▁${c}`);
  for (const c of ',.!?\'"') add(c);
  // Then every letter combination of growing length, with and without the word-start mark, until the vocab is full.
  for (let len = 2; tokens.length + pieces.length < vocab; len++) {
    const total = 26 ** len;
    for (let i = 0; i < total && tokens.length + pieces.length < vocab; i++) {
      let s = '';
      for (let k = 0, v = i; k < len; k++, v = Math.floor(v / 26)) s = letters[v % 26] + s;
      add(s);
      add(`▁${s}`);
    }
  }
  for (const p of pieces) {
    tokens.push(p);
    types.push(1);
  }
  const n = Math.min(vocab, tokens.length);
  const scores = new Float32Array(n);
  for (let i = 0; i < n; i++) scores[i] = types[i] === 1 ? -(i - 258) : 0;
  return { tokens: tokens.slice(0, n), scores, types: Int32Array.from(types.slice(0, n)) };
}

interface Plan {
  name: string;
  dims: number[];
  type: number;
  /** 'norm': 1 ± 0.1; 'weight': uniform with std 1/sqrt(dims[0]); 'bias': uniform ±0.5; 'freq': 2^(0..5), log-uniform */
  kind: 'norm' | 'weight' | 'bias' | 'freq';
}

/** The architecture row a spec names. */
function archOf(spec: Pick<SyntheticSpec, 'architecture'>): Architecture {
  const name = spec.architecture ?? 'llama';
  const row = architecture(name);
  if (!row) throw new Error(`makeSyntheticLlama: no architecture "${name}" in src/model/arch.ts`);
  return row;
}

/**
 * What the file written from `spec` means, worked out from the spec and llama.cpp's rules (the kit README), not by
 * reading the file back: the reference forward pass runs from this, so a misreading in src/model/config.ts shows.
 */
export function syntheticConfig(spec: Omit<SyntheticSpec, 'ctx'>): RefConfig {
  const arch = archOf(spec);
  const headDim = spec.headDim ?? spec.dim / spec.nHeads;
  // f32 as the file stores them
  const ropeBase = Math.fround(spec.ropeBase ?? 10000);
  // Only the architectures with local layers read the window, and then every layer the pattern makes local has it.
  const size = arch.swaPattern ? (spec.window ?? arch.swaWindowDefault) : 0;
  const pattern = spec.swaPattern ?? arch.swaPattern;
  const local = (l: number) => (Array.isArray(pattern) ? pattern[l] : l % pattern < pattern - 1);
  return {
    arch,
    dim: spec.dim, nLayers: spec.nLayers, nHeads: spec.nHeads, nKvHeads: spec.nKvHeads, headDim,
    nRot: spec.nRot ?? headDim, ffn: spec.ffn, vocab: spec.vocab,
    ropeBase,
    ropeBaseLocal: arch.swaPattern ? Math.fround(spec.ropeBaseLocal ?? (arch.swaRopeBase || ropeBase)) : ropeBase,
    ropeScale: spec.ropeScalingFactor ? 1 / Math.fround(spec.ropeScalingFactor) : 1,
    ropeScaleLocal: spec.ropeScalingFactor && !arch.swaRopeBase ? 1 / Math.fround(spec.ropeScalingFactor) : 1,
    ropeAttnFactor: spec.longRope ? Math.fround(spec.longRope.attnFactor) : 1,
    ropeOriginalContext: spec.longRope?.originalContext ?? spec.ctx,
    contextLength: spec.ctx,
    ropeMode: arch.ropeMode,
    rmsEps: Math.fround(spec.eps ?? 1e-5),
    window: Array.from({ length: spec.nLayers }, (_, l) => (size && local(l) ? size : 0)),
    attnSoftcap: arch.softcaps ? Math.fround(spec.attnSoftcap ?? arch.attnSoftcapDefault) : 0,
    finalSoftcap: arch.softcaps ? Math.fround(spec.finalSoftcap ?? arch.finalSoftcapDefault) : 0,
  };
}

export function makeSyntheticLlama(spec: SyntheticSpec, opts: SyntheticOptions = {}): SyntheticModel {
  const keepWeights = opts.keepWeights ?? true;
  const { dim, nLayers, nHeads, nKvHeads, ffn, vocab, ctx } = spec;
  for (const [k, v] of Object.entries({ dim, nLayers, nHeads, nKvHeads, ffn, vocab, ctx })) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`makeSyntheticLlama: ${k} = ${v} must be a positive integer`);
  }
  if (spec.headDim === undefined && dim % nHeads !== 0) {
    throw new Error(`makeSyntheticLlama: dim ${dim} is not divisible by nHeads ${nHeads}; give headDim`);
  }
  if (nHeads % nKvHeads !== 0) throw new Error(`makeSyntheticLlama: nHeads ${nHeads} is not a multiple of nKvHeads ${nKvHeads}`);
  const arch = archOf(spec);
  const A = arch.name;
  const headDim = spec.headDim ?? dim / nHeads;
  const nRot = spec.nRot ?? headDim;
  if (nRot % 2 !== 0 || nRot < 2 || nRot > headDim) throw new Error(`makeSyntheticLlama: nRot ${nRot} must be even and ≤ headDim ${headDim}`);
  if (spec.qkvBias && arch.qkvBias !== 'optional') throw new Error(`makeSyntheticLlama: qkvBias is an option of llama only (${A}: ${arch.qkvBias})`);
  if (spec.ropeFreqs && !arch.ropeFreqs) throw new Error(`makeSyntheticLlama: ${A} has no rope_freqs`);
  if (spec.longRope && !arch.longRope) throw new Error(`makeSyntheticLlama: ${A} has no LongRoPE factors`);
  const seed = spec.seed ?? 1;
  const matType = spec.type ?? GGMLType.F32;
  const qDim = nHeads * headDim;
  const kvDim = nKvHeads * headDim;

  const plans: Plan[] = [];
  const mat = (name: string, rowLen: number, rows: number) => plans.push({ name, dims: [rowLen, rows], type: matType, kind: 'weight' });
  const vec = (name: string, len: number, kind: Plan['kind']) => plans.push({ name, dims: [len], type: GGMLType.F32, kind });
  const norm = (name: string, len = dim) => vec(name, len, 'norm');
  mat('token_embd.weight', dim, vocab);
  norm('output_norm.weight');
  if (!spec.tied) mat('output.weight', dim, vocab);
  if (spec.ropeFreqs) vec('rope_freqs.weight', nRot / 2, 'freq');
  if (spec.longRope) {
    vec('rope_factors_long.weight', nRot / 2, 'freq');
    vec('rope_factors_short.weight', nRot / 2, 'freq');
  }
  for (let l = 0; l < nLayers; l++) {
    const b = `blk.${l}.`;
    norm(`${b}attn_norm.weight`);
    if (arch.fusedQKV) mat(`${b}attn_qkv.weight`, dim, qDim + 2 * kvDim);
    else {
      mat(`${b}attn_q.weight`, dim, qDim);
      mat(`${b}attn_k.weight`, dim, kvDim);
      mat(`${b}attn_v.weight`, dim, kvDim);
    }
    if (arch.qkvBias === 'required' || spec.qkvBias) {
      vec(`${b}attn_q.bias`, qDim, 'bias');
      vec(`${b}attn_k.bias`, kvDim, 'bias');
      vec(`${b}attn_v.bias`, kvDim, 'bias');
    }
    if (arch.qkNorm) {
      norm(`${b}attn_q_norm.weight`, headDim);
      norm(`${b}attn_k_norm.weight`, headDim);
    }
    mat(`${b}attn_output.weight`, qDim, dim);
    if (arch.postNorms) norm(`${b}post_attention_norm.weight`);
    norm(`${b}ffn_norm.weight`);
    if (arch.fusedGateUp) mat(`${b}ffn_up.weight`, dim, 2 * ffn);
    else {
      mat(`${b}ffn_gate.weight`, dim, ffn);
      mat(`${b}ffn_up.weight`, dim, ffn);
    }
    mat(`${b}ffn_down.weight`, ffn, dim);
    if (arch.postNorms) norm(`${b}post_ffw_norm.weight`);
  }
  const known = new Set(plans.map((p) => p.name));
  for (const [name, type] of Object.entries(spec.types ?? {})) {
    if (!known.has(name)) throw new Error(`makeSyntheticLlama: types names "${name}", which this model does not have`);
    plans.find((p) => p.name === name)!.type = type;
  }
  for (const p of plans) {
    const format = ROW_FORMATS.get(p.type);
    if (!format?.quantize) throw new Error(`makeSyntheticLlama: ${p.name}: the test writer cannot write type ${typeName(p.type)} (${p.type})`);
    if (p.dims[0] % format.blockSize !== 0) {
      throw new Error(`makeSyntheticLlama: ${p.name}: ${typeName(p.type)} needs a row length that is a multiple of ${format.blockSize}, got dims[0] = ${p.dims[0]}`);
    }
  }

  const weights = new Map<string, Float32Array>();
  const tensors: GGUFWriterTensor[] = plans.map((p) => ({
    name: p.name,
    dims: p.dims,
    type: p.type,
    fill: (dst: Uint8Array) => fillTensor(p, seed, dst, keepWeights ? weights : undefined),
  }));

  const { tokens, scores, types } = syntheticVocab(vocab);
  const quantized = plans.some((p) => ROW_FORMATS.get(p.type)!.blockSize > 1);
  const u32 = (key: string, value: number): GGUFWriterKV => ({ key: `${A}.${key}`, type: GGUFValueType.UINT32, value });
  const f32 = (key: string, value: number): GGUFWriterKV => ({ key: `${A}.${key}`, type: GGUFValueType.FLOAT32, value });
  const metadata: GGUFWriterKV[] = [
    { key: 'general.architecture', type: GGUFValueType.STRING, value: A },
    // llama.cpp looks up Phi-3's special tokens when general.name contains "phi3" and fails without them (kit README)
    { key: 'general.name', type: GGUFValueType.STRING, value: `synthetic-${A === 'phi3' ? 'phi' : A}-${dim}x${nLayers}` },
    { key: 'general.file_type', type: GGUFValueType.UINT32, value: FILE_TYPE[matType] },
    ...(quantized ? [{ key: 'general.quantization_version', type: GGUFValueType.UINT32, value: 2 }] : []),
    u32('context_length', ctx),
    u32('embedding_length', dim),
    u32('block_count', nLayers),
    u32('feed_forward_length', ffn),
    ...(A === 'llama' || spec.nRot !== undefined ? [u32('rope.dimension_count', nRot)] : []),
    u32('attention.head_count', nHeads),
    u32('attention.head_count_kv', nKvHeads),
    ...(spec.headDim !== undefined ? [u32('attention.key_length', headDim), u32('attention.value_length', headDim)] : []),
    f32('attention.layer_norm_rms_epsilon', spec.eps ?? 1e-5),
    f32('rope.freq_base', spec.ropeBase ?? 10000),
    ...(spec.window !== undefined ? [u32('attention.sliding_window', spec.window)] : []),
    ...(Array.isArray(spec.swaPattern)
      ? [{ key: `${A}.attention.sliding_window_pattern`, type: GGUFValueType.ARRAY, arrayType: GGUFValueType.BOOL, value: spec.swaPattern }]
      : spec.swaPattern !== undefined ? [u32('attention.sliding_window_pattern', spec.swaPattern)] : []),
    ...(spec.ropeBaseLocal !== undefined ? [f32('rope.freq_base_swa', spec.ropeBaseLocal)] : []),
    ...(spec.ropeScalingFactor !== undefined
      ? [{ key: `${A}.rope.scaling.type`, type: GGUFValueType.STRING, value: 'linear' }, f32('rope.scaling.factor', spec.ropeScalingFactor)]
      : []),
    ...(spec.longRope
      ? [u32('rope.scaling.original_context_length', spec.longRope.originalContext), f32('rope.scaling.attn_factor', spec.longRope.attnFactor)]
      : []),
    ...(spec.attnSoftcap !== undefined ? [f32('attn_logit_softcapping', spec.attnSoftcap)] : []),
    ...(spec.finalSoftcap !== undefined ? [f32('final_logit_softcapping', spec.finalSoftcap)] : []),
    ...(A === 'llama' ? [u32('vocab_size', vocab)] : []),
    { key: 'tokenizer.ggml.model', type: GGUFValueType.STRING, value: 'llama' },
    { key: 'tokenizer.ggml.tokens', type: GGUFValueType.ARRAY, arrayType: GGUFValueType.STRING, value: tokens },
    { key: 'tokenizer.ggml.scores', type: GGUFValueType.ARRAY, arrayType: GGUFValueType.FLOAT32, value: scores },
    { key: 'tokenizer.ggml.token_type', type: GGUFValueType.ARRAY, arrayType: GGUFValueType.INT32, value: types },
    { key: 'tokenizer.ggml.bos_token_id', type: GGUFValueType.UINT32, value: 1 },
    { key: 'tokenizer.ggml.eos_token_id', type: GGUFValueType.UINT32, value: 2 },
    { key: 'tokenizer.ggml.unknown_token_id', type: GGUFValueType.UINT32, value: 0 },
    { key: 'tokenizer.ggml.add_bos_token', type: GGUFValueType.BOOL, value: true },
    { key: 'tokenizer.ggml.add_eos_token', type: GGUFValueType.BOOL, value: false },
  ];
  const bytes = writeGGUF({ version: 3, metadata, tensors });
  return { bytes, spec, weights };
}

function fillTensor(p: Plan, seed: number, dst: Uint8Array, weights: Map<string, Float32Array> | undefined): void {
  const rand = mulberry32(hash(p.name) ^ Math.imul(seed, 0x9e3779b9));
  const rowLen = p.dims[0];
  const rows = p.dims.slice(1).reduce((a, b) => a * b, 1);
  // Uniform on [-a, a] has std a/sqrt(3): a = sqrt(3/fan_in) gives std 1/sqrt(fan_in), so W·x keeps x's scale.
  const a = Math.sqrt(3 / rowLen);
  const gen = {
    norm: () => 1 + 0.2 * (rand() - 0.5),
    weight: () => a * (2 * rand() - 1),
    bias: () => rand() - 0.5,
    freq: () => 2 ** (5 * rand()),
  }[p.kind];
  const kept = weights ? new Float32Array(rowLen * rows) : undefined;
  if (p.type === GGMLType.F32) {
    const out = new Float32Array(dst.buffer, dst.byteOffset, rowLen * rows);
    if (dst.byteOffset % 4 === 0) {
      for (let i = 0; i < out.length; i++) out[i] = gen();
      kept?.set(out);
    } else {
      const row = new Float32Array(rowLen);
      for (let r = 0; r < rows; r++) {
        for (let i = 0; i < rowLen; i++) row[i] = gen();
        quantizeRow(p.type, row, dst.subarray(r * rowLen * 4));
        kept?.set(row, r * rowLen);
      }
    }
  } else if (p.type === GGMLType.F16) {
    for (let i = 0, n = rowLen * rows; i < n; i++) {
      const h = f32ToF16(gen());
      dst[2 * i] = h & 0xff;
      dst[2 * i + 1] = h >>> 8;
      if (kept) kept[i] = f16ToF32(h);
    }
  } else {
    const format = ROW_FORMATS.get(p.type)!;
    const rowBytes = (rowLen / format.blockSize) * format.blockBytes;
    const row = new Float32Array(rowLen);
    for (let r = 0; r < rows; r++) {
      for (let i = 0; i < rowLen; i++) row[i] = gen();
      const out = dst.subarray(r * rowBytes, (r + 1) * rowBytes);
      quantizeRow(p.type, row, out);
      if (kept) dequantizeRow(p.type, out, rowLen, kept.subarray(r * rowLen, (r + 1) * rowLen));
    }
  }
  if (kept) weights!.set(p.name, kept);
}

/**
 * llama.cpp's Q4_K_M idea for synthetic models: Q4_K, with attn_v and ffn_down in Q6_K on the first and last layers
 * only and a Q6_K output, so the layers' images differ in size and layout. Tests add their own odd types on top.
 */
export function q4kmLikeTypes(nLayers: number): Record<string, number> {
  const t: Record<string, number> = { 'token_embd.weight': GGMLType.Q4_K, 'output.weight': GGMLType.Q6_K };
  for (let l = 0; l < nLayers; l++) {
    const more = l === 0 || l === nLayers - 1;
    t[`blk.${l}.attn_v.weight`] = more ? GGMLType.Q6_K : GGMLType.Q4_K;
    t[`blk.${l}.ffn_down.weight`] = more ? GGMLType.Q6_K : GGMLType.Q4_K;
  }
  return t;
}
