// Prefill and decode speed of one GGUF model in edgellm:
//   npm run bench -- MODEL.gguf [--prompt-tokens 128] [--gen 64] [--repeat 3] [--batch 32] [--json]
//
// One untimed warmup run (reported as such: it includes the wasm engine's tier-up), then --repeat timed runs; the
// medians are what counts. Each run prefills the same prompt of exactly --prompt-tokens ids from position 0, then decodes
// --gen tokens greedily. Timings are the library's own GenerationStats, so the bench measures what users see.
//
// Engines are a table (ENGINES below) of functions returning the same result shape, so anchors such as wllama or
// llama.cpp can be added beside edgellm without touching the measuring and reporting.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const DIST = path.join(ROOT, 'dist/index.js');

/** Which kernel build the wasm is; there is only one so far. */
const BUILD = 'simd128';

/** Any fixed text will do: speed does not depend on which tokens; it only has to be the same on every run. */
const PASSAGE =
  'We the People of the United States, in Order to form a more perfect Union, establish Justice, insure domestic ' +
  'Tranquility, provide for the common defence, promote the general Welfare, and secure the Blessings of Liberty to ' +
  'ourselves and our Posterity, do ordain and establish this Constitution for the United States of America. ';

const USAGE = `Usage: npm run bench -- MODEL.gguf [options]

Options:
  --prompt-tokens N   prompt length in tokens, BOS included (default 128)
  --gen N             tokens to decode greedily per run (default 64)
  --repeat N          timed runs; medians are reported (default 3)
  --batch N           prompt tokens per forward batch (default: the library's, 32)
  --json              end stdout with one JSON line of the results`;

const FLAGS = { 'prompt-tokens': 'int', gen: 'int', repeat: 'int', batch: 'int', json: 'bool' };

function usage(message) {
  console.error(`bench: ${message}\n\n${USAGE}`);
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { 'prompt-tokens': 128, gen: 64, repeat: 3, batch: undefined, json: false };
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
      opts[name] = true;
      continue;
    }
    const raw = inline ?? argv[++i];
    if (raw === undefined) usage(`--${name} needs a value`);
    if (!/^\d+$/.test(raw) || Number(raw) < 1) usage(`--${name} needs a positive integer, got ${JSON.stringify(raw)}`);
    opts[name] = Number(raw);
  }
  if (positional.length !== 1) usage(positional.length ? `one model, got ${positional.length} arguments` : 'which model?');
  if (opts['prompt-tokens'] < 2) usage('--prompt-tokens must be at least 2');
  return { model: positional[0], promptTokens: opts['prompt-tokens'], gen: opts.gen, repeat: opts.repeat, batch: opts.batch, json: opts.json };
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

const mb = (bytes) => bytes / (1024 * 1024);

// ───────────────────────────── engines ─────────────────────────────

/** BOS (if the model adds one), then the passage's tokens, repeated and cut to exactly n ids. */
function promptIds(model, n) {
  const withBos = model.tokenize(PASSAGE);
  const body = model.tokenize(PASSAGE, { bos: false, eos: false });
  const ids = withBos.length > body.length ? [withBos[0]] : [];
  while (ids.length < n) ids.push(...body);
  return ids.slice(0, n);
}

/**
 * edgellm from ../dist. Returns { engine, load_ms, memory_bytes, info, runs: [{ prefill_tps, decode_tps, ... }] }
 * with runs[0] the warmup.
 */
