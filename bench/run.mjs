// Prefill and decode speed of one GGUF model in edgellm, optionally side by side with wllama and llama.cpp:
//   npm run bench -- MODEL.gguf [options]
//   npm run bench -- --synthetic smollm-135m --type q4_k_m [--anchors]
// or decode speed by context length, KV cache type, attention mode and KV tier budget (see benchContexts):
//   npm run bench -- MODEL.gguf --contexts 128,1024,2048 [--attention full,sparse] [--kv f16,int8] [--kv-hot all,4MB]
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
       npm run bench -- --synthetic NAME --type TYPE [options]
       npm run bench -- MODEL.gguf|--synthetic NAME --contexts C1,C2,... [sweep options] [options]
       npm run bench -- --tokenizer [--vocab llama-bpe] [--text FILE] [--repeat N] [--no-anchor]   (bench/tokenizer.mjs)
       npm run bench -- --chat [MODEL.gguf] [--turns 6] [--reply 32] [--ctx 2048]                   (bench/chat.mjs)

Options:
  --synthetic NAME    a deterministic model of a real shape: smollm-135m, tinyllama-1.1b, llama-3.2-1b, llama-3.1-8b,
                      qwen2.5-0.5b, qwen3-0.6b, gemma-3-1b (each in its architecture), or long-15m (sotu-15m's
                      shape with a 16K context_length); generated once into the bench cache,
                      ~/.cache/edgellm-bench/models
  --type T            weight type of the synthetic model: q4_0, q8_0, f16 (every 2-D tensor in it), or as
                      llama.cpp's quantizer writes that file type (q3_k_m, q4_k_m, q5_k_m: its per-tensor mix;
                      q4_1, q5_0, q5_1, iq4_nl, bf16, q2_k, q6_k, iq4_xs: pure; rows that do not fit a 256-block
                      fall back as in llama.cpp, e.g. to q5_0 and q8_0 at smollm's 576)
  --threads N         threads for edgellm's matmuls and the anchors (default 1; 'auto' for edgellm's choice)
  --memory-budget S   edgellm's memoryBudget, e.g. 512MB (the plan must fit it; it streams weights if it must)
  --weights W         where the layers' weights live: auto (default), resident, warm (host memory) or cold (a
                      spill file on disk), staged into wasm layer by layer (docs/memory.md)
  --stage-ahead on|off   streamed layers: a worker copies the next one in while one runs (default: the
                      library's, on where the threads leave a core free)
  --memory-per-instance S  the largest wasm memory of one kernel instance (default 4 GiB less a page)
  --prompt-tokens N   prompt length in tokens, BOS included (default 128)
  --gen N             tokens to decode greedily per run (default 64)
  --repeat N          timed runs; medians are reported (default 3; 1 with --contexts)
  --batch N           prompt tokens per forward batch (default: the library's, 32)
  --simd MODE         kernel build: auto (default), baseline (SIMD128) or relaxed
  --anchors           also run llama.cpp (native) and wllama (wasm, Chromium) on the same ids
  --anchor ENGINE     one of them only: llama.cpp or wllama (wllama on a 1B model takes minutes a run)
  --json              end stdout with one JSON line: {"prefill_tps","decode_tps","rss_mb","build",...}
                      (with --contexts: {"rows":[...],...})

KV cache and attention (one value each; with --contexts, comma-separated lists to sweep):
  --kv TYPES          KV page type: f32, f16, int8, int4 (default: the library's, f32; with --contexts f16,int8)
  --attention MODES   full or sparse (Quest with the library's top-k, window and sinks) (default: full; with
                      --contexts full,sparse)
  --kv-hot SIZES      wasm bytes for the whole KV cache, e.g. 4MB, the pages beyond it going to the warm tier
                      (host memory); 'all' (default) keeps every page hot
  --kv-warm SIZE      warm tier budget (default 1TB: host memory is only taken as pages go warm)

Decode speed by context (one table: a row per KV type × attention × hot budget × context):
  --contexts LIST     e.g. 128,1024,2048: for each C, plan a context of exactly C, prefill C − gen prompt ids,
                      then decode --gen tokens, so decode reads between C − gen and C positions
  --breakdown         one more run per row with every kernel call timed: decode ms per token in attention,
                      matmul and JS/other (staging warm pages and choosing pages are JS)`;

const FLAGS = {
  synthetic: 'string', type: 'string', threads: 'string', 'memory-budget': 'string', weights: 'string', 'stage-ahead': 'string', 'memory-per-instance': 'string', 'prompt-tokens': 'int', gen: 'int', repeat: 'int', batch: 'int',
  simd: 'string', anchors: 'bool', anchor: 'string', json: 'bool', contexts: 'string', kv: 'string', attention: 'string', 'kv-hot': 'string',
  'kv-warm': 'string', breakdown: 'bool',
};

const KV_TYPES = ['f32', 'f16', 'int8', 'int4'];
const ATTENTION_MODES = ['full', 'sparse'];

function usage(message) {
  console.error(`bench: ${message}\n\n${USAGE}`);
  process.exit(2);
}

function parseArgs(argv) {
  const o = { threads: 1, gen: 64, simd: 'auto', anchors: false, json: false, breakdown: false };
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
    if (!o.type) usage('--synthetic needs --type (q4_0, q8_0, f16, q4_k_m, ...)');
  } else {
    if (positional.length !== 1) usage(positional.length ? `one model, got ${positional.length} arguments` : 'which model?');
    if (o.type) usage('--type goes with --synthetic');
  }
  if (o.contexts !== undefined && o['prompt-tokens'] !== undefined) usage('--prompt-tokens: with --contexts the prompt is each context − --gen');
  o['prompt-tokens'] ??= 128;
  if (o['prompt-tokens'] < 2) usage('--prompt-tokens must be at least 2');
  if (!['auto', 'baseline', 'relaxed'].includes(o.simd)) usage(`--simd must be auto, baseline or relaxed, got ${JSON.stringify(o.simd)}`);
  if (o.threads !== 1 && o.threads !== 'auto' && !(Number.isInteger(+o.threads) && +o.threads >= 1)) usage(`--threads is a count or auto, got ${o.threads}`);
  if (o.threads !== 1 && o.threads !== 'auto') o.threads = +o.threads;
  // A comma-separated option; `fallback` when absent (undefined: the library's default).
  const list = (name, fallback, allowed, what) => {
    if (o[name] === undefined) return fallback;
    const items = o[name].split(',').map((x) => x.trim());
    for (const x of items) if (!allowed(x)) usage(`--${name}: ${JSON.stringify(x)} is not ${what}`);
    return items;
  };
  const contexts = list('contexts', undefined, (x) => /^\d+$/.test(x) && Number(x) >= o.gen + 2, `a context of at least --gen + 2 (${o.gen + 2}) tokens`)?.map(Number);
  const sweep = contexts !== undefined;
  // With --contexts the KV types and modes are lists to sweep; without, one value each, or the library's defaults.
  // The sweep's default KV types are llama.cpp's default (f16) and int8: each type adds a quadratic full-attention
  // prefill per context, minutes at 16K, so f32 and int4 are asked for by name.
  const cache = {
    kv: list('kv', sweep ? ['f16', 'int8'] : [undefined], (x) => KV_TYPES.includes(x), KV_TYPES.join(', ')),
    attention: list('attention', sweep ? ATTENTION_MODES : [undefined], (x) => ATTENTION_MODES.includes(x), ATTENTION_MODES.join(', ')),
    kvHot: list('kv-hot', ['all'], (x) => x === 'all' || /^\d+(\.\d+)?\s*[kmgt]?i?b?$/i.test(x), "'all' or a size like 4MB"),
    kvWarm: o['kv-warm'] ?? '1TB',
  };
  const ANCHORS = ['llama.cpp', 'wllama'];
  if (o.anchor !== undefined && !ANCHORS.includes(o.anchor)) usage(`--anchor is one of ${ANCHORS.join(', ')}`);
  const anchors = o.anchor ? [o.anchor] : o.anchors ? ANCHORS : [];
  if (contexts && anchors.length) usage('--anchors runs one prompt length: not with --contexts');
  if (o.breakdown && !sweep) usage('--breakdown goes with --contexts (the plain bench always prints its breakdown)');
  if (!sweep && (cache.kv.length > 1 || cache.attention.length > 1 || cache.kvHot.length > 1)) {
    usage('lists of --kv, --attention or --kv-hot go with --contexts; without it, give one value each');
  }
  if (o['stage-ahead'] !== undefined && !['on', 'off'].includes(o['stage-ahead'])) usage(`--stage-ahead is on or off, got ${o['stage-ahead']}`);
  return {
    stageAhead: o['stage-ahead'] === undefined ? undefined : o['stage-ahead'] === 'on', memoryPerInstance: o['memory-per-instance'],
    model: positional[0], synthetic: o.synthetic, type: o.type, threads: o.threads, memoryBudget: o['memory-budget'], weights: o.weights, promptTokens: o['prompt-tokens'], gen: o.gen,
    // Long contexts prefill for minutes under full attention, so the sweep defaults to one timed run per row.
    repeat: o.repeat ?? (sweep ? 1 : 3), batch: o.batch, simd: o.simd, anchors, json: o.json, contexts,
    breakdown: o.breakdown, ...cache,
  };
}

/** The loadModel options of one KV type, attention mode and hot budget ('all': every page hot). */
function cacheOptions(cfg, kv, attention, hot) {
  return {
    kv: { type: kv, ...(hot === 'all' ? {} : { hotBytes: hot, warmBytes: cfg.kvWarm }) },
    attention: { mode: attention },
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
 * Exactly n ids (BOS included, where the model adds one) and a text that tokenizes to exactly them, so that text-only
 * engines see the same ids. Synthetic vocabularies have one token per word; real ones are filled word by word, then
 * with one-token words. A vocabulary that cannot spell a text of exactly n tokens (single characters, say, as in the
 * conformance kit's synthetic models) gets token ids directly, and no text: `text` is undefined.
 */
function buildPrompt(model, n, syntheticPrompt) {
  let text;
  if (syntheticPrompt) {
    text = syntheticPrompt(n - (model.tokenize('').length));
  } else {
    const words = PASSAGE.split(' ');
    const count = (t) => model.tokenize(t).length;
    text = '';
    // bounded: a vocabulary that spells nothing must not loop forever
    for (let i = 0; i < 64 * n; i++) {
      const next = text ? `${text} ${words[i % words.length]}` : words[0];
      if (count(next) > n) break;
      text = next;
    }
    for (const filler of ['a', 'the', 'of', 'and', 'to', 'in', 'is', 'I']) {
      while (count(text) < n && count(`${text} ${filler}`) === count(text) + 1) text = `${text} ${filler}`;
    }
  }
  const ids = model.tokenize(text);
  if (ids.length === n) return { text, ids };
  const direct = idPrompt(model, n);
  console.error(`bench: this vocabulary cannot spell a prompt of exactly ${n} tokens (the closest text has ${ids.length}): ` +
    `using ${n} token ids directly, ${direct.what}`);
  return { text: undefined, ids: direct.ids };
}

/** llama.cpp's token attribute bits (src/tokenizer/tokenizer.ts TokenAttr). */
const ATTR = { unknown: 1, unused: 2, normal: 4, control: 8, userDefined: 16, byte: 32 };

/**
 * n prompt ids without a text: BOS (where the model adds one), then ids drawn by a fixed pseudo-random sequence
 * (mulberry32, seed 1) from the vocabulary's normal tokens (byte tokens if it has none), never a control, unknown,
 * unused or end-of-generation token. Speed depends on how many positions there are, not on which tokens.
 */
function idPrompt(model, n) {
  const tok = model.text.tokenizer;
  const { vocabSize, bos, addBos } = model.info.tokenizer;
  const pick = (want) => {
    const ids = [];
    for (let id = 0; id < vocabSize; id++) {
      const a = tok.attributes(id);
      if (a & want && !(a & (ATTR.control | ATTR.unknown | ATTR.unused)) && !tok.isEog(id) && id !== bos) ids.push(id);
    }
    return ids;
  };
  let pool = pick(ATTR.normal);
  let kind = 'normal';
  if (!pool.length) [pool, kind] = [pick(ATTR.byte | ATTR.userDefined), 'byte and user-defined'];
  if (!pool.length) throw new Error('bench: this vocabulary has no token a prompt could use (all are control, unknown, unused or end-of-generation)');
  const ids = addBos ? [bos] : [];
  let a = 1;
  while (ids.length < n) {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    ids.push(pool[((t ^ (t >>> 14)) >>> 0) % pool.length]);
  }
  return { ids, what: `${addBos ? `BOS (${bos}) + ` : ''}${n - (addBos ? 1 : 0)} drawn from its ${pool.length} ${kind} tokens` };
}

// ───────────────────────────── edgellm ─────────────────────────────

/** Where the layers' weights lived and how fast staging moved them (every run, warmup and prefill included). */
function weightsPlan(w) {
  if (!w || w.slotBytes === 0) return null;
  const count = (t) => w.layers.filter((x) => x === t).length;
  const layers = ['resident', 'warm', 'cold'].filter((t) => count(t)).map((t) => `${count(t)} ${t}`).join(', ');
  // stage_ms: what the forward pass waited for staging (copies, reads, or a copy ahead still running)
  return {
    layers, slot_mb: round1(mb(w.slotBytes)), staged_gb: round1(w.stagedBytes / 1e9), staged_ahead: w.stagedAhead, stage_ms: Math.round(w.stageMs),
    stage_gb_per_s: round1(w.stagedBytes / 1e6 / w.stageMs),
  };
}

async function benchEdgellm(cfg, modelPath, syntheticPrompt) {
  if (!existsSync(DIST)) {
    console.error(`bench: ${path.relative(process.cwd(), DIST)} is missing: run \`npm run build\` first`);
    process.exit(1);
  }
  const { loadModel } = await import(pathToFileURL(DIST).href);
  // The KV cache is planned for exactly what a run uses, so the memory reported is what this workload needs.
  const options = { contextLength: cfg.promptTokens + cfg.gen, batchSize: cfg.batch, simd: cfg.simd, threads: cfg.threads, memoryBudget: cfg.memoryBudget, weights: cfg.weights, stageAhead: cfg.stageAhead, memoryPerInstance: cfg.memoryPerInstance, ...cacheOptions(cfg, cfg.kv[0], cfg.attention[0], cfg.kvHot[0]) };
  const t0 = performance.now();
  let model = await loadModel(modelPath, options);
  const loadMs = performance.now() - t0;
  const prompt = buildPrompt(model, cfg.promptTokens, syntheticPrompt);

  const run = async (m, maxTokens, afterReset = () => {}) => {
    // Every run prefills the whole prompt: after a run with the same prompt the model would reuse the prompt's KV
    // (prefix caching). A one-id prompt that shares no prefix empties the cache first (before this, the breakdown's
    // prefill-only run reused the warmup's KV: 4× fast prefill, and a third of decode read as 'js/other').
    for await (const _ of m.generate([prompt.ids[0] === 1 ? 2 : 1], { maxTokens: 0 }));
    afterReset();
    let stats;
    const ids = [];
    // Greedy decoding may hit EOS before --gen tokens; the stats then say how many were decoded and why it stopped.
    for await (const _ of m.generate(prompt.ids, { maxTokens, temperature: 0, onStats: (s) => (stats = s), onToken: (id) => ids.length < 8 && ids.push(id) }));
    return { ...stats, firstIds: ids };
  };
  const runs = [];
  for (let r = 0; r <= cfg.repeat; r++) {
    const s = await run(model, cfg.gen);
    runs.push({
      warmup: r === 0, prompt_tokens: s.promptTokens, generated_tokens: s.generatedTokens, stop_reason: s.stopReason,
      prefill_ms: s.prefillMs, decode_ms: s.decodeMs, prefill_tps: s.prefillTokensPerSecond, decode_tps: s.decodeTokensPerSecond,
      first_ids: s.firstIds,
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
  const untimed = () => profiled.profile(); // what the reset ran is not part of a run
  await run(profiled, cfg.gen); // warm up the profiled instance too
  const p = await run(profiled, 0, untimed);
  const prefillOps = profiled.profile();
  const f = await run(profiled, cfg.gen, untimed);
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
    threads: info.threads,
    threading: info.threading,
    memory_budget: cfg.memoryBudget ?? null,
    weights: cfg.weights ?? null,
    weights_plan: weightsPlan(memory.weights),
    prefill_tps: round1(median(timed.map((r) => r.prefill_tps))),
    decode_tps: round1(median(timed.map((r) => r.decode_tps))),
    rss_mb: round1(rssMb),
    wasm_memory_mb: round1(mb(memory.totalBytes)),
    instances: memory.instances.length,
    load_ms: Math.round(loadMs),
    min_generated_tokens: Math.min(...timed.map((r) => r.generated_tokens)),
    context: info.context,
    batch: info.batchSize,
    kv: info.kvType,
    attention: info.attention,
    node: process.version,
    describe: describeModel(info),
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

// ───────────────────────────── decode speed by context (--contexts) ─────────────────────────────

/**
 * One row per KV type × attention mode × hot budget × context C: a model planned for exactly C positions (so the KV
 * numbers are what that context needs), one short untimed warmup (the kernels' tier-up is shared by every load, so a
 * full-length warmup would only double the quadratic prefill of full attention), then --repeat timed runs that
 * prefill C − gen ids and decode gen tokens. Decode tok/s is the median of the library's own GenerationStats; the
 * attention counters and pages staged are taken at the first generated token and at the end, so they are decode's
 * alone. The KV tier numbers are memory().kv at the end of the last run, i.e. with C positions cached.
 */
async function benchContexts(cfg, modelPath, text) {
  if (!existsSync(DIST)) {
    console.error(`bench: ${path.relative(process.cwd(), DIST)} is missing: run \`npm run build\` first`);
    process.exit(1);
  }
  const { loadModel, EdgeLLMError } = await import(pathToFileURL(DIST).href);
  const configs = [];
  for (const hot of cfg.kvHot) for (const kv of cfg.kv) for (const attention of cfg.attention) for (const context of cfg.contexts) {
    configs.push({ hot, kv, attention, context });
  }
  const rows = [];
  let info;
  const started = performance.now();
  for (const [i, c] of configs.entries()) {
    const label = `[${i + 1}/${configs.length}] KV ${c.kv}, ${c.attention}, hot ${c.hot}, context ${c.context}`;
    const options = { contextLength: c.context, batchSize: cfg.batch, simd: cfg.simd, threads: cfg.threads, memoryBudget: cfg.memoryBudget, weights: cfg.weights, stageAhead: cfg.stageAhead, memoryPerInstance: cfg.memoryPerInstance, ...cacheOptions(cfg, c.kv, c.attention, c.hot) };
    let model;
    try {
      model = await loadModel(modelPath, options);
    } catch (err) {
      // A hot budget too small for this context's page summaries and tails: say so in the table and go on.
      if (!(err instanceof EdgeLLMError && err.code === 'BUDGET')) throw err;
      console.error(`bench: ${label}: ${err.message}`);
      rows.push({ ...c, error: err.message });
      continue;
    }
    info = model.info;
    const ids = contextIds(model, c.context - cfg.gen, text);
    console.error(`bench: ${label}: prefill ${ids.length} + decode ${cfg.gen} tokens, ${cfg.repeat} timed run(s)...`);
    const t0 = performance.now();
    await decodeAt(model, ids.slice(0, Math.min(ids.length, 128)), 16);
    const runs = [];
    for (let r = 0; r < cfg.repeat; r++) runs.push(await decodeAt(model, ids, cfg.gen));
    const memory = model.memory();
    model.dispose();
    const last = runs[runs.length - 1];
    const kv = memory.kv;
    const row = {
      ...c,
      prompt_tokens: ids.length,
      generated_tokens: Math.min(...runs.map((r) => r.stats.generatedTokens)),
      prefill_tps: round1(median(runs.map((r) => r.stats.prefillTokensPerSecond))),
      decode_tps: round1(median(runs.map((r) => r.stats.decodeTokensPerSecond))),
      tokens_read: round1(last.attention.meanTokensRead),
      positions: round1(last.attention.meanPositions),
      pages_scored: round1(last.attention.queries ? last.attention.pagesScored / last.attention.queries : 0),
      pages_staged_per_token: round1(last.stagedPerToken),
      kv_bytes_per_token: kv.bytesPerToken,
      kv_hot_bytes: kv.hotBytes,
      hot_page_slots: kv.hotPageSlots,
      hot_pages_in_use: kv.hotPagesInUse,
      staging_slots: kv.stagingSlots,
      warm_bytes: kv.warmBytes,
      warm_bytes_allocated: kv.warmBytesAllocated,
      warm_pages_in_use: kv.warmPagesInUse,
      wasm_memory_mb: round1(mb(memory.totalBytes)),
    instances: memory.instances.length,
    };
    if (cfg.breakdown) {
      // Its own load: profiling adds about 1 µs per kernel call, which the timed runs must not pay.
      const profiled = await loadModel(modelPath, { ...options, profile: true });
      await decodeAt(profiled, ids.slice(0, Math.min(ids.length, 128)), 16);
      const r = await decodeAt(profiled, ids, cfg.gen, () => profiled.profile());
      const b = perToken(profiled.profile(), r.stats.decodeMs, r.stats.sampleMs, r.steps);
      profiled.dispose();
      row.decode_ms = Object.fromEntries(Object.entries(b).map(([k, v]) => [k, Number(v.toFixed(3))]));
    }
    rows.push(row);
    const note = row.generated_tokens < cfg.gen ? ` (only ${row.generated_tokens} tokens: ${last.stats.stopReason})` : '';
    console.error(`bench: ${label}: decode ${row.decode_tps} tok/s, prefill ${row.prefill_tps} tok/s${note}; ` +
      `${((performance.now() - t0) / 1000).toFixed(1)} s, ${((performance.now() - started) / 1000).toFixed(0)} s so far`);
  }
  // Decode speed relative to the same configuration at the shortest context: how much longer contexts cost.
  for (const row of rows) {
    const first = rows.find((r) => r.kv === row.kv && r.attention === row.attention && r.hot === row.hot && !r.error);
    if (first && !row.error) row.decode_vs_shortest = Number((row.decode_tps / first.decode_tps).toFixed(3));
  }
  return {
    build: info?.build, threading: info?.threading, node: process.version, rss_mb: round1(mb(process.resourceUsage().maxRSS * 1024)),
    describe: info && describeModel(info), seconds: Math.round((performance.now() - started) / 1000), rows,
  };
}

/**
 * n prompt ids: the model's BOS (if it adds one), then `text`'s ids, repeated as needed. Decode speed depends on how
 * many positions there are, not on which tokens; tokenizing once and repeating the ids keeps a 16K prompt instant.
 */
function contextIds(model, n, text) {
  const ids = model.tokenize('');
  let body = model.tokenize(text, { bos: false });
  if (!body.length) body = idPrompt(model, 4097).ids.slice(model.info.tokenizer.addBos ? 1 : 0);
  while (ids.length < n) ids.push(body[(ids.length - 1) % body.length]);
  return ids.slice(0, n);
}

/**
 * One generation with the counters split at the first generated token (after prefill, before the first decode
 * forward pass): returns decode's attention stats and pages staged per decode step. `atDecode` runs there too.
 */
async function decodeAt(model, ids, maxTokens, atDecode) {
  model.attentionStats(); // drop earlier runs' counters
  let stats, stagedAtDecode;
  const onToken = () => {
    if (stagedAtDecode !== undefined) return;
    model.attentionStats();
    stagedAtDecode = model.memory().kv.pagesStaged;
    atDecode?.();
  };
  for await (const _ of model.generate(ids, { maxTokens, temperature: 0, onToken, onStats: (s) => (stats = s) }));
  const attention = model.attentionStats();
  // decodeTokensPerSecond counts generated − 1 tokens: the last one is sampled but never run through the model
  const steps = Math.max(1, stats.generatedTokens - 1);
  return { stats, attention, steps, stagedPerToken: (model.memory().kv.pagesStaged - (stagedAtDecode ?? 0)) / steps };
}

function describeModel(info) {
  const local = info.window.filter((w) => w > 0);
  const window = local.length ? `, window ${Math.max(...local)} on ${local.length} of ${info.nLayers} layers` : '';
  return `${info.name || info.architecture} (${info.architecture}): ${info.nLayers} layers, dim ${info.dim}, ` +
    `${info.nHeads}/${info.nKvHeads} heads of ${info.headDim}, ffn ${info.ffn}, vocab ${info.vocab}${window}; ` +
    Object.entries(info.tensorTypes).map(([t, n]) => `${n} ${t}`).join(' + ');
}

// ───────────────────────────── report ─────────────────────────────

function printEdgellm(cfg, modelPath, e) {
  const f = (x) => x.toFixed(1).padStart(9);
  const lines = [
    `edgellm bench: ${path.basename(modelPath)} (${e.describe})`,
    `build ${e.build}, node ${e.node}${process.execArgv.includes(RELAXED_FLAG) ? ` ${RELAXED_FLAG}` : ''}, threads ${e.threading}; ` +
      `load ${e.load_ms} ms; wasm memory ${e.wasm_memory_mb} MB (context ${e.context}, batch ${e.batch}, KV ${e.kv}, ${e.attention} attention)`,
    `prompt ${cfg.promptTokens} tokens${e.prompt.text === undefined ? ' (token ids: the vocabulary cannot spell such a text)' : ''}, decode ${cfg.gen} tokens greedily; 1 untimed warmup + ${cfg.repeat} timed runs`,
  ];
  e.runs.forEach((r, i) => {
    const label = r.warmup ? 'warmup' : `run ${i}`;
    const early = r.generated_tokens < cfg.gen ? `  (stopped early: ${r.stop_reason})` : '';
    lines.push(`  ${label.padEnd(7)} prefill ${f(r.prefill_tps)} tok/s   decode ${f(r.decode_tps)} tok/s   ${r.generated_tokens} tokens${early}`);
  });
  lines.push(`  median  prefill ${f(e.prefill_tps)} tok/s   decode ${f(e.decode_tps)} tok/s`);
  lines.push(`peak RSS ${e.rss_mb} MB`);
  if (e.weights_plan) {
    const w = e.weights_plan;
    const ahead = w.staged_ahead ? `, ${w.staged_ahead} layers copied ahead by the staging worker; the forward pass waited ${w.stage_ms} ms` : ` at ${w.stage_gb_per_s} GB/s`;
    lines.push(`weights: ${w.layers}; slots ${w.slot_mb} MB; staged ${w.staged_gb} GB in all${ahead}`);
  }
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

function printContexts(cfg, modelPath, result) {
  const { rows } = result;
  const fix = (x, d = 1) => (x === undefined ? '—' : x.toFixed(d));
  const columns = [
    ['KV', (r) => r.kv], ['attention', (r) => r.attention], ['hot', (r) => r.hot], ['context', (r) => String(r.context)],
    ['prefill tok/s', (r) => fix(r.prefill_tps)], ['decode tok/s', (r) => fix(r.decode_tps)],
    ['÷ shortest', (r) => fix(r.decode_vs_shortest, 2)], ['read/query', (r) => fix(r.tokens_read, 0)],
    ['scored/query', (r) => fix(r.pages_scored, 0)], ['KV B/token', (r) => fix(r.kv_bytes_per_token, 0)],
    ['KV hot MB', (r) => fix(mb(r.kv_hot_bytes), 2)], ['hot pages', (r) => `${r.hot_pages_in_use}/${r.hot_page_slots}`],
    ['warm MB', (r) => fix(mb(r.warm_bytes_allocated), 2)], ['warm pages', (r) => String(r.warm_pages_in_use)],
    ['staged/token', (r) => fix(r.pages_staged_per_token, 0)],
  ];
  if (cfg.breakdown) {
    for (const k of ['attention', 'matmul', 'js/other', 'total']) columns.push([`${k} ms`, (r) => fix(r.decode_ms?.[k], 3)]);
  }
  const ok = rows.filter((r) => !r.error);
  const cells = ok.map((r) => columns.map(([, f]) => f(r)));
  const widths = columns.map(([h], i) => Math.max(h.length, ...cells.map((c) => c[i].length)));
  const line = (c) => `  ${c.map((x, i) => (i < 3 ? x.padEnd(widths[i]) : x.padStart(widths[i]))).join('  ')}`;
  const lines = [
    `edgellm bench by context: ${path.basename(modelPath)} (${result.describe ?? 'no configuration loaded'})`,
    `build ${result.build ?? '—'}, node ${result.node}${process.execArgv.includes(RELAXED_FLAG) ? ` ${RELAXED_FLAG}` : ''}, threads ${result.threading ?? cfg.threads}; ` +
      `each row: a context of exactly C planned, prefill C − ${cfg.gen} ids, decode ${cfg.gen} tokens greedily; ` +
      `1 short untimed warmup + ${cfg.repeat} timed run(s), medians; ${result.seconds} s in all, peak RSS ${result.rss_mb} MB`,
    'read/query and scored/query: KV tokens read and page summaries scored per (decode token, layer, KV head); ' +
      'hot/warm: KV pages in wasm memory / in host memory, with C positions cached; staged/token: warm pages copied in per decode token' +
      (cfg.breakdown ? '; ms: decode time per token by op (a separate run with every kernel call timed)' : ''),
    '',
    line(columns.map(([h]) => h)),
    ...cells.map(line),
  ];
  for (const r of rows.filter((x) => x.error)) lines.push(`  KV ${r.kv}, ${r.attention}, hot ${r.hot}, context ${r.context}: ${r.error}`);
  if (ok.some((r) => r.generated_tokens < cfg.gen)) lines.push('note: greedy decoding reached EOS in some rows; their decode speed is over the tokens actually generated');
  console.log(lines.join('\n'));
}

function printAnchors(e, anchors) {
  const rows = [{ name: `edgellm (${e.build})`, r: e }, ...anchors.map((a) => ({ name: `${a.engine} (${a.short})`, r: a }))];
  const cell = (x, w = 10) => (x === undefined || x === null ? '—' : typeof x === 'number' ? x.toFixed(1) : String(x)).padStart(w);
  const lines = ['', `side by side (${e.threads} thread${e.threads === 1 ? '' : 's'}, same prompt ids):`, `  ${'engine'.padEnd(26)}${cell('prefill', 10)}${cell('decode', 10)}${cell('RSS MB', 10)}   edgellm ÷ engine (prefill, decode)`];
  for (const { name, r } of rows) {
    const ratio = r === e || r.error ? '' : `${(e.prefill_tps / r.prefill_tps).toFixed(2)}×, ${(e.decode_tps / r.decode_tps).toFixed(2)}×`;
    if (r.error) lines.push(`  ${name.padEnd(26)}${r.skipped ? '' : 'failed: '}${r.error}`);
    else lines.push(`  ${name.padEnd(26)}${cell(r.prefill_tps)}${cell(r.decode_tps)}${cell(r.rss_mb)}   ${ratio}`);
  }
  // Greedy on the same ids: the first generated tokens agree (a near-tie in the logits may part them later).
  const mine = e.runs?.[0]?.first_ids;
  for (const a of anchors) {
    const theirs = a.runs?.[0]?.first_ids;
    if (!mine || !theirs) continue;
    const at = mine.findIndex((id, i) => id !== theirs[i]);
    lines.push(`  first ${mine.length} greedy ids vs ${a.engine}: ${at < 0 ? 'the same' : `differ from index ${at}`} (edgellm [${mine}], ${a.engine} [${theirs}])`);
  }
  console.log(lines.join('\n'));
}

// ───────────────────────────── main ─────────────────────────────

// The side benches: tokenizer speed against llama.cpp's, and what a chat session's KV reuse saves.
const SIDE = { '--tokenizer': 'tokenizer.mjs', '--chat': 'chat.mjs' };
if (SIDE[process.argv[2]]) {
  const r = spawnSync(process.execPath, [...process.execArgv, path.join(ROOT, 'bench', SIDE[process.argv[2]]), ...process.argv.slice(3)], { stdio: 'inherit' });
  process.exit(r.status ?? 1);
}

const cfg = parseArgs(process.argv.slice(2));
relaunchForRelaxedSimd(cfg);

let modelPath = cfg.model;
let syntheticPrompt;
let contextText = PASSAGE;
if (cfg.synthetic) {
  const synthetic = await import('./synthetic.mjs');
  const shapes = { ...synthetic.SHAPES, ...synthetic.OTHER_SHAPES };
  if (!shapes[cfg.synthetic]) usage(`unknown --synthetic ${cfg.synthetic}; known: ${Object.keys(shapes).join(', ')}`);
  if (!synthetic.ALL_TYPES.includes(cfg.type)) usage(`--type must be one of ${synthetic.ALL_TYPES.join(', ')}`);
  modelPath = await synthetic.syntheticModel(cfg.synthetic, cfg.type);
  syntheticPrompt = synthetic.syntheticPrompt;
  contextText = synthetic.SYNTHETIC_TEXT;
} else if (!existsSync(modelPath)) {
  console.error(`bench: no such model file: ${modelPath}`);
  process.exit(1);
}

if (cfg.contexts) {
  const result = await benchContexts(cfg, modelPath, contextText);
  printContexts(cfg, modelPath, result);
  if (cfg.json) {
    console.log(JSON.stringify({
      model: path.basename(modelPath), describe: result.describe, build: result.build, node: result.node, gen_tokens: cfg.gen,
      repeat: cfg.repeat, seconds: result.seconds, rss_mb: result.rss_mb, rows: result.rows,
    }));
  }
  process.exit(0);
}

const e = await benchEdgellm(cfg, modelPath, syntheticPrompt);
printEdgellm(cfg, modelPath, e);

const anchors = [];
if (cfg.anchors.length && e.prompt.text === undefined) {
  // Both anchors are handed a text that their own tokenizer must turn into exactly the prompt ids: with ids alone
  // there is none. llama.cpp (node-llama-cpp) evaluates ids, so its child could take them without the text check;
  // wllama 3.x completes text only.
  const why = {
    'llama.cpp': 'skipped: the prompt is token ids with no text, and bench/anchors/llamacpp-child.mjs checks the ids against llama.cpp\'s tokenization of a text',
    wllama: 'skipped: the prompt is token ids with no text, and wllama 3.x completions take text only',
  };
  for (const [engine, short] of [['llama.cpp', 'native'], ['wllama', 'wasm, Chromium']].filter(([engine]) => cfg.anchors.includes(engine))) {
    console.error(`bench: ${engine} ${why[engine]}`);
    anchors.push({ engine, short, skipped: true, error: why[engine] });
  }
  printAnchors(e, anchors);
} else if (cfg.anchors.length) {
  // the anchors run as many threads as edgellm did
  const job = { model: modelPath, promptText: e.prompt.text, promptIds: e.prompt.ids, gen: cfg.gen, repeat: cfg.repeat, threads: e.threads };
  const engines = [
    ['llama.cpp', 'native', async () => (await import('./anchors/llamacpp.mjs')).runLlamaCpp(job)],
    ['wllama', 'wasm, Chromium', async () => (await import('./anchors/wllama.mjs')).runWllama(job)],
  ].filter(([engine]) => cfg.anchors.includes(engine));
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
    prefill_tps: e.prefill_tps, decode_tps: e.decode_tps, rss_mb: e.rss_mb, build: e.build, threads: e.threads,
    ...rest, model: path.basename(modelPath), prompt_tokens: cfg.promptTokens, prompt_kind: prompt.text === undefined ? 'ids' : 'text', gen_tokens: cfg.gen, repeat: cfg.repeat,
    anchors: cfg.anchors.length ? Object.fromEntries(anchors.map((a) => [a.engine, strip(a)])) : undefined,
  }));
}
