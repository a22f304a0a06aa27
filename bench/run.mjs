// Prefill and decode speed of one GGUF model in edgellm, optionally side by side with wllama and llama.cpp:
//   npm run bench -- MODEL.gguf [options]
//   npm run bench -- --synthetic smollm-135m --type q8_0 [--anchors]
//
// One untimed warmup run (it includes the wasm engine's tier-up), then --repeat timed runs; medians count. Each run
// prefills the same prompt of exactly --prompt-tokens ids from position 0 (in batches of --batch), then decodes --gen
// tokens greedily. Timings are the library's own GenerationStats, so the bench measures what users see. Peak RSS is
// this process's, read right after the timed runs (before anything else loads), so it is edgellm's plus Node's own.
// A last, separate run with every kernel call timed gives the per-op breakdown.
//
// --anchors runs the same GGUF and the same prompt ids through llama.cpp (node-llama-cpp's native CPU build, in a
// child process) and wllama (llama.cpp in wasm, in headless Chromium), installed on demand outside the package
// (bench/anchors/), and prints one table with ratios. Both take text: the prompt is chosen so that its text tokenizes
// to exactly the ids, and each anchor checks that with its own tokenizer before timing.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const DIST = path.join(ROOT, 'dist/index.js');

/** Node 20 runs relaxed SIMD only behind this V8 flag (Node 22+ ships it); the bench re-runs itself with it. */
const RELAXED_FLAG = '--experimental-wasm-relaxed-simd';

/** Any fixed text will do for real models: speed does not depend on which tokens, only on how many. */
const PASSAGE =
  'We the People of the United States, in Order to form a more perfect Union, establish Justice, insure domestic ' +
  'Tranquility, provide for the common defence, promote the general Welfare, and secure the Blessings of Liberty to ' +
  'ourselves and our Posterity, do ordain and establish this Constitution for the United States of America.';

const USAGE = `Usage: npm run bench -- MODEL.gguf [options]
       npm run bench -- --synthetic NAME --type q4_0|q8_0|f16 [options]

Options:
  --synthetic NAME    a deterministic model of a real shape: smollm-135m, tinyllama-1.1b, llama-3.2-1b
                      (generated once into the bench cache, ~/.cache/edgellm-bench/models)
  --type T            weight type of the synthetic model: q4_0, q8_0, f16
  --threads N         threads (default 1; edgellm runs one thread so far)
  --prompt-tokens N   prompt length in tokens, BOS included (default 128)
  --gen N             tokens to decode greedily per run (default 64)
  --repeat N          timed runs; medians are reported (default 3)
  --batch N           prompt tokens per forward batch (default: the library's, 32)
  --simd MODE         kernel build: auto (default), baseline (SIMD128) or relaxed
  --anchors           also run llama.cpp (native) and wllama (wasm, Chromium) on the same ids
  --json              end stdout with one JSON line: {"prefill_tps","decode_tps","rss_mb","build",...}`;

const FLAGS = {
  synthetic: 'string', type: 'string', threads: 'int', 'prompt-tokens': 'int', gen: 'int', repeat: 'int', batch: 'int',
  simd: 'string', anchors: 'bool', json: 'bool',
};

function usage(message) {
  console.error(`bench: ${message}\n\n${USAGE}`);
  process.exit(2);
}

function parseArgs(argv) {
  const o = { threads: 1, 'prompt-tokens': 128, gen: 64, repeat: 3, simd: 'auto', anchors: false, json: false };
  const positional = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '-h' || arg === '--help') {
      console.log(USAGE);
      process.exit(0);
    }
    if (!arg.startsWith('--')) {
      positional.push(arg);
      continue;
    }
    const [name, inline] = arg.slice(2).split(/=(.*)/s);
    const kind = FLAGS[name];
    if (!kind) usage(`unknown option --${name}`);
    if (kind === 'bool') {
      o[name] = true;
      continue;
    }
    const raw = inline ?? argv[++i];
    if (raw === undefined) usage(`--${name} needs a value`);
    if (kind === 'int' && (!/^\d+$/.test(raw) || Number(raw) < 1)) usage(`--${name} needs a positive integer, got ${JSON.stringify(raw)}`);
    o[name] = kind === 'int' ? Number(raw) : raw;
  }
  if (o.synthetic) {
    if (positional.length) usage('give a model file or --synthetic, not both');
    if (!o.type) usage('--synthetic needs --type q4_0|q8_0|f16');
  } else {
    if (positional.length !== 1) usage(positional.length ? `one model, got ${positional.length} arguments` : 'which model?');
    if (o.type) usage('--type goes with --synthetic');
  }
  if (o['prompt-tokens'] < 2) usage('--prompt-tokens must be at least 2');
  if (!['auto', 'baseline', 'relaxed'].includes(o.simd)) usage(`--simd must be auto, baseline or relaxed, got ${JSON.stringify(o.simd)}`);
  if (o.threads !== 1) usage('--threads: edgellm runs one thread so far, so the comparison is at --threads 1');
  return {
    model: positional[0], synthetic: o.synthetic, type: o.type, threads: o.threads, promptTokens: o['prompt-tokens'], gen: o.gen,
    repeat: o.repeat, batch: o.batch, simd: o.simd, anchors: o.anchors, json: o.json,
  };
}

