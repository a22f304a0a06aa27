/**
 * The vocabulary of a GGUF file and what llama.cpp does with it around the per-fragment algorithm: special-token
 * partition, BOS/EOS, end-of-generation ids, token attributes, token pieces and detokenization. The fragment
 * algorithm is the model type's: SentencePiece (`spm.ts`) for "llama", BPE (`bpe.ts`, pre-tokenizers in
 * `pretokenize.ts`) for "gpt2" and "gemma4". Reference: llama.cpp de3ff815 (node-llama-cpp 3.22.1), llama-vocab.cpp.
 *
 * Reproduced from llama.cpp:
 * - `llama_vocab::impl::load`: per-type defaults for BOS/EOS/UNK, add_bos (true for SPM, Llama 3, Tekken,
 *   Chameleon; forced on for Gemma 4), add_space_prefix, clean_spaces; empty tokens renamed "[EMPTY_<id>]";
 *   EOT/EOM/FIM tokens found by their text and made control tokens; the EOG set (FIM pad/repo/sep, every token
 *   named like an end of turn, eos, eot, eom, less `<|end|>` in gpt-oss/solar vocabularies and `</s>` in Gemma 4);
 *   the gpt-oss tokens rendered as user-defined; per-model strip attributes (Phi-3 rstrip, `<mask>` lstrip).
 * - `tokenizer_st_partition`: special tokens are cut out of the text longest first (by UTF-8 length), control and
 *   unknown ones only with `special: true`, user-defined ones always; lstrip/rstrip drop the whitespace beside them.
 * - `tokenize`: SPM puts the prefix space before the first text and before text that follows a special token; BPE
 *   escapes spaces to U+2581 for Gemma 4.
 * - `token_to_piece` and `detokenize`: control and unknown tokens render only with `special: true`, user-defined
 *   tokens as their text, byte-level tokens through the inverse byte table, and `clean_up_tokenization_spaces`
 *   for the BPE vocabularies that set it.
 *
 * Deliberate differences:
 * - llama.cpp auto-detects EOT/EOM/FIM tokens by walking a hash map and takes the first match; with several
 *   candidates of one kind (none of the conformance vocabularies has any) the lowest id is taken here.
 * - llama.cpp sorts special tokens by length with an unstable sort; equal lengths keep id order here.
 * - Out-of-range ids in tokenizer.ggml.*_token_id are refused (BAD_METADATA), where llama.cpp warns and keeps the
 *   default; a malformed merge line is refused where llama.cpp ranks an unreachable empty pair.
 * - `decode` strips the prefix space from the first piece that has text (llama.cpp: from the first token only, and
 *   not after a BOS it removes), so decode(encode(s)) is s with or without BOS; see DecodeOptions.
 * - Besides tokenizer.ggml.*, general.name and general.architecture are read, as llama.cpp reads them for the
 *   per-model token attributes.
 */
import { EdgeLLMError } from '../errors.js';
import type { GGUFFile } from '../gguf/reader.js';
import { BpeModel, CHAR_TO_BYTE, parseMerges } from './bpe.js';
import { preTokenizerFor, type PreTokenizer } from './pretokenize.js';
import { SpmModel } from './spm.js';
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

/** llama.cpp `llama_token_attr` bits. */
export const TokenAttr = {
  Undefined: 0,
  Unknown: 1 << 0,
  Unused: 1 << 1,
  Normal: 1 << 2,
  Control: 1 << 3,
  UserDefined: 1 << 4,
  Byte: 1 << 5,
  Normalized: 1 << 6,
  LStrip: 1 << 7,
  RStrip: 1 << 8,
  SingleWord: 1 << 9,
} as const;

/** The `tokenizer.ggml.model` values edgellm tokenizes. */
export const SUPPORTED_MODELS = Object.freeze(['llama', 'gpt2', 'gemma4']);

/** A special token id: a number, `null` for none, or left out for llama.cpp's default of the model type. */
type OptionalId = number | null | undefined;

export interface VocabData {
  /** tokenizer.ggml.model; default "llama". */
  model?: string;
  /** tokenizer.ggml.pre (BPE only). */
  pre?: string;
  tokens: string[];
  scores?: Float32Array;
  /** llama token types: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte; default all normal. */
  types?: Int32Array;
  /** tokenizer.ggml.merges (BPE only): "left right" per line, best first. */
  merges?: readonly string[];
  bos?: OptionalId;
  eos?: OptionalId;
  unk?: OptionalId;
  eot?: OptionalId;
  eom?: OptionalId;
  fimPre?: OptionalId;
  fimSuf?: OptionalId;
  fimMid?: OptionalId;
  fimPad?: OptionalId;
  fimRep?: OptionalId;
  fimSep?: OptionalId;
  /** Defaults are llama.cpp's for the model type and pre-tokenizer. */
  addBos?: boolean;
  addEos?: boolean;
  addSpacePrefix?: boolean;
  /** End-of-generation ids besides those llama.cpp derives. */
  eog?: number[];
  /** general.name and general.architecture: llama.cpp sets some token attributes by model name. */
  name?: string;
  architecture?: string;
}

