// Deterministic synthetic GGUF models at the shapes of real ones (Llama, Qwen2, Qwen3 and Gemma 3 architectures), for
// benchmarks: speed depends on shapes and tensor types, not on weight values, so pseudo-random weights give the same
// timings as the real models without downloading gigabytes. Every engine (edgellm, llama.cpp, wllama) reads the same
// file.
//
//   import { syntheticModel, SYNTHETIC_TEXT } from './synthetic.mjs';
//   const file = await syntheticModel('tinyllama-1.1b', 'q4_0');   // generated once, then reused
//
// The files are plain GGUF v3 as llama.cpp's converter and quantizer write them (2-D tensors in the chosen type, or
// in llama.cpp's per-tensor mix for the _m types; norms F32; alignment 32) with a SentencePiece ("llama") vocabulary,
// built so that:
// - every word of SYNTHETIC_TEXT is exactly one token, in llama.cpp's tokenizer and in edgellm's, so a prompt of
//   k words is BOS + k ids whatever the engine;
// - greedy decoding never stops early: the output row of EOS (the only end-of-generation token) is all zeros, so its
//   logit is exactly 0 while the largest of thousands of random logits is positive.
//
// Standalone: node bench/synthetic.mjs [SHAPE [TYPE]]   (generates and prints the path; all shapes × types if none)
import { closeSync, existsSync, mkdirSync, openSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { cacheRoot } from './anchors/cache.mjs';

/**
 * Part of every file name: bump it whenever the bytes generated for a given shape and type change (or, where one
 * shape's bytes change, give that shape a `version` above it).
 */
export const GENERATOR_VERSION = 1;

/**
 * Real models' shapes (from their config.json). ropeBase/eps/ctx only change metadata, not speed at short contexts.
 * Optional fields, for the architectures beyond Llama (ARCHS): `arch` (general.architecture, default 'llama'),
 * `headDim` (attention.key_length where it is not dim / nHeads), `ropeFreqs` (Llama 3's rope_freqs.weight),
 * `slidingWindow` (Gemma 3's local layers), and `version`, the generator version of this shape's bytes where they
 * changed after GENERATOR_VERSION (it names the cached file).
 */
export const SHAPES = {
  'smollm-135m': { name: 'smollm-135m', dim: 576, nLayers: 30, nHeads: 9, nKvHeads: 3, ffn: 1536, vocab: 49152, ctx: 2048, ropeBase: 100000, eps: 1e-5, tied: true },
  'tinyllama-1.1b': { name: 'tinyllama-1.1b', dim: 2048, nLayers: 22, nHeads: 32, nKvHeads: 4, ffn: 5632, vocab: 32000, ctx: 2048, ropeBase: 10000, eps: 1e-5, tied: false },
  // version 2: with rope_freqs.weight, which every Llama 3.1/3.2 file carries (version 1 had none)
  'llama-3.2-1b': { name: 'llama-3.2-1b', dim: 2048, nLayers: 16, nHeads: 32, nKvHeads: 8, ffn: 8192, vocab: 128256, ctx: 131072, ropeBase: 500000, eps: 1e-5, tied: true, ropeFreqs: true, version: 2 },
  // Llama-3.1-8B: past wasm32's 4 GiB in every type (Q4_0 4.4 GiB), the shape of the memory issue's largest tests
  'llama-3.1-8b': { name: 'llama-3.1-8b', dim: 4096, nLayers: 32, nHeads: 32, nKvHeads: 8, ffn: 14336, vocab: 128256, ctx: 131072, ropeBase: 500000, eps: 1e-5, tied: false, ropeFreqs: true, version: 2 },
  // Qwen2.5-0.5B: 896 = 3.5 × 256, so its K-quant mixes fall back to 32-blocks on most matrices, as in the real files
  'qwen2.5-0.5b': { name: 'qwen2.5-0.5b', arch: 'qwen2', dim: 896, nLayers: 24, nHeads: 14, nKvHeads: 2, ffn: 4864, vocab: 151936, ctx: 32768, ropeBase: 1000000, eps: 1e-6, tied: true },
  'qwen3-0.6b': { name: 'qwen3-0.6b', arch: 'qwen3', dim: 1024, nLayers: 28, nHeads: 16, nKvHeads: 8, headDim: 128, ffn: 3072, vocab: 151936, ctx: 40960, ropeBase: 1000000, eps: 1e-6, tied: true },
  // Gemma 3 1B: 5 local layers (window 512, RoPE base 10000: llama.cpp's defaults, as real files write neither the
  // pattern nor the local base) to 1 global (base 1e6)
  'gemma-3-1b': { name: 'gemma-3-1b', arch: 'gemma3', dim: 1152, nLayers: 26, nHeads: 4, nKvHeads: 1, headDim: 256, ffn: 6912, vocab: 262144, ctx: 32768, ropeBase: 1000000, eps: 1e-6, tied: true, slidingWindow: 512 },
};

/**
 * What an architecture adds to the Llama layout, as llama.cpp's converter writes it and its loader requires it:
 * Q/K/V biases (Qwen2), per-head q/k RMSNorm weights (Qwen3, Gemma 3), Gemma's norms after attention and FFN, and
 * the sliding window key. Everything else (RoPE mode, GELU, the embedding scale) is the same tensors read differently.
 */
const ARCHS = {
  llama: {},
  qwen2: { qkvBias: true },
  qwen3: { qkNorm: true },
  gemma3: { qkNorm: true, postNorms: true, slidingWindow: true },
};

/**
 * Shapes of no real model, kept apart from SHAPES (whose sizes are checked against the real models'). long-15m is
 * sotu-15m's shape (head dim 48, 6/2 heads) with a 16K context_length, for decode speed at long contexts
 * (bench --contexts), where attention rather than the small matmuls takes most of a token's time.
 */
export const OTHER_SHAPES = {
  'long-15m': { name: 'long-15m', dim: 288, nLayers: 6, nHeads: 6, nKvHeads: 2, ffn: 768, vocab: 32000, ctx: 16384, ropeBase: 10000, eps: 1e-5, tied: true },
};

/** The first generator's types, every 2-D tensor in the one type (test/bench-synthetic.test.ts checks their sizes). */
export const TYPES = ['q4_0', 'q8_0', 'f16'];

/**
 * The types of the files people download, each as llama.cpp's quantizer writes it for that file type: q3_k_m, q4_k_m
 * and q5_k_m with its per-tensor mix (llama_tensor_get_type); the others pure. Either way a row whose length is not a
 * multiple of the type's block falls back as llama.cpp does (Q4_K → Q5_0, Q6_K → Q8_0, ...: SmolLM's 576 is not a
 * multiple of 256), so the file is the one a user of that shape would have.
 */
export const QUANT_TYPES = ['q4_1', 'q5_0', 'q5_1', 'iq4_nl', 'bf16', 'q2_k', 'q3_k_m', 'q4_k_m', 'q5_k_m', 'q6_k', 'iq4_xs'];

/** Every --type the bench takes. */
export const ALL_TYPES = [...TYPES, ...QUANT_TYPES];

// ───────────────────────────── vocabulary and text ─────────────────────────────

/**
 * The words of SYNTHETIC_TEXT, all lower-case a-z. Each needs its own piece "▁word" plus every prefix "▁w", "▁wo",
 * ...: SentencePiece BPE starts from single characters and merges two adjacent symbols only when their concatenation
 * is a token, so a word becomes one token only if each step of some merge path is in the vocabulary. The vocabulary
 * has no other multi-character piece made of these letters (the padding pieces are upper-case), so the left-to-right
 * prefix path is the only one and scores never matter: both tokenizers must land on the same single token.
 */
const WORDS = (
  'the of and to in is it you that he was for on are as with his they at be this have from or one had by but not ' +
  'what all were we when your can said there use an each which she do how their if will up other about out many ' +
  'then them these so some her would make like him into time has look two more write go see number no way could ' +
  'people my than first water been call who oil its now find long down day did get come made may part'
).split(' ');

/** Words in SYNTHETIC_TEXT: more than any prompt a bench uses (any prefix of k words is BOS + k tokens). */
const TEXT_WORDS = 4096;

/** A fixed pseudo-random sequence of WORDS (mulberry32, seed 1), so it reads like varied text rather than a cycle. */
export const SYNTHETIC_TEXT = (() => {
  let a = 1;
  const out = [];
  for (let i = 0; i < TEXT_WORDS; i++) {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out.push(WORDS[((t ^ (t >>> 14)) >>> 0) % WORDS.length]);
  }
  return out.join(' ');
})();

/** The first k words of SYNTHETIC_TEXT: tokenizes to BOS + k ids. */
export function syntheticPrompt(k) {
  const words = SYNTHETIC_TEXT.split(' ');
  if (!Number.isInteger(k) || k < 0 || k > words.length) throw new Error(`syntheticPrompt: k = ${k} must be 0..${words.length}`);
  return words.slice(0, k).join(' ');
}

const SPACE = '\u2581'; // ▁, SentencePiece's escaped space
const TYPE_NORMAL = 1, TYPE_UNKNOWN = 2, TYPE_CONTROL = 3, TYPE_BYTE = 6;

/** The pieces SYNTHETIC_TEXT needs: "▁", the letters, and every prefix of every "▁word". */
function textPieces() {
  const pieces = new Set([SPACE, ...'abcdefghijklmnopqrstuvwxyz']);
  for (const w of WORDS) for (let i = 2; i <= w.length + 1; i++) pieces.add(SPACE + w.slice(0, i - 1));
  return [...pieces];
}

/** The smallest vocabulary a synthetic model can have: specials, bytes and the text's pieces. */
export const MIN_VOCAB = 3 + 256 + textPieces().length;

/**
 * `<unk>` 0, `<s>` 1, `</s>` 2, the 256 byte tokens, the text's pieces, then upper-case filler pieces "▁A", "▁B", ...,
 * "▁ZZ", ... (which no lower-case text can merge into) up to exactly `vocab`. Scores fall with the id, as in real
 * SentencePiece vocabularies.
 */
export function syntheticVocab(vocab) {
  if (vocab < MIN_VOCAB) throw new Error(`synthetic vocab ${vocab} is smaller than the ${MIN_VOCAB} tokens SYNTHETIC_TEXT needs`);
  const tokens = ['<unk>', '<s>', '</s>'];
  const types = [TYPE_UNKNOWN, TYPE_CONTROL, TYPE_CONTROL];
  for (let b = 0; b < 256; b++) {
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
    types.push(TYPE_BYTE);
  }
  for (const p of textPieces()) {
    tokens.push(p);
    types.push(TYPE_NORMAL);
  }
  const A = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ';
  for (let len = 1; tokens.length < vocab; len++) {
    for (let i = 0; i < 26 ** len && tokens.length < vocab; i++) {
      let s = '';
      for (let k = 0, v = i; k < len; k++, v = Math.floor(v / 26)) s = A[v % 26] + s;
      tokens.push(SPACE + s);
      types.push(TYPE_NORMAL);
    }
  }
  const scores = new Float32Array(vocab);
  for (let i = 259; i < vocab; i++) scores[i] = -(i - 259);
  return { tokens, scores, types: Int32Array.from(types) };
}

// ───────────────────────────── GGUF header ─────────────────────────────

/** Storage types: ggml type id, elements per block, bytes per block. */
const STORAGE = {
  f32: { ggml: 0, block: 1, bytes: 4 },
  f16: { ggml: 1, block: 1, bytes: 2 },
  q4_0: { ggml: 2, block: 32, bytes: 18 },
  q4_1: { ggml: 3, block: 32, bytes: 20 },
  q5_0: { ggml: 6, block: 32, bytes: 22 },
  q5_1: { ggml: 7, block: 32, bytes: 24 },
  q8_0: { ggml: 8, block: 32, bytes: 34 },
  q2_k: { ggml: 10, block: 256, bytes: 84 },
  q3_k: { ggml: 11, block: 256, bytes: 110 },
  q4_k: { ggml: 12, block: 256, bytes: 144 },
  q5_k: { ggml: 13, block: 256, bytes: 176 },
  q6_k: { ggml: 14, block: 256, bytes: 210 },
  iq4_nl: { ggml: 20, block: 32, bytes: 18 },
  iq4_xs: { ggml: 23, block: 256, bytes: 136 },
  bf16: { ggml: 30, block: 1, bytes: 2 },
};

/**
 * Per file type: general.file_type (llama_ftype), the storage type of its 2-D tensors, whether it is one of
 * llama.cpp's mixes, and whether rows that do not fit the block fall back (the first generator's types never did:
 * their shapes all take 32-blocks, and their bytes must not change).
 */
const FILE_TYPES = {
  f16: { ftype: 1, base: 'f16' },
  q4_0: { ftype: 2, base: 'q4_0' },
  q8_0: { ftype: 7, base: 'q8_0' },
  q4_1: { ftype: 3, base: 'q4_1', fallback: true },
  q5_0: { ftype: 8, base: 'q5_0', fallback: true },
  q5_1: { ftype: 9, base: 'q5_1', fallback: true },
  q2_k: { ftype: 10, base: 'q2_k', fallback: true },
  q3_k_m: { ftype: 12, base: 'q3_k', mix: true, fallback: true },
  q4_k_m: { ftype: 15, base: 'q4_k', mix: true, fallback: true },
  q5_k_m: { ftype: 17, base: 'q5_k', mix: true, fallback: true },
  q6_k: { ftype: 18, base: 'q6_k', fallback: true },
  iq4_nl: { ftype: 25, base: 'iq4_nl', fallback: true },
  iq4_xs: { ftype: 30, base: 'iq4_xs', fallback: true },
  bf16: { ftype: 32, base: 'bf16' },
};

/** llama.cpp's tensor_type_fallback: the 32-block type a 256-block type becomes when the row does not fit. */
const FALLBACK = { q2_k: 'q4_0', q3_k: 'q4_0', q4_k: 'q5_0', q5_k: 'q5_1', q6_k: 'q8_0', iq4_xs: 'iq4_nl' };

/** llama.cpp's use_more_bits: the first and last eighth of the layers, and every third one between. */
const useMoreBits = (i, n) => i < Math.trunc(n / 8) || i >= Math.trunc((7 * n) / 8) || (i - Math.trunc(n / 8)) % 3 === 2;

/**
 * The storage type of one tensor: llama_tensor_get_type_impl (no experts, not the 70B special case; its other
 * architecture-specific rules are Falcon's, so Qwen and Gemma files take the same mixes) for the mixes, then
 * tensor_type_fallback. `role` is the tensor's category: token_embd, output,
 * attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up or ffn_down; `layer` its block index.
 */
function storageType(shape, fileType, role, layer, rowLength) {
  const f = FILE_TYPES[fileType];
  let t = f.base;
  const n = shape.nLayers;
  // Q2_K and the IQ files' mixes also look at the GQA ratio; these three do not.
  if (f.mix) {
    if (role === 'output' || (shape.tied && role === 'token_embd')) {
      t = rowLength % STORAGE[f.base].block !== 0 ? 'q8_0' : 'q6_k';
    } else if (role === 'attn_v') {
      if (fileType === 'q3_k_m') t = layer < 2 ? 'q5_k' : 'q4_k';
      else if (useMoreBits(layer, n)) t = 'q6_k';
    } else if (role === 'ffn_down') {
      if (fileType === 'q3_k_m') t = layer < Math.trunc(n / 16) ? 'q5_k' : 'q4_k';
      else if (useMoreBits(layer, n)) t = 'q6_k';
    } else if (role === 'attn_output') {
      if (fileType === 'q3_k_m') t = 'q4_k';
    }
  }
  if (f.fallback && rowLength % STORAGE[t].block !== 0) t = FALLBACK[t];
  return t;
}

/** Tensor name → ggml type name of a synthetic file: what llama.cpp's quantizer would have chosen for each. */
export function tensorTypes(shape, fileType) {
  if (!FILE_TYPES[fileType]) throw new Error(`synthetic: type ${JSON.stringify(fileType)} is not one of ${ALL_TYPES.join(', ')}`);
  return Object.fromEntries(tensorPlan(shape, fileType).map((t) => [t.name, t.type.toUpperCase()]));
}

const V = { U32: 4, I32: 5, F32: 6, BOOL: 7, STRING: 8, ARRAY: 9 };
const ALIGNMENT = 32;
const align = (n) => Math.ceil(n / ALIGNMENT) * ALIGNMENT;

/** Grows as the header is appended; only the header (≈ 2 MB for a 128K vocabulary) is ever held in memory. */
class HeaderWriter {
  buf = Buffer.alloc(1 << 20);
  pos = 0;
  reserve(n) {
    if (this.pos + n <= this.buf.length) return;
    const grown = Buffer.alloc(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(grown, 0, 0, this.pos);
    this.buf = grown;
  }
  u32(v) { this.reserve(4); this.buf.writeUInt32LE(v, this.pos); this.pos += 4; }
  i32(v) { this.reserve(4); this.buf.writeInt32LE(v, this.pos); this.pos += 4; }
  f32(v) { this.reserve(4); this.buf.writeFloatLE(v, this.pos); this.pos += 4; }
  u64(v) { this.reserve(8); this.buf.writeBigUInt64LE(BigInt(v), this.pos); this.pos += 8; }
  str(s) {
    const n = Buffer.byteLength(s);
    this.u64(n);
    this.reserve(n);
    this.pos += this.buf.write(s, this.pos);
  }
  kv(key, type, value) {
    this.str(key);
    this.u32(type);
    if (type === V.U32) this.u32(value);
    else if (type === V.F32) this.f32(value);
    else if (type === V.BOOL) { this.reserve(1); this.buf[this.pos++] = value ? 1 : 0; }
    else if (type === V.STRING) this.str(value);
    else throw new Error(`HeaderWriter.kv: type ${type}`);
  }
  array(key, elemType, values) {
    this.str(key);
    this.u32(V.ARRAY);
    this.u32(elemType);
    this.u64(values.length);
    for (const v of values) {
      if (elemType === V.STRING) this.str(v);
      else if (elemType === V.F32) this.f32(v);
      else if (elemType === V.I32) this.i32(v);
      else throw new Error(`HeaderWriter.array: type ${elemType}`);
    }
  }
}

/** The architecture's row (ARCHS) and the head dim of a shape. */
function archOf(shape) {
  const arch = shape.arch ?? 'llama';
  if (!ARCHS[arch]) throw new Error(`synthetic shape: arch ${JSON.stringify(arch)} is not one of ${Object.keys(ARCHS).join(', ')}`);
  return { arch, row: ARCHS[arch], headDim: shape.headDim ?? shape.dim / shape.nHeads };
}

function checkShape(shape) {
  const { dim, nLayers, nHeads, nKvHeads, ffn, vocab, ctx } = shape;
  for (const [k, v] of Object.entries({ dim, nLayers, nHeads, nKvHeads, ffn, vocab, ctx })) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`synthetic shape: ${k} = ${v} must be a positive integer`);
  }
  const { arch, row, headDim } = archOf(shape);
  if (!Number.isInteger(headDim) || headDim % 2 !== 0) throw new Error(`synthetic shape: head dim ${headDim} (dim ${dim} / nHeads ${nHeads}, or headDim) must be an even integer`);
  if (nHeads % nKvHeads !== 0) throw new Error(`synthetic shape: nHeads ${nHeads} is not a multiple of nKvHeads ${nKvHeads}`);
  if (dim % 32 !== 0 || ffn % 32 !== 0 || (nHeads * headDim) % 32 !== 0) {
    throw new Error(`synthetic shape: dim ${dim}, ffn ${ffn} and nHeads × headDim ${nHeads * headDim} must be multiples of 32 (the Q4_0/Q8_0 block)`);
  }
  if (shape.ropeFreqs && arch !== 'llama') throw new Error(`synthetic shape: rope_freqs is Llama 3's, not ${arch}'s`);
  if (Boolean(row.slidingWindow) !== Number.isInteger(shape.slidingWindow)) throw new Error(`synthetic shape: ${arch} ${row.slidingWindow ? 'needs' : 'takes no'} slidingWindow`);
}

