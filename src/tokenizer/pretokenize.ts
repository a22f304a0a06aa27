/**
 * Pre-tokenizers of byte-level BPE vocabularies: the regex sets llama.cpp chooses by `tokenizer.ggml.pre`
 * (`llm_tokenizer_bpe` and `llama_vocab::impl::load` in llama-vocab.cpp) and the way its `unicode_regex_split`
 * (unicode.cpp) applies them, at llama.cpp de3ff815 (node-llama-cpp 3.22.1).
 *
 * unicode_regex_split runs the regexes of a set one after the other, each splitting every piece the previous one
 * left: a match becomes a piece, and so does any text between matches. Each regex takes one of three routes, and
 * this file reproduces the route, not just the regex, because the routes differ in what `\s` and `\p{..}` mean:
 * - Hand-written splitters for the GPT-2, Llama-3, Qwen2 and Qwen3.5 regexes and for `[^\n]+|[\n]+`. They classify
 *   code points with llama.cpp's own tables. Here they are the same regexes run by JavaScript (`u` flag, its own
 *   `\p{L}`, `\p{N}`, `\p{M}`), with `\s` meaning llama.cpp's whitespace set: JavaScript's `\s` plus U+0085, less
 *   U+FEFF. The splitters were checked equivalent to their regexes branch by branch (they also match a lone `\s+`,
 *   which the GPT-2 regex lacks; no text reaches their "no match" branch, since every code point has a category).
 * - Regexes with `\p{..}` run on a "collapsed" text: ASCII stays, other whitespace becomes U+000B, every other code
 *   point one stand-in character per category (letter, number, punctuation, mark, symbol, other), and each `\p{X}`
 *   becomes a class of its stand-in plus the ASCII members. So `\p{L}` there means "ASCII letter or any non-ASCII
 *   letter", and a non-ASCII character in the regex itself is refused, as llama.cpp refuses it.
 * - Other regexes run on the code points as they are, but with non-ASCII whitespace turned into U+000B and `\s`
 *   meaning ASCII whitespace only (std::wregex in the C locale).
 *
 * Deliberate differences:
 * - Character categories come from the JavaScript engine's Unicode version (Node 20: Unicode 15), llama.cpp's from
 *   the UnicodeData.txt it was generated from; code points assigned between the two versions can split differently.
 * - After an empty match std::regex_iterator first retries a non-empty match at the same place; JavaScript moves on
 *   one character. Only SuperBPE's lookahead-only regex matches empty, and it never matches non-empty, so the pieces
 *   are the same.
 * - Kimi-K2, AFMoE and Tiny-Aya (also cohere2moe) use hand-written splitters that are not regexes
 *   (`\p{Han}`, digit grouping); they are refused with UNSUPPORTED_TOKENIZER rather than approximated.
 */
import { EdgeLLMError } from '../errors.js';

/** llama.cpp's whitespace set (unicode-data.cpp `unicode_set_whitespace`), as a class body. */
const WS = '\\t-\\r \\x85\\xA0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000';
/** Non-ASCII members of WS (JavaScript `\s` without U+FEFF, plus U+0085), for the collapsed and wide texts. */
const NON_ASCII_WS = /[\x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]/u;

// The regexes, character for character as llama.cpp writes them (its C++ escapes resolved).
const CONTRACTIONS = String.raw`(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])`;
const RE_GPT2 = String.raw`'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)`;
const RE_LLAMA3 = String.raw`${CONTRACTIONS}|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`;
const RE_QWEN2 = String.raw`${CONTRACTIONS}|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`;
const RE_QWEN35 = String.raw`${CONTRACTIONS}|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`;
const RE_NEWLINES = String.raw`[^\n]+|[\n]+`;
const RE_DEEPSEEK3 = String.raw`[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_` + '`' + String.raw`{|}~][A-Za-z]+|[^` + '\r\n' + String.raw`\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[` + '\r\n' + String.raw`]*|\s*[` + '\r\n' + String.raw`]+|\s+(?!\S)|\s+`;
const RE_CJK_KANA = '[一-龥぀-ゟ゠-ヿ]+';
const RE_PORO = String.raw` ?[^(\s|.,!?…。，、।۔،)]+`;
const RE_GPT4O_TAIL = String.raw`|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+`;
const RE_YOUTU_WORD = String.raw`[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+${CONTRACTIONS}?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*${CONTRACTIONS}?`;

