/**
 * Deterministic synthetic Llama GGUF models, shaped like real ones, for tests and benchmarks where the weight values
 * do not matter but the layout, metadata and numerics (activations of order 1, non-degenerate logits) do.
 */
import { GGMLType, typeName } from '../../src/gguf/types.js';
import { GGUFValueType } from '../../src/gguf/reader.js';
import { writeGGUF, type GGUFWriterKV, type GGUFWriterTensor } from '../../src/gguf/writer.js';
import { dequantizeRow, quantizeRow, ROW_FORMATS } from '../../src/gguf/quantize.js';
import { f16ToF32, f32ToF16 } from '../../src/gguf/f16.js';

export interface SyntheticSpec {
  dim: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  /** default dim/nHeads; if set, llama.attention.key_length/value_length are written and q/k/v/o sized by it */
  headDim?: number;
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
  /** 'norm': 1 ± 0.1; 'weight': uniform with std 1/sqrt(dims[0]) */
  kind: 'norm' | 'weight';
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
  const headDim = spec.headDim ?? dim / nHeads;
  const seed = spec.seed ?? 1;
  const matType = spec.type ?? GGMLType.F32;
  const qDim = nHeads * headDim;
  const kvDim = nKvHeads * headDim;

  const plans: Plan[] = [];
  const mat = (name: string, rowLen: number, rows: number) => plans.push({ name, dims: [rowLen, rows], type: matType, kind: 'weight' });
  const norm = (name: string) => plans.push({ name, dims: [dim], type: GGMLType.F32, kind: 'norm' });
  mat('token_embd.weight', dim, vocab);
  norm('output_norm.weight');
  if (!spec.tied) mat('output.weight', dim, vocab);
  for (let l = 0; l < nLayers; l++) {
    const b = `blk.${l}.`;
    norm(`${b}attn_norm.weight`);
    mat(`${b}attn_q.weight`, dim, qDim);
    mat(`${b}attn_k.weight`, dim, kvDim);
    mat(`${b}attn_v.weight`, dim, kvDim);
    mat(`${b}attn_output.weight`, qDim, dim);
    norm(`${b}ffn_norm.weight`);
    mat(`${b}ffn_gate.weight`, dim, ffn);
    mat(`${b}ffn_up.weight`, dim, ffn);
    mat(`${b}ffn_down.weight`, ffn, dim);
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
  const metadata: GGUFWriterKV[] = [
    { key: 'general.architecture', type: GGUFValueType.STRING, value: 'llama' },
    { key: 'general.name', type: GGUFValueType.STRING, value: `synthetic-llama-${dim}x${nLayers}` },
    { key: 'general.file_type', type: GGUFValueType.UINT32, value: FILE_TYPE[matType] },
    ...(quantized ? [{ key: 'general.quantization_version', type: GGUFValueType.UINT32, value: 2 }] : []),
    { key: 'llama.context_length', type: GGUFValueType.UINT32, value: ctx },
    { key: 'llama.embedding_length', type: GGUFValueType.UINT32, value: dim },
    { key: 'llama.block_count', type: GGUFValueType.UINT32, value: nLayers },
    { key: 'llama.feed_forward_length', type: GGUFValueType.UINT32, value: ffn },
    { key: 'llama.rope.dimension_count', type: GGUFValueType.UINT32, value: headDim },
    { key: 'llama.attention.head_count', type: GGUFValueType.UINT32, value: nHeads },
    { key: 'llama.attention.head_count_kv', type: GGUFValueType.UINT32, value: nKvHeads },
    ...(spec.headDim !== undefined
      ? [
          { key: 'llama.attention.key_length', type: GGUFValueType.UINT32, value: headDim },
          { key: 'llama.attention.value_length', type: GGUFValueType.UINT32, value: headDim },
        ]
      : []),
    { key: 'llama.attention.layer_norm_rms_epsilon', type: GGUFValueType.FLOAT32, value: spec.eps ?? 1e-5 },
    { key: 'llama.rope.freq_base', type: GGUFValueType.FLOAT32, value: spec.ropeBase ?? 10000 },
    { key: 'llama.vocab_size', type: GGUFValueType.UINT32, value: vocab },
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
  const gen = p.kind === 'norm' ? () => 1 + 0.2 * (rand() - 0.5) : () => a * (2 * rand() - 1);
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