/**
 * The tensors in llama.cpp's converter order: name, [rowLength, rows], storage type, sizes. 1-D tensors are F32: norm
 * weights and rope_freqs 1 (each layer sees its input's scale unchanged; no RoPE scaling), biases 0.
 */
function tensorPlan(shape, type) {
  const { dim, nLayers, nHeads, nKvHeads, ffn, vocab } = shape;
  const { row, headDim } = archOf(shape);
  const qDim = headDim * nHeads, kvDim = headDim * nKvHeads;
  // [name, dims, role, layer]: the role and layer choose the type in the mixes
  const t = [...(shape.ropeFreqs ? [['rope_freqs.weight', [headDim / 2], 'norm', 0]] : []), ['token_embd.weight', [dim, vocab], 'token_embd', 0]];
  for (let l = 0; l < nLayers; l++) {
    const b = `blk.${l}.`;
    const bias = (name, n) => (row.qkvBias ? [[`${b}${name}.bias`, [n], 'bias', l]] : []);
    t.push(
      [`${b}attn_norm.weight`, [dim], 'norm', l],
      [`${b}attn_q.weight`, [dim, qDim], 'attn_q', l],
      ...bias('attn_q', qDim),
      [`${b}attn_k.weight`, [dim, kvDim], 'attn_k', l],
      ...bias('attn_k', kvDim),
      [`${b}attn_v.weight`, [dim, kvDim], 'attn_v', l],
      ...bias('attn_v', kvDim),
      ...(row.qkNorm ? [[`${b}attn_q_norm.weight`, [headDim], 'norm', l], [`${b}attn_k_norm.weight`, [headDim], 'norm', l]] : []),
      [`${b}attn_output.weight`, [qDim, dim], 'attn_output', l],
      ...(row.postNorms ? [[`${b}post_attention_norm.weight`, [dim], 'norm', l]] : []),
      [`${b}ffn_norm.weight`, [dim], 'norm', l],
      [`${b}ffn_gate.weight`, [dim, ffn], 'ffn_gate', l],
      [`${b}ffn_up.weight`, [dim, ffn], 'ffn_up', l],
      [`${b}ffn_down.weight`, [ffn, dim], 'ffn_down', l],
      ...(row.postNorms ? [[`${b}post_ffw_norm.weight`, [dim], 'norm', l]] : []),
    );
  }
  t.push(['output_norm.weight', [dim], 'norm', 0]);
  if (!shape.tied) t.push(['output.weight', [dim, vocab], 'output', 0]);
  return t.map(([name, dims, role, layer]) => {
    const ty = dims.length === 1 ? 'f32' : storageType(shape, type, role, layer, dims[0]);
    const info = STORAGE[ty];
    const elements = dims.reduce((a, b) => a * b, 1);
    return { name, dims, type: ty, bytes: (elements / info.block) * info.bytes, rowBytes: (dims[0] / info.block) * info.bytes, fill: role === 'bias' ? 0 : 1 };
  });
}