export interface EncodeOptions {
  /** Prepend BOS; defaults to the vocabulary's `addBos`. */
  bos?: boolean;
  /** Append EOS; defaults to the vocabulary's `addEos`. */
  eos?: boolean;
  /**
   * Turn the text of control and unknown tokens (`<|im_start|>`, `<|eot_id|>`, ...) into their ids, as llama.cpp's
   * parse_special. User-defined tokens are always cut out of the text, as llama.cpp does.
   */
  special?: boolean;
}

export interface DecodeOptions {
  /**
   * Drop one leading space from the first piece that has text. Defaults to `addSpacePrefix`, which undoes the space
   * `encode` put in front, like llama.cpp's `llama_detokenize`. Pass false when continuing text already shown, e.g.
   * streaming a completion right after its prompt (" to be" should keep its space).
   */
  stripLeadingSpace?: boolean;
  /** Render control and unknown tokens as their text (llama.cpp token_to_piece with special = true). */
  special?: boolean;
  /**
   * `decode` only: llama.cpp's clean_up_tokenization_spaces (" ," → ",", " 's" → "'s", ...). Defaults to the
   * vocabulary's own setting, as llama_detokenize; a stream never cleans, as llama.cpp's per-token pieces do not.
   */
  cleanSpaces?: boolean;
}

export interface TokenizerOptions {
  /** Where warnings go (a missing pre-tokenizer, Gemma 4's add_bos override); default console.warn. */
  warn?: (message: string) => void;
}

const KEY = {
  model: 'tokenizer.ggml.model',
  pre: 'tokenizer.ggml.pre',
  tokens: 'tokenizer.ggml.tokens',
  scores: 'tokenizer.ggml.scores',
  types: 'tokenizer.ggml.token_type',
  merges: 'tokenizer.ggml.merges',
  bos: 'tokenizer.ggml.bos_token_id',
  eos: 'tokenizer.ggml.eos_token_id',
  unk: 'tokenizer.ggml.unknown_token_id',
  eot: 'tokenizer.ggml.eot_token_id',
  eom: 'tokenizer.ggml.eom_token_id',
  fimPre: 'tokenizer.ggml.fim_pre_token_id',
  fimSuf: 'tokenizer.ggml.fim_suf_token_id',
  fimMid: 'tokenizer.ggml.fim_mid_token_id',
  fimPad: 'tokenizer.ggml.fim_pad_token_id',
  fimRep: 'tokenizer.ggml.fim_rep_token_id',
  fimSep: 'tokenizer.ggml.fim_sep_token_id',
  addBos: 'tokenizer.ggml.add_bos_token',
  addEos: 'tokenizer.ggml.add_eos_token',
  addSpacePrefix: 'tokenizer.ggml.add_space_prefix',
  name: 'general.name',
  architecture: 'general.architecture',
} as const;

/** Deprecated keys llama.cpp still reads into the FIM ids. */
const DEPRECATED_FIM = { fimPre: 'tokenizer.ggml.prefix_token_id', fimSuf: 'tokenizer.ggml.suffix_token_id', fimMid: 'tokenizer.ggml.middle_token_id' } as const;

type IdField = 'bos' | 'eos' | 'unk' | 'eot' | 'eom' | 'fimPre' | 'fimSuf' | 'fimMid' | 'fimPad' | 'fimRep' | 'fimSep';
const ID_FIELDS: IdField[] = ['bos', 'eos', 'unk', 'eot', 'eom', 'fimPre', 'fimSuf', 'fimMid', 'fimPad', 'fimRep', 'fimSep'];

/** Error messages name both the VocabData field and the GGUF key it came from. */
const field = (name: keyof typeof KEY): string => `${name} (${KEY[name]})`;