/** llama.cpp LLAMA_VOCAB_PRE_TYPE_* → its regex set (llm_tokenizer_bpe's constructor). Exported for tests. */
export const REGEX_SETS: Record<string, string[]> = {
  default: [String.raw`[\p{P}\$\+<=>\^~\|]+`, RE_GPT2, String.raw`\p{N}+`, '[0-9][0-9][0-9]'],
  llama3: [RE_LLAMA3],
  jais2: [
    String.raw`${CONTRACTIONS}|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s{512}(?!\S)|\s{256}(?!\S)|\s{128}(?!\S)|\s{64}(?!\S)|\s{32}(?!\S)|\s{16}(?!\S)|\s{8}(?!\S)|\s{4}(?!\S)|\s{1,2}(?!\S)|\s{1}`,
  ],
  'deepseek-llm': [
    '[\r\n]',
    // Escaped: the class holds look-alikes (U+2126 OHM SIGN, U+212A KELVIN SIGN) that editors and NFC would change.
    '\\s?[A-Za-z\u00B5\u00C0-\u00D6\u00D8-\u00F6\u00F8-\u01BA\u01BC-\u01BF\u01C4-\u0293\u0295-\u02AF\u0370-\u0373\u0376\u0377\u037B-\u037D\u037F\u0386\u0388-\u038A\u038C\u038E-\u03A1\u03A3-\u03F5\u03F7-\u0481\u048A-\u052F\u0531-\u0556\u10A0-\u10C5\u13A0-\u13F5\u13F8-\u13FD\u1C90-\u1CBA\u1CBD-\u1CBF\u1D00-\u1D2B\u1D6B-\u1D77\u1D79-\u1D9A\u1E00-\u1F15\u1F18-\u1F1D\u1F20-\u1F45\u1F48-\u1F4D\u1F50-\u1F57\u1F59\u1F5B\u1F5D\u1F5F-\u1F7D\u1F80-\u1FB4\u1FB6-\u1FBC\u1FBE\u1FC2-\u1FC4\u1FC6-\u1FCC\u1FD0-\u1FD3\u1FD6-\u1FDB\u1FE0-\u1FEC\u1FF2-\u1FF4\u1FF6-\u1FFC\u2102\u2107\u210A-\u2113\u2115\u2119-\u211D\u2124\u2126\u2128\u212A-\u212D\u212F-\u2134\u2139\u213C-\u213F\u2145-\u2149\u214E\u2183\u2184\u2C00-\u2C7B\u2C7E-\u2CE4\u2CEB-\u2CEE\u2CF2\u2CF3\uA640-\uA66D\uA680-\uA69B\uA722-\uA76F\uA771-\uA787\uA78B-\uA78E\uAB70-\uABBF\uFB00-\uFB06\uFB13-\uFB17\uFF21-\uFF3A\uFF41-\uFF5A\u{10400}-\u{1044F}\u{104B0}-\u{104D3}\u{104D8}-\u{104FB}\u{10C80}-\u{10CB2}\u{10CC0}-\u{10CF2}\u{118A0}-\u{118DF}\u{1E900}-\u{1E943}]+',
    String.raw`\s?[!-/:-~！-／：-～‘-‟　-。]+`,
    String.raw`\s+$`,
    '[一-龥ࠀ-一가-퟿]+',
    String.raw`\p{N}+`,
  ],
  deepseek3: [String.raw`\p{N}{1,3}`, RE_CJK_KANA, RE_DEEPSEEK3],
  spark2_5: [
    String.raw`\p{N}{1,3}`,
    RE_CJK_KANA,
    RE_DEEPSEEK3.replace(String.raw`[\p{P}\p{S}]+[` + '\r\n' + String.raw`]*|\s*[` + '\r\n' + ']+', String.raw`[\p{P}\p{S}]+|[` + '\r\n' + ']'),
    String.raw`\p{N}`,
  ],
  youtu: [
    '[가-힣ㄱ-ㆎ]+|[！…“”‘’—：；，、-〿︰-﹏]+|[ㄅ-ㄯ]+|[一-龥぀-ゟ゠-ヿ]+',
    String.raw`${RE_YOUTU_WORD}|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+`,
  ],
  'deepseek-coder': ['[\r\n]', String.raw`\s?\p{L}+`, String.raw`\s?\p{P}+`, '[一-龥ࠀ-一가-퟿]+', String.raw`\p{N}`],
  falcon: [String.raw`[\p{P}\$\+<=>\^~\|` + '`]+', RE_GPT2, '[0-9][0-9][0-9]'],
  starcoder: [String.raw`\p{N}`, RE_GPT2],
  gpt2: [RE_GPT2],
  qwen2: [RE_QWEN2],
  qwen35: [RE_QWEN35],
  poro: [RE_PORO],
  chatglm4: [RE_LLAMA3],
  viking: [RE_PORO, String.raw`\p{N}`],
  tekken: [
    String.raw`[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+`,
  ],
  chameleon: [
    '<sentinel:[0-9]+>',
    '(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z',
    String.raw`([\t\n]|    |  )`,
    String.raw`\p{N}`,
    String.raw`[\p{P}!-/:-@\[-` + '`' + '{-~]',
    RE_GPT2,
  ],
  gpt4o: [
    String.raw`[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+${CONTRACTIONS}?|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*${CONTRACTIONS}?${RE_GPT4O_TAIL}`,
  ],
  'granite-emb-multi': [
    String.raw`[^\r\n\p{L}\p{N}]?((?=[\p{L}\p{M}])([^a-z]))*((?=[\p{L}\p{M}])([^A-Z]))+${CONTRACTIONS}?|[^\r\n\p{L}\p{N}]?((?=[\p{L}\p{M}])([^a-z]))+((?=[\p{L}\p{M}])([^A-Z]))*${CONTRACTIONS}?${RE_GPT4O_TAIL}`,
  ],
  superbpe: [String.raw`\p{N}+`, String.raw`(?=(\d{3})+(?!\d))`],
  bailingmoe: [String.raw`'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+`],
  'seed-coder': [String.raw`${CONTRACTIONS}|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+`],
  ufakzeka: [String.raw`[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`],
  laguna: [RE_NEWLINES, RE_QWEN2],
  'exaone-moe': [String.raw`${CONTRACTIONS}|[^\r\n\p{L}\p{N}]?(?:\p{L}\p{M}*(?: \p{L}\p{M}*)*)+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]?|\s*[\r\n]|\s+(?!\S)|\s+`],
  gemma4: [RE_NEWLINES],
  minicpm5: [String.raw`\p{N}{1,3}`, String.raw`${CONTRACTIONS}|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}+| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`],
  whitespace: [String.raw`\S+`],
};

