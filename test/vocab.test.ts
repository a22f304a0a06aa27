/**
 * Tokenizer conformance against llama.cpp (de3ff815, node-llama-cpp 3.22.1) on its own test-tokenizer-0 kit
 * (../shared/conformance/vocab, see its README): 13 vocab-only GGUFs, their test strings and expected ids.
 *
 * Besides the kit's .out files, llama.cpp's outputs on a seeded corpus of 3000 generated strings per vocabulary (and
 * on dev.txt) are pinned as digests: ids with and without parse_special, and their detokenization with and without
 * special tokens. They were made by running node-llama-cpp 3.22.1 (`model.tokenize(text, special)` and
 * `model.detokenize(ids, special)`, vocabOnly) over `fuzzStrings()` below; to regenerate, do the same and hash
 * exactly as `digest()` does.
 *
 * Exceptions to "every .inp string tokenizes to its .out ids": none. Round trips: llama.cpp's detokenize cleans
 * spaces (" ?" → "?", " 's" → "'s", ...) for the vocabularies whose pre-tokenizer sets clean_spaces (llama-bpe,
 * gpt-2, starcoder, gemma-4, falcon, mpt, refact), so two kit strings do not round-trip there, in llama.cpp as here;
 * without cleaning, every kit string round-trips in every vocabulary.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { brotliDecompressSync } from 'node:zlib';
import { beforeAll, describe, expect, it } from 'vitest';
import { EdgeLLMError } from '../src/errors.js';
import { memorySource, readGGUF, type GGUFFile } from '../src/gguf/index.js';
import { TokenAttr, Tokenizer, cleanUpSpaces, type VocabData } from '../src/tokenizer/index.js';
import { PreTokenizerSplitter } from '../src/tokenizer/pretokenize.js';
import { CONFORMANCE_VOCAB, SHARED, announceSkipIfMissing } from './util/shared.js';
import { expectCode } from './util/expect.js';

const HAVE_KIT = announceSkipIfMissing('vocab.test.ts (llama.cpp tokenizer conformance)', CONFORMANCE_VOCAB);
const DEV_TXT = path.join(SHARED, 'eval/dev.txt');
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

interface Expected {
  model: string;
  bos: number;
  eos: number;
  addBos: boolean;
  /** llama.cpp's EOG ids (llama_vocab_is_eog over the whole vocabulary). */
  eog: number[];
  /** .inp strings whose llama.cpp round trip fails: clean_spaces. */
  roundTripFails: number;
  /** Digests of llama.cpp's outputs on fuzzStrings() and dev.txt (see the file header). */
  fuzz: string;
  dev: string;
  devTokens: number;
}

