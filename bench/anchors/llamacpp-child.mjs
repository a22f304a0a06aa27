// The llama.cpp measurement itself, run by llamacpp.mjs in a process of its own so that the peak RSS it reports is
// llama.cpp's (plus a bare Node), not the bench's. Reads one JSON config on stdin, logs to stderr, and prints one JSON
// result line on stdout. See llamacpp.mjs for what is timed.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

const cfg = JSON.parse(await new Promise((resolve, reject) => {
  let s = '';
  process.stdin.setEncoding('utf8');
  process.stdin.on('data', (d) => (s += d));
  process.stdin.on('end', () => resolve(s));
  process.stdin.on('error', reject);
}));
const { dir, model: modelPath, promptText, promptIds, gen, repeat, threads } = cfg;
const log = (m) => process.stderr.write(`${m}\n`);

const require = createRequire(path.join(dir, 'package.json'));
const nlc = await import(require.resolve('node-llama-cpp'));
const { getLlama, LlamaLogLevel } = nlc;
const nlcVersion = JSON.parse(readFileSync(path.join(dir, 'node_modules/node-llama-cpp/package.json'), 'utf8')).version;

// build 'never' + skipDownload: only the prebuilt binary from @node-llama-cpp/linux-x64 may load; a missing or
// incompatible one is an error, never a download or a cmake build. maxThreads caps the whole instance, so nothing in
// node-llama-cpp can widen `threads`.
const llama = await getLlama({
  gpu: false,
  build: 'never',
  usePrebuiltBinaries: true,
  skipDownload: true,
  progressLogs: false,
  maxThreads: threads,
  logLevel: LlamaLogLevel.warn,
  logger: (level, message) => log(`[llama.cpp ${level}] ${message.trimEnd()}`),
});

const model = await llama.loadModel({ modelPath, gpuLayers: 0 });

// The same ids must go into both engines, so llama.cpp's own tokenization of the text has to agree with the ids given.
const bos = model.tokens.shouldPrependBosToken && model.tokens.bos != null ? [model.tokens.bos] : [];
const ids = [...bos, ...model.tokenize(promptText)];
const at = ids.findIndex((id, i) => id !== promptIds[i]);
const mismatch = at >= 0 ? at : ids.length !== promptIds.length ? Math.min(ids.length, promptIds.length) : -1;
if (mismatch >= 0) {
  const piece = (id) => (id === undefined ? '(end)' : `${id} ${JSON.stringify(model.detokenize([id], true))}`);
  throw new Error(
    `llama.cpp tokenizes the prompt text to ${ids.length} ids, the bench gave ${promptIds.length}; first difference at ` +
      `index ${mismatch}: llama.cpp ${piece(ids[mismatch])}, bench ${piece(promptIds[mismatch])} ` +
      `(ids ${mismatch - 3 > 0 ? mismatch - 3 : 0}.. llama.cpp [${ids.slice(Math.max(0, mismatch - 3), mismatch + 4)}] ` +
      `bench [${promptIds.slice(Math.max(0, mismatch - 3), mismatch + 4)}])`,
  );
}

// One batch holds the whole prompt, as edgellm's bench prefills it; the context holds exactly prompt + generated
// (node-llama-cpp may round it up to a multiple of 256, which allocates a little more KV but computes no more).
const context = await model.createContext({
  contextSize: promptIds.length + gen,
  batchSize: promptIds.length,
  threads: { ideal: threads, min: threads },
  sequences: 1,
});
const sequence = context.getSequence();

const runs = [];
for (let r = 0; r <= repeat; r++) {
  await sequence.clearHistory();
  // temperature 0 is greedy argmax; yieldEogToken keeps going through EOS instead of ending the generator.
  const it = sequence.evaluate(promptIds, { temperature: 0, yieldEogToken: true });
  const generated = [];
  const t0 = performance.now();
  generated.push((await it.next()).value);
  const t1 = performance.now();
  while (generated.length < gen) {
    const { value, done } = await it.next();
    if (done) throw new Error(`llama.cpp stopped after ${generated.length} of ${gen} tokens`);
    generated.push(value);
  }
  const t2 = performance.now();
  await it.return();
  runs.push({
    warmup: r === 0,
    prompt_tokens: promptIds.length,
    generated_tokens: generated.length,
    prefill_ms: t1 - t0,
    decode_ms: t2 - t1,
    prefill_tps: promptIds.length / ((t1 - t0) / 1000),
    decode_tps: generated.length > 1 ? (generated.length - 1) / ((t2 - t1) / 1000) : 0,
    first_ids: generated.slice(0, 8),
  });
  log(`llama.cpp ${r === 0 ? 'warmup' : `run ${r}`}: prefill ${runs.at(-1).prefill_tps.toFixed(1)} tok/s, decode ${runs.at(-1).decode_tps.toFixed(1)} tok/s`);
}

const cpuFeatures = (llama.systemInfo.match(/\b[A-Z0-9_]+ = 1/g) ?? []).map((s) => s.split(' ')[0]);
const result = {
  version: `node-llama-cpp ${nlcVersion}, llama.cpp ${llama.llamaCppRelease.release}`,
  build: `${llama.buildType} ${llama.llamaCppRelease.repo}@${llama.llamaCppRelease.release}, gpu ${llama.gpu}, ` +
    `cpu ${cpuFeatures.join(' ')}`,
  threads: context.currentThreads,
  context: context.contextSize,
  batch: context.batchSize,
  flash_attention: context.flashAttention,
  rss_mb: Number((process.resourceUsage().maxRSS / 1024).toFixed(1)),
  runs,
};
await context.dispose();
await model.dispose();
await llama.dispose();
process.stdout.write(`${JSON.stringify(result)}\n`);
