/**
 * SentencePiece-BPE tokenizer for GGUF vocabularies with `tokenizer.ggml.model = "llama"`, matching llama.cpp's
 * `llm_tokenizer_spm` (llama-vocab.cpp) token for token, with `parse_special = false`: text never turns into
 * control tokens.
 *
 * Deliberate differences from llama.cpp, none of which changes the ids of the shipped vocabularies:
 * - Merges and whole-symbol lookups only see normal and user-defined tokens. llama.cpp looks text up among all
 *   tokens, so a vocabulary that could merge up to "<s>" or "<0x0A>" would let literal text become a control or
 *   byte token; SentencePiece never does that, and in the Llama-2 and tiny-260k vocabularies no such merge path
 *   exists, so the output is the same.
 * - A missing byte token falls back to `unk` (llama.cpp throws).
 * - `decode` drops the prefix space from the first piece that has text, so a BOS in front does not leave a leading
 *   space (llama.cpp strips only from the very first token, which is the empty BOS piece). See `decode`.
 * - Only EOG tokens are recognised by their text (as llama.cpp does); its FIM detection and per-model strip
 *   attributes (phi-3) are not reproduced.
 */
import { EdgeLLMError } from '../errors.js';
import type { GGUFFile } from '../gguf/reader.js';
import { Utf8StreamDecoder } from './utf8.js';

/** llama.cpp `llama_token_type`, as stored in `tokenizer.ggml.token_type`. */
export enum LlamaTokenType {
  Undefined = 0,
  Normal = 1,
  Unknown = 2,
  Control = 3,
  UserDefined = 4,
  Unused = 5,
  Byte = 6,
}

export interface VocabData {
  tokens: string[];
  scores: Float32Array;
  /** llama token types: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte */
  types: Int32Array;
  bos: number;
  eos: number;
  unk: number;
  addBos: boolean;
  addEos: boolean;
  addSpacePrefix: boolean;
  /** End-of-generation ids besides `eos` (e.g. `tokenizer.ggml.eot_token_id`). */
  eog?: number[];
}

export interface EncodeOptions {
  /** Prepend BOS; defaults to the vocabulary's `addBos`. */
  bos?: boolean;
  /** Append EOS; defaults to the vocabulary's `addEos`. */
  eos?: boolean;
}

export interface DecodeOptions {
  /**
   * Drop one leading space from the first piece that has text. Defaults to `addSpacePrefix`, which undoes the space
   * `encode` put in front, like llama.cpp's `llama_detokenize`. Pass false when continuing text already shown, e.g.
   * streaming a completion right after its prompt (" to be" should keep its space).
   */
  stripLeadingSpace?: boolean;
}

const SPACE_MARK = '\u2581'; // ▁, SentencePiece's escaped space

const KEY = {
  model: 'tokenizer.ggml.model',
  tokens: 'tokenizer.ggml.tokens',
  scores: 'tokenizer.ggml.scores',
  types: 'tokenizer.ggml.token_type',
  bos: 'tokenizer.ggml.bos_token_id',
  eos: 'tokenizer.ggml.eos_token_id',
  unk: 'tokenizer.ggml.unknown_token_id',
  eot: 'tokenizer.ggml.eot_token_id',
  eom: 'tokenizer.ggml.eom_token_id',
  addBos: 'tokenizer.ggml.add_bos_token',
  addEos: 'tokenizer.ggml.add_eos_token',
  addSpacePrefix: 'tokenizer.ggml.add_space_prefix',
} as const;

/** Error messages name both the VocabData field and the GGUF key it came from. */
const FIELD = {
  tokens: `tokens (${KEY.tokens})`,
  scores: `scores (${KEY.scores})`,
  types: `types (${KEY.types})`,
  bos: `bos (${KEY.bos})`,
  eos: `eos (${KEY.eos})`,
  unk: `unk (${KEY.unk})`,
  eog: `eog (${KEY.eot} / ${KEY.eom})`,
} as const;

/**
 * llama.cpp treats tokens with these texts as end-of-generation and forces them to control type, whatever the file
 * says (llama-vocab.cpp, "auto-detect special tokens by text").
 */