/** Re-runs this script under the relaxed-SIMD flag when this Node needs it for the relaxed build, and accepts it. */
function relaunchForRelaxedSimd(cfg) {
  if (cfg.simd === 'baseline' || process.execArgv.includes(RELAXED_FLAG)) return;
  // the smallest module using i32x4.relaxed_dot_i8x16_i7x16_add_s (see src/runtime/kernels.ts)
  const probe = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 8, 1, 96, 3, 123, 123, 123, 1, 123, 3, 2, 1, 0, 10, 13, 1, 11, 0, 32, 0, 32, 1, 32, 2, 253, 147, 2, 11]);
  if (WebAssembly.validate(probe)) return;
  if (spawnSync(process.execPath, [RELAXED_FLAG, '-e', '']).status !== 0) return;
  const r = spawnSync(process.execPath, [RELAXED_FLAG, ...process.execArgv, fileURLToPath(import.meta.url), ...process.argv.slice(2)], { stdio: 'inherit' });
  process.exit(r.status ?? 1);
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const mb = (bytes) => bytes / (1024 * 1024);
const round1 = (x) => Number(x.toFixed(1));

// ───────────────────────────── the prompt ─────────────────────────────

/**
 * Exactly n ids (BOS included) and a text that tokenizes to exactly them, so that text-only engines see the same ids.
 * Synthetic vocabularies have one token per word; real ones are filled word by word, then with one-token words.
 */
function buildPrompt(model, n, syntheticPrompt) {
  let text;
  if (syntheticPrompt) {
    text = syntheticPrompt(n - (model.tokenize('').length));
  } else {
    const words = PASSAGE.split(' ');
    const count = (t) => model.tokenize(t).length;
    text = '';
    for (let i = 0; ; i++) {
      const next = text ? `${text} ${words[i % words.length]}` : words[0];
      if (count(next) > n) break;
      text = next;
    }
    for (const filler of ['a', 'the', 'of', 'and', 'to', 'in', 'is', 'I']) {
      while (count(text) < n && count(`${text} ${filler}`) === count(text) + 1) text = `${text} ${filler}`;
    }
  }
  const ids = model.tokenize(text);
  if (ids.length !== n) throw new Error(`bench: could not build a prompt of exactly ${n} tokens (got ${ids.length})`);
  return { text, ids };
}

// ───────────────────────────── edgellm ─────────────────────────────

