// Runs inside headless Chromium (see ../wllama.mjs, which serves this page and drives it). Exposes window.wllamaBench;
// every method returns plain JSON so Playwright can hand it back to Node.
//
// wllama 3.x runs llama-server's server-context inside a worker; a completion is polled one generation step at a time
// through the worker. The timings we report are llama.cpp's own (`timings` in the result): prompt_ms is from the slot
// starting on the prompt to the first token sampled from its logits; predicted_ms is from there to the last token, so it
// spans predicted_n - 1 single-token decodes, each including wllama's round trip to the worker.
import { Wllama } from '/wllama/esm/index.js';

const nativeLog = []; // wllama and llama.cpp log lines, kept for error reports and the thread check
const keep = (level) => (...args) => {
  const line = args.map((a) => (typeof a === 'string' ? a : JSON.stringify(a))).join(' ');
  nativeLog.push(line);
  if (nativeLog.length > 2000) nativeLog.splice(0, 1000);
  // Warnings and errors go to the console, which Node forwards to its log; the rest is noise (tensor lists etc.).
  if (level === 'warn' || level === 'error') console[level](line);
};
const logger = { debug: keep('debug'), log: keep('log'), warn: keep('warn'), error: keep('error') };

let wllama = null;

window.wllamaBench = {
  /** Downloads the model into wllama's OPFS cache (its normal path, so the weights are a disk-backed File, not a big
   * in-memory Blob) and loads it for CPU inference on `threads` threads. */
  async load({ modelUrl, nCtx, nBatch, threads }) {
    if (!crossOriginIsolated) throw new Error('page is not crossOriginIsolated: COOP/COEP headers missing');
    wllama = new Wllama({ default: '/wllama/esm/wasm/wllama.wasm' }, { logger, parallelDownloads: 1 });
    const t0 = performance.now();
    await wllama.loadModelFromUrl(modelUrl, {
      n_ctx: nCtx,
      // The whole prompt in one batch/ubatch, as edgellm's bench would with --batch >= prompt length.
      n_batch: nBatch,
      n_ubatch: nBatch,
      n_threads: threads, // 1: wllama starts the wasm with no pthread pool
      n_gpu_layers: 0, // CPU only; also keeps wllama from probing WebGPU
      n_parallel: 1, // one server slot: one sequence, as in edgellm
      useCache: false, // always fetch from our server (the browser profile is fresh anyway)
    });
    const loadMs = performance.now() - t0;
    const info = wllama.getLoadedContextInfo();
    return {
      loadMs,
      multithread: wllama.isMultithread(),
      threads: wllama.getNumThreads(),
      libllama: Wllama.getLibllamaVersion(),
      nCtx: info.n_ctx,
      nBatch: info.n_batch,
      nUbatch: info.n_ubatch,
      nVocab: info.n_vocab,
      addBos: info.add_bos_token,
      bos: info.token_bos,
      threadLog: nativeLog.filter((l) => /Multithread enabled/.test(l)).pop(), // wllama's own word on the pthread pool
      crossOriginIsolated,
      jspi: !!WebAssembly.Suspending,
    };
  },

  /**
   * wllama 3.x has no tokenize() and its completions take text only; embeddings take ids or text. So a separate
   * instance loaded for embeddings (pooling "last": the final hidden state, which depends on every token) embeds the
   * text and the ids: the same vector means the same tokens. A completion of the text then runs on the ids' KV cache
   * (embedding tasks leave it there), and llama-server reports the reused common prefix as timings.cache_n: that
   * locates the first mismatch and checks the completion path too (its count and all but the last token, which the
   * server always re-evaluates). Costs a load and two prefills, so the bench instance stays untouched by it.
   */
  async checkTokens({ modelUrl, promptText, promptIds }) {
    const n = promptIds.length;
    const w = new Wllama({ default: '/wllama/esm/wasm/wllama.wasm' }, { logger, parallelDownloads: 1 });
    await w.loadModelFromUrl(modelUrl, {
      n_ctx: n + 8,
      n_batch: n + 8, // an embedding must fit one ubatch
      n_ubatch: n + 8,
      n_threads: navigator.hardwareConcurrency || 1, // untimed: all cores
      n_gpu_layers: 0,
      n_parallel: 1,
      embeddings: true,
      pooling_type: 'last',
      useCache: false,
    });
    try {
      const fromText = await w.createEmbedding({ input: promptText });
      const fromIds = await w.createEmbedding({ input: promptIds });
      const a = fromText.data[0].embedding, b = fromIds.data[0].embedding;
      let maxDiff = 0;
      for (let i = 0; i < a.length; i++) maxDiff = Math.max(maxDiff, Math.abs(a[i] - b[i]));
      const c = await w.createCompletion({ prompt: promptText, max_tokens: 1, temperature: 0, cache_prompt: true });
      return {
        embedTextTokens: fromText.usage.prompt_tokens,
        embedIdsTokens: fromIds.usage.prompt_tokens,
        maxDiff, // of two L2-normalized vectors; 0 when the token sequences are the same
        completionTextTokens: c.usage.prompt_tokens,
        commonPrefix: c.timings.cache_n, // capped at completionTextTokens - 1
        addBos: w.getLoadedContextInfo().add_bos_token,
      };
    } finally {
      await w.exit();
    }
  },

  /**
   * One run: the prompt text (completions take text only; checkTokens proved it is promptIds) from an empty KV cache
   * (cache_prompt: false), then `gen` greedy tokens with every end-of-generation token banned (ignore_eos).
   */
  async run({ promptText, gen }) {
    const t0 = performance.now();
    const r = await wllama.createCompletion({
      prompt: promptText,
      max_tokens: gen,
      temperature: 0,
      ignore_eos: true,
      cache_prompt: false,
    });
    const wallMs = performance.now() - t0;
    return { timings: r.timings, usage: r.usage, finish: r.choices[0].finish_reason, wallMs };
  },

  nativeLogTail: (n = 40) => nativeLog.slice(-n),
};
window.wllamaBenchReady = true;