const EOG_TEXTS = new Set([
  '<|eot_id|>',
  '<|im_end|>',
  '<|end|>',
  '<|return|>',
  '<|call|>',
  '<end_of_turn>',
  '<|endoftext|>',
  '<|eom_id|>',
  '<EOT>',
  '_<EOT>',
  '<|end_of_text|>',
  '<end_of_utterance>',
  '<\uff5cend\u2581of\u2581sentence\uff5c>',
]);

const BYTE_TOKEN = /^<0x([0-9A-Fa-f]{2})>$/;
const EMPTY = new Uint8Array(0);
const utf8Encoder = new TextEncoder();

export class LlamaTokenizer {
  readonly vocabSize: number;
  readonly bos: number;
  readonly eos: number;
  readonly unk: number;
  readonly addBos: boolean;
  readonly addEos: boolean;
  readonly addSpacePrefix: boolean;

  private readonly tokens: string[];
  private readonly scores: Float32Array;
  private readonly types: Int32Array;
  private readonly eogIds: Set<number>;
  /** Text → id for the tokens text may become: all but unknown, control, unused and byte tokens. */
  private readonly textToId = new Map<string, number>();
  /** Longest key of textToId in UTF-16 units: longer candidate merges are skipped without a lookup. */
  private readonly maxTokenLength: number;
  /** Byte → the token that spells it when a character has no token of its own. */
  private readonly byteToId = new Int32Array(256);
  /** User-defined tokens, longest first: llama.cpp cuts them out of the text before BPE even without parse_special. */
  private readonly userDefined: number[] = [];
  private readonly pieces: (Uint8Array | undefined)[];

  constructor(vocab: VocabData) {
    checkVocab(vocab);
    const n = vocab.tokens.length;
    this.vocabSize = n;
    this.bos = vocab.bos;
    this.eos = vocab.eos;
    this.unk = vocab.unk;
    this.addBos = vocab.addBos;
    this.addEos = vocab.addEos;
    this.addSpacePrefix = vocab.addSpacePrefix;
    // llama.cpp renames empty tokens, so they stay unique and never match text.
    this.tokens = vocab.tokens.map((text, id) => (text === '' ? `[EMPTY_${id}]` : text));
    this.scores = vocab.scores;
    this.types = Int32Array.from(vocab.types);
    this.pieces = new Array(n);

    this.eogIds = new Set([vocab.eos, ...(vocab.eog ?? [])]);
    const allTextToId = new Map<string, number>();
    for (let id = 0; id < n; id++) {
      const text = this.tokens[id];
      const earlier = allTextToId.get(text);
      if (earlier !== undefined) {
        // llama.cpp refuses these too (it asserts one id per text).
        throw new EdgeLLMError('BAD_METADATA', `${FIELD.tokens}: token ${id} repeats the text of token ${earlier} (${JSON.stringify(text)})`);
      }
      allTextToId.set(text, id);
      if (EOG_TEXTS.has(text)) {
        this.eogIds.add(id);
        this.types[id] = LlamaTokenType.Control;
      }
    }

    let maxTokenLength = 0;
    for (let id = 0; id < n; id++) {
      const type = this.types[id];
      const text = this.tokens[id];
      if (type === LlamaTokenType.Byte && !BYTE_TOKEN.test(text)) {
        throw new EdgeLLMError('BAD_METADATA', `${FIELD.types}: token ${id} is a byte token but its text is ${JSON.stringify(text)}, not <0xNN>`);
      }
      if (type === LlamaTokenType.Unknown || type === LlamaTokenType.Control || type === LlamaTokenType.Unused || type === LlamaTokenType.Byte) {
        continue;
      }
      this.textToId.set(text, id);
      maxTokenLength = Math.max(maxTokenLength, text.length);
      if (type === LlamaTokenType.UserDefined) this.userDefined.push(id);
    }
    this.maxTokenLength = maxTokenLength;
    // Array.prototype.sort is stable, so equal lengths keep id order.
    this.userDefined.sort((a, b) => this.tokens[b].length - this.tokens[a].length);

    // llama.cpp byte_to_token: "<0xNN>" (upper-case hex) or else the byte itself as a one-character token.
    for (let byte = 0; byte < 256; byte++) {
      const hex = byte.toString(16).toUpperCase().padStart(2, '0');
      const id = allTextToId.get(`<0x${hex}>`) ?? (byte < 0x80 ? allTextToId.get(String.fromCharCode(byte)) : undefined);
      this.byteToId[byte] = id ?? vocab.unk;
    }
  }