async function benchEdgellm(cfg, modelPath, syntheticPrompt) {
  if (!existsSync(DIST)) {
    console.error(`bench: ${path.relative(process.cwd(), DIST)} is missing: run \`npm run build\` first`);
    process.exit(1);
  }
  const { loadModel } = await import(pathToFileURL(DIST).href);
  // The KV cache is planned for exactly what a run uses, so the memory reported is what this workload needs.
  const options = { contextLength: cfg.promptTokens + cfg.gen, batchSize: cfg.batch, simd: cfg.simd };
  const t0 = performance.now();
  let model = await loadModel(modelPath, options);
  const loadMs = performance.now() - t0;
  const prompt = buildPrompt(model, cfg.promptTokens, syntheticPrompt);

  const run = async (m, maxTokens) => {
    let stats;
    // Greedy decoding may hit EOS before --gen tokens; the stats then say how many were decoded and why it stopped.
    for await (const _ of m.generate(prompt.ids, { maxTokens, temperature: 0, onStats: (s) => (stats = s) }));
    return stats;
  };
  const runs = [];
  for (let r = 0; r <= cfg.repeat; r++) {
    const s = await run(model, cfg.gen);
    runs.push({
      warmup: r === 0, prompt_tokens: s.promptTokens, generated_tokens: s.generatedTokens, stop_reason: s.stopReason,
      prefill_ms: s.prefillMs, decode_ms: s.decodeMs, prefill_tps: s.prefillTokensPerSecond, decode_tps: s.decodeTokensPerSecond,
    });
  }
  const rssMb = mb(process.resourceUsage().maxRSS * 1024);
  const info = model.info;
  const memory = model.memory();
  model.dispose();
  model = undefined;

  // The breakdown: a prefill-only run, then a full one; decode is their difference. Kernel time by family, sampling
  // from the stats, and whatever else the wall clock saw is JS (the forward pass's own code, calls, yields).
  const profiled = await loadModel(modelPath, { ...options, profile: true });
  await run(profiled, cfg.gen); // warm up the profiled instance too
  profiled.profile();
  const p = await run(profiled, 0);
  const prefillOps = profiled.profile();
  const f = await run(profiled, cfg.gen);
  const allOps = profiled.profile();
  profiled.dispose();
  const decodeOps = Object.fromEntries(Object.entries(allOps).map(([k, v]) => [k, v - (prefillOps[k] ?? 0)]));
  const breakdown = {
    prefill: perToken({ ...prefillOps }, p.prefillMs, 0, cfg.promptTokens),
    decode: perToken(decodeOps, f.decodeMs, f.sampleMs, Math.max(1, f.generatedTokens - 1)),
  };

  const timed = runs.filter((r) => !r.warmup);
  return {
    engine: 'edgellm',
    build: info.build,
    prefill_tps: round1(median(timed.map((r) => r.prefill_tps))),
    decode_tps: round1(median(timed.map((r) => r.decode_tps))),
    rss_mb: round1(rssMb),
    wasm_memory_mb: round1(mb(memory.totalBytes)),
    load_ms: Math.round(loadMs),
    min_generated_tokens: Math.min(...timed.map((r) => r.generated_tokens)),
    context: info.context,
    batch: info.batchSize,
    node: process.version,
    describe: `${info.name || info.architecture}: ${info.nLayers} layers, dim ${info.dim}, ${info.nHeads}/${info.nKvHeads} heads, ` +
      `ffn ${info.ffn}, vocab ${info.vocab}; ` + Object.entries(info.tensorTypes).map(([t, n]) => `${n} ${t}`).join(' + '),
    prompt,
    runs,
    breakdown,
  };
}

/** ms per token by category; 'js/other' is the wall time no kernel or the sampler accounts for. */
function perToken(ops, wallMs, sampleMs, tokens) {
  const out = {};
  let accounted = 0;
  for (const k of ['matmul', 'quantize', 'attention', 'norms/rope/silu']) {
    out[k] = (ops[k] ?? 0) / tokens;
    accounted += ops[k] ?? 0;
  }
  out.sampling = sampleMs / tokens;
  out['js/other'] = Math.max(0, wallMs - accounted - sampleMs) / tokens;
  out.total = wallMs / tokens;
  return out;
}

// ───────────────────────────── report ─────────────────────────────

function printEdgellm(cfg, modelPath, e) {
  const f = (x) => x.toFixed(1).padStart(9);
  const lines = [
    `edgellm bench: ${path.basename(modelPath)} (${e.describe})`,
    `build ${e.build}, node ${e.node}${process.execArgv.includes(RELAXED_FLAG) ? ` ${RELAXED_FLAG}` : ''}, 1 thread; ` +
      `load ${e.load_ms} ms; wasm memory ${e.wasm_memory_mb} MB (context ${e.context}, batch ${e.batch})`,
    `prompt ${cfg.promptTokens} tokens, decode ${cfg.gen} tokens greedily; 1 untimed warmup + ${cfg.repeat} timed runs`,
  ];
  e.runs.forEach((r, i) => {
    const label = r.warmup ? 'warmup' : `run ${i}`;
    const early = r.generated_tokens < cfg.gen ? `  (stopped early: ${r.stop_reason})` : '';
    lines.push(`  ${label.padEnd(7)} prefill ${f(r.prefill_tps)} tok/s   decode ${f(r.decode_tps)} tok/s   ${r.generated_tokens} tokens${early}`);
  });
  lines.push(`  median  prefill ${f(e.prefill_tps)} tok/s   decode ${f(e.decode_tps)} tok/s`);
  lines.push(`peak RSS ${e.rss_mb} MB`);
  if (e.min_generated_tokens < cfg.gen) lines.push('note: greedy decoding reached EOS; decode speed is over the tokens actually generated');
  const cols = Object.keys(e.breakdown.prefill);
  lines.push('', 'time per token by op, ms (a separate run with every kernel call timed):');
  lines.push(`  ${''.padEnd(8)}${cols.map((c) => c.padStart(16)).join('')}`);
  for (const phase of ['prefill', 'decode']) {
    const b = e.breakdown[phase];
    lines.push(`  ${phase.padEnd(8)}${cols.map((c) => `${b[c].toFixed(3)} (${((100 * b[c]) / b.total).toFixed(0).padStart(3)}%)`.padStart(16)).join('')}`);
  }
  console.log(lines.join('\n'));
}