// All from llama.cpp via node-llama-cpp 3.22.1.
const VOCABS: Record<string, Expected> = {
  'llama-spm': { model: 'llama', bos: 1, eos: 2, addBos: true, eog: [2], roundTripFails: 0, fuzz: '75bea03d6fddf094', dev: '81bb854bfd23d70b', devTokens: 22327 },
  'phi-3': { model: 'llama', bos: 1, eos: 32000, addBos: true, eog: [2, 32000, 32007], roundTripFails: 0, fuzz: '7c7579dfbb9928f2', dev: '81bb854bfd23d70b', devTokens: 22327 },
  'llama-bpe': { model: 'gpt2', bos: 128000, eos: 128001, addBos: true, eog: [128001, 128009], roundTripFails: 2, fuzz: 'b704bb0fd2f5bb43', dev: '459e9ed7719d1698', devTokens: 19846 },
  // 128247 is a normal token spelled "</s>": llama.cpp makes every "</s>" an EOG control token.
  qwen2: { model: 'gpt2', bos: 151643, eos: 151643, addBos: false, eog: [128247, 151643, 151645], roundTripFails: 0, fuzz: '8753c3744740c1c4', dev: 'f18cebcba1e705a7', devTokens: 20040 },
  qwen35: { model: 'gpt2', bos: 151643, eos: 151643, addBos: false, eog: [128247, 151643, 151645], roundTripFails: 0, fuzz: '9703d9cfe92921f5', dev: 'f18cebcba1e705a7', devTokens: 20040 },
  'gpt-2': { model: 'gpt2', bos: 50256, eos: 50256, addBos: false, eog: [50256], roundTripFails: 2, fuzz: '0c302b45146df235', dev: '2b91842fc0659fcf', devTokens: 19717 },
  'deepseek-llm': { model: 'gpt2', bos: 100000, eos: 100001, addBos: true, eog: [100001], roundTripFails: 0, fuzz: '4f9bc64bc2cf74d0', dev: 'ade17f745440e63b', devTokens: 20155 },
  'deepseek-coder': { model: 'gpt2', bos: 32013, eos: 32014, addBos: true, eog: [32014], roundTripFails: 0, fuzz: 'cc212c1f2cbf13a4', dev: 'f8590737005931a1', devTokens: 21496 },
  // 4 is <fim_pad>, 18 <reponame>: FIM pad/repo tokens end generation in llama.cpp.
  starcoder: { model: 'gpt2', bos: 0, eos: 0, addBos: false, eog: [0, 4], roundTripFails: 2, fuzz: 'b14ec5e22513693e', dev: '351338d4b944fbbf', devTokens: 23779 },
  // <eos>, <|tool_response>, <turn|>; its </s> is no EOG (llama.cpp's Gemma 4 workaround).
  'gemma-4': { model: 'gemma4', bos: 2, eos: 1, addBos: true, eog: [1, 50, 106], roundTripFails: 2, fuzz: 'bba92071d24070e8', dev: '6367d48889b1298c', devTokens: 19982 },
  falcon: { model: 'gpt2', bos: 11, eos: 11, addBos: false, eog: [11], roundTripFails: 2, fuzz: 'b718ec504ac48d82', dev: 'd1f71c023b347194', devTokens: 20070 },
  mpt: { model: 'gpt2', bos: 0, eos: 0, addBos: false, eog: [0], roundTripFails: 2, fuzz: '93d0e3ba4cd8a41a', dev: '9a07b307714d16b0', devTokens: 19955 },
  refact: { model: 'gpt2', bos: 0, eos: 0, addBos: false, eog: [0, 4, 18], roundTripFails: 2, fuzz: '5b67473a6f0c1e80', dev: 'f1c394c4428b1e6b', devTokens: 23773 },
};

/** The kit's .inp strings and .out ids, read exactly as test-tokenizer-0.cpp reads them. */
function readKit(name: string): { texts: string[]; ids: number[][] } {
  const base = path.join(CONFORMANCE_VOCAB, `ggml-vocab-${name}.gguf`);
  const texts = readFileSync(`${base}.inp`, 'utf8').split('\n__ggml_vocab_test__\n');
  if (texts[texts.length - 1] === '') texts.pop();
  const lines = readFileSync(`${base}.out`, 'utf8').split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  const ids = lines.map((line) => (line.trim() === '' ? [] : line.trim().split(' ').map(Number)));
  expect(ids.length).toBe(texts.length);
  return { texts, ids };
}

async function readVocab(name: string): Promise<GGUFFile> {
  const bytes = brotliDecompressSync(readFileSync(path.join(CONFORMANCE_VOCAB, `ggml-vocab-${name}.gguf.br`)));
  return readGGUF(memorySource(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length)));
}