  /** Reads the `tokenizer.ggml.*` metadata of a GGUF file. */
  static fromGGUF(gguf: GGUFFile): LlamaTokenizer {
    const requireKey = (key: string): void => {
      if (!gguf.has(key)) throw new EdgeLLMError('BAD_METADATA', `${key} is missing`);
    };
    requireKey(KEY.model);
    const model = readKey(KEY.model, () => gguf.string(KEY.model));
    if (model !== 'llama') {
      throw new EdgeLLMError(
        'UNSUPPORTED_ARCH',
        `${KEY.model} is ${JSON.stringify(model)}; edgellm supports only "llama" (SentencePiece BPE, as in Llama 1/2, TinyLlama, Mistral v0.1)`,
      );
    }
    requireKey(KEY.tokens);
    const tokens = readKey(KEY.tokens, () => gguf.stringArray(KEY.tokens));
    const n = tokens.length;
    const scores = gguf.has(KEY.scores) ? readKey(KEY.scores, () => gguf.floatArray(KEY.scores)) : new Float32Array(n);
    const types = gguf.has(KEY.types)
      ? readKey(KEY.types, () => gguf.intArray(KEY.types))
      : new Int32Array(n).fill(LlamaTokenType.Normal);
    const eog: number[] = [];
    for (const key of [KEY.eot, KEY.eom]) {
      if (gguf.has(key)) eog.push(readKey(key, () => gguf.int(key)));
    }
    return new LlamaTokenizer({
      tokens,
      scores,
      types,
      // Defaults are llama.cpp's for "llama" vocabularies.
      bos: readKey(KEY.bos, () => gguf.int(KEY.bos, 1)),
      eos: readKey(KEY.eos, () => gguf.int(KEY.eos, 2)),
      unk: readKey(KEY.unk, () => gguf.int(KEY.unk, 0)),
      addBos: readKey(KEY.addBos, () => gguf.bool(KEY.addBos, true)),
      addEos: readKey(KEY.addEos, () => gguf.bool(KEY.addEos, false)),
      addSpacePrefix: readKey(KEY.addSpacePrefix, () => gguf.bool(KEY.addSpacePrefix, true)),
      eog,
    });
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    const output: number[] = [];
    if (opts.bos ?? this.addBos) output.push(this.bos);
    // llama.cpp puts the prefix space before the first text and before text that follows a user-defined token.
    let afterSpecial = true;
    for (const fragment of this.splitUserDefined(text)) {
      if (typeof fragment === 'number') {
        output.push(fragment);
        afterSpecial = true;
        continue;
      }
      const prefixed = this.addSpacePrefix && afterSpecial ? ' ' + fragment : fragment;
      this.tokenizeFragment(prefixed.replaceAll(' ', SPACE_MARK), output);
      afterSpecial = false;
    }
    if (opts.eos ?? this.addEos) output.push(this.eos);
    return output;
  }

  /**
   * The text of `ids`. Pieces are joined as bytes and decoded as UTF-8 (bad bytes → U+FFFD); control, unknown and
   * unused tokens add nothing. With `addSpacePrefix` the first piece that has text loses one leading space, so
   * `decode(encode(s))` is `s`, with or without BOS, and generated ids decode like llama.cpp's detokenize.
   */
  decode(ids: ArrayLike<number>, opts: DecodeOptions = {}): string {
    const stream = this.decoder(opts);
    let text = '';
    for (let i = 0; i < ids.length; i++) text += stream.push(ids[i]);
    return text + stream.flush();
  }

  /** The raw bytes of one token: byte tokens → that byte, ▁ → space, control/unknown/unused → nothing. */
  piece(id: number): Uint8Array {
    return this.pieceOf(id).slice();
  }

  isEog(id: number): boolean {
    return this.eogIds.has(id);
  }

  /** A decoder for ids arriving one at a time; see `DecodeOptions` for the leading space. */
  decoder(opts: DecodeOptions = {}): TokenTextStream {
    return new TokenTextStream((id) => this.pieceOf(id), opts.stripLeadingSpace ?? this.addSpacePrefix);
  }

