// llama.cpp as a speed anchor for edgellm's bench: the same GGUF, the same prompt ids, the same greedy decode, on
// native CPU code (node-llama-cpp's prebuilt llama.cpp, chosen so the anchor installs with npm alone: no compiler,
// no download at run time).
//
// What is timed, to match bench/run.mjs (edgellm's GenerationStats):
// - Each run starts from an empty KV cache (sequence.clearHistory()).
// - prefill: from handing all prompt ids to llama.cpp in one batch until the first generated token is back, i.e. the
//   forward pass over every prompt token including the last token's logits (plus one argmax, which edgellm counts in
//   decode: microseconds). prefill_tps = prompt tokens / that time.
// - decode: from there until the gen-th token is back: gen − 1 steps of one forward of the previous token + greedy
//   sampling, the same gen − 1 forwards edgellm does. decode_tps = (gen − 1) / that time. EOS does not stop it.
// - One untimed warmup run first (page faults of the mmapped weights, allocator growth), then `repeat` timed runs;
//   prefill_tps/decode_tps are the medians of the timed runs.
// - rss_mb is the child process's peak RSS (process.resourceUsage().maxRSS): llama.cpp's weights (the mmapped pages
//   it touched, plus any copy the CPU backend repacks: Q4_0 always on x86, and Q8_0 too when the AMX build runs, so
//   a Q8_0 model counts about twice there), KV cache and compute buffers, plus Node with node-llama-cpp loaded (≈ 100 MB).
// llama.cpp runs with `threads` threads (default 1), a batch as large as the prompt, an F16 KV cache, flash attention
// "auto" (on for CPU), mmap on, and the CPU build ggml picks for the host (AMX on Sapphire Rapids and later, which
// doubles prefill; `cpuVariant` pins another): its defaults otherwise.
//
// Standalone:  node bench/anchors/llamacpp.mjs MODEL.gguf [--prompt-tokens 128] [--gen 64] [--repeat 3] [--threads 1] [--cpu zen4]
import { spawn } from 'node:child_process';
import { cpSync, existsSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { ensurePackages } from './cache.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));

/** Pinned: node-llama-cpp and its CPU build for linux-x64 (installed explicitly; see INSTALL_ENV). */
export const PACKAGES = { 'node-llama-cpp': '3.22.1', '@node-llama-cpp/linux-x64': '3.22.1' };

/**
 * npm would otherwise install every optional GPU build (CUDA, Vulkan: hundreds of MB) and node-llama-cpp's postinstall
 * would try to download or compile llama.cpp when it finds no usable binary. The CPU binary is listed explicitly
 * above, so omitting optional dependencies loses nothing.
 */
export const INSTALL_ENV = { NODE_LLAMA_CPP_SKIP_DOWNLOAD: 'true', npm_config_omit: 'optional' };

/**
 * The folder to load node-llama-cpp from. ggml loads the best of its CPU builds for the host (libggml-cpu-<variant>.so,
 * e.g. sapphirerapids with AMX on a recent Xeon); `cpuVariant` pins one instead, in a copy of the install holding only
 * that build, e.g. 'zen4' (AVX-512 VNNI, no AMX) or 'haswell' (AVX2), to see llama.cpp as it runs on CPUs without AMX.
 */
function installDir(cpuVariant, log) {
  const { dir } = ensurePackages('llamacpp', PACKAGES, { env: INSTALL_ENV, log });
  if (!cpuVariant) return dir;
  const bins = (d) => path.join(d, 'node_modules/@node-llama-cpp/linux-x64/bins/linux-x64');
  const available = readdirSync(bins(dir)).map((f) => f.match(/^libggml-cpu-(.+)\.so$/)?.[1]).filter(Boolean);
  if (!available.includes(cpuVariant)) throw new Error(`llama.cpp anchor: no CPU build "${cpuVariant}"; there are ${available.join(', ')}`);
  const variantDir = `${dir}-cpu-${cpuVariant}`;
  const stamp = path.join(variantDir, '.variant-of.json');
  const want = JSON.stringify(PACKAGES);
  if (!existsSync(stamp) || readFileSync(stamp, 'utf8') !== want) {
    rmSync(variantDir, { recursive: true, force: true });
    cpSync(dir, variantDir, { recursive: true });
    for (const v of available) if (v !== cpuVariant) rmSync(path.join(bins(variantDir), `libggml-cpu-${v}.so`));
    writeFileSync(stamp, want);
  }
  return variantDir;
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * Runs llama.cpp on `model` with exactly `promptIds` (which must be llama.cpp's tokenization of `promptText`, BOS
 * included, or this throws showing the first difference), decoding `gen` tokens greedily, 1 warmup + `repeat` timed
 * runs. `cpuVariant` (optional) pins ggml's CPU build, e.g. 'zen4' for AVX-512 without AMX (see installDir).
 * Returns { engine, version, build, prefill_tps, decode_tps, rss_mb, threads, context, batch, flash_attention,
 * runs: [{ warmup, prompt_tokens, generated_tokens, prefill_ms, decode_ms, prefill_tps, decode_tps, first_ids }] }.
 */
export async function runLlamaCpp({ model, promptText, promptIds, gen, repeat, threads = 1, cpuVariant, log = (m) => console.error(m) }) {
  if (!Array.isArray(promptIds) || promptIds.length < 1) throw new Error('runLlamaCpp: promptIds must be a non-empty array');
  if (!Number.isInteger(gen) || gen < 1 || !Number.isInteger(repeat) || repeat < 1) throw new Error('runLlamaCpp: gen and repeat must be positive integers');
  const dir = installDir(cpuVariant, log);
  const cfg = { dir, model: path.resolve(model), promptText, promptIds, gen, repeat, threads };
  const child = spawn(process.execPath, [path.join(HERE, 'llamacpp-child.mjs')], {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, NODE_LLAMA_CPP_SKIP_DOWNLOAD: 'true' },
  });
  let stdout = '', stderrTail = '';
  child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d) => {
    stderrTail = (stderrTail + d).slice(-4000);
    for (const line of d.split('\n')) if (line.trim()) log(line);
  });
  child.stdin.end(JSON.stringify(cfg));
  const code = await new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', resolve);
  });
  const last = stdout.trim().split('\n').at(-1);
  if (code !== 0 || !last) {
    // the child's own error message (e.g. a tokenization mismatch) is the useful part
    const err = stderrTail.match(/^\w*Error\b.*$/gm)?.at(-1) ?? stderrTail.trim().split('\n').at(-1);
    throw new Error(`llama.cpp anchor failed (exit ${code}): ${err}`);
  }
  const r = JSON.parse(last);
  const timed = r.runs.filter((x) => !x.warmup);
  return {
    engine: 'llama.cpp',
    ...r,
    prefill_tps: median(timed.map((x) => x.prefill_tps)),
    decode_tps: median(timed.map((x) => x.decode_tps)),
  };
}