async function benchEdgellm(cfg) {
  if (!existsSync(DIST)) {
    console.error(`bench: ${path.relative(process.cwd(), DIST)} is missing: run \`npm run build\` first`);
    process.exit(1);
  }
  const { loadModel } = await import(pathToFileURL(DIST).href);
  const t0 = performance.now();
  // The KV cache is planned for exactly what a run uses, so the memory reported is what this workload needs.
  const model = await loadModel(cfg.model, { contextLength: cfg.promptTokens + cfg.gen, batchSize: cfg.batch });
  const loadMs = performance.now() - t0;
  const ids = promptIds(model, cfg.promptTokens);
  const runs = [];
  for (let r = 0; r <= cfg.repeat; r++) {
    let stats;
    // Greedy decoding may hit EOS before --gen tokens; the stats then say how many were decoded and why it stopped.
    for await (const _ of model.generate(ids, { maxTokens: cfg.gen, temperature: 0, onStats: (s) => (stats = s) }));
    runs.push({
      warmup: r === 0,
      prompt_tokens: stats.promptTokens,
      generated_tokens: stats.generatedTokens,
      stop_reason: stats.stopReason,
      prefill_ms: stats.prefillMs,
      decode_ms: stats.decodeMs,
      prefill_tps: stats.prefillTokensPerSecond,
      decode_tps: stats.decodeTokensPerSecond,
    });
  }
  const memory = model.memory();
  const info = model.info;
  model.dispose();
  return {
    engine: 'edgellm',
    build: BUILD,
    load_ms: loadMs,
    memory_bytes: memory.totalBytes,
    context: info.context,
    batch: info.batchSize,
    describe: `${info.name || info.architecture}: ${info.nLayers} layers, dim ${info.dim}, vocab ${info.vocab}, ` +
      Object.entries(info.tensorTypes).map(([t, n]) => `${n} ${t}`).join(' + '),
    runs,
  };
}

const ENGINES = { edgellm: benchEdgellm };

// ───────────────────────────── report ─────────────────────────────

function summarize(cfg, result) {
  const timed = result.runs.filter((r) => !r.warmup);
  return {
    engine: result.engine,
    model: path.basename(cfg.model),
    prefill_tps: median(timed.map((r) => r.prefill_tps)),
    decode_tps: median(timed.map((r) => r.decode_tps)),
    rss_mb: Number(mb(process.resourceUsage().maxRSS * 1024).toFixed(1)),
    wasm_memory_mb: Number(mb(result.memory_bytes).toFixed(1)),
    load_ms: Number(result.load_ms.toFixed(1)),
    build: result.build,
    prompt_tokens: cfg.promptTokens,
    gen_tokens: cfg.gen,
    // fewer than gen_tokens when greedy decoding reached EOS in some run
    min_generated_tokens: Math.min(...timed.map((r) => r.generated_tokens)),
    repeat: cfg.repeat,
    context: result.context,
    batch: result.batch,
    node: process.version,
    runs: result.runs,
  };
}

function print(cfg, result, s) {
  const f = (x) => x.toFixed(1).padStart(9);
  const lines = [
    `${s.engine} bench: ${s.model} (${result.describe}), build ${s.build}, node ${s.node}`,
    `load ${s.load_ms.toFixed(0)} ms; wasm memory planned ${s.wasm_memory_mb} MB (context ${s.context}, batch ${s.batch})`,
    `prompt ${cfg.promptTokens} tokens, decode ${cfg.gen} tokens greedily; 1 untimed warmup + ${cfg.repeat} timed runs`,
  ];
  result.runs.forEach((r, i) => {
    const label = r.warmup ? 'warmup' : `run ${i}`;
    const early = r.generated_tokens < cfg.gen ? `  (stopped early: ${r.stop_reason})` : '';
    lines.push(`  ${label.padEnd(7)} prefill ${f(r.prefill_tps)} tok/s   decode ${f(r.decode_tps)} tok/s   ${r.generated_tokens} tokens${early}`);
  });
  lines.push(`  median  prefill ${f(s.prefill_tps)} tok/s   decode ${f(s.decode_tps)} tok/s`);
  lines.push(`peak RSS ${s.rss_mb} MB`);
  if (s.min_generated_tokens < cfg.gen) lines.push(`note: greedy decoding reached EOS; decode speed is over the tokens actually generated`);
  console.log(lines.join('\n'));
}

const cfg = parseArgs(process.argv.slice(2));
const result = await ENGINES.edgellm(cfg);
const summary = summarize(cfg, result);
print(cfg, result, summary);
if (cfg.json) console.log(JSON.stringify(summary));