/** The seeded corpus the digests were made from: pieces that stress pre-tokenizers, special tokens and bytes. */
function fuzzStrings(count: number, seed: number): string[] {
  let s = seed >>> 0;
  const rnd = (n: number) => {
    s = (Math.imul(s ^ (s >>> 15), 2246822507) + 0x9e3779b9) >>> 0;
    s ^= s >>> 13;
    return s % n;
  };
  const palette = [
    'a', 'b', 'Hello', 'world', 'THE', 'x', 'I', 'don', "'s", "'S", "'ll", "'LL", "'re", "'ve", "'m", "'d", "'t", "'",
    '0', '1', '12', '123', '1234', '3.14', '1,000', ' ', ' ', '  ', '   ', '    ', '\t', '\n', '\n', '\n\n', '\r\n', '\r',
    ' \n', '\n ', '.', ',', '!', '?', ':', ';', '-', '--', '(', ')', '[', ']', '{', '}', '"', '`', '$', '+', '<', '=', '>',
    '^', '~', '|', '_', '@', '#', '%', '&', '*', '/', '\\', 'é', 'É', 'ß', 'ñ', 'Ж', 'жизнь', '中', '中文', '日本語', 'ひらがな',
    'カタカナ', '한국어', 'ქართული', 'ﬁ', 'Ⅻ', '½', '²', '١٢٣', '٣', 'مرحبا', 'हिन्दी', 'ि', '\u0301', 'e\u0301', 'ด้', '🙂', '👍🏽',
    '👨‍👩‍👧', '🦙', '\u00a0', '\u3000', '\u0085', '\ufeff', '\u2028', '\u200b', '\u2009', '\u1680', '\u000b', '\u000c',
    '\u001c', '\u007f', '\u0000', '\ue000', '\u{10ffff}', '\u{1d400}', '\u{20000}', 'µ', 'ǅ', 'Ⓐ', '™', '€', '£', '…', '—',
    '“', '”', '‘', '’', '！', '，', '。', '、', '〜', '：',
    '<s>', '</s>', '<unk>', '<|endoftext|>', '<|im_start|>', '<|im_end|>', '<|end|>', '<|user|>', '<|assistant|>',
    '<|eot_id|>', '<|begin_of_text|>', '<|start_header_id|>', '<bos>', '<eos>', '<|turn>', '<turn|>', '<|tool_response>',
    '<|"|>', '<|channel>', '<｜begin▁of▁sentence｜>', '<0x0A>', '▁', '▁▁', 'Ġ', 'Ċ', '<', '|', 'im', '_start', '<|',
  ];
  const out: string[] = [];
  for (let i = 0; i < count; i++) {
    const n = 1 + rnd(12);
    let t = '';
    for (let j = 0; j < n; j++) t += palette[rnd(palette.length)];
    out.push(t);
  }
  return out;
}

/** What the digests hash, per text: ids without and with special parsing, and both detokenized. */
function digest(t: Tokenizer, texts: string[]): string {
  const h = createHash('sha256');
  for (const text of texts) {
    const plain = t.encode(text, { bos: false, eos: false });
    const special = t.encode(text, { bos: false, eos: false, special: true });
    h.update(JSON.stringify([plain, special, t.decode(plain), t.decode(special, { special: true })]) + (texts.length > 1 ? '\n' : ''));
  }
  return h.digest('hex').slice(0, 16);
}

