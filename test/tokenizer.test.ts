import { readFileSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { EdgeLLMError } from '../src/errors.js';
import type { GGUFFile } from '../src/gguf/reader.js';
import { readGGUF } from '../src/gguf/index.js';
import { openLocalSource } from '../src/gguf/file.js';
import { Tokenizer, LlamaTokenType, Utf8StreamDecoder, decodeUtf8, type VocabData } from '../src/tokenizer/index.js';
import { SHARED, announceSkipIfNoModels, modelPath } from './util/shared.js';
import { expectCode } from './util/expect.js';

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** Streams ids one at a time, checking that no chunk ends inside a character. */
function streamText(tokenizer: Tokenizer, ids: ArrayLike<number>): string {
  const stream = tokenizer.decoder();
  let text = '';
  for (let i = 0; i < ids.length; i++) {
    const chunk = stream.push(ids[i]);
    expect(LONE_SURROGATE.test(chunk)).toBe(false);
    text += chunk;
  }
  return text + stream.flush();
}

// A tiny vocabulary built by hand: [text, score, type].
function makeVocab(entries: [string, number, LlamaTokenType?][], extra: Partial<VocabData> = {}): VocabData {
  return {
    tokens: entries.map((e) => e[0]),
    scores: Float32Array.from(entries.map((e) => e[1])),
    types: Int32Array.from(entries.map((e) => e[2] ?? LlamaTokenType.Normal)),
    bos: 1,
    eos: 2,
    unk: 0,
    addBos: false,
    addEos: false,
    addSpacePrefix: false,
    ...extra,
  };
}

const SPECIALS: [string, number, LlamaTokenType][] = [
  ['<unk>', 0, LlamaTokenType.Unknown],
  ['<s>', 0, LlamaTokenType.Control],
  ['</s>', 0, LlamaTokenType.Control],
];
const BYTES: [string, number, LlamaTokenType][] = Array.from({ length: 256 }, (_, b) => [
  `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`,
  0,
  LlamaTokenType.Byte,
]);

describe('Utf8StreamDecoder', () => {
  it('holds back a partial character until it completes', () => {
    const d = new Utf8StreamDecoder();
    expect(d.push([0xe4, 0xb8])).toBe('');
    expect(d.pending).toBe(true);
    expect(d.push([0x96, 0x41])).toBe('世A');
    expect(d.pending).toBe(false);
  });

  it('emits U+FFFD only once a sequence is known to be invalid', () => {
    const d = new Utf8StreamDecoder();
    expect(d.push([0xf0, 0x9f])).toBe('');
    expect(d.push([0x41])).toBe('\ufffdA');
    expect(d.push([0xc0])).toBe('\ufffd'); // never valid: reported at once
    expect(d.push([0xe2])).toBe('');
    expect(d.flush()).toBe('\ufffd'); // cut off at the end
  });

  it('matches TextDecoder (non-fatal) on random bytes split anywhere', () => {
    let seed = 12345;
    const random = (n: number): number => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed % n;
    };
    const reference = new TextDecoder();
    for (let round = 0; round < 3000; round++) {
      // Mostly lead and continuation bytes, so that valid, truncated and invalid sequences all occur.
      const bytes = Uint8Array.from({ length: 1 + random(24) }, () =>
        [random(0x80), 0x80 + random(0x40), 0xc0 + random(0x40), [0xe0, 0xed, 0xf0, 0xf4][random(4)]][random(4)],
      );
      const d = new Utf8StreamDecoder();
      let text = '';
      for (let at = 0; at < bytes.length; ) {
        const to = Math.min(bytes.length, at + 1 + random(4));
        const chunk = d.push(bytes.subarray(at, to));
        expect(LONE_SURROGATE.test(chunk)).toBe(false);
        text += chunk;
        at = to;
      }
      text += d.flush();
      expect(text).toBe(reference.decode(bytes));
      expect(decodeUtf8(bytes)).toBe(text);
    }
  });
});

