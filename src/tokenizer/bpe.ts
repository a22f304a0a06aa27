/**
 * BPE over pre-tokenized pieces, as llama.cpp's `llm_tokenizer_bpe_session::tokenize` (llama-vocab.cpp, de3ff815):
 * byte-level vocabularies (`tokenizer.ggml.model = "gpt2"`) and Gemma 4's SPM-style BPE on raw UTF-8.
 *
 * Per piece: GPT-2 byte-to-unicode encoding (byte-level only); the whole piece as one token when `ignore_merges`
 * and it is a token (Llama 3), or when it is all newlines and a token (Gemma 4); otherwise single characters merged
 * pairwise, always the pair of lowest merge rank, leftmost on ties, until no pair has a rank. Each symbol is then
 * looked up among all tokens; one that is not a token falls back to its bytes (`<0xNN>` tokens for Gemma 4, the
 * one-character token of an ASCII byte for byte-level).
 *
 * Deliberate differences: llama.cpp has no cache; here each piece's ids are cached (bounded), which cannot change
 * them since they depend on the piece alone. Its byte fallback for byte-level vocabularies also looks up bytes
 * 0x80-0xFF as one-byte strings; GGUF strings are UTF-8, so no token can be such a string and those bytes are
 * dropped in both.
 */
import { EdgeLLMError } from '../errors.js';
import { PreTokenizerSplitter, type PreTokenizer } from './pretokenize.js';

/** The GPT-2 byte-to-unicode table: printable Latin-1 bytes stand for themselves, the rest for U+0100 onwards. */
export const BYTE_TO_CHAR: readonly string[] = (() => {
  const table: string[] = new Array(256);
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  let next = 0;
  for (let b = 0; b < 256; b++) table[b] = String.fromCharCode(printable(b) ? b : 256 + next++);
  return table;
})();

/** Inverse of BYTE_TO_CHAR, by UTF-16 code unit; -1 where a character stands for no byte. */
export const CHAR_TO_BYTE: Int16Array = (() => {
  const table = new Int16Array(0x144).fill(-1);
  BYTE_TO_CHAR.forEach((ch, b) => (table[ch.charCodeAt(0)] = b));
  return table;
})();

const utf8Encoder = new TextEncoder();

/** GPT-2 byte-level form of a piece: each UTF-8 byte as its stand-in character. */
function byteEncode(word: string): string {
  let ascii = true;
  for (let i = 0; i < word.length; i++) {
    if (word.charCodeAt(i) >= 0x80) {
      ascii = false;
      break;
    }
  }
  let out = '';
  if (ascii) {
    for (let i = 0; i < word.length; i++) out += BYTE_TO_CHAR[word.charCodeAt(i)];
    return out;
  }
  for (const b of utf8Encoder.encode(word)) out += BYTE_TO_CHAR[b];
  return out;
}

/**
 * Memo of merge ranks by token-id pair, in an open-addressing table of typed arrays: a hit allocates nothing, where
 * the rank's own key, the string "left right", costs a concatenation and a hash for every candidate pair.
 */
class PairMemo {
  /** `get`'s answer for a pair not looked up yet. */
  static readonly UNKNOWN = -2;
  private lefts!: Int32Array;
  private rights!: Int32Array;
  private ranks!: Int32Array;
  private mask = 0;
  private count = 0;

  constructor() {
    this.allocate(1 << 14);
  }

  get(left: number, right: number): number {
    const { lefts, rights, mask } = this;
    for (let i = slot(left, right, mask); ; i = (i + 1) & mask) {
      const l = lefts[i];
      if (l === -1) return PairMemo.UNKNOWN;
      if (l === left && rights[i] === right) return this.ranks[i];
    }
  }

  /** Records the rank (-1: no merge) of a pair `get` did not know. */
  set(left: number, right: number, rank: number): void {
    // Half full at most, so probes stay short; past 4M pairs (48 MB) start over rather than grow without bound.
    if (2 * (this.count + 1) > this.lefts.length) {
      if (this.lefts.length >= 1 << 23) this.allocate(this.lefts.length);
      else this.grow();
    }
    const { lefts, mask } = this;
    let i = slot(left, right, mask);
    while (lefts[i] !== -1) i = (i + 1) & mask;
    lefts[i] = left;
    this.rights[i] = right;
    this.ranks[i] = rank;
    this.count++;
  }

  private allocate(size: number): void {
    this.lefts = new Int32Array(size).fill(-1);
    this.rights = new Int32Array(size);
    this.ranks = new Int32Array(size);
    this.mask = size - 1;
    this.count = 0;
  }

  private grow(): void {
    const { lefts, rights, ranks } = this;
    this.allocate(lefts.length * 2);
    for (let i = 0; i < lefts.length; i++) if (lefts[i] !== -1) this.set(lefts[i], rights[i], ranks[i]);
  }
}

function slot(left: number, right: number, mask: number): number {
  return (Math.imul(left, 0x9e3779b1) ^ Math.imul(right + 0x7f4a7c15, 0x85ebca77)) & mask;
}