describe.skipIf(!HAVE_KIT)('llama.cpp tokenizer conformance', () => {
  const fuzz = fuzzStrings(3000, 7);
  const dev = existsSync(DEV_TXT) ? readFileSync(DEV_TXT, 'utf8') : undefined;

  for (const [name, want] of Object.entries(VOCABS)) {
    describe(name, () => {
      let t: Tokenizer;
      const warnings: string[] = [];
      beforeAll(async () => {
        const started = performance.now();
        t = Tokenizer.fromGGUF(await readVocab(name), { warn: (m) => warnings.push(m) });
        // Even the 15.8 MB Gemma 4 vocabulary (262k tokens, 515k merges) loads in well under a second here.
        expect(performance.now() - started).toBeLessThan(5000);
      });

      it('reads the vocabulary as llama.cpp does', () => {
        expect([t.model, t.bos, t.eos, t.addBos, t.addEos]).toEqual([want.model, want.bos, want.eos, want.addBos, false]);
        expect(t.eogIds).toEqual(want.eog);
        expect(Array.from({ length: t.vocabSize }, (_, id) => id).filter((id) => t.isEog(id))).toEqual(want.eog);
        expect(warnings).toEqual([]);
      });

      it('tokenizes every .inp string to its .out ids', () => {
        const { texts, ids } = readKit(name);
        let passed = 0;
        for (let i = 0; i < texts.length; i++) {
          const got = t.encode(texts[i], { bos: false, eos: false });
          expect(got, `string ${i}: ${JSON.stringify(texts[i])}`).toEqual(ids[i]);
          passed++;
        }
        expect(passed).toBe(texts.length);
      });

      it('round-trips every .inp string where llama.cpp does', () => {
        const { texts } = readKit(name);
        let llamaFails = 0;
        for (const text of texts) {
          const ids = t.encode(text);
          // Uncleaned, every string comes back (BOS and the SPM prefix space included).
          expect(t.decode(ids, { cleanSpaces: false })).toBe(text);
          // As llama_detokenize: clean_spaces where the vocabulary sets it.
          const expected = t.cleanSpaces ? cleanUpSpaces(text) : text;
          expect(t.decode(ids)).toBe(expected);
          if (expected !== text) llamaFails++;
        }
        expect(llamaFails).toBe(want.roundTripFails);
      });

      it("matches llama.cpp on 3000 generated strings (ids with and without special, detokenized) and dev.txt", () => {
        expect(digest(t, fuzz)).toBe(want.fuzz);
        if (dev === undefined) return;
        expect(t.encode(dev, { bos: false }).length).toBe(want.devTokens);
        expect(digest(t, [dev])).toBe(want.dev);
      });

      it('never turns control-token text into control tokens without `special`', () => {
        for (let id = 0; id < t.vocabSize; id++) {
          // Only tokens the file itself types as control: llama.cpp also makes a normal token spelled "</s>" a control
          // token (qwen2's 128247), and byte-level BPE can merge plain text up to it, as llama.cpp does.
          if (!(t.attributes(id) & TokenAttr.Control) || t.attributes(id) & TokenAttr.Normal) continue;
          const text = t.tokenText(id);
          expect(t.encode(text, { bos: false }), text).not.toContain(id);
          expect(t.encode(`x ${text} y`, { bos: false, special: true }), text).toContain(id);
        }
      });
    });
  }

  describe('special and added tokens', () => {
    const load = async (name: string) => Tokenizer.fromGGUF(await readVocab(name));

    it('qwen2: chat markup becomes its control tokens only with `special`', async () => {
      const t = await load('qwen2');
      const text = '<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n';
      expect(t.encode(text, { special: true })).toEqual([151644, 872, 198, 9707, 151645, 198, 151644, 77091, 198]);
      expect(t.encode(text)).toEqual([27, 91, 318, 4906, 91, 29, 872, 198, 9707, 27, 91, 318, 6213, 91, 397, 27, 91, 318, 4906, 91, 29, 77091, 198]);
      // User-defined tokens are cut out either way; "</s>" is a control token only with `special`.
      expect(t.encode('[PAD151646]x</s>', { special: true })).toEqual([151646, 87, 128247]);
      expect(t.encode('[PAD151646]x</s>')).toEqual([151646, 87, 522, 82, 29]);
      expect(t.tokenText(151645)).toBe('<|im_end|>');
      expect(t.decode([151644, 872, 151645])).toBe('user');
      expect(t.decode([151644, 872, 151645], { special: true })).toBe('<|im_start|>user<|im_end|>');
    });

    it('llama-bpe: Llama 3 headers and <|eot_id|>', async () => {
      const t = await load('llama-bpe');
      const text = '<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>';
      expect(t.encode(text, { bos: false, special: true })).toEqual([128000, 128006, 882, 128007, 271, 9906, 128009]);
      const plain = t.encode(text, { bos: false });
      for (const id of [128000, 128006, 128007, 128009]) expect(plain).not.toContain(id);
      // llama.cpp adds BOS for Llama 3 (add_bos is set by its pre-tokenizer).
      expect(t.encode('Hello')).toEqual([128000, 9906]);
    });

    it('gemma-4: turn markup, and user-defined tool-call tokens cut out even without `special`', async () => {
      const t = await load('gemma-4');
      expect(t.encode('<bos><|turn>user\nHello<turn|>\n<|turn>model\n', { bos: false, special: true })).toEqual([2, 105, 2364, 107, 9259, 106, 107, 105, 4368, 107]);
      expect(t.encode('<bos><|turn>user\nHello<turn|>\n<|turn>model\n', { bos: false })).toEqual([
        236820, 46757, 1798, 236909, 887, 236813, 2364, 107, 9259, 236820, 887, 111038, 107, 236820, 236909, 887, 236813, 4368, 107,
      ]);
      const ids = [236746, 236743, 48, 6639, 236787, 236760, 16454, 49, 518];
      expect(t.encode('a <|tool_call>call:f{}<tool_call|> b', { bos: false })).toEqual(ids);
      expect(t.encode('a <|tool_call>call:f{}<tool_call|> b', { bos: false, special: true })).toEqual(ids);
    });

    it('phi-3: special tokens strip the whitespace after them (llama.cpp rstrip by model name)', async () => {
      const t = await load('phi-3');
      expect(t.encode('<|user|>\n  Hello<|end|>\n<|assistant|>', { bos: false, special: true })).toEqual([32010, 15043, 32007, 32001]);
      expect(t.attributes(32007) & TokenAttr.RStrip).toBeTruthy();
      expect(t.attributes(32000) & TokenAttr.RStrip).toBeFalsy();
    });
  });

  describe('streaming decode through byte-level vocabularies', () => {
    const text = 'Emoji 😁👍🏽👨‍👩‍👧 and CJK 我想在apple工作 日本語のテキスト 한국어, mixed: naïve café 🦙!';
    for (const name of ['llama-bpe', 'qwen2', 'gpt-2', 'gemma-4']) {
      it(`${name}: one id at a time, never a broken character`, async () => {
        const t = Tokenizer.fromGGUF(await readVocab(name));
        const ids = t.encode(text, { bos: false });
        const stream = t.decoder();
        const chunks = ids.map((id) => stream.push(id));
        for (const chunk of chunks) {
          expect(chunk).not.toContain('\ufffd');
          expect(LONE_SURROGATE.test(chunk)).toBe(false);
        }
        expect(chunks.join('') + stream.flush()).toBe(text);
        // Some characters span several tokens, so some pushes had to hold their bytes back.
        expect(chunks.filter((c) => c === '').length).toBeGreaterThan(0);
      });
    }
  });
});