// Token texts llama.cpp recognises (llama_vocab::impl::load). Escaped where they hold look-alike characters.
const FULLWIDTH_BAR = '\uff5c';
const SPM_SPACE = '\u2581';
const DEEPSEEK_EOS = `<${FULLWIDTH_BAR}end${SPM_SPACE}of${SPM_SPACE}sentence${FULLWIDTH_BAR}>`;
const EOT_TEXTS = ['<|eot_id|>', '<|im_end|>', '<|end|>', '<end_of_turn>', '<|endoftext|>', '<|end_of_text|>', '<EOT>', '_<EOT>', '[EOT]', DEEPSEEK_EOS, '<end_of_utterance>'];
const EOM_TEXTS = ['<|eom_id|>'];
const FIM_TEXTS: Record<'fimPre' | 'fimSuf' | 'fimMid' | 'fimPad' | 'fimRep' | 'fimSep', string[]> = {
  fimPre: ['<|fim_prefix|>', '<fim-prefix>', '<fim_prefix>', `<${FULLWIDTH_BAR}fim${SPM_SPACE}begin${FULLWIDTH_BAR}>`, '<PRE>', `${SPM_SPACE}<PRE>`, '<|code_prefix|>', '<|prefix|>'],
  fimSuf: ['<|fim_suffix|>', '<fim-suffix>', '<fim_suffix>', `<${FULLWIDTH_BAR}fim${SPM_SPACE}hole${FULLWIDTH_BAR}>`, '<SUF>', `${SPM_SPACE}<SUF>`, '<|code_suffix|>', '<|suffix|>'],
  fimMid: ['<|fim_middle|>', '<fim-middle>', '<fim_middle>', `<${FULLWIDTH_BAR}fim${SPM_SPACE}end${FULLWIDTH_BAR}>`, '<MID>', `${SPM_SPACE}<MID>`, '<|code_middle|>', '<|middle|>'],
  fimPad: ['<|fim_pad|>', '<fim-pad>', '<fim_pad>', '<PAD>', '[PAD]'],
  fimRep: ['<|fim_repo|>', '<|repo_name|>', '<fim-repo>', '<REPO>', '<reponame>'],
  fimSep: ['<|file_sep|>'],
};
const EOG_TEXTS = [
  '<|eot_id|>', '<|im_end|>', '<|end|>', '<|return|>', '<|call|>', '<|flush|>', '<|calls|>', '<end_of_turn>', '<|endoftext|>',
  '</s>', '<|eom_id|>', '<EOT>', '_<EOT>', '[EOT]', '[EOS]', '<|end_of_text|>', '<end_of_utterance>', '<eos>', '<turn|>',
  '<|tool_response>', DEEPSEEK_EOS, '[e~[',
];
/** gpt-oss tokens llama.cpp always renders (it makes them user-defined). */
const ALWAYS_RENDERED = ['<|channel|>', '<|message|>', '<|start|>', '<|constrain|>'];

const BYTE_TOKEN = /^<0x([0-9A-Fa-f]{2})>$/;
const EMPTY = new Uint8Array(0);
const utf8Encoder = new TextEncoder();

type PieceStyle = 'spm' | 'byte-level' | 'escaped';

export class Tokenizer {
  readonly vocabSize: number;
  /** BOS id, or -1 when the vocabulary has none. */
  readonly bos: number;
  /** EOS id, or -1 when the vocabulary has none. */
  readonly eos: number;
  /** UNK id, or -1. */
  readonly unk: number;
  readonly addBos: boolean;
  readonly addEos: boolean;
  readonly addSpacePrefix: boolean;
  /** clean_up_tokenization_spaces, applied by `decode` (llama_detokenize). */
  readonly cleanSpaces: boolean;
  /** tokenizer.ggml.model: 'llama' | 'gpt2' | 'gemma4'. */
  readonly model: string;
  /** The pre-tokenizer in effect (tokenizer.ggml.pre; "gemma4" for Gemma 4); undefined for SentencePiece. */
  readonly pre: string | undefined;
  /** Every id that ends generation, ascending. */
  readonly eogIds: readonly number[];

  private readonly tokens: string[];
  private readonly attrs: Int32Array;
  private readonly eogSet: Set<number>;
  /** cache_special_tokens: control, user-defined and unknown tokens, longest (UTF-8) first. */
  private readonly specials: number[];
  private readonly spm: SpmModel | undefined;
  private readonly bpe: BpeModel | undefined;
  private readonly escapeWhitespace: boolean;
  private readonly pieceStyle: PieceStyle;
  private readonly pieces: (Uint8Array | undefined)[];
  private readonly specialPieces: (Uint8Array | undefined)[];