function printAnchors(e, anchors) {
  const rows = [{ name: `edgellm (${e.build})`, r: e }, ...anchors.map((a) => ({ name: `${a.engine} (${a.short})`, r: a }))];
  const cell = (x, w = 10) => (x === undefined || x === null ? '—' : typeof x === 'number' ? x.toFixed(1) : String(x)).padStart(w);
  const lines = ['', 'side by side (1 thread, same prompt ids):', `  ${'engine'.padEnd(26)}${cell('prefill', 10)}${cell('decode', 10)}${cell('RSS MB', 10)}   edgellm ÷ engine (prefill, decode)`];
  for (const { name, r } of rows) {
    const ratio = r === e || r.error ? '' : `${(e.prefill_tps / r.prefill_tps).toFixed(2)}×, ${(e.decode_tps / r.decode_tps).toFixed(2)}×`;
    if (r.error) lines.push(`  ${name.padEnd(26)}failed: ${r.error}`);
    else lines.push(`  ${name.padEnd(26)}${cell(r.prefill_tps)}${cell(r.decode_tps)}${cell(r.rss_mb)}   ${ratio}`);
  }
  console.log(lines.join('\n'));
}

// ───────────────────────────── main ─────────────────────────────

const cfg = parseArgs(process.argv.slice(2));
relaunchForRelaxedSimd(cfg);

let modelPath = cfg.model;
let syntheticPrompt;
if (cfg.synthetic) {
  const synthetic = await import('./synthetic.mjs');
  if (!synthetic.SHAPES[cfg.synthetic]) usage(`unknown --synthetic ${cfg.synthetic}; known: ${Object.keys(synthetic.SHAPES).join(', ')}`);
  if (!synthetic.TYPES.includes(cfg.type)) usage(`--type must be one of ${synthetic.TYPES.join(', ')}`);
  modelPath = await synthetic.syntheticModel(cfg.synthetic, cfg.type);
  syntheticPrompt = synthetic.syntheticPrompt;
} else if (!existsSync(modelPath)) {
  console.error(`bench: no such model file: ${modelPath}`);
  process.exit(1);
}

const e = await benchEdgellm(cfg, modelPath, syntheticPrompt);
printEdgellm(cfg, modelPath, e);

const anchors = [];
if (cfg.anchors) {
  const job = { model: modelPath, promptText: e.prompt.text, promptIds: e.prompt.ids, gen: cfg.gen, repeat: cfg.repeat, threads: cfg.threads };
  const engines = [
    ['llama.cpp', 'native', async () => (await import('./anchors/llamacpp.mjs')).runLlamaCpp(job)],
    ['wllama', 'wasm, Chromium', async () => (await import('./anchors/wllama.mjs')).runWllama(job)],
  ];
  for (const [engine, short, go] of engines) {
    console.error(`bench: running ${engine} on the same ${cfg.promptTokens} prompt ids...`);
    try {
      anchors.push({ ...(await go()), short });
    } catch (err) {
      // one anchor failing (no Chromium, say) still leaves the other's comparison
      console.error(`bench: ${engine} failed: ${err.message}`);
      anchors.push({ engine, short, error: err.message.split('\n')[0] });
    }
  }
  printAnchors(e, anchors);
}

if (cfg.json) {
  const { prompt, ...rest } = e;
  const strip = ({ runs, ...a }) => a;
  console.log(JSON.stringify({
    prefill_tps: e.prefill_tps, decode_tps: e.decode_tps, rss_mb: e.rss_mb, build: e.build,
    ...rest, model: path.basename(modelPath), prompt_tokens: cfg.promptTokens, gen_tokens: cfg.gen, repeat: cfg.repeat,
    anchors: cfg.anchors ? Object.fromEntries(anchors.map((a) => [a.engine, strip(a)])) : undefined,
  }));
}