/** What a `tokenizer.ggml.pre` value sets besides its regexes (llama_vocab::impl::load). */
export interface PreTokenizer {
  /** The regex set (a key of REGEX_SETS). */
  readonly regexes: string;
  /** GPT-2 byte-to-unicode encoding of each piece; false for SPM-style BPE on raw UTF-8 (Gemma 4). */
  readonly byteEncode: boolean;
  /** A whole piece that is a token is taken as is, before any merge. */
  readonly ignoreMerges: boolean;
  /** llama_detokenize's clean_up_tokenization_spaces. */
  readonly cleanSpaces: boolean;
  /** Spaces become U+2581 before splitting (SPM-style BPE). */
  readonly escapeWhitespace: boolean;
  /** add_bos before tokenizer.ggml.add_bos_token is read. */
  readonly addBos: boolean;
  /** The vocabulary has no BOS unless tokenizer.ggml.bos_token_id names one (GLM-4). */
  readonly noDefaultBos: boolean;
  /** A piece of newlines only that is a token is taken whole (Gemma 4; llama.cpp PR 21343). */
  readonly wholeNewlines: boolean;
}

const BASE: PreTokenizer = {
  regexes: 'default',
  byteEncode: true,
  ignoreMerges: false,
  cleanSpaces: true,
  escapeWhitespace: false,
  addBos: false,
  noDefaultBos: false,
  wholeNewlines: false,
};