  private pieceOf(id: number): Uint8Array {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
      throw new EdgeLLMError('BAD_ARGUMENT', `token id ${id} is outside the vocabulary (0..${this.vocabSize - 1})`);
    }
    let piece = this.pieces[id];
    if (piece === undefined) {
      piece = this.makePiece(id);
      this.pieces[id] = piece;
    }
    return piece;
  }

  // llama.cpp token_to_piece with special = false.
  private makePiece(id: number): Uint8Array {
    const text = this.tokens[id];
    switch (this.types[id]) {
      case LlamaTokenType.Normal:
        return utf8Encoder.encode(text.replaceAll(SPACE_MARK, ' '));
      case LlamaTokenType.UserDefined:
        return utf8Encoder.encode(text);
      case LlamaTokenType.Byte:
        return Uint8Array.of(parseInt(text.slice(3, 5), 16));
      default:
        return EMPTY;
    }
  }

  /** Cuts user-defined tokens out of the text, longest token first, like llama.cpp's tokenizer_st_partition. */
  private splitUserDefined(text: string): (string | number)[] {
    let fragments: (string | number)[] = text === '' ? [] : [text];
    for (const id of this.userDefined) {
      const special = this.tokens[id];
      const next: (string | number)[] = [];
      for (const fragment of fragments) {
        if (typeof fragment === 'number') {
          next.push(fragment);
          continue;
        }
        let from = 0;
        for (let at = fragment.indexOf(special); at !== -1; at = fragment.indexOf(special, from)) {
          if (at > from) next.push(fragment.slice(from, at));
          next.push(id);
          from = at + special.length;
        }
        if (from < fragment.length) next.push(fragment.slice(from));
      }
      fragments = next;
    }
    return fragments;
  }

  /**
   * llm_tokenizer_spm_session::tokenize on one escaped fragment: start from single characters, keep merging the
   * adjacent pair that forms the best-scoring token (leftmost on ties), then emit each symbol's id, or its UTF-8
   * bytes as byte tokens when the character has no token.
   *
   * Symbols are spans of `text` in a linked list; a merged span is always a token, so llama.cpp's rev_merge fallback
   * (re-splitting a symbol that is not a token) can never trigger and is left out.
   */
  private tokenizeFragment(text: string, output: number[]): void {
    const start = new Int32Array(text.length);
    const length = new Int32Array(text.length);
    const prev = new Int32Array(text.length);
    const next = new Int32Array(text.length);
    let count = 0;
    for (let at = 0; at < text.length; count++) {
      const width = text.codePointAt(at)! > 0xffff ? 2 : 1;
      start[count] = at;
      length[count] = width;
      prev[count] = count - 1;
      next[count] = count + 1;
      at += width;
    }
    if (count === 0) return;
    next[count - 1] = -1;

    // Every merge adds at most two candidates, so 3 × count bounds the queue.
    const queue = new BigramQueue(3 * count);
    const tryAddBigram = (left: number, right: number): void => {
      if (left < 0 || right < 0) return;
      const size = length[left] + length[right];
      if (size > this.maxTokenLength) return;
      const id = this.textToId.get(text.substr(start[left], size));
      if (id !== undefined) queue.push(this.scores[id], left, right, size);
    };

    for (let i = 1; i < count; i++) tryAddBigram(i - 1, i);

    while (queue.pop()) {
      const { left, right, size } = queue;
      // A candidate is stale once either side has been merged since it was queued.
      if (length[left] === 0 || length[right] === 0 || length[left] + length[right] !== size) continue;
      length[left] = size;
      length[right] = 0;
      next[left] = next[right];
      if (next[right] >= 0) prev[next[right]] = left;
      tryAddBigram(prev[left], left);
      tryAddBigram(left, next[left]);
    }

    for (let i = 0; i !== -1; i = next[i]) {
      const symbol = text.substr(start[i], length[i]);
      const id = this.textToId.get(symbol);
      if (id !== undefined) {
        output.push(id);
      } else {
        for (const byte of utf8Encoder.encode(symbol)) output.push(this.byteToId[byte]);
      }
    }
  }
}

/**
 * Text of ids pushed one at a time. Each `push` returns what became complete: never part of a UTF-8 character
 * (a character split over byte tokens comes out once its last byte arrives); invalid bytes become U+FFFD as soon as
 * they are known to be invalid. Create it with `LlamaTokenizer.decoder()`.
 */
export class TokenTextStream {
  private readonly utf8 = new Utf8StreamDecoder();

  constructor(
    private readonly pieceOf: (id: number) => Uint8Array,
    private stripLeadingSpace: boolean,
  ) {}