function header(shape, type, tensors) {
  const { dim, nLayers, nHeads, nKvHeads, ffn, vocab, ctx } = shape;
  const { arch, headDim } = archOf(shape);
  const name = `synthetic ${shape.name ?? 'llama'}`;
  const { tokens, scores, types } = syntheticVocab(vocab);
  const w = new HeaderWriter();
  // The keys llama.cpp's converter writes for each architecture: rope.dimension_count for Llama's (the others default
  // to the head dim), key/value_length where the config has a head_dim (Qwen3, Gemma 3).
  const kvs = [
    ['general.architecture', V.STRING, arch],
    ['general.name', V.STRING, name],
    ['general.file_type', V.U32, FILE_TYPES[type].ftype],
    ...(STORAGE[FILE_TYPES[type].base].block > 1 ? [['general.quantization_version', V.U32, 2]] : []),
    ['general.alignment', V.U32, ALIGNMENT],
    [`${arch}.vocab_size`, V.U32, vocab],
    [`${arch}.context_length`, V.U32, ctx],
    [`${arch}.embedding_length`, V.U32, dim],
    [`${arch}.block_count`, V.U32, nLayers],
    [`${arch}.feed_forward_length`, V.U32, ffn],
    ...(arch === 'llama' ? [[`${arch}.rope.dimension_count`, V.U32, headDim]] : []),
    [`${arch}.attention.head_count`, V.U32, nHeads],
    [`${arch}.attention.head_count_kv`, V.U32, nKvHeads],
    ...(shape.headDim ? [[`${arch}.attention.key_length`, V.U32, headDim], [`${arch}.attention.value_length`, V.U32, headDim]] : []),
    ...(shape.slidingWindow ? [[`${arch}.attention.sliding_window`, V.U32, shape.slidingWindow]] : []),
    [`${arch}.rope.freq_base`, V.F32, shape.ropeBase ?? 10000],
    [`${arch}.attention.layer_norm_rms_epsilon`, V.F32, shape.eps ?? 1e-5],
    ['tokenizer.ggml.model', V.STRING, 'llama'],
    ['tokenizer.ggml.unknown_token_id', V.U32, 0],
    ['tokenizer.ggml.bos_token_id', V.U32, 1],
    ['tokenizer.ggml.eos_token_id', V.U32, 2],
    ['tokenizer.ggml.add_bos_token', V.BOOL, true],
    ['tokenizer.ggml.add_eos_token', V.BOOL, false],
    ['tokenizer.ggml.add_space_prefix', V.BOOL, true],
  ];
  w.u32(0x46554747); // "GGUF"
  w.u32(3);
  w.u64(tensors.length);
  w.u64(kvs.length + 3);
  for (const [k, t, v] of kvs) w.kv(k, t, v);
  w.array('tokenizer.ggml.tokens', V.STRING, tokens);
  w.array('tokenizer.ggml.scores', V.F32, scores);
  w.array('tokenizer.ggml.token_type', V.I32, types);
  let offset = 0;
  for (const t of tensors) {
    w.str(t.name);
    w.u32(t.dims.length);
    for (const d of t.dims) w.u64(d);
    w.u32(STORAGE[t.type].ggml);
    w.u64(offset);
    offset += align(t.bytes);
  }
  const padded = align(w.pos);
  w.reserve(padded - w.pos);
  return { bytes: w.buf.subarray(0, padded), dataBytes: offset };
}