describe('Tokenizer on a hand-made vocabulary', () => {
  const letters: [string, number][] = [['▁', -1], ['a', -2], ['b', -3], ['c', -4], ['h', -5], ['i', -6]];

  it('merges the best-scoring pair first', () => {
    const t = new Tokenizer(makeVocab([...SPECIALS, ...letters, ['ab', -20], ['bc', -10]]));
    const id = (s: string) => t.encode(s, { bos: false })[0];
    expect(t.encode('abc')).toEqual([id('a'), id('bc')]);
  });

  it('merges the leftmost pair when scores tie', () => {
    const t = new Tokenizer(makeVocab([...SPECIALS, ...letters, ['aa', -10]]));
    expect(t.encode('aaa')).toEqual([9, 4]);
  });

  it('keeps merging merged symbols', () => {
    const t = new Tokenizer(makeVocab([...SPECIALS, ...letters, ['ab', -20], ['bc', -10], ['abc', -30]]));
    // bc first, then a+bc: "abc" is reachable only through "bc".
    expect(t.encode('abc')).toEqual([11]);
  });

  it('falls back to byte tokens, then to unk', () => {
    const withBytes = new Tokenizer(makeVocab([...SPECIALS, ...letters, ...BYTES]));
    expect(withBytes.encode('aé')).toEqual([4, 9 + 0xc3, 9 + 0xa9]);
    expect(withBytes.decode(withBytes.encode('aé🙂'))).toBe('aé🙂');
    const noBytes = new Tokenizer(makeVocab([...SPECIALS, ...letters]));
    expect(noBytes.encode('aé')).toEqual([4, 0, 0]);
  });

  it('never produces control, unknown or byte tokens from text', () => {
    const t = new Tokenizer(
      makeVocab([...SPECIALS, ...letters, ['<', -1], ['>', -1], ['s', -1], ['<s', -1], ['ab', 10, LlamaTokenType.Control]]),
    );
    // llama.cpp would merge "<s" + ">" into the control token <s>; SentencePiece never does, nor do we.
    expect(t.encode('<s>')).toEqual([12, 10]);
    expect(t.encode('ab')).toEqual([4, 5]);
  });

  it('prefixes a space, escapes spaces, and adds BOS/EOS as asked', () => {
    const t = new Tokenizer(makeVocab([...SPECIALS, ...letters, ['▁h', -1], ['▁hi', -1]], { addSpacePrefix: true, addBos: true }));
    expect(t.encode('hi')).toEqual([1, 10]);
    expect(t.encode('hi hi', { eos: true })).toEqual([1, 10, 10, 2]);
    expect(t.encode('hi', { bos: false })).toEqual([10]);
    expect(t.encode('')).toEqual([1]);
    expect(t.encode('', { bos: false })).toEqual([]);
    expect(t.decode([1, 10, 10, 2])).toBe('hi hi');
    expect(t.decode([10, 10], { stripLeadingSpace: false })).toBe(' hi hi');
  });

  it('cuts user-defined tokens out of the text first, like llama.cpp', () => {
    const t = new Tokenizer(
      makeVocab([...SPECIALS, ...letters, ['▁h', -1], ['▁hi', -1], ['hi', -1], ['<|u|>', 0, LlamaTokenType.UserDefined]], {
        addSpacePrefix: true,
      }),
    );
    // The text after a user-defined token gets the prefix space again.
    expect(t.encode('hi<|u|>hi')).toEqual([10, 12, 10]);
    expect(new TextDecoder().decode(t.piece(12))).toBe('<|u|>');
  });

  it('treats EOG-named tokens as end-of-generation control tokens', () => {
    const t = new Tokenizer(makeVocab([...SPECIALS, ...letters, ['<|im_end|>', 0]], { eog: [4] }));
    expect(t.isEog(2)).toBe(true);
    expect(t.isEog(9)).toBe(true);
    expect(t.isEog(4)).toBe(true);
    expect(t.isEog(1)).toBe(false);
    expect(t.piece(9)).toEqual(new Uint8Array(0));
  });

  it('rejects inconsistent vocabularies', () => {
    const good = makeVocab([...SPECIALS, ...letters]);
    expectCode(() => new Tokenizer({ ...good, scores: new Float32Array(3) }), 'BAD_METADATA', 'tokenizer.ggml.scores');
    expectCode(() => new Tokenizer({ ...good, types: new Int32Array(3) }), 'BAD_METADATA', 'tokenizer.ggml.token_type');
    expectCode(() => new Tokenizer({ ...good, bos: 99 }), 'BAD_METADATA', 'tokenizer.ggml.bos_token_id');
    expectCode(() => new Tokenizer({ ...good, unk: -1 }), 'BAD_METADATA', 'tokenizer.ggml.unknown_token_id');
    expectCode(() => new Tokenizer(makeVocab([...SPECIALS, ['a', 0], ['a', 0]])), 'BAD_METADATA', 'repeats');
    expectCode(() => new Tokenizer(makeVocab([...SPECIALS, ['<0xZZ>', 0, LlamaTokenType.Byte]])), 'BAD_METADATA', '<0xZZ>');
    expectCode(() => new Tokenizer(good).decode([100]), 'BAD_ARGUMENT');
  });
});