function pre(regexes: string, flags: Partial<PreTokenizer> = {}): PreTokenizer {
  return { ...BASE, regexes, byteEncode: regexes !== 'gemma4' && regexes !== 'whitespace', ...flags };
}

const NO_CLEAN = { cleanSpaces: false } as const;

/** `tokenizer.ggml.pre` → its pre-tokenizer, as llama_vocab::impl::load maps them (every name it knows). */
const PRE_TOKENIZERS: Record<string, PreTokenizer> = {};
function define(names: string[], p: PreTokenizer): void {
  for (const name of names) PRE_TOKENIZERS[name] = p;
}
define(['default'], pre('default'));
define(['minicpm5'], pre('minicpm5', { ignoreMerges: true }));
define(['llama3', 'llama-v3', 'llama-bpe', 'falcon3', 'falcon-h1', 'pixtral', 'midm-2.0', 'lfm2', 'jina-v5-nano'], pre('llama3', { ignoreMerges: true, addBos: true }));
define(['deepseek-llm'], pre('deepseek-llm', NO_CLEAN));
define(['deepseek-coder'], pre('deepseek-coder', NO_CLEAN));
define(['deepseek-v3'], pre('deepseek3', NO_CLEAN));
define(['spark2_5'], pre('spark2_5', NO_CLEAN));
define(['youtu'], pre('youtu', { cleanSpaces: false, ignoreMerges: true }));
define(['falcon'], pre('falcon'));
define(['mpt'], pre('gpt2'));
define(['starcoder'], pre('starcoder'));
define(['gpt-2', 'phi-2', 'jina-es', 'jina-de', 'gigachat', 'jina-v2-es', 'jina-v2-de', 'a.x-4.0', 'mellum', 'modern-bert'], pre('gpt2'));
define(['jais-2'], pre('jais2'));
define(['gemma4', 'granite-embed-multi-311m'], pre('gemma4', { escapeWhitespace: true, wholeNewlines: true }));
define(['sarvam-moe'], pre('gemma4', { escapeWhitespace: true, cleanSpaces: false }));
define(['jina-v1-en', 'jina-v2-code', 'roberta-bpe'], pre('gpt2'));
define(['whitespace'], pre('whitespace'));
define(['refact'], pre('starcoder'));
define(['command-r'], pre('starcoder', NO_CLEAN));
define(['qwen2', 'deepseek-r1-qwen', 'kormo', 'f2llmv2'], pre('qwen2', NO_CLEAN));
define(['qwen35'], pre('qwen35', NO_CLEAN));
define(['stablelm2'], pre('qwen2'));
define(['olmo'], pre('gpt2'));
define(['dbrx', 'smaug-bpe'], pre('llama3'));
define(['poro-chat'], pre('poro', NO_CLEAN));
define(['glm4', 'chatglm-bpe'], pre('chatglm4', { noDefaultBos: true }));
define(['viking'], pre('viking', NO_CLEAN));
define(['jais'], pre('gpt2'));
define(['tekken'], pre('tekken', { cleanSpaces: false, ignoreMerges: true, addBos: true }));
define(['smollm'], pre('starcoder', NO_CLEAN));
define(['codeshell'], pre('starcoder'));
define(['bloom', 'gpt3-finnish'], pre('poro'));
define(['exaone'], pre('starcoder'));
define(['exaone4'], pre('gpt2'));
define(['exaone-moe'], pre('exaone-moe'));
define(['chameleon'], pre('chameleon', { addBos: true, cleanSpaces: false }));
define(['minerva-7b'], pre('starcoder'));
define(['megrez'], pre('qwen2'));
define(['gpt-4o', 'llama4', 'kanana2', 'talkie', 'minimax-m2'], pre('gpt4o', NO_CLEAN));
define(['granite-embed-multi-97m'], pre('granite-emb-multi', { cleanSpaces: false, ignoreMerges: true }));
define(['superbpe'], pre('superbpe', NO_CLEAN));
define(['trillion', 'granite-docling'], pre('gpt2', NO_CLEAN));
define(['bailingmoe', 'bailingmoe2', 'llada-moe'], pre('bailingmoe', NO_CLEAN));
define(['seed-coder'], pre('seed-coder', NO_CLEAN));
define(['hunyuan', 'solar-open'], pre('qwen2', NO_CLEAN));
define(['hunyuan-dense', 'hy_v4', 'joyai-llm'], pre('deepseek3', NO_CLEAN));
define(['ufakzeka'], pre('ufakzeka', NO_CLEAN));
define(['grok-2'], pre('qwen2', NO_CLEAN));
define(['laguna'], pre('laguna', NO_CLEAN));
define(['mellum2'], pre('starcoder'));