/** `tokenizer.ggml.merges`, ranked. */
export interface Merges {
  /** Rank by the line itself, "left right". */
  readonly ranks: Map<string, number>;
  /** The token each merge makes, by rank: an id, -1 for none, -2 not looked up yet. */
  readonly result: Int32Array;
}

/**
 * Ranks the merge lines. A line must hold a space after its first character, as llama.cpp splits it there; llama.cpp
 * silently ranks a line without one as the pair ("", ""), which no text can reach, but such a file is broken, so it
 * is refused naming the line. Symbols never contain a space (byte-level maps it to Ġ, Gemma 4 to ▁), so the line is
 * an exact key for its pair.
 */
export function parseMerges(merges: readonly string[], key: string): Merges {
  const ranks = new Map<string, number>();
  for (let i = merges.length - 1; i >= 0; i--) {
    const line = merges[i];
    if (typeof line !== 'string') throw new EdgeLLMError('BAD_METADATA', `${key}[${i}] is not a string`);
    const space = line.indexOf(' ', 1);
    if (space === -1 || space === line.length - 1) {
      throw new EdgeLLMError('BAD_METADATA', `${key}[${i}] is ${JSON.stringify(line)}, not "<left> <right>"`);
    }
    // Going backwards, so the first of duplicate lines is set last and keeps its rank, as in llama.cpp.
    ranks.set(line, i);
  }
  return { ranks, result: new Int32Array(merges.length).fill(-2) };
}

/** Cached pieces; the cache is dropped when full, which keeps memory bounded without bookkeeping per entry. */
const CACHE_ENTRIES = 1 << 16;
/** Longer pieces are not cached: they are rare, and each could hold much memory. */
const CACHE_MAX_PIECE = 256;

export interface BpeVocab {
  /** Every token's text → id (llama.cpp token_to_id: all types, control included). */
  readonly textToId: ReadonlyMap<string, number>;
  /** Every token's text, by id. */
  readonly tokens: readonly string[];
  readonly merges: Merges;
}

export class BpeModel {
  private readonly splitter: PreTokenizerSplitter;
  private readonly cache = new Map<string, number[]>();
  /** Gemma 4: the `<0xNN>` token of each byte, or -1. */
  private readonly byteTokens = new Int32Array(256).fill(-1);

  // Work arrays for one piece, grown as needed.
  private start = new Int32Array(64);
  private length = new Int32Array(64);
  private prev = new Int32Array(64);
  private next = new Int32Array(64);
  /** Token id of each symbol's text, or -1 when it is no token. */
  private ids = new Int32Array(64);
  /** Token ids of the byte-level stand-in characters (all below U+0144), or -1. */
  private readonly charIds = new Int32Array(0x144).fill(-1);
  private readonly queue = new MergeQueue();
  private readonly memo = new PairMemo();