  push(id: number): string {
    let bytes = this.pieceOf(id);
    if (this.stripLeadingSpace && bytes.length > 0) {
      if (bytes[0] === 0x20) bytes = bytes.subarray(1);
      this.stripLeadingSpace = false;
    }
    return this.utf8.push(bytes);
  }

  /** Ends the text: an unfinished character becomes U+FFFD. */
  flush(): string {
    return this.utf8.flush();
  }
}

/**
 * Max-heap of merge candidates: highest score first, then lowest left index (llama.cpp's llm_bigram_spm
 * comparator). Parallel typed arrays, since a long text queues hundreds of thousands of candidates.
 */
class BigramQueue {
  /** The candidate taken by the last `pop`. */
  left = 0;
  right = 0;
  size = 0;

  private readonly scores: Float64Array;
  private readonly lefts: Int32Array;
  private readonly rights: Int32Array;
  private readonly sizes: Int32Array;
  private count = 0;

  constructor(capacity: number) {
    this.scores = new Float64Array(capacity);
    this.lefts = new Int32Array(capacity);
    this.rights = new Int32Array(capacity);
    this.sizes = new Int32Array(capacity);
  }

  push(score: number, left: number, right: number, size: number): void {
    let i = this.count++;
    this.scores[i] = score;
    this.lefts[i] = left;
    this.rights[i] = right;
    this.sizes[i] = size;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.before(i, parent)) break;
      this.swap(i, parent);
      i = parent;
    }
  }

  /** Takes the best candidate into `left`, `right` and `size`; false when empty. */
  pop(): boolean {
    if (this.count === 0) return false;
    this.left = this.lefts[0];
    this.right = this.rights[0];
    this.size = this.sizes[0];
    this.count--;
    this.swap(0, this.count);
    let i = 0;
    for (;;) {
      let best = i;
      const child = 2 * i + 1;
      if (child < this.count && this.before(child, best)) best = child;
      if (child + 1 < this.count && this.before(child + 1, best)) best = child + 1;
      if (best === i) break;
      this.swap(i, best);
      i = best;
    }
    return true;
  }

  private before(a: number, b: number): boolean {
    return this.scores[a] > this.scores[b] || (this.scores[a] === this.scores[b] && this.lefts[a] < this.lefts[b]);
  }

  private swap(a: number, b: number): void {
    const score = this.scores[a];
    this.scores[a] = this.scores[b];
    this.scores[b] = score;
    const left = this.lefts[a];
    this.lefts[a] = this.lefts[b];
    this.lefts[b] = left;
    const right = this.rights[a];
    this.rights[a] = this.rights[b];
    this.rights[b] = right;
    const size = this.sizes[a];
    this.sizes[a] = this.sizes[b];
    this.sizes[b] = size;
  }
}

function checkVocab(vocab: VocabData): void {
  const n = vocab.tokens.length;
  if (n === 0) throw new EdgeLLMError('BAD_METADATA', `${FIELD.tokens} is empty`);
  if (vocab.scores.length !== n) {
    throw new EdgeLLMError('BAD_METADATA', `${FIELD.scores} has ${vocab.scores.length} entries for ${n} tokens`);
  }
  if (vocab.types.length !== n) {
    throw new EdgeLLMError('BAD_METADATA', `${FIELD.types} has ${vocab.types.length} entries for ${n} tokens`);
  }
  const checkId = (field: string, id: number): void => {
    if (!Number.isInteger(id) || id < 0 || id >= n) {
      throw new EdgeLLMError('BAD_METADATA', `${field} is ${id}, outside the vocabulary of ${n} tokens`);
    }
  };
  checkId(FIELD.bos, vocab.bos);
  checkId(FIELD.eos, vocab.eos);
  checkId(FIELD.unk, vocab.unk);
  for (const id of vocab.eog ?? []) checkId(FIELD.eog, id);
}

/** Reads one metadata key, turning a failure (e.g. the wrong type) into BAD_METADATA that names the key. */
function readKey<T>(key: string, read: () => T): T {
  try {
    return read();
  } catch (cause) {
    if (cause instanceof EdgeLLMError && cause.message.includes(key)) throw cause;
    const why = cause instanceof Error ? cause.message : String(cause);
    throw new EdgeLLMError('BAD_METADATA', `cannot read ${key}: ${why}`, { cause });
  }
}