/** Known to llama.cpp but split by code that is not a regex; see the file header. */
const REFUSED = new Set(['kimi-k2', 'afmoe', 'tiny_aya', 'cohere2moe']);

export const SUPPORTED_PRE = Object.freeze(Object.keys(PRE_TOKENIZERS).sort());

/**
 * The pre-tokenizer for a `tokenizer.ggml.pre` value. An unknown value is refused (UNSUPPORTED_TOKENIZER), as
 * llama.cpp refuses it ("unknown pre-tokenizer type"): the regexes decide which pieces BPE may merge, so the gpt-2
 * rules would give other ids than the model was trained on, silently. A missing value gets the default rules, with
 * llama.cpp's warning, since llama.cpp loads such files too.
 */
export function preTokenizerFor(name: string | undefined, warn: (message: string) => void): PreTokenizer {
  if (name === undefined || name === '') {
    warn('tokenizer.ggml.pre is missing; using the default pre-tokenizer as llama.cpp does (generation quality may suffer: consider regenerating the GGUF)');
    return PRE_TOKENIZERS.default;
  }
  const found = Object.hasOwn(PRE_TOKENIZERS, name) ? PRE_TOKENIZERS[name] : undefined;
  if (found) return found;
  if (REFUSED.has(name)) {
    throw new EdgeLLMError(
      'UNSUPPORTED_TOKENIZER',
      `tokenizer.ggml.pre is ${JSON.stringify(name)}: llama.cpp splits it with hand-written code that edgellm does not reproduce`,
    );
  }
  throw new EdgeLLMError(
    'UNSUPPORTED_TOKENIZER',
    `tokenizer.ggml.pre is ${JSON.stringify(name)}, a pre-tokenizer llama.cpp does not know either; supported: ${SUPPORTED_PRE.join(', ')}`,
  );
}

// ---------------------------------------------------------------------------------------------------------------
// Compiling one regex of a set into the route unicode_regex_split gives it.

type Route = 'custom' | 'collapsed' | 'wide';

interface Step {
  route: Route;
  re: RegExp;
}

/** Regex strings unicode_regex_split_custom hands to a hand-written splitter, with the JavaScript equivalent. */
const CUSTOM: Record<string, string> = {
  [RE_GPT2]: RE_GPT2 + String.raw`|\s+`,
  [RE_LLAMA3]: RE_LLAMA3,
  [RE_QWEN2]: RE_QWEN2,
  [RE_QWEN35]: RE_QWEN35,
  [RE_NEWLINES]: RE_NEWLINES,
};

/** llama.cpp's k_ucat_enum: the `\p{..}` it collapses, and the category each stands for. */
const UCAT: Record<string, Category> = {
  '\\p{N}': 'N',
  '\\p{L}': 'L',
  '\\p{P}': 'P',
  '\\p{M}': 'M',
  '\\p{S}': 'S',
  '\\p{Lu}': 'L',
  '\\p{Ll}': 'L',
  '\\p{Lt}': 'L',
  '\\p{Lm}': 'L',
  '\\p{Lo}': 'L',
};
type Category = 'N' | 'L' | 'P' | 'M' | 'S';

/** Stand-in characters of the collapsed text (k_ucat_cpt), and the ASCII members of each class (k_ucat_map). */
const STAND_IN: Record<Category, string> = { N: '\xD1', L: '\xD2', P: '\xD3', M: '\xD4', S: '\xD5' };
const STAND_IN_OTHER = '\xD0';
const STAND_IN_WS = '\x0B';
const ASCII_MEMBERS: Record<Category, string> = {
  N: '0-9',
  L: 'A-Za-z',
  P: '!-#%-*,-/:-;?-@\\[-\\]_\\{\\}',
  M: '',
  S: '\\$\\+<->^`\\|\\~',
};