// ───────────────────────────── weights ─────────────────────────────

/** Target standard deviation of every weight matrix: that of trained small Llamas; activations stay O(1) in all layers. */
const WEIGHT_STD = 0.02;

/** f32 → f16 bits, round to nearest even; normal and subnormal range only (all the values used here). */
const f32 = new Float32Array(1), u32 = new Uint32Array(f32.buffer);
function f16Bits(x) {
  f32[0] = x;
  const b = u32[0];
  const sign = (b >>> 16) & 0x8000;
  const exp = ((b >>> 23) & 0xff) - 127 + 15;
  if (exp >= 31) return sign | 0x7c00;
  if (exp <= 0) return sign | Math.round(Math.abs(x) / 2 ** -24); // subnormal
  let h = sign | (exp << 10) | ((b >>> 13) & 0x3ff);
  const rest = b & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && h & 1)) h++;
  return h;
}

/**
 * Block scales: codes are uniform, so the scale is WEIGHT_STD / rms(code). Q8_0 codes are uniform over −127..127
 * (rms 73.3); Q4_0 codes q − 8 over −8..7 (rms √21.5). One scale for all blocks: real scales vary, speed does not care.
 */
const Q8_SCALE = f16Bits(WEIGHT_STD / Math.sqrt((127 * 128) / 3));
const Q4_SCALE = f16Bits(WEIGHT_STD / Math.sqrt(21.5));