  constructor(vocab: VocabData, options: TokenizerOptions = {}) {
    const warn = options.warn ?? ((message: string) => console.warn(`edgellm: ${message}`));
    const model = vocab.model ?? 'llama';
    if (!SUPPORTED_MODELS.includes(model)) throw unsupportedModel(model);
    this.model = model;
    const isSpm = model === 'llama';

    const n = checkVocab(vocab);
    this.vocabSize = n;
    // llama.cpp renames empty tokens, so they stay unique and never match text.
    this.tokens = vocab.tokens.map((text, id) => (text === '' ? `[EMPTY_${id}]` : text));
    const textToId = new Map<string, number>();
    for (let id = 0; id < n; id++) {
      const text = this.tokens[id];
      const earlier = textToId.get(text);
      if (earlier !== undefined) {
        // llama.cpp refuses these too (it asserts one id per text).
        throw new EdgeLLMError('BAD_METADATA', `${field('tokens')}: token ${id} repeats the text of token ${earlier} (${JSON.stringify(text)})`);
      }
      textToId.set(text, id);
    }

    let pre: PreTokenizer | undefined;
    if (!isSpm) {
      // llama.cpp forces the pre-tokenizer of "gemma4" vocabularies, whatever tokenizer.ggml.pre says.
      const preName = model === 'gemma4' ? 'gemma4' : vocab.pre;
      pre = preTokenizerFor(preName, warn);
      this.pre = preName || 'default';
    }

    // Special ids: given, or llama.cpp's defaults for the model type (dropped when outside the vocabulary).
    const defaults: Record<IdField, number | null> = {
      bos: isSpm ? 1 : model === 'gpt2' && !pre!.noDefaultBos ? 11 : null,
      eos: isSpm ? 2 : model === 'gpt2' ? 11 : null,
      unk: isSpm ? 0 : null,
      eot: null,
      eom: null,
      fimPre: null,
      fimSuf: null,
      fimMid: null,
      fimPad: null,
      fimRep: null,
      fimSep: null,
    };
    const ids = {} as Record<IdField, number | null>;
    for (const name of ID_FIELDS) {
      const given = vocab[name];
      const fallback = defaults[name];
      ids[name] = given !== undefined ? given : fallback !== null && fallback < n ? fallback : null;
    }

    // Attributes from the token types.
    const attrs = new Int32Array(n);
    for (let id = 0; id < n; id++) {
      const type = vocab.types ? vocab.types[id] : LlamaTokenType.Normal;
      attrs[id] = typeToAttr(type);
      if (type === LlamaTokenType.Byte && !BYTE_TOKEN.test(this.tokens[id])) {
        throw new EdgeLLMError('BAD_METADATA', `${field('types')}: token ${id} is a byte token but its text is ${JSON.stringify(this.tokens[id])}, not <0xNN>`);
      }
    }
    const makeControl = (id: number) => (attrs[id] |= TokenAttr.Control);

    // EOT, EOM and FIM tokens found by their text become control tokens.
    const detect = (name: IdField, texts: string[]): void => {
      if (ids[name] !== null) return;
      let found = -1;
      for (const text of texts) {
        const id = textToId.get(text);
        if (id !== undefined && (found === -1 || id < found)) found = id;
      }
      if (found === -1) return;
      ids[name] = found;
      makeControl(found);
    };
    detect('eot', EOT_TEXTS);
    detect('eom', EOM_TEXTS);
    for (const name of ['fimPre', 'fimSuf', 'fimMid', 'fimPad', 'fimRep', 'fimSep'] as const) detect(name, FIM_TEXTS[name]);

    const eog = new Set<number>();
    for (const name of ['fimPad', 'fimRep', 'fimSep'] as const) if (ids[name] !== null) eog.add(ids[name]!);
    for (const text of EOG_TEXTS) {
      const id = textToId.get(text);
      if (id === undefined) continue;
      eog.add(id);
      makeControl(id);
    }
    for (const text of ALWAYS_RENDERED) {
      const id = textToId.get(text);
      if (id !== undefined) attrs[id] = TokenAttr.UserDefined;
    }
    for (const name of ['eos', 'eot', 'eom'] as const) if (ids[name] !== null) eog.add(ids[name]!);
    // o200k_harmony (gpt-oss) and solar-open end a message with <|end|> but a turn with <|return|>/<|call|>.
    const eogHas = (text: string) => {
      const id = textToId.get(text);
      return id !== undefined && eog.has(id);
    };
    const endId = textToId.get('<|end|>');
    if (endId !== undefined && eog.has(endId) && ((eogHas('<|return|>') && eogHas('<|call|>')) || (eogHas('<|calls|>') && eogHas('<|flush|>')))) {
      eog.delete(endId);
      attrs[endId] = TokenAttr.UserDefined;
    }
    // Gemma 4 has a </s> that does not end anything.
    const sId = textToId.get('</s>');
    if (sId !== undefined && eog.has(sId) && eogHas('<|tool_response>')) {
      eog.delete(sId);
      attrs[sId] = TokenAttr.Normal;
    }
    for (const id of vocab.eog ?? []) eog.add(id);

    const specials: number[] = [];
    for (let id = 0; id < n; id++) {
      if (attrs[id] & (TokenAttr.Control | TokenAttr.UserDefined | TokenAttr.Unknown)) specials.push(id);
    }
    const byteLength = new Map(specials.map((id) => [id, utf8Encoder.encode(this.tokens[id]).length]));
    // Array.prototype.sort is stable: equal lengths keep id order.
    specials.sort((a, b) => byteLength.get(b)! - byteLength.get(a)!);
    this.specials = specials;

    // Per-model token attributes (llama.cpp sets them by name, as GGUF does not carry them).
    const modelName = (vocab.name ?? '').toLowerCase();
    const setAttr = (text: string, attr: number, on: boolean): void => {
      const id = textToId.get(text);
      if (id !== undefined) attrs[id] = on ? attrs[id] | attr : attrs[id] & ~attr;
    };
    const preName = vocab.pre ?? '';
    if (['jina-v2-de', 'jina-v2-es', 'jina-v2-code'].some((s) => preName.includes(s)) || ['nomic-bert-moe', 'jina-bert-v3'].some((s) => (vocab.architecture ?? '').includes(s))) {
      setAttr('<mask>', TokenAttr.LStrip, true);
    } else if (modelName.includes('phi-3') || modelName.includes('phi3')) {
      for (const id of specials) attrs[id] |= TokenAttr.RStrip;
      setAttr('</s>', TokenAttr.RStrip, true);
      for (const text of ['<unk>', '<s>', '<|endoftext|>']) setAttr(text, TokenAttr.RStrip, false);
    } else if (modelName.includes('modern-bert')) {
      setAttr('[MASK]', TokenAttr.LStrip, true);
    }
    this.attrs = attrs;

    this.bos = ids.bos ?? -1;
    this.eos = ids.eos ?? -1;
    this.unk = ids.unk ?? -1;
    this.eogSet = eog;
    this.eogIds = Object.freeze([...eog].sort((a, b) => a - b));

    let addBos = vocab.addBos ?? (isSpm || pre!.addBos);
    if (pre?.wholeNewlines && !addBos) {
      // llama.cpp forces it for Gemma 4 (its PR 21500): the model is lost without BOS.
      warn(`${KEY.addBos} is false; using true for Gemma 4, as llama.cpp does`);
      addBos = true;
    }
    this.addBos = addBos;
    this.addEos = vocab.addEos ?? false;
    this.addSpacePrefix = vocab.addSpacePrefix ?? isSpm;
    this.cleanSpaces = isSpm ? false : pre!.cleanSpaces;
    this.escapeWhitespace = pre?.escapeWhitespace ?? false;
    this.pieceStyle = isSpm ? 'spm' : this.escapeWhitespace ? 'escaped' : 'byte-level';
    this.pieces = new Array(n);
    this.specialPieces = new Array(n);

    if (isSpm) {
      this.spm = new SpmModel(this.spmVocab(textToId, vocab.scores ?? new Float32Array(n)));
    } else {
      if (!vocab.merges) throw new EdgeLLMError('BAD_METADATA', `${KEY.merges} is missing (a ${model} vocabulary needs its merges)`);
      this.bpe = new BpeModel({ textToId, tokens: this.tokens, merges: parseMerges(vocab.merges, KEY.merges) }, pre!);
    }
  }

