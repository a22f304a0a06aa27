// Tokenizer speed: tokens per second tokenizing dev.txt with the Llama-3 vocabulary (byte-level BPE, llama-bpe), in
// edgellm and in llama.cpp (node-llama-cpp's prebuilt native CPU build, `model.tokenize`), on the same machine.
//   node bench/tokenizer.mjs [--vocab NAME] [--text FILE] [--repeat N] [--no-anchor]
//
// Both tokenize the whole text in one call without BOS and without parsing special tokens (llama.cpp:
// common_tokenize(add_special=false, parse_special=false)), and the ids are checked equal before timing.
// edgellm is timed three ways, since it caches the ids of each pre-tokenized piece and llama.cpp caches nothing:
// - first: the very first call of a fresh process (JIT warm-up and an empty cache);
// - uncached: a fresh tokenizer (empty cache) after the code is warm: the cost of text it has not seen;
// - steady: the median of --repeat calls on the same tokenizer (pieces cached): text like what it has seen.
// llama.cpp is timed as the median of --repeat calls after one warm-up call.
//
// edgellm is bundled from src/ with esbuild for the run (no `npm run build` needed); llama.cpp is installed on demand
// into the bench cache (see anchors/cache.mjs). The vocab-only GGUFs of the conformance kit are brotli-compressed;
// the one used is decompressed to a temporary file for llama.cpp.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { brotliDecompressSync } from 'node:zlib';
import { ensurePackages } from './anchors/cache.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SHARED = process.env.EDGELLM_SHARED ?? path.resolve(ROOT, '../shared');
/** Pinned like anchors/llamacpp.mjs: node-llama-cpp and its linux-x64 CPU build, no GPU builds, no compile. */
const PACKAGES = { 'node-llama-cpp': '3.22.1', '@node-llama-cpp/linux-x64': '3.22.1' };
const INSTALL_ENV = { NODE_LLAMA_CPP_SKIP_DOWNLOAD: 'true', npm_config_omit: 'optional' };

function parseArgs(argv) {
  const o = { vocab: 'llama-bpe', text: path.join(SHARED, 'eval/dev.txt'), repeat: 20, anchor: true };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--vocab') o.vocab = argv[++i];
    else if (a === '--text') o.text = argv[++i];
    else if (a === '--repeat') o.repeat = Number(argv[++i]);
    else if (a === '--no-anchor') o.anchor = false;
    else {
      console.error(`usage: node bench/tokenizer.mjs [--vocab NAME] [--text FILE] [--repeat N] [--no-anchor] (unknown ${a})`);
      process.exit(2);
    }
  }
  if (!Number.isInteger(o.repeat) || o.repeat < 1) throw new Error('--repeat needs a positive integer');
  return o;
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function cpuName() {
  try {
    return readFileSync('/proc/cpuinfo', 'utf8').match(/^model name\s*:\s*(.+)$/m)?.[1] ?? os.cpus()[0]?.model ?? 'unknown CPU';
  } catch {
    return os.cpus()[0]?.model ?? 'unknown CPU';
  }
}

/** edgellm's tokenizer from the current sources, bundled to a temporary module. */
async function importEdgellm(tmp) {
  const entry = path.join(tmp, 'entry.ts');
  writeFileSync(
    entry,
    `export { Tokenizer } from ${JSON.stringify(path.join(ROOT, 'src/tokenizer/index.ts'))};\n` +
      `export { readGGUF, memorySource } from ${JSON.stringify(path.join(ROOT, 'src/gguf/index.ts'))};\n`,
  );
  const out = path.join(tmp, 'edgellm-tokenizer.mjs');
  execFileSync(path.join(ROOT, 'node_modules/.bin/esbuild'), [entry, '--bundle', '--platform=node', '--format=esm', `--outfile=${out}`, '--log-level=warning']);
  return import(pathToFileURL(out).href);
}