/** F16 weights: 65536 values spread uniformly over ±std·√3 (std WEIGHT_STD), picked by 16 random bits. */
let F16_TABLE;
function f16Table() {
  if (!F16_TABLE) {
    const a = WEIGHT_STD * Math.sqrt(3);
    F16_TABLE = new Uint16Array(65536);
    for (let i = 0; i < 65536; i++) F16_TABLE[i] = f16Bits(((i + 0.5) / 65536) * 2 * a - a);
  }
  return F16_TABLE;
}

/** BF16 weights: as F16's, 65536 values uniform over ±std·√3, rounded to bf16 (nearest even). */
let BF16_TABLE;
function bf16Table() {
  if (!BF16_TABLE) {
    const a = WEIGHT_STD * Math.sqrt(3);
    BF16_TABLE = new Uint16Array(65536);
    for (let i = 0; i < 65536; i++) {
      f32[0] = ((i + 0.5) / 65536) * 2 * a - a;
      const b = u32[0];
      BF16_TABLE[i] = (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
    }
  }
  return BF16_TABLE;
}

/** ggml's IQ4_NL/IQ4_XS code book (kvalues_iq4nl). */
const IQ4_VALUES = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];
const IQ4_RMS = Math.sqrt(IQ4_VALUES.reduce((a, v) => a + v * v, 0) / 16);