/** A stand-in for GGUFFile over plain values, for the metadata error paths. */
function fakeGGUF(kv: Record<string, unknown>): GGUFFile {
  const get = (key: string, fallback?: unknown) => {
    if (key in kv) return kv[key];
    if (fallback !== undefined) return fallback;
    throw new EdgeLLMError('BAD_METADATA', `${key} is missing`);
  };
  return {
    has: (key: string) => key in kv,
    string: get,
    int: get,
    bool: get,
    stringArray: get,
    floatArray: get,
    intArray: get,
  } as unknown as GGUFFile;
}

describe('Tokenizer.fromGGUF metadata checks', () => {
  const base = { 'tokenizer.ggml.model': 'llama', 'tokenizer.ggml.tokens': ['<unk>', '<s>', '</s>', '▁', 'a'] };

  it('applies llama.cpp defaults for optional keys', () => {
    const t = Tokenizer.fromGGUF(fakeGGUF(base));
    expect([t.vocabSize, t.bos, t.eos, t.addBos, t.addEos, t.addSpacePrefix]).toEqual([5, 1, 2, true, false, true]);
    expect(t.encode('a a')).toEqual([1, 3, 4, 3, 4]);
  });

  it('refuses other tokenizer models and bad metadata, naming the key', () => {
    // gpt2 and gemma4 vocabularies are supported now (test/vocab.test.ts); others are refused, listing what is.
    expectCode(() => Tokenizer.fromGGUF(fakeGGUF({ ...base, 'tokenizer.ggml.model': 'bert' })), 'UNSUPPORTED_TOKENIZER', '"llama"');
    expectCode(() => Tokenizer.fromGGUF(fakeGGUF({ 'tokenizer.ggml.tokens': base['tokenizer.ggml.tokens'] })), 'BAD_METADATA', 'tokenizer.ggml.model');
    expectCode(() => Tokenizer.fromGGUF(fakeGGUF({ 'tokenizer.ggml.model': 'llama' })), 'BAD_METADATA', 'tokenizer.ggml.tokens');
    expectCode(
      () => Tokenizer.fromGGUF(fakeGGUF({ ...base, 'tokenizer.ggml.scores': new Float32Array(4) })),
      'BAD_METADATA',
      'tokenizer.ggml.scores',
    );
    expectCode(() => Tokenizer.fromGGUF(fakeGGUF({ ...base, 'tokenizer.ggml.eos_token_id': 5 })), 'BAD_METADATA', 'tokenizer.ggml.eos_token_id');
    expectCode(() => Tokenizer.fromGGUF(fakeGGUF({ ...base, 'tokenizer.ggml.eot_token_id': 7 })), 'BAD_METADATA', 'tokenizer.ggml.eot_token_id');
  });
});

// ---------------------------------------------------------------------------------------------------------------
// The real vocabularies, against llama.cpp and PyTorch/SentencePiece references.

const HAVE_MODELS = announceSkipIfNoModels('tokenizer.test.ts (real vocabularies vs llama.cpp references)');

interface PromptRef {
  text: string;
  ids: number[];
  greedy_ids: number[];
  greedy_text: string;
}

function readJSON<T>(file: string): T {
  return JSON.parse(readFileSync(file, 'utf8')) as T;
}

async function loadTokenizer(model: string): Promise<Tokenizer> {
  const source = await openLocalSource(modelPath(model));
  try {
    return Tokenizer.fromGGUF(await readGGUF(source));
  } finally {
    await source.close();
  }
}

/** Each reference file with the GGUF whose vocabulary produced it. */
const REFERENCES: { file: string; model: string }[] = [
  { file: 'sotu-15m-pytorch-ref.json', model: 'sotu-15m-f16.gguf' },
  { file: 'sotu-15m-llamacpp-f16-dev.json', model: 'sotu-15m-f16.gguf' },
  { file: 'sotu-15m-llamacpp-q8_0-dev.json', model: 'sotu-15m-q8_0.gguf' },
  { file: 'sotu-15m-llamacpp-q4_0-dev.json', model: 'sotu-15m-q4_0.gguf' },
  { file: 'needle-15m-pytorch-ref.json', model: 'needle-15m-f16.gguf' },
];