  constructor(
    private readonly vocab: BpeVocab,
    private readonly pre: PreTokenizer,
  ) {
    this.splitter = new PreTokenizerSplitter(pre.regexes);
    for (let c = 0; c < 0x144; c++) this.charIds[c] = vocab.textToId.get(String.fromCharCode(c)) ?? -1;
    if (!pre.byteEncode) {
      for (let b = 0; b < 256; b++) {
        this.byteTokens[b] = vocab.textToId.get(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`) ?? -1;
      }
    }
  }

  /** Appends the ids of one text fragment (no special tokens in it). */
  tokenize(text: string, output: number[]): void {
    const { cache } = this;
    for (const word of this.splitter.split(text)) {
      const cached = cache.get(word);
      if (cached !== undefined) {
        for (let i = 0; i < cached.length; i++) output.push(cached[i]);
        continue;
      }
      const ids: number[] = [];
      this.tokenizeWord(this.pre.byteEncode ? byteEncode(word) : word, ids);
      if (word.length <= CACHE_MAX_PIECE) {
        if (cache.size >= CACHE_ENTRIES) cache.clear();
        cache.set(word, ids);
      }
      for (let i = 0; i < ids.length; i++) output.push(ids[i]);
    }
  }

  private tokenizeWord(word: string, output: number[]): void {
    const { textToId, merges } = this.vocab;
    if (word === '') return;
    if (this.pre.ignoreMerges || (this.pre.wholeNewlines && /^\n+$/.test(word))) {
      const id = textToId.get(word);
      if (id !== undefined) {
        output.push(id);
        return;
      }
    }

    // Symbols: one per code point (byte-level stand-ins are all single UTF-16 units).
    this.ensureCapacity(word.length);
    const { start, length, prev, next, ids, charIds } = this;
    let count = 0;
    for (let at = 0; at < word.length; count++) {
      const c = word.charCodeAt(at);
      const width = c >= 0xd800 && c <= 0xdbff && at + 1 < word.length ? 2 : 1;
      start[count] = at;
      length[count] = width;
      prev[count] = count - 1;
      next[count] = count + 1;
      ids[count] = width === 1 && c < 0x144 ? charIds[c] : (textToId.get(word.substr(at, width)) ?? -1);
      at += width;
    }
    next[count - 1] = -1;

    const { ranks, result } = merges;
    const { queue, memo } = this;
    const { tokens } = this.vocab;
    queue.reset(3 * count);
    const addBigram = (left: number, right: number): void => {
      if (left < 0 || right < 0) return;
      const idLeft = ids[left];
      const idRight = ids[right];
      let rank: number;
      if (idLeft >= 0 && idRight >= 0) {
        rank = memo.get(idLeft, idRight);
        if (rank === PairMemo.UNKNOWN) {
          rank = ranks.get(tokens[idLeft] + ' ' + tokens[idRight]) ?? -1;
          memo.set(idLeft, idRight, rank);
        }
      } else {
        // A symbol that is no token (reached through an odd merge): rare, so not memoized.
        rank = ranks.get(word.substr(start[left], length[left]) + ' ' + word.substr(start[right], length[right])) ?? -1;
      }
      if (rank >= 0) queue.push(rank, left, right, length[left] + length[right]);
    };
    for (let i = 1; i < count; i++) addBigram(i - 1, i);

    while (queue.pop()) {
      const { left, right, size, rank } = queue;
      // Stale once either side has merged since: then the two no longer spell the pair (llama.cpp compares texts;
      // a symbol only grows to the right and keeps its start, so comparing lengths is the same test).
      if (length[left] === 0 || length[right] === 0 || length[left] + length[right] !== size) continue;
      length[left] = size;
      length[right] = 0;
      // A merge always spells the same text, so the token it makes is looked up once per merge rank.
      let made = result[rank];
      if (made === -2) result[rank] = made = textToId.get(word.substr(start[left], size)) ?? -1;
      ids[left] = made;
      next[left] = next[right];
      if (next[right] >= 0) prev[next[right]] = left;
      addBigram(prev[left], left);
      addBigram(left, next[left]);
    }

    for (let i = 0; i !== -1; i = next[i]) {
      if (ids[i] >= 0) {
        output.push(ids[i]);
        continue;
      }
      for (const b of utf8Encoder.encode(word.substr(start[i], length[i]))) {
        const fallback = this.pre.byteEncode ? (b < 0x80 ? textToId.get(String.fromCharCode(b)) : undefined) : this.byteTokens[b];
        if (fallback !== undefined && fallback >= 0) output.push(fallback);
      }
    }
  }

  private ensureCapacity(n: number): void {
    if (this.start.length >= n) return;
    const size = Math.max(n, this.start.length * 2);
    this.start = new Int32Array(size);
    this.length = new Int32Array(size);
    this.prev = new Int32Array(size);
    this.next = new Int32Array(size);
    this.ids = new Int32Array(size);
  }
}

/**
 * Min-heap of merge candidates: lowest rank first, then lowest left index (llama.cpp's llm_bigram_bpe comparator),
 * both in one float64 key, rank · 2^32 + left (exact: ranks stay far below 2^20), so each level is one comparison.
 * Parallel typed arrays, reused across pieces.
 */
class MergeQueue {
  left = 0;
  right = 0;
  size = 0;
  rank = 0;

  private keys = new Float64Array(192);
  private rights = new Int32Array(192);
  private sizes = new Int32Array(192);
  private count = 0;

  reset(capacity: number): void {
    this.count = 0;
    if (this.keys.length >= capacity) return;
    const size = Math.max(capacity, this.keys.length * 2);
    this.keys = new Float64Array(size);
    this.rights = new Int32Array(size);
    this.sizes = new Int32Array(size);
  }

  push(rank: number, left: number, right: number, size: number): void {
    const { keys, rights, sizes } = this;
    const key = rank * 4294967296 + left;
    let i = this.count++;
    // Sift up, moving parents down instead of swapping.
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (keys[parent] <= key) break;
      keys[i] = keys[parent];
      rights[i] = rights[parent];
      sizes[i] = sizes[parent];
      i = parent;
    }
    keys[i] = key;
    rights[i] = right;
    sizes[i] = size;
  }

  /** Takes the best candidate into `left`, `right`, `size` and `rank`; false when empty. */
  pop(): boolean {
    if (this.count === 0) return false;
    const { keys, rights, sizes } = this;
    const top = keys[0];
    this.rank = Math.floor(top / 4294967296);
    this.left = top - this.rank * 4294967296;
    this.right = rights[0];
    this.size = sizes[0];
    const last = --this.count;
    const key = keys[last];
    let i = 0;
    for (;;) {
      let child = 2 * i + 1;
      if (child >= last) break;
      if (child + 1 < last && keys[child + 1] < keys[child]) child++;
      if (key <= keys[child]) break;
      keys[i] = keys[child];
      rights[i] = rights[child];
      sizes[i] = sizes[child];
      i = child;
    }
    keys[i] = key;
    rights[i] = rights[last];
    sizes[i] = sizes[last];
    return true;
  }
}