// ───────────────────────────── standalone ─────────────────────────────

/** Text and ids for a quick standalone check, tokenized by edgellm (the frozen snapshot unless EDGELLM_DIST is set). */
async function standalonePrompt(model, n) {
  const dist = process.env.EDGELLM_DIST ?? '/work/snapshot/dist/index.js';
  const { loadTokenizer } = await import(pathToFileURL(dist).href);
  const { SYNTHETIC_TEXT } = await import('../synthetic.mjs');
  // the header alone: a model of any size
  const m = await loadTokenizer(model);
  {
    // Synthetic models: every word is one token. Others: the longest whole-word prefix of the text with at most n ids
    // (cutting ids mid-word would give a text that re-tokenizes differently).
    const sample = path.basename(model).includes('.synthetic-')
      ? SYNTHETIC_TEXT
      : 'We the People of the United States, in Order to form a more perfect Union, establish Justice, insure domestic Tranquility, provide for the common defence, promote the general Welfare, and secure the Blessings of Liberty to ourselves and our Posterity, do ordain and establish this Constitution for the United States of America. '.repeat(20);
    const words = sample.split(' ').filter(Boolean);
    let lo = 1, hi = words.length;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (m.tokenize(words.slice(0, mid).join(' ')).length <= n) lo = mid;
      else hi = mid - 1;
    }
    const promptText = words.slice(0, lo).join(' ');
    return { promptText, promptIds: m.tokenize(promptText) };
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const opt = (name, dflt) => {
    const i = args.indexOf(`--${name}`);
    return i >= 0 ? Number(args.splice(i, 2)[1]) : dflt;
  };
  const n = opt('prompt-tokens', 128), gen = opt('gen', 64), repeat = opt('repeat', 3), threads = opt('threads', 1);
  const cpuAt = args.indexOf('--cpu');
  const cpuVariant = cpuAt >= 0 ? args.splice(cpuAt, 2)[1] : undefined;
  if (args.length !== 1) {
    console.error('usage: node bench/anchors/llamacpp.mjs MODEL.gguf [--prompt-tokens 128] [--gen 64] [--repeat 3] [--threads 1] [--cpu VARIANT]');
    process.exit(2);
  }
  const { promptText, promptIds } = await standalonePrompt(args[0], n);
  const r = await runLlamaCpp({ model: args[0], promptText, promptIds, gen, repeat, threads, cpuVariant });
  const f = (x) => x.toFixed(1).padStart(8);
  console.log(`llama.cpp: ${path.basename(args[0])}, ${r.version}\n  build ${r.build}`);
  console.log(`  threads ${r.threads}, context ${r.context}, batch ${r.batch}, flash attention ${r.flash_attention}; prompt ${promptIds.length} ids, decode ${gen}`);
  for (const [i, x] of r.runs.entries()) console.log(`  ${(x.warmup ? 'warmup' : `run ${i}`).padEnd(7)} prefill ${f(x.prefill_tps)} tok/s   decode ${f(x.decode_tps)} tok/s`);
  console.log(`  median  prefill ${f(r.prefill_tps)} tok/s   decode ${f(r.decode_tps)} tok/s   peak RSS ${r.rss_mb} MB`);
  console.log(JSON.stringify(r));
}