  /** Reads the `tokenizer.ggml.*` metadata of a GGUF file (and general.name/architecture; see the file header). */
  static fromGGUF(gguf: GGUFFile, options: TokenizerOptions = {}): Tokenizer {
    const requireKey = (key: string): void => {
      if (!gguf.has(key)) throw new EdgeLLMError('BAD_METADATA', `${key} is missing`);
    };
    requireKey(KEY.model);
    const model = readKey(KEY.model, () => gguf.string(KEY.model));
    if (!SUPPORTED_MODELS.includes(model)) throw unsupportedModel(model);
    requireKey(KEY.tokens);
    const optional = <T>(key: string, read: () => T): T | undefined => (gguf.has(key) ? readKey(key, read) : undefined);
    const id = (key: string) => optional(key, () => gguf.int(key));
    const vocab: VocabData = {
      model,
      pre: optional(KEY.pre, () => gguf.string(KEY.pre)),
      tokens: readKey(KEY.tokens, () => gguf.stringArray(KEY.tokens)),
      scores: optional(KEY.scores, () => gguf.floatArray(KEY.scores)),
      types: optional(KEY.types, () => gguf.intArray(KEY.types)),
      merges: model === 'llama' ? undefined : optional(KEY.merges, () => gguf.stringArray(KEY.merges)),
      addBos: optional(KEY.addBos, () => gguf.bool(KEY.addBos)),
      addEos: optional(KEY.addEos, () => gguf.bool(KEY.addEos)),
      addSpacePrefix: optional(KEY.addSpacePrefix, () => gguf.bool(KEY.addSpacePrefix)),
      name: optional(KEY.name, () => gguf.string(KEY.name)),
      architecture: optional(KEY.architecture, () => gguf.string(KEY.architecture)),
    };
    for (const name of ID_FIELDS) {
      const value = id(KEY[name]) ?? (name in DEPRECATED_FIM ? id(DEPRECATED_FIM[name as keyof typeof DEPRECATED_FIM]) : undefined);
      if (value !== undefined) vocab[name] = value;
    }
    return new Tokenizer(vocab, options);
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    if (typeof text !== 'string') throw new EdgeLLMError('BAD_ARGUMENT', `encode takes a string, not ${typeof text}`);
    // Lone surrogates cannot be UTF-8: they become U+FFFD, as their UTF-8 encoding would.
    text = wellFormed(text);
    const output: number[] = [];
    if (opts.bos ?? this.addBos) output.push(this.required(this.bos, 'BOS'));
    // llama.cpp's SPM puts the prefix space before the first text and before text that follows a special token.
    let afterSpecial = true;
    for (const fragment of this.partition(text, opts.special ?? false)) {
      if (typeof fragment === 'number') {
        output.push(fragment);
        afterSpecial = true;
      } else if (this.spm) {
        const prefixed = this.addSpacePrefix && afterSpecial ? ' ' + fragment : fragment;
        this.spm.tokenize(prefixed.replaceAll(' ', SPM_SPACE), output);
        afterSpecial = false;
      } else {
        this.bpe!.tokenize(this.escapeWhitespace ? fragment.replaceAll(' ', SPM_SPACE) : fragment, output);
      }
    }
    if (opts.eos ?? this.addEos) output.push(this.required(this.eos, 'EOS'));
    return output;
  }