function usesCategories(regex: string): boolean {
  return Object.keys(UCAT).some((cat) => regex.includes(cat));
}

/** The collapsed form of a regex, built the way unicode_regex_split builds it. */
function collapseRegex(regex: string): string {
  for (const ch of regex) {
    if (ch.codePointAt(0)! >= 128) {
      throw new EdgeLLMError('UNSUPPORTED_TOKENIZER', `pre-tokenizer regex ${JSON.stringify(regex)} mixes Unicode categories and non-ASCII characters (llama.cpp refuses it too)`);
    }
  }
  let out = '';
  let inside = false;
  for (let i = 0; i < regex.length; i++) {
    const c = regex[i];
    if (c === '[' && (i === 0 || regex[i - 1] !== '\\')) {
      out += '[';
      inside = true;
      continue;
    }
    if (inside && c === ']' && regex[i - 1] !== '\\') {
      out += ']';
      inside = false;
      continue;
    }
    if (c === '\\' && i + 3 < regex.length && regex[i + 1] === 'p' && regex[i + 2] === '{') {
      const close = regex.indexOf('}', i + 3);
      if (close !== -1 && close <= i + 10) {
        const cat = UCAT[regex.slice(i, close + 1)];
        if (cat) {
          const members = STAND_IN[cat] + ASCII_MEMBERS[cat];
          out += inside ? members : `[${members}]`;
          i = close;
          continue;
        }
      }
    }
    out += c;
  }
  return out;
}

/** The ASCII whitespace that std::wregex's `\s` matches. */
const ASCII_WS = '\\t-\\r ';

/**
 * Rewrites `\s`/`\S` to an explicit whitespace set: ASCII_WS for a regex meant for std::wregex, WS (llama.cpp's
 * whitespace) for a hand-written splitter's regex. A `\S` inside a class has no such rewrite.
 */
function withWhitespace(regex: string, ws: string): string {
  let out = '';
  let inside = false;
  for (let i = 0; i < regex.length; i++) {
    const c = regex[i];
    if (c === '\\') {
      const n = regex[i + 1];
      if (n === 's') out += inside ? ws : `[${ws}]`;
      else if (n === 'S' && !inside) out += `[^${ws}]`;
      else if (n === 'S') throw new EdgeLLMError('UNSUPPORTED_TOKENIZER', `pre-tokenizer regex ${JSON.stringify(regex)}: \\S inside a class`);
      else out += c + (n ?? '');
      i++;
      continue;
    }
    if (c === '[' && !inside) inside = true;
    else if (c === ']' && inside) inside = false;
    out += c;
  }
  return out;
}