const o = parseArgs(process.argv.slice(2));
const vocabBr = path.join(SHARED, `conformance/vocab/ggml-vocab-${o.vocab}.gguf.br`);
for (const file of [vocabBr, o.text]) {
  if (!existsSync(file)) {
    console.error(`bench: ${file} is missing (set EDGELLM_SHARED to the shared fixtures folder)`);
    process.exit(1);
  }
}
const text = readFileSync(o.text, 'utf8');
const tmp = mkdtempSync(path.join(os.tmpdir(), 'edgellm-bench-tokenizer-'));
try {
  const ggufBytes = brotliDecompressSync(readFileSync(vocabBr));
  const ggufPath = path.join(tmp, `ggml-vocab-${o.vocab}.gguf`);
  writeFileSync(ggufPath, ggufBytes);

  const { Tokenizer, readGGUF, memorySource } = await importEdgellm(tmp);
  const bytes = new Uint8Array(ggufBytes.buffer, ggufBytes.byteOffset, ggufBytes.length);
  let started = performance.now();
  const tokenizer = Tokenizer.fromGGUF(await readGGUF(memorySource(bytes)));
  const loadMs = performance.now() - started;

  started = performance.now();
  const ids = tokenizer.encode(text, { bos: false, eos: false });
  const firstMs = performance.now() - started;
  const steady = [];
  for (let i = 0; i < o.repeat; i++) {
    started = performance.now();
    tokenizer.encode(text, { bos: false, eos: false });
    steady.push(performance.now() - started);
  }
  const uncached = [];
  for (let i = 0; i < 3; i++) {
    const fresh = Tokenizer.fromGGUF(await readGGUF(memorySource(bytes)));
    started = performance.now();
    fresh.encode(text, { bos: false, eos: false });
    uncached.push(performance.now() - started);
  }
  const tps = (ms) => ids.length / (ms / 1000);
  const fmt = (x) => `${(x / 1e6).toFixed(2)}M`;

  console.log(`CPU: ${cpuName()}; Node ${process.version}`);
  console.log(`text: ${path.relative(process.cwd(), o.text)} (${text.length} chars, ${ids.length} tokens), vocab: ${o.vocab}`);
  console.log(`edgellm   load ${loadMs.toFixed(0)} ms (GGUF header + tokenizer)`);
  console.log(`edgellm   first    ${firstMs.toFixed(1).padStart(7)} ms  ${fmt(tps(firstMs)).padStart(7)} tokens/s`);
  console.log(`edgellm   uncached ${median(uncached).toFixed(1).padStart(7)} ms  ${fmt(tps(median(uncached))).padStart(7)} tokens/s (median of 3 fresh tokenizers)`);
  console.log(`edgellm   steady   ${median(steady).toFixed(1).padStart(7)} ms  ${fmt(tps(median(steady))).padStart(7)} tokens/s (median of ${o.repeat})`);

  if (o.anchor) {
    const { dir, require } = ensurePackages('llamacpp', PACKAGES, { env: INSTALL_ENV });
    const nlc = await import(pathToFileURL(require.resolve('node-llama-cpp')).href);
    const version = JSON.parse(readFileSync(path.join(dir, 'node_modules/node-llama-cpp/package.json'), 'utf8')).version;
    const llama = await nlc.getLlama({ gpu: false, build: 'never', usePrebuiltBinaries: true, skipDownload: true, progressLogs: false, logLevel: nlc.LlamaLogLevel.error });
    const model = await llama.loadModel({ modelPath: ggufPath, vocabOnly: true });
    const ref = model.tokenize(text, false);
    const same = ref.length === ids.length && ref.every((id, i) => id === ids[i]);
    const times = [];
    for (let i = 0; i <= o.repeat; i++) {
      started = performance.now();
      model.tokenize(text, false);
      if (i > 0) times.push(performance.now() - started);
    }
    const ms = median(times);
    console.log(`llama.cpp          ${ms.toFixed(1).padStart(7)} ms  ${fmt(tps(ms)).padStart(7)} tokens/s (node-llama-cpp ${version}, llama.cpp ${llama.llamaCppRelease?.release ?? '?'}, median of ${o.repeat})`);
    console.log(`ids identical: ${same ? 'yes' : `NO (${ref.length} vs ${ids.length})`}`);
    console.log(
      `ratio edgellm/llama.cpp: uncached ${(ms / median(uncached)).toFixed(2)}x, steady ${(ms / median(steady)).toFixed(2)}x, first ${(ms / firstMs).toFixed(2)}x`,
    );
    await model.dispose();
    await llama.dispose();
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
