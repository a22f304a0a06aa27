// The built CLI (dist/cli.js), spawned as a user would run it: stdout, stderr and exit codes.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { brotliDecompressSync } from 'node:zlib';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { loadModel } from '../src/index.js';
import { announceSkipIfNoModels, modelPath, MODELS, ROOT, SHARED } from './util/shared.js';
import { checkDist } from './util/dist.js';

const CLI = path.join(ROOT, 'dist/cli.js');
const have = announceSkipIfNoModels('CLI tests on real models (test/cli.test.ts)');

beforeAll(checkDist);

function cli(...args: string[]) {
  return cliWithInput(undefined, ...args);
}

function cliWithInput(input: string | undefined, ...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd: ROOT, encoding: 'utf8', input, env: { ...process.env, EDGELLM_DEBUG: '' } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** One `edgellm: error [CODE]: …` line and nothing that looks like a stack trace. */
function expectOneLineError(stderr: string, code: string) {
  const lines = stderr.trimEnd().split('\n');
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(new RegExp(`^edgellm: error \\[${code}\\]: `));
  expect(stderr).not.toMatch(/^\s+at /m);
}

describe('edgellm CLI: usage and errors', () => {
  it('--help, per-command help and --version', () => {
    const help = cli('--help');
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/edgellm run MODEL -p PROMPT/);
    expect(help.stdout).toMatch(/edgellm perplexity MODEL TEXTFILE/);
    const run = cli('run', '--help');
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/--temperature/);
    const version = cli('--version');
    expect(version.code).toBe(0);
    expect(version.stdout.trim()).toBe(JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version);
  });

  it('missing model file: exit 1, BAD_SOURCE, no stack', () => {
    const r = cli('run', path.join(tmpdir(), 'edgellm-no-such-model.gguf'), '-p', 'hi');
    expect(r.code).toBe(1);
    expectOneLineError(r.stderr, 'BAD_SOURCE');
    expect(r.stdout).toBe('');
  });

  it('garbage file: exit 1, BAD_MAGIC (run and info)', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'edgellm-cli-'));
    try {
      const file = path.join(dir, 'garbage.gguf');
      const bytes = new Uint8Array(4096).map(() => Math.floor(Math.random() * 256));
      bytes[0] = 0; // never "GGUF" by chance
      writeFileSync(file, bytes);
      for (const args of [['run', file, '-p', 'hi'], ['info', file]]) {
        const r = cli(...args);
        expect(r.code).toBe(1);
        expectOneLineError(r.stderr, 'BAD_MAGIC');
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('usage errors exit 2 and name the flag', () => {
    const unknown = cli('run', 'model.gguf', '-p', 'hi', '--frobnicate');
    expect(unknown.code).toBe(2);
    expectOneLineError(unknown.stderr, 'USAGE');
    expect(unknown.stderr).toMatch(/--frobnicate/);

    const noPrompt = cli('run', 'model.gguf');
    expect(noPrompt.code).toBe(2);
    expect(noPrompt.stderr).toMatch(/-p/);

    const notNumber = cli('run', 'model.gguf', '-p', 'hi', '--top-k', 'many');
    expect(notNumber.code).toBe(2);
    expect(notNumber.stderr).toMatch(/--top-k.*"many"/);

    const noValue = cli('perplexity', 'model.gguf', 'text.txt', '--ctx');
    expect(noValue.code).toBe(2);
    expect(noValue.stderr).toMatch(/--ctx needs a value/);

    expect(cli('frobnicate').code).toBe(2);
    expect(cli().code).toBe(2);
  });
});

