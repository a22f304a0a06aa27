/**
 * SentencePiece BPE for `tokenizer.ggml.model = "llama"` (Llama 1/2, Mistral v0.1, TinyLlama, Phi-3), token for
 * token as llama.cpp's `llm_tokenizer_spm_session` (llama-vocab.cpp, de3ff815) on one escaped fragment.
 *
 * Deliberate differences, none of which changes the ids of the shipped vocabularies (the conformance kit's
 * llama-spm and phi-3 included):
 * - Merges and whole-symbol lookups only see normal, user-defined and undefined tokens. llama.cpp looks text up
 *   among all tokens, so a vocabulary that could merge up to "<s>" or "<0x0A>" would let literal text become a
 *   control or byte token; SentencePiece never does that.
 * - A missing byte token falls back to `unk` (llama.cpp throws).
 */
const utf8Encoder = new TextEncoder();

export interface SpmVocab {
  /** Text → id of the tokens text may become. */
  readonly textToId: ReadonlyMap<string, number>;
  readonly scores: Float32Array;
  /** Byte → the token that spells it when a character has no token of its own. */
  readonly byteToId: Int32Array;
}

export class SpmModel {
  /** Longest key of textToId in UTF-16 units: longer candidate merges are skipped without a lookup. */
  private readonly maxTokenLength: number;

  constructor(private readonly vocab: SpmVocab) {
    let max = 0;
    for (const text of vocab.textToId.keys()) max = Math.max(max, text.length);
    this.maxTokenLength = max;
  }

  /**
   * Start from single characters, keep merging the adjacent pair that forms the best-scoring token (leftmost on
   * ties), then emit each symbol's id, or its UTF-8 bytes as byte tokens when the character has no token.
   *
   * Symbols are spans of `text` in a linked list; a merged span is always a token, so llama.cpp's rev_merge fallback
   * (re-splitting a symbol that is not a token) can never trigger and is left out.
   */
  tokenize(text: string, output: number[]): void {
    const { textToId, scores, byteToId } = this.vocab;
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
      const id = textToId.get(text.substr(start[left], size));
      if (id !== undefined) queue.push(scores[id], left, right, size);
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
      const id = textToId.get(symbol);
      if (id !== undefined) {
        output.push(id);
      } else {
        for (const byte of utf8Encoder.encode(symbol)) output.push(byteToId[byte]);
      }
    }
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