describe.skipIf(!HAVE_MODELS)('Tokenizer on the real vocabularies', () => {
  const tokenizers = new Map<string, Tokenizer>();
  let sotu: Tokenizer;

  beforeAll(async () => {
    const models = new Set([...REFERENCES.map((r) => r.model), 'tiny-260k-f32.gguf', 'tiny-260k-q8_0.gguf']);
    for (const model of models) tokenizers.set(model, await loadTokenizer(model));
    sotu = tokenizers.get('sotu-15m-f16.gguf')!;
  });

  it('reads the vocabulary metadata', () => {
    expect([sotu.vocabSize, sotu.bos, sotu.eos, sotu.addBos, sotu.addEos]).toEqual([32000, 1, 2, true, false]);
    expect(tokenizers.get('tiny-260k-f32.gguf')!.vocabSize).toBe(512);
  });

  for (const { file, model } of REFERENCES) {
    describe(file, () => {
      const prompts = () => readJSON<{ prompts: PromptRef[] }>(modelPath(file)).prompts;

      it('encodes every prompt to the reference ids (BOS included)', () => {
        const t = tokenizers.get(model)!;
        for (const p of prompts()) expect(t.encode(p.text), p.text).toEqual(p.ids);
      });

      it('decodes the greedy ids to the greedy text, whole and streamed', () => {
        const t = tokenizers.get(model)!;
        for (const p of prompts()) {
          expect(t.decode(p.greedy_ids)).toBe(p.greedy_text);
          expect(streamText(t, p.greedy_ids)).toBe(p.greedy_text);
          expect(t.decode(p.ids)).toBe(p.text);
        }
      });
    });
  }

  it('tiny-260k: ids and greedy text of "Once upon a time"', () => {
    const refs = readJSON<Record<string, { prompt: string; ids: number[]; greedy_ids: number[]; greedy_text: string }>>(
      modelPath('tiny-260k-llamacpp.json'),
    );
    expect(Object.keys(refs).length).toBeGreaterThan(0);
    for (const [name, ref] of Object.entries(refs)) {
      const t = tokenizers.get(`${name}.gguf`)!;
      expect(t.encode(ref.prompt)).toEqual(ref.ids);
      expect(t.decode(ref.greedy_ids)).toBe(ref.greedy_text);
      expect(streamText(t, ref.greedy_ids)).toBe(ref.greedy_text);
    }
  });

  it('dev.txt without BOS is perplexity.text_tokens = 22327 tokens, fast', () => {
    const text = readFileSync(path.join(SHARED, 'eval/dev.txt'), 'utf8');
    const started = performance.now();
    const ids = sotu.encode(text, { bos: false });
    const ms = performance.now() - started;
    console.log(`tokenized dev.txt (${text.length} chars, ${ids.length} tokens) in ${ms.toFixed(1)} ms`);
    for (const { file } of REFERENCES.filter((r) => r.file.includes('llamacpp'))) {
      expect(ids.length).toBe(readJSON<{ perplexity: { text_tokens: number } }>(modelPath(file)).perplexity.text_tokens);
    }
    expect(ids.length).toBe(22327);
    expect(ids).not.toContain(sotu.bos);
    expect(ms).toBeLessThan(1000);
    expect(sotu.decode(ids)).toBe(text);
  });

  it('passkey-dev.json: every prompt has its recorded prompt_tokens (with BOS)', () => {
    const set = readJSON<{ model: string; items: { prompt: string; prompt_tokens: number }[] }>(
      path.join(SHARED, 'eval/passkey-dev.json'),
    );
    expect(set.items.length).toBe(60);
    const needle = tokenizers.get('needle-15m-f16.gguf')!;
    for (const item of set.items) expect(needle.encode(item.prompt).length).toBe(item.prompt_tokens);
  });

  it('round-trips multi-byte text through byte tokens, streaming whole characters only', () => {
    const text = 'héllo 世界 🙂';
    const ids = sotu.encode(text);
    // 🙂 has no token of its own in the Llama-2 vocabulary: four byte tokens <0xF0><0x9F><0x99><0x82>.
    expect(ids.slice(-4)).toEqual([0xf0, 0x9f, 0x99, 0x82].map((b) => b + 3));
    expect(sotu.decode(ids)).toBe(text);
    const stream = sotu.decoder();
    const chunks = ids.map((id) => stream.push(id));
    expect(chunks.slice(-4)).toEqual(['', '', '', '🙂']);
    expect(chunks.join('') + stream.flush()).toBe(text);
  });

  it('keeps "<s>" and friends as plain text', () => {
    for (const text of ['<s>', '</s>', '<unk>', 'a <s> b</s>', '<0x0A>']) {
      const ids = sotu.encode(text, { bos: false });
      for (const special of [0, 1, 2, 13]) expect(ids, text).not.toContain(special);
      expect(sotu.decode(ids)).toBe(text);
    }
    expect(sotu.encode('')).toEqual([1]);
    expect(sotu.encode('', { bos: false })).toEqual([]);
  });

  it('gives raw pieces and knows end of generation', () => {
    const piece = (id: number) => Array.from(sotu.piece(id));
    expect(piece(1)).toEqual([]);
    expect(piece(13)).toEqual([0x0a]);
    expect(new TextDecoder().decode(sotu.piece(278))).toBe(' the');
    expect(sotu.isEog(2)).toBe(true);
    expect(sotu.isEog(1)).toBe(false);
  });
});