describe('byte-level BPE on a hand-made vocabulary', () => {
  // Byte-level texts: 'Ġ' is the space.
  const tokens = ['a', 'b', 'c', 'Ġ', 'ab', 'bc', 'abc', 'Ġa', '<|end|>'];
  const vocab = (extra: Partial<VocabData> = {}): VocabData => ({
    model: 'gpt2',
    pre: 'gpt-2',
    tokens,
    types: Int32Array.from(tokens.map((t) => (t === '<|end|>' ? 3 : 1))),
    merges: ['b c', 'a b', 'a bc', 'Ġ a'],
    bos: null,
    eos: 8,
    ...extra,
  });

  it('merges the lowest rank first, and caches pieces without changing them', () => {
    const t = new Tokenizer(vocab());
    // "b c" outranks "a b": a + bc, then "a bc" (rank 2) → abc, before "Ġ a" (rank 3) could take the a.
    expect(t.encode('abc')).toEqual([6]);
    expect(t.encode('abc abc')).toEqual([6, 3, 6]);
    expect(t.encode('abc abc')).toEqual([6, 3, 6]);
    expect(t.encode(' ab a')).toEqual([3, 4, 7]);
    expect(t.decode([6, 3, 6])).toBe('abc abc');
    expect(t.encode('<|end|>', { special: true })).toEqual([8]);
    expect(t.isEog(8)).toBe(true);
    expect(t.bos).toBe(-1);
    expectCode(() => t.encode('a', { bos: true }), 'BAD_ARGUMENT', 'BOS');
  });

  it('refuses unknown models and pre-tokenizers, and malformed merges, naming them', () => {
    expectCode(() => new Tokenizer(vocab({ model: 'bert' })), 'UNSUPPORTED_TOKENIZER', '"bert"', '"llama"', '"gpt2"', '"gemma4"');
    expectCode(() => new Tokenizer(vocab({ pre: 'my-new-pre' })), 'UNSUPPORTED_TOKENIZER', '"my-new-pre"', 'llama-bpe');
    expectCode(() => new Tokenizer(vocab({ pre: 'kimi-k2' })), 'UNSUPPORTED_TOKENIZER', '"kimi-k2"');
    expectCode(() => new Tokenizer(vocab({ merges: ['b c', 'abc', 'a b'] })), 'BAD_METADATA', 'tokenizer.ggml.merges[1]', '"abc"');
    expectCode(() => new Tokenizer(vocab({ merges: ['b c', 'a '] })), 'BAD_METADATA', 'tokenizer.ggml.merges[1]');
    expectCode(() => new Tokenizer(vocab({ merges: undefined })), 'BAD_METADATA', 'tokenizer.ggml.merges');
    expectCode(() => new Tokenizer(vocab({ eos: 9 })), 'BAD_METADATA', 'tokenizer.ggml.eos_token_id');
    expectCode(() => new Tokenizer(vocab({ types: new Int32Array(3) })), 'BAD_METADATA', 'tokenizer.ggml.token_type');
  });

  it('loads a vocabulary without tokenizer.ggml.pre with the default rules and a warning, as llama.cpp', () => {
    const warnings: string[] = [];
    const t = new Tokenizer(vocab({ pre: undefined }), { warn: (m) => warnings.push(m) });
    expect(t.pre).toBe('default');
    expect(warnings.join()).toContain('tokenizer.ggml.pre is missing');
    expect(t.encode('abc')).toEqual([6]);
  });

  it.skipIf(!HAVE_KIT)('refuses bad metadata in a real file', async () => {
    const g = await readVocab('gpt-2');
    const edited = (changes: Record<string, unknown>): GGUFFile => {
      const copy = Object.create(Object.getPrototypeOf(g)) as GGUFFile;
      Object.assign(copy, g, { metadata: new Map([...g.metadata, ...Object.entries(changes)]) });
      return copy;
    };
    Tokenizer.fromGGUF(edited({}));
    expectCode(() => Tokenizer.fromGGUF(edited({ 'tokenizer.ggml.model': 't5' })), 'UNSUPPORTED_TOKENIZER', '"t5"');
    expectCode(() => Tokenizer.fromGGUF(edited({ 'tokenizer.ggml.pre': 'gpt-5' })), 'UNSUPPORTED_TOKENIZER', '"gpt-5"');
    const merges = [...g.stringArray('tokenizer.ggml.merges')];
    merges[1234] = 'Ġthe';
    expectCode(() => Tokenizer.fromGGUF(edited({ 'tokenizer.ggml.merges': merges })), 'BAD_METADATA', 'tokenizer.ggml.merges[1234]', '"Ġthe"');
  });
});