/**
 * The blocks of the types added for issue 11: every byte random (any codes, any packed 4/6-bit sub-block scales, any
 * int8 Q6_K scales are valid), then the f16 fields set to constants at their ggml offsets. d makes the weights' std
 * about WEIGHT_STD over uniform codes and scales, and dmin (or Q4_1/Q5_1's m) cancels the codes' mean, so
 * activations stay O(1) as with the other types; E[w²] per type is written out beside each.
 */
const blockHalves = (fields) => fields.map(([offset, value]) => [offset, f16Bits(value)]);
const S = WEIGHT_STD;
const BLOCKS = {
  // w = d·q + m, q 0..15: m = −7.5d, E[w²] = 21.25 d²
  q4_1: blockHalves([[0, S / Math.sqrt(21.25)], [2, (-7.5 * S) / Math.sqrt(21.25)]]),
  // w = d·(q − 16), q 0..31: E[w²] = 85.5 d²
  q5_0: blockHalves([[0, S / Math.sqrt(85.5)]]),
  // w = d·q + m, q 0..31: m = −15.5d, E[w²] = 85.25 d²
  q5_1: blockHalves([[0, S / Math.sqrt(85.25)], [2, (-15.5 * S) / Math.sqrt(85.25)]]),
  // w = d·kvalues[q]
  iq4_nl: blockHalves([[0, S / IQ4_RMS]]),
  // w = d·sc·q − dmin·m, sc and m 0..15, q 0..3: dmin = 1.5d, E[w²] = 192.5 d² (d, dmin after scales[16], qs[64])
  q2_k: blockHalves([[80, S / Math.sqrt(192.5)], [82, (1.5 * S) / Math.sqrt(192.5)]]),
  // w = d·(sc − 32)·q, sc 0..63, q −4..3: E[w²] = 341.5·5.5 d² (d after hmask[32], qs[64], scales[12])
  q3_k: blockHalves([[108, S / Math.sqrt(341.5 * 5.5)]]),
  // w = d·sc·q − dmin·m, sc and m 0..63, q 0..15: dmin = 7.5d, E[w²] = 66727.5 d²
  q4_k: blockHalves([[0, S / Math.sqrt(66727.5)], [2, (7.5 * S) / Math.sqrt(66727.5)]]),
  // the same with q 0..31: dmin = 15.5d, E[w²] = 277651.5 d²
  q5_k: blockHalves([[0, S / Math.sqrt(277651.5)], [2, (15.5 * S) / Math.sqrt(277651.5)]]),
  // w = d·sc·(q − 32), sc int8, q 0..63: E[w²] = 5461.5·341.5 d² (d after ql[128], qh[64], scales[16])
  q6_k: blockHalves([[208, S / Math.sqrt(5461.5 * 341.5)]]),
  // w = d·(ls − 32)·kvalues[q], ls 0..63
  iq4_xs: blockHalves([[0, S / (Math.sqrt(341.5) * IQ4_RMS)]]),
};