  /**
   * The text of `ids`, like llama.cpp's llama_detokenize. Pieces are joined as bytes and decoded as UTF-8 (bad
   * bytes → U+FFFD); control, unknown and unused tokens add nothing unless `special`. With `addSpacePrefix` the
   * first piece that has text loses one leading space, so `decode(encode(s))` is `s` with or without BOS.
   */
  decode(ids: ArrayLike<number>, opts: DecodeOptions = {}): string {
    const stream = this.decoder(opts);
    let text = '';
    for (let i = 0; i < ids.length; i++) text += stream.push(ids[i]);
    text += stream.flush();
    return (opts.cleanSpaces ?? this.cleanSpaces) ? cleanUpSpaces(text) : text;
  }

  /** A decoder for ids arriving one at a time; never splits a character (see TokenTextStream). */
  decoder(opts: DecodeOptions = {}): TokenTextStream {
    const special = opts.special ?? false;
    return new TokenTextStream((id) => this.pieceOf(id, special), opts.stripLeadingSpace ?? this.addSpacePrefix);
  }

  isEog(id: number): boolean {
    return this.eogSet.has(id);
  }

  /** The raw vocabulary text of a token, e.g. '<|im_end|>' or 'Ġthe' (for chat templates' bos_token/eos_token). */
  tokenText(id: number): string {
    this.checkId(id);
    return this.tokens[id];
  }

  /** The bytes a token adds to decoded text (llama.cpp token_to_piece). */
  piece(id: number, special = false): Uint8Array {
    return this.pieceOf(id, special).slice();
  }

  /** llama.cpp token attributes (TokenAttr bits) of a token. */
  attributes(id: number): number {
    this.checkId(id);
    return this.attrs[id];
  }

  private required(id: number, what: string): number {
    if (id < 0) throw new EdgeLLMError('BAD_ARGUMENT', `this vocabulary has no ${what} token`);
    return id;
  }