function compile(regex: string): Step {
  const custom = CUSTOM[regex];
  if (custom !== undefined) return { route: 'custom', re: new RegExp(withWhitespace(custom, WS), 'gu') };
  try {
    if (usesCategories(regex)) return { route: 'collapsed', re: new RegExp(collapseRegex(regex), 'g') };
    return { route: 'wide', re: new RegExp(withWhitespace(regex, ASCII_WS), 'gu') };
  } catch (cause) {
    if (cause instanceof EdgeLLMError) throw cause;
    throw new EdgeLLMError('UNSUPPORTED_TOKENIZER', `pre-tokenizer regex ${JSON.stringify(regex)} does not compile: ${String(cause)}`, { cause });
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Splitting.

const LETTER = /\p{L}/u;
const NUMBER = /\p{N}/u;
const PUNCT = /\p{P}/u;
const MARK = /\p{M}/u;
const SYMBOL = /\p{S}/u;

/** unicode_regex_split's collapsed character for one non-ASCII code point. */
function collapseChar(ch: string): string {
  if (NON_ASCII_WS.test(ch)) return STAND_IN_WS;
  // Each code point has exactly one general category, so the order of the tests does not matter.
  if (LETTER.test(ch)) return STAND_IN.L;
  if (NUMBER.test(ch)) return STAND_IN.N;
  if (PUNCT.test(ch)) return STAND_IN.P;
  if (MARK.test(ch)) return STAND_IN.M;
  if (SYMBOL.test(ch)) return STAND_IN.S;
  return STAND_IN_OTHER;
}

/** Splits text into the pieces a regex set gives; the pieces concatenate to the text. */
export class PreTokenizerSplitter {
  private readonly steps: Step[];
  private readonly collapseCache = new Map<string, string>();

  constructor(regexes: string) {
    const set = REGEX_SETS[regexes];
    if (!set) throw new EdgeLLMError('UNSUPPORTED_TOKENIZER', `no regex set ${JSON.stringify(regexes)}`);
    this.steps = set.map(compile);
  }

  split(text: string): string[] {
    if (text === '') return [];
    // The common case: one hand-written splitter, whose regex matches every character, so its matches are the pieces.
    if (this.steps.length === 1 && this.steps[0].route === 'custom') return text.match(this.steps[0].re) ?? [];
    return this.splitGeneral(text);
  }

  /**
   * unicode_regex_split: pieces are kept as code point offsets, as llama.cpp keeps them, because the collapsed text
   * has one character per code point while the others are UTF-16.
   */
  private splitGeneral(text: string): string[] {
    const chars = Array.from(text);
    const n = chars.length;
    const astral = n !== text.length;
    // UTF-16 offset of each code point (and of the end), when they differ.
    let unitAt: Int32Array | undefined;
    if (astral) {
      unitAt = new Int32Array(n + 1);
      for (let i = 0, u = 0; i < n; i++) {
        unitAt[i] = u;
        u += chars[i].length;
      }
      unitAt[n] = text.length;
    }
    const unit = (cp: number): number => (unitAt ? unitAt[cp] : cp);
    let collapsed: string | undefined;
    let wide: string | undefined;

    let pieces = [n];
    for (const step of this.steps) {
      let subject: string;
      if (step.route === 'collapsed') subject = collapsed ??= this.collapse(chars);
      else if (step.route === 'wide') subject = wide ??= chars.map((c) => (NON_ASCII_WS.test(c) ? STAND_IN_WS : c)).join('');
      else subject = text;
      const next: number[] = [];
      let start = 0;
      for (const length of pieces) {
        const end = start + length;
        // The collapsed text is indexed by code point, the others by UTF-16 unit.
        const from = step.route === 'collapsed' ? start : unit(start);
        const to = step.route === 'collapsed' ? end : unit(end);
        const piece = subject.slice(from, to);
        const counted = step.route !== 'collapsed' && astral;
        let done = 0; // code points of this piece already emitted
        const re = step.re;
        re.lastIndex = 0;
        for (let m = re.exec(piece); m !== null; m = re.exec(piece)) {
          const at = counted ? countCodePoints(piece, 0, m.index) : m.index;
          const len = counted ? countCodePoints(piece, m.index, m.index + m[0].length) : m[0].length;
          if (at > done) next.push(at - done);
          // Empty matches only split; the empty piece they would add yields no tokens.
          if (len > 0) next.push(len);
          done = at + len;
          if (m[0].length === 0) re.lastIndex = m.index + (piece.codePointAt(m.index)! > 0xffff ? 2 : 1);
        }
        if (done < length) next.push(length - done);
        start = end;
      }
      pieces = next;
    }

    const words: string[] = new Array(pieces.length);
    let at = 0;
    for (let i = 0; i < pieces.length; i++) {
      words[i] = text.slice(unit(at), unit(at + pieces[i]));
      at += pieces[i];
    }
    return words;
  }

  private collapse(chars: string[]): string {
    let out = '';
    for (const ch of chars) {
      if (ch.length === 1 && ch.charCodeAt(0) < 128) {
        out += ch;
        continue;
      }
      let c = this.collapseCache.get(ch);
      if (c === undefined) {
        c = collapseChar(ch);
        if (this.collapseCache.size < 65536) this.collapseCache.set(ch, c);
      }
      out += c;
    }
    return out;
  }
}

function countCodePoints(s: string, from: number, to: number): number {
  let n = 0;
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i);
    // A low surrogate after a high one is the second half of one code point.
    if (c >= 0xdc00 && c <= 0xdfff && i > from && isHigh(s.charCodeAt(i - 1))) continue;
    n++;
  }
  return n;
}

function isHigh(c: number): boolean {
  return c >= 0xd800 && c <= 0xdbff;
}