/** FNV-1a of the tensor name: each tensor has its own random stream, independent of the others and of chunking. */
function hashName(s) {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** xoshiro128** seeded by splitmix32: fast enough in JS to fill gigabytes in seconds, and the same on every machine. */
function makeRng(seed) {
  let x = seed >>> 0;
  const splitmix = () => {
    x = (x + 0x9e3779b9) >>> 0;
    let z = x;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  };
  let s0 = splitmix(), s1 = splitmix(), s2 = splitmix(), s3 = splitmix();
  /** Fills a Uint32Array with the next dst.length outputs. */
  return (dst) => {
    for (let i = 0; i < dst.length; i++) {
      const m = Math.imul(s1, 5);
      dst[i] = Math.imul((m << 7) | (m >>> 25), 9);
      const t = s1 << 9;
      s2 ^= s0;
      s3 ^= s1;
      s1 ^= s2;
      s0 ^= s3;
      s2 ^= t;
      s3 = (s3 << 11) | (s3 >>> 21);
    }
  };
}

/** Bytes generated and written per call: a few MB keeps memory flat and the write calls few. */
const CHUNK_BYTES = 4 << 20;

/**
 * Streams one tensor's bytes into fd. Each block takes its codes from the tensor's random stream in order, so the
 * bytes do not depend on CHUNK_BYTES. Rows listed in zeroRows are written as zeros (scale 0: every weight exactly 0).
 */
function writeTensor(fd, t, seed, zeroRows, buf) {
  const info = STORAGE[t.type];
  const fill = makeRng(hashName(t.name) ^ seed);
  if (t.type === 'f32') {
    // Only 1-D tensors are F32 (tensorPlan says what each holds)
    new Float32Array(buf.buffer, 0, t.bytes / 4).fill(t.fill);
    writeSync(fd, buf, 0, t.bytes);
    const pad = align(t.bytes) - t.bytes;
    if (pad) writeSync(fd, new Uint8Array(pad));
    return;
  }
  let done = 0;
  const blocksPerChunk = Math.floor(CHUNK_BYTES / info.bytes);
  const halves = BLOCKS[t.type];
  // random 32-bit words per block: the first generator's types take their codes only; the others a whole block
  const words = halves ? Math.ceil(info.bytes / 4) : 0;
  const codeBytes = t.type === 'q8_0' ? 32 : t.type === 'q4_0' ? 16 : 0;
  const float16 = t.type === 'f16' || t.type === 'bf16';
  const rnd = new Uint32Array(float16 ? blocksPerChunk / 2 : halves ? blocksPerChunk * words : (blocksPerChunk * codeBytes) / 4);
  const rnd8 = new Uint8Array(rnd.buffer), rnd16 = new Uint16Array(rnd.buffer);
  const out16 = new Uint16Array(buf.buffer);
  const table = t.type === 'f16' ? f16Table() : t.type === 'bf16' ? bf16Table() : undefined;
  const totalBlocks = t.bytes / info.bytes;
  for (let block = 0; block < totalBlocks; ) {
    const n = Math.min(blocksPerChunk, totalBlocks - block);
    const len = n * info.bytes;
    if (float16) {
      fill(rnd.subarray(0, Math.ceil(n / 2)));
      for (let i = 0; i < n; i++) out16[i] = table[rnd16[i]];
    } else if (halves) {
      fill(rnd.subarray(0, n * words));
      if (words * 4 === info.bytes) buf.set(rnd8.subarray(0, len));
      else for (let b = 0; b < n; b++) buf.set(rnd8.subarray(b * words * 4, b * words * 4 + info.bytes), b * info.bytes);
      for (let o = 0; o < len; o += info.bytes) {
        for (const [at, h] of halves) {
          buf[o + at] = h & 0xff;
          buf[o + at + 1] = h >>> 8;
        }
      }
    } else {
      fill(rnd.subarray(0, (n * codeBytes) / 4));
      const [lo, hi] = t.type === 'q8_0' ? [Q8_SCALE & 0xff, Q8_SCALE >>> 8] : [Q4_SCALE & 0xff, Q4_SCALE >>> 8];
      for (let b = 0, o = 0, r = 0; b < n; b++) {
        buf[o++] = lo;
        buf[o++] = hi;
        if (codeBytes === 32) {
          // Q8_0 codes are int8 in −127..127 (ggml's quantizer never writes −128); map that one value to 0.
          for (let j = 0; j < 32; j++, r++) buf[o++] = rnd8[r] === 0x80 ? 0 : rnd8[r];
        } else {
          for (let j = 0; j < 16; j++) buf[o++] = rnd8[r++];
        }
      }
    }
    for (const row of zeroRows) {
      const start = Math.max(row * t.rowBytes - done, 0), end = Math.min((row + 1) * t.rowBytes - done, len);
      if (start < end) buf.fill(0, start, end);
    }
    writeSync(fd, buf, 0, len);
    done += len;
    block += n;
  }
  const pad = align(t.bytes) - t.bytes;
  if (pad) writeSync(fd, new Uint8Array(pad));
}

/** End-of-generation ids whose output rows are zeroed: EOS is the only one these vocabularies have. */
const EOG_IDS = [2];

/**
 * Writes a synthetic model of `shape` (a SHAPES entry or any object of the same fields) with 2-D tensors of `type`
 * to `file`, streaming. Returns { bytes, ms }. `seed` changes every weight (default 0).
 */
export function writeSyntheticGGUF(file, shape, type, { seed = 0 } = {}) {
  if (!ALL_TYPES.includes(type)) throw new Error(`synthetic: type ${JSON.stringify(type)} is not one of ${ALL_TYPES.join(', ')}`);
  checkShape(shape);
  const t0 = performance.now();
  const tensors = tensorPlan(shape, type);
  const head = header(shape, type, tensors);
  const outputName = shape.tied ? 'token_embd.weight' : 'output.weight';
  const buf = new Uint8Array(new ArrayBuffer(CHUNK_BYTES + 64));
  const fd = openSync(file, 'w');
  try {
    writeSync(fd, head.bytes);
    for (const t of tensors) writeTensor(fd, t, seed, t.name === outputName ? EOG_IDS : [], buf);
  } finally {
    closeSync(fd);
  }
  const bytes = head.bytes.length + head.dataBytes;
  const size = statSync(file).size;
  if (size !== bytes) throw new Error(`synthetic: wrote ${size} bytes to ${file}, expected ${bytes}`);
  return { bytes, ms: performance.now() - t0 };
}

/** The exact size of the file writeSyntheticGGUF makes, without writing it. */
export function syntheticSize(shape, type) {
  checkShape(shape);
  const tensors = tensorPlan(shape, type);
  const head = header(shape, type, tensors);
  return { header: head.bytes.length, data: head.dataBytes };
}

/**
 * The path of the synthetic model `name` (a SHAPES or OTHER_SHAPES key, or a shape object with a `name` field) in
 * `type`, generating it into `dir` once (default: <bench cache>/models). Written to a temporary file and renamed, so a
 * crash or a concurrent run never leaves a partial file under the final name; the generator version in the name makes
 * a changed generator write a new file instead of reusing an old one.
 */
export async function syntheticModel(name, type, { dir, log = (m) => console.error(m), seed = 0 } = {}) {
  const shape = typeof name === 'string' ? SHAPES[name] ?? OTHER_SHAPES[name] : name;
  if (!shape) throw new Error(`synthetic: unknown shape ${JSON.stringify(name)}; known: ${[...Object.keys(SHAPES), ...Object.keys(OTHER_SHAPES)].join(', ')}`);
  const label = shape.name;
  if (!label || !/^[\w.-]+$/.test(label)) throw new Error(`synthetic: a custom shape needs a file-name-safe "name", got ${JSON.stringify(label)}`);
  dir = path.resolve(dir ?? path.join(cacheRoot(), 'models'));
  const file = path.join(dir, `${label}-${type}${seed ? `-seed${seed}` : ''}.synthetic-v${shape.version ?? GENERATOR_VERSION}.gguf`);
  const { header: h, data } = syntheticSize(shape, type);
  if (existsSync(file) && statSync(file).size === h + data) return file;
  mkdirSync(dir, { recursive: true });
  log(`synthetic: generating ${path.basename(file)} (${((h + data) / 1e6).toFixed(0)} MB) in ${dir}`);
  const tmp = `${file}.${process.pid}.${Date.now()}.tmp`;
  try {
    const { ms } = writeSyntheticGGUF(tmp, shape, type, { seed });
    renameSync(tmp, file);
    log(`synthetic: ${path.basename(file)} written in ${(ms / 1000).toFixed(1)} s`);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
  return file;
}

// Standalone: generate (or find) models and print their paths.
if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const [shapeArg, typeArg] = process.argv.slice(2);
  const shapes = shapeArg ? [shapeArg] : Object.keys(SHAPES);
  const types = typeArg ? [typeArg] : TYPES;
  for (const s of shapes) for (const t of types) console.log(await syntheticModel(s, t));
}