  private checkId(id: number): void {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
      throw new EdgeLLMError('BAD_ARGUMENT', `token id ${id} is outside the vocabulary (0..${this.vocabSize - 1})`);
    }
  }

  private pieceOf(id: number, special: boolean): Uint8Array {
    this.checkId(id);
    const cache = special ? this.specialPieces : this.pieces;
    let piece = cache[id];
    if (piece === undefined) {
      piece = this.makePiece(id, special);
      cache[id] = piece;
    }
    return piece;
  }

  /** llama.cpp token_to_piece. */
  private makePiece(id: number, special: boolean): Uint8Array {
    const attr = this.attrs[id];
    const text = this.tokens[id];
    if (attr & (TokenAttr.Unknown | TokenAttr.Control)) return special ? utf8Encoder.encode(text) : EMPTY;
    if (attr & TokenAttr.UserDefined) return utf8Encoder.encode(text);
    if (attr & TokenAttr.Normal) {
      if (this.pieceStyle === 'byte-level') return byteLevelPiece(text);
      return utf8Encoder.encode(text.replaceAll(SPM_SPACE, ' '));
    }
    if (attr & TokenAttr.Byte) return Uint8Array.of(parseInt(text.slice(3, 5), 16));
    return EMPTY;
  }

  /** tokenizer_st_partition: the text with special tokens cut out, as strings and ids. */
  private partition(text: string, parseSpecial: boolean): (string | number)[] {
    let fragments: (string | number)[] = text === '' ? [] : [text];
    for (const id of this.specials) {
      const attr = this.attrs[id];
      if (!parseSpecial && attr & (TokenAttr.Control | TokenAttr.Unknown)) continue;
      const special = this.tokens[id];
      // Every fragment is a part of the text, so a token absent from it is absent from them all.
      if (!text.includes(special)) continue;
      const next: (string | number)[] = [];
      for (const fragment of fragments) {
        if (typeof fragment === 'number') {
          next.push(fragment);
          continue;
        }
        let from = 0;
        for (let at = fragment.indexOf(special); at !== -1; at = fragment.indexOf(special, from)) {
          let leftEnd = at;
          if (attr & TokenAttr.LStrip) while (leftEnd > from && isCSpace(fragment.charCodeAt(leftEnd - 1))) leftEnd--;
          if (leftEnd > from) next.push(fragment.slice(from, leftEnd));
          next.push(id);
          from = at + special.length;
          if (attr & TokenAttr.RStrip) while (from < fragment.length && isCSpace(fragment.charCodeAt(from))) from++;
        }
        if (from < fragment.length) next.push(from === 0 ? fragment : fragment.slice(from));
      }
      fragments = next;
    }
    return fragments;
  }

  private spmVocab(allTextToId: Map<string, number>, scores: Float32Array) {
    const textToId = new Map<string, number>();
    const excluded = TokenAttr.Unknown | TokenAttr.Control | TokenAttr.Unused | TokenAttr.Byte;
    for (let id = 0; id < this.vocabSize; id++) {
      if (!(this.attrs[id] & excluded)) textToId.set(this.tokens[id], id);
    }
    // llama.cpp byte_to_token: "<0xNN>" (upper-case hex) or else the byte itself as a one-character token.
    const byteToId = new Int32Array(256);
    for (let byte = 0; byte < 256; byte++) {
      const hex = byte.toString(16).toUpperCase().padStart(2, '0');
      const id = allTextToId.get(`<0x${hex}>`) ?? (byte < 0x80 ? allTextToId.get(String.fromCharCode(byte)) : undefined);
      byteToId[byte] = id ?? this.unk;
    }
    return { textToId, scores, byteToId };
  }
}

/**
 * Text of ids pushed one at a time. Each `push` returns what became complete: never part of a UTF-8 character
 * (a character split over byte tokens comes out once its last byte arrives); invalid bytes become U+FFFD as soon as
 * they are known to be invalid. Create it with `Tokenizer.decoder()`.
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

function typeToAttr(type: number): number {
  switch (type) {
    case LlamaTokenType.Unknown:
      return TokenAttr.Unknown;
    case LlamaTokenType.Unused:
      return TokenAttr.Unused;
    case LlamaTokenType.Normal:
      return TokenAttr.Normal;
    case LlamaTokenType.Control:
      return TokenAttr.Control;
    case LlamaTokenType.UserDefined:
      return TokenAttr.UserDefined;
    case LlamaTokenType.Byte:
      return TokenAttr.Byte;
    default:
      return TokenAttr.Undefined;
  }
}

/** llama_decode_text: each character of a byte-level token back to its byte. */
function byteLevelPiece(text: string): Uint8Array {
  const bytes: number[] = [];
  for (const ch of text) {
    const code = ch.charCodeAt(0);
    const byte = ch.length === 1 && code < CHAR_TO_BYTE.length ? CHAR_TO_BYTE[code] : -1;
    if (byte >= 0) {
      bytes.push(byte);
      continue;
    }
    // llama.cpp's marker for a character that stands for no byte, whole token text included.
    const hex = Array.from(utf8Encoder.encode(ch), (b) => b.toString(16).padStart(2, '0')).join('');
    bytes.push(...utf8Encoder.encode(`[UNK_BYTE_0x${hex}${text}]`));
  }
  return Uint8Array.from(bytes);
}

/** C isspace: the whitespace llama.cpp's lstrip/rstrip remove beside a special token. */
function isCSpace(c: number): boolean {
  return c === 0x20 || (c >= 0x09 && c <= 0x0d);
}