describe('pre-tokenizer routes', () => {
  const split = (regexes: string, text: string) => new PreTokenizerSplitter(regexes).split(text);

  it('llama3: contractions, letters with one leading non-letter, digits in threes, whitespace before text', () => {
    expect(split('llama3', "He's  12345 ok!!\n\n  x")).toEqual(['He', "'s", ' ', ' ', '123', '45', ' ok', '!!\n\n', ' ', ' x']);
  });

  it('gpt2: llama.cpp whitespace (U+0085 yes, U+FEFF no)', () => {
    expect(split('gpt2', 'a\u0085b')).toEqual(['a', '\u0085', 'b']);
    expect(split('gpt2', 'a\ufeffb')).toEqual(['a', '\ufeff', 'b']);
    expect(split('gpt2', 'a  \ufeffb')).toEqual(['a', ' ', ' \ufeff', 'b']);
  });

  it('collapsed regexes: \\p{N} splits digits of any script one by one (starcoder)', () => {
    expect(split('starcoder', 'x١٢3 y')).toEqual(['x', '١', '٢', '3', ' y']);
  });

  it('the pieces always concatenate to the text', () => {
    const text = fuzzStrings(200, 3).join('');
    for (const set of ['default', 'llama3', 'qwen2', 'qwen35', 'gpt2', 'starcoder', 'falcon', 'deepseek-llm', 'deepseek-coder', 'deepseek3', 'gpt4o', 'tekken', 'poro', 'chameleon', 'superbpe', 'gemma4', 'exaone-moe', 'youtu']) {
      expect(split(set, text).join(''), set).toBe(text);
    }
  });
});