describe.skipIf(!have)('edgellm CLI on real models', () => {
  it('run tiny-260k-q8_0: stdout is exactly the greedy text, speed on stderr', async () => {
    const r = cli('run', modelPath('tiny-260k-q8_0.gguf'), '-p', 'Once upon a time', '-n', '20');
    expect(r.code).toBe(0);
    expect(r.stdout.endsWith('\n')).toBe(true);
    const text = r.stdout.slice(0, -1);

    // the same as the API in-process…
    const model = await loadModel(modelPath('tiny-260k-q8_0.gguf'));
    expect(text).toBe(await model.complete('Once upon a time', { maxTokens: 20 }));
    // …and the start of llama.cpp's greedy text (the API keeps the first piece's leading space; llama.cpp drops it)
    const ref = JSON.parse(readFileSync(path.join(MODELS, 'tiny-260k-llamacpp.json'), 'utf8'))['tiny-260k-q8_0'];
    expect(text.trimStart().length).toBeGreaterThan(40);
    expect(ref.greedy_text.startsWith(text.trimStart())).toBe(true);

    expect(r.stderr).toMatch(/loaded .* in \d+ ms/);
    expect(r.stderr).toMatch(/prefill [\d.]+ tok\/s, decode [\d.]+ tok\/s \(20 tokens\)/);
  });

  it('--memory-budget on run and perplexity: bad budgets are BAD_ARGUMENT, one too small is BUDGET saying what would fit', () => {
    const model = modelPath('tiny-260k-q8_0.gguf'), text = path.join(SHARED, 'eval/dev.txt');
    for (const bad of ['0', '-1GB', 'lots']) {
      const r = cli('run', model, '-p', 'hi', '-n', '2', '--memory-budget', bad);
      expect(r.code).toBe(1);
      expectOneLineError(r.stderr, 'BAD_ARGUMENT');
      expect(r.stderr).toContain(JSON.stringify(bad));
    }
    const small = cli('perplexity', model, text, '--ctx', '64', '--windows', '1', '--memory-budget', '1KB');
    expect(small.code).toBe(1);
    expectOneLineError(small.stderr, 'BUDGET');
    expect(cli('perplexity', model, text, '--ctx', '64', '--windows', '1', '--memory-budget', '64MB').code).toBe(0);
  });

  it('run -v --memory-budget: the plan as a table, weights streamed from disk under the budget, the same text', () => {
    const args = ['run', modelPath('sotu-15m-q8_0.gguf'), '-p', 'The state of the Union is', '-n', '8', '--ctx', '128'];
    const free = cli(...args);
    const tight = cli(...args, '-v', '--memory-budget', '22MB');
    expect([free.code, tight.code]).toEqual([0, 0]);
    expect(tight.stdout).toBe(free.stdout);
    expect(tight.stderr).toMatch(/memory plan:\n/);
    expect(tight.stderr).toMatch(/wasm +weights \(\d+ resident, \d+ cold layers/);
    expect(tight.stderr).toMatch(/disk +weights, cold/);
    expect(tight.stderr).toMatch(/in memory \(wasm \+ host\): [\d.]+ MiB of the budget 22\.0 MiB/);
    expect(free.stderr).not.toMatch(/memory plan/);

    // split over kernel instances (a memory each): the same text, and -v says how
    const split = cli(...args, '-v', '--memory-per-instance', '18MB');
    expect(split.code, split.stderr).toBe(0);
    expect(split.stdout).toBe(free.stdout);
    expect(split.stderr).toMatch(/wasm in [2-6] kernel instances: #0 layers 0-\d /);
    const off = cli(...args, '--weights', 'cold', '--stage-ahead', 'off');
    expect(off.stdout).toBe(free.stdout);
    // the token embeddings (9.4 MiB in Q8_0) and a batch's logits sit in instance 0 whole
    expect(cli(...args, '--memory-per-instance', '8MB').stderr).toMatch(/one wasm memory of 8\.0 MiB \(memoryPerInstance\) cannot hold a kernel instance's least: instance 0 holds the token embeddings, output and norms \([\d.]+ MiB\) and the run state \(logits of a batch of 32: [\d.]+ MiB\), and an instance at least one layer \(the largest [\d.]+ [KM]iB\); raise memoryPerInstance/);
    expect(cli(...args, '--stage-ahead', 'maybe')).toMatchObject({ code: 2, stderr: expect.stringContaining('--stage-ahead is on or off') });
  });

  it('perplexity --json on sotu-15m-q8_0: last line is the JSON, identical to the API', async () => {
    const text = path.join(SHARED, 'eval/dev.txt');
    const r = cli('perplexity', modelPath('sotu-15m-q8_0.gguf'), text, '--ctx', '256', '--windows', '2', '--json');
    expect(r.code).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    const json = JSON.parse(lines[lines.length - 1]);
    expect(json.tokens_scored).toBe(510);
    expect(json.windows).toHaveLength(2);
    expect(json.windows[1]).toMatchObject({ first_token: 255 });
    expect(r.stderr).toMatch(/window 2\/2/);

    const model = await loadModel(modelPath('sotu-15m-q8_0.gguf'), { contextLength: 256 });
    const api = await model.perplexity(readFileSync(text, 'utf8'), { window: 256, windows: 2 });
    expect(json.ppl).toBe(api.ppl);
    expect(json.windows.map((w: { nll: number }) => w.nll)).toEqual(api.windows.map((w) => w.nll));
    console.log(`CLI perplexity, sotu-15m-q8_0, 2 × 256: ${json.ppl}`);
  });

  it('info on sotu-15m-q4_0: text and --json', () => {
    const r = cli('info', modelPath('sotu-15m-q4_0.gguf'));
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/architecture\s+llama/);
    expect(r.stdout).toMatch(/layers\s+6\b/);
    expect(r.stdout).toMatch(/\bQ4_0\b/);
    expect(r.stdout).toMatch(/\bQ8_0\b/);
    expect(r.stdout).toMatch(/tokenizer\.ggml\.tokens\s+\[string\]\s+\[32000 × string\]/);
    expect(r.stdout).toMatch(/token_embd\.weight\s+Q8_0\s+\[288, 32000\]/);

    const j = cli('info', modelPath('sotu-15m-q4_0.gguf'), '--json');
    expect(j.code).toBe(0);
    const info = JSON.parse(j.stdout);
    expect(info).toMatchObject({ architecture: 'llama', gguf_version: 3, tensor_count: 56 });
    expect(info.config).toMatchObject({ nLayers: 6, dim: 288, vocab: 32000 });
    expect(Object.keys(info.tensor_types).sort()).toEqual(['F32', 'Q4_0', 'Q8_0']);
    expect(info.metadata['llama.block_count']).toBe(6);
    expect(info.tensors).toHaveLength(56);
  });
});

describe.skipIf(!have)('edgellm tokenize, chat and run --chat', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'edgellm-cli-chat-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const QWEN2 = path.join(dir, 'qwen2-vocab.gguf');
  const TEMPLATE = path.join(dir, 'transcript.jinja');
  const SOTU = modelPath('sotu-15m-q8_0.gguf');
  const template = "{% for m in messages %}{{ m.role | capitalize }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}";
  beforeAll(() => {
    // A vocab-only GGUF (no tensors): tokenize reads nothing else.
    writeFileSync(QWEN2, brotliDecompressSync(readFileSync(path.join(SHARED, 'conformance/vocab/ggml-vocab-qwen2.gguf.br'))));
    writeFileSync(TEMPLATE, template);
  });

  it('tokenize: ids of a vocab-only file, --special, --json, --file, stdin', () => {
    const plain = cli('tokenize', QWEN2, 'Hello world');
    expect(plain.code).toBe(0);
    expect(plain.stdout).toBe('9707 1879\n');
    expect(plain.stderr).toMatch(/2 tokens \(gpt2\/qwen2 vocabulary of 151936\)/);

    // The text of a control token is plain text unless --special says otherwise.
    const special = cli('tokenize', QWEN2, '<|im_start|>user', '--special', '--json');
    expect(JSON.parse(special.stdout)).toEqual([151644, 872]);
    const literal = JSON.parse(cli('tokenize', QWEN2, '<|im_start|>user', '--json').stdout) as number[];
    expect(literal).not.toContain(151644);
    expect(literal.length).toBeGreaterThan(3);

    const file = path.join(dir, 'text.txt');
    writeFileSync(file, 'Hello world');
    expect(cli('tokenize', QWEN2, '--file', file).stdout).toBe('9707 1879\n');
    expect(cliWithInput('Hello world', 'tokenize', QWEN2).stdout).toBe('9707 1879\n');

    // SentencePiece with its BOS, and without.
    expect(cli('tokenize', SOTU, 'Hello world').stdout).toBe('1 15043 3186\n');
    expect(cli('tokenize', SOTU, 'Hello world', '--no-bos').stdout).toBe('15043 3186\n');
    expect(cli('tokenize', QWEN2, 'a', 'b').code).toBe(2);
  });

  it('chat driven through stdin: a turn per line, each reply as the API session gives it', async () => {
    const lines = ['What is the state of the Union?', 'And the finances?', 'Thank you.'];
    const r = cliWithInput(lines.join('\n') + '\n', 'chat', SOTU, '--template', TEMPLATE, '--system', 'Congress.', '-n', '12', '--ctx', '512');
    expect(r.code, r.stderr).toBe(0);

    const model = await loadModel(SOTU, { contextLength: 512 });
    const session = model.session({ system: 'Congress.', template });
    const replies: string[] = [];
    const prefilled: number[] = [];
    for (const line of lines) {
      let reply = '';
      for await (const chunk of session.send(line, { maxTokens: 12 })) reply += chunk;
      replies.push(reply);
      prefilled.push(session.stats!.prefilledTokens);
    }
    expect(r.stdout).toBe(replies.map((reply) => reply + '\n').join(''));
    // One speed line per turn, with the cached prefix from the second turn on.
    const speed = r.stderr.split('\n').filter((l) => l.startsWith('prefill '));
    expect(speed).toHaveLength(3);
    expect(speed[1]).toMatch(new RegExp(`\\d+ cached, ${prefilled[1]} prefilled`));
  });

  it('run --chat: one user turn through the template; no template is NO_TEMPLATE', async () => {
    const r = cli('run', SOTU, '--chat', '--template', TEMPLATE, '-p', 'What is the state of the Union?', '-n', '12');
    expect(r.code, r.stderr).toBe(0);
    const model = await loadModel(SOTU);
    const expected = await (async () => {
      let out = '';
      for await (const chunk of model.chat([{ role: 'user', content: 'What is the state of the Union?' }], { template, maxTokens: 12 })) out += chunk;
      return out;
    })();
    expect(r.stdout).toBe(expected + '\n');

    const none = cli('run', SOTU, '--chat', '-p', 'hi', '-n', '4');
    expect(none.code).toBe(1);
    expectOneLineError(none.stderr.split('\n').filter((l) => l.startsWith('edgellm:')).join('\n') + '\n', 'NO_TEMPLATE');
    expect(cli('run', SOTU, '-p', 'hi', '--system', 'x').code).toBe(2);
  });
});