function wellFormed(text: string): string {
  const s = text as string & { isWellFormed?: () => boolean; toWellFormed?: () => string };
  if (s.isWellFormed) return s.isWellFormed() ? text : s.toWellFormed!();
  return text.replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, '\uFFFD');
}

/**
 * llama_detokenize's clean_spaces passes, kept as written (they run in place, so a pass can see its own writes):
 * " ?", " !", " .", " ," lose the space; " ' " becomes "'"; " 's", " 'm", " 're", " 've" lose the space. Every
 * character tested is ASCII, so running on UTF-16 units is the same as llama.cpp running on UTF-8 bytes.
 */
export function cleanUpSpaces(text: string): string {
  if (!/ [?!.,']/.test(text)) return text;
  const t = new Uint16Array(text.length);
  for (let i = 0; i < text.length; i++) t[i] = text.charCodeAt(i);
  const SPACE = 0x20;
  const APOSTROPHE = 0x27;
  const ch = (c: string) => c.charCodeAt(0);

  let total = t.length;
  const total1 = total;
  total = total ? 1 : 0;
  for (let i = 1; i < total1; i++) {
    const x = t[i];
    if (t[i - 1] === SPACE && (x === ch('?') || x === ch('!') || x === ch('.') || x === ch(','))) total--;
    t[total++] = x;
  }

  const total2 = total;
  total = total ? 1 : 0;
  for (let i = 1; i < total2; i++) {
    const x = t[i];
    if (x === APOSTROPHE && i + 1 < total2 && t[i - 1] === SPACE && t[i + 1] === SPACE) {
      total--;
      t[++i] = 0;
    }
    t[total++] = x;
  }

  const total3 = total;
  total = total ? 1 : 0;
  for (let i = 1; i < total3; i++) {
    const x = t[i];
    if (t[i - 1] === SPACE && x === APOSTROPHE && i + 1 < total3) {
      const x1 = t[i + 1];
      if (x1 === ch('s') || x1 === ch('m')) {
        total--;
      } else if (x1 !== ch('t') && x1 !== ch('d') && i + 2 < total3) {
        const x2 = t[i + 2];
        if ((x1 === ch('r') && x2 === ch('e')) || (x1 === ch('v') && x2 === ch('e'))) total--;
      }
    }
    t[total++] = x;
  }

  let out = '';
  for (let i = 0; i < total; i += 8192) out += String.fromCharCode(...t.subarray(i, Math.min(total, i + 8192)));
  return out;
}

function unsupportedModel(model: string): EdgeLLMError {
  return new EdgeLLMError(
    'UNSUPPORTED_TOKENIZER',
    `${KEY.model} is ${JSON.stringify(model)}; edgellm tokenizes ${SUPPORTED_MODELS.map((m) => JSON.stringify(m)).join(', ')} ` +
      '(SentencePiece, byte-level BPE, Gemma 4 BPE)',
  );
}

/** Validates array lengths and ids; returns the vocabulary size. */
function checkVocab(vocab: VocabData): number {
  if (!Array.isArray(vocab.tokens)) throw new EdgeLLMError('BAD_METADATA', `${field('tokens')} is not an array of strings`);
  const n = vocab.tokens.length;
  if (n === 0) throw new EdgeLLMError('BAD_METADATA', `${field('tokens')} is empty`);
  for (let i = 0; i < n; i++) {
    if (typeof vocab.tokens[i] !== 'string') throw new EdgeLLMError('BAD_METADATA', `${field('tokens')}[${i}] is not a string`);
  }
  if (vocab.scores && vocab.scores.length !== n) {
    throw new EdgeLLMError('BAD_METADATA', `${field('scores')} has ${vocab.scores.length} entries for ${n} tokens`);
  }
  if (vocab.types && vocab.types.length !== n) {
    throw new EdgeLLMError('BAD_METADATA', `${field('types')} has ${vocab.types.length} entries for ${n} tokens`);
  }
  if (vocab.merges !== undefined && !Array.isArray(vocab.merges)) {
    throw new EdgeLLMError('BAD_METADATA', `${field('merges')} is not an array of strings`);
  }
  const checkId = (name: string, id: number): void => {
    if (!Number.isInteger(id) || id < 0 || id >= n) {
      throw new EdgeLLMError('BAD_METADATA', `${name} is ${id}, outside the vocabulary of ${n} tokens`);
    }
  };
  for (const name of ID_FIELDS) {
    const id = vocab[name];
    if (id !== undefined && id !== null) checkId(field(name), id);
  }
  for (const id of vocab.eog ?? []) checkId(`eog (${KEY.eot} / ${KEY.eom})`, id);
  return n;
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
