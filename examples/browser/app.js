// The browser example: open a GGUF (file picker or URL) and stream generated text. Plain ES module, no build step.
//
// In an app, `import { loadModel } from 'edgellm'` resolves to this same browser build (the package's "browser" and
// default export condition); here the page imports it from the repository's dist/ (run `npm run build` first).
// dist/browser.js fetches its kernels (edgellm-relaxed.wasm or edgellm-simd.wasm) from beside itself.
//
// Mobile WebViews: edgellm runs single-threaded on the page's thread (it yields to the event loop between tokens), so it
// needs no SharedArrayBuffer, no worker threads and no cross-origin isolation (COOP/COEP headers): any static host works.
//
// Query parameters: ?simd=auto|baseline|relaxed (the kernel build), ?ctx=N (context tokens), ?model=URL (load at once).
//
// Test hooks (read by test/browser.test.ts; harmless elsewhere):
//   document.body.dataset.state: 'idle' | 'loading' | 'ready' | 'generating' | 'error'
//   window.edgellmLoaded  = { name, build, memoryBytes, context } after each successful load
//   window.edgellmLastRun = { build, ids, text, memoryBytes, stats, stopped } after each generation (ids from onToken,
//                           text = the streamed chunks joined, stats from onStats; stopped when Stop ended it)
//   window.edgellmError   = 'CODE: message' of the last error
import { loadModel, supportedBuilds, EdgeLLMError } from '../../dist/browser.js';

/** the test hooks described above live on window */
const hooks = /** @type {Record<string, unknown>} */ (/** @type {unknown} */ (window));
const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));
const el = {
  file: /** @type {HTMLInputElement} */ ($('file')),
  url: /** @type {HTMLInputElement} */ ($('url')),
  load: /** @type {HTMLButtonElement} */ ($('load')),
  context: /** @type {HTMLInputElement} */ ($('context')),
  simd: /** @type {HTMLSelectElement} */ ($('simd')),
  progressBox: $('progress-box'),
  progress: /** @type {HTMLProgressElement} */ ($('progress')),
  progressText: $('progress-text'),
  prompt: /** @type {HTMLTextAreaElement} */ ($('prompt')),
  maxTokens: /** @type {HTMLInputElement} */ ($('max-tokens')),
  temperature: /** @type {HTMLInputElement} */ ($('temperature')),
  generate: /** @type {HTMLButtonElement} */ ($('generate')),
  stop: /** @type {HTMLButtonElement} */ ($('stop')),
  output: $('output'),
  error: $('error'),
  status: $('status'),
};

/** @type {import('../../dist/browser.js').Model | undefined} */
let model;
let modelName = '';
/** @type {AbortController | undefined} the running load or generation, which Stop aborts */
let running;

const params = new URLSearchParams(location.search);
if (['auto', 'baseline', 'relaxed'].includes(params.get('simd') ?? '')) el.simd.value = /** @type {string} */ (params.get('simd'));
// A modest default context: the KV cache is the part of memory that grows with it (layers × 2 × kv dims × 4 bytes per
// token in f32), and a phone's browser or WebView may refuse large wasm memories. 512 tokens is plenty for a demo
// and keeps the plan close to the weights' size; raise it under Options if you need longer texts.
if (params.get('ctx')) el.context.value = /** @type {string} */ (params.get('ctx'));

const mb = (bytes) => `${(bytes / 1024 / 1024).toFixed(bytes < 10 * 1024 * 1024 ? 2 : 1)} MB`;
const environment = () =>
  `crossOriginIsolated ${String(globalThis.crossOriginIsolated ?? false)} · SharedArrayBuffer ${typeof SharedArrayBuffer === 'undefined' ? 'absent' : 'present'}`;

/** `code: message` for EdgeLLMError (every failure edgellm reports), `name: message` for anything else. */
function describe(err) {
  if (err instanceof EdgeLLMError || (err && typeof err.code === 'string')) return `${err.code}: ${err.message}`;
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err);
}

function setState(state) {
  document.body.dataset.state = state;
  const busy = state === 'loading' || state === 'generating';
  el.file.disabled = el.url.disabled = el.load.disabled = el.context.disabled = el.simd.disabled = busy;
  el.generate.disabled = busy || !model;
  el.stop.disabled = !busy;
}

function showError(err) {
  const text = describe(err);
  hooks.edgellmError = text;
  el.error.textContent = text;
  console.warn('edgellm:', err);
}

function modelStatus(extra = '') {
  if (!model) return `No model loaded. ${environment()}`;
  const i = model.info;
  return [
    `${modelName} (${i.architecture}, ${i.nLayers} layers, dim ${i.dim})`,
    `build ${i.build}`,
    extra,
    `wasm memory ${mb(model.memory().totalBytes)} (context ${i.context})`,
    environment(),
  ].filter(Boolean).join(' · ');
}

async function load(source, name) {
  running?.abort();
  const ctrl = (running = new AbortController());
  // Drop the previous model first, so its wasm memory can be collected before the next one is allocated.
  model?.dispose();
  model = undefined;
  el.error.textContent = '';
  el.output.textContent = '';
  hooks.edgellmLoaded = undefined;
  setState('loading');
  el.progressBox.hidden = false;
  el.progress.removeAttribute('value');
  el.progressText.textContent = `Opening ${name}…`;
  el.status.textContent = `Loading ${name}… ${environment()}`;
  const t0 = performance.now();
  try {
    const context = Number(el.context.value);
    const loaded = await loadModel(source, {
      contextLength: Number.isInteger(context) && context > 0 ? context : 512,
      simd: /** @type {'auto' | 'baseline' | 'relaxed'} */ (el.simd.value),
      signal: ctrl.signal,
      onProgress: ({ phase, loaded, total }) => {
        if (total) el.progress.value = loaded / total;
        else el.progress.removeAttribute('value');
        const what = phase === 'download' ? 'Downloading' : 'Loading weights';
        el.progressText.textContent = `${what}: ${mb(loaded)}${total ? ` of ${mb(total)}` : ''}`;
      },
    });
    model = loaded;
    modelName = name;
    hooks.edgellmLoaded = { name, build: loaded.info.build, memoryBytes: loaded.memory().totalBytes, context: loaded.info.context };
    el.progressText.textContent = `Loaded in ${((performance.now() - t0) / 1000).toFixed(2)} s`;
    el.progress.value = 1;
    el.status.textContent = modelStatus();
    setState('ready');
  } catch (err) {
    el.progressBox.hidden = true;
    if (!ctrl.signal.aborted) showError(err);
    el.status.textContent = ctrl.signal.aborted ? `Loading stopped. ${environment()}` : modelStatus();
    setState(ctrl.signal.aborted ? 'idle' : 'error');
  } finally {
    if (running === ctrl) running = undefined;
  }
}

async function generate() {
  if (!model) return;
  const ctrl = (running = new AbortController());
  el.error.textContent = '';
  const prompt = el.prompt.value;
  const maxTokens = Math.max(1, Math.floor(Number(el.maxTokens.value) || 128));
  const temperature = Math.max(0, Number(el.temperature.value) || 0);
  el.output.textContent = '';
  const promptSpan = document.createElement('span');
  promptSpan.className = 'prompt';
  promptSpan.textContent = prompt;
  const genSpan = document.createElement('span');
  el.output.append(promptSpan, genSpan);
  hooks.edgellmLastRun = undefined;
  setState('generating');

  /** @type {number[]} */
  const ids = [];
  let text = '';
  /** @type {import('../../dist/browser.js').GenerationStats | undefined} */
  let stats;
  let stopped = false;
  const t0 = performance.now();
  try {
    const chunks = model.generate(prompt, {
      maxTokens,
      temperature,
      signal: ctrl.signal,
      onToken: (id) => ids.push(id),
      onStats: (s) => (stats = s),
    });
    for await (const chunk of chunks) {
      text += chunk;
      genSpan.append(chunk);
      const secs = (performance.now() - t0) / 1000;
      el.status.textContent = modelStatus(`${ids.length} tokens, ${(ids.length / secs).toFixed(1)} tok/s`);
    }
  } catch (err) {
    if (ctrl.signal.aborted) stopped = true;
    else showError(err);
  } finally {
    if (running === ctrl) running = undefined;
  }
  const speed = stats
    ? `${stats.generatedTokens} tokens, ${stats.decodeTokensPerSecond.toFixed(1)} tok/s decode, ${stats.prefillTokensPerSecond.toFixed(0)} tok/s prefill (${stats.stopReason})`
    : `${ids.length} tokens${stopped ? ', stopped' : ''}`;
  el.status.textContent = modelStatus(speed);
  hooks.edgellmLastRun = { build: model.info.build, ids, text, memoryBytes: model.memory().totalBytes, stats, stopped };
  setState(el.error.textContent ? 'error' : 'ready');
}

el.file.addEventListener('change', () => {
  const file = el.file.files?.[0];
  // A File is a Blob: edgellm reads it slice by slice (the header, then each tensor), never whole.
  if (file) load(file, file.name);
});
el.load.addEventListener('click', () => {
  const url = el.url.value.trim();
  if (!url) return showError(new EdgeLLMError('BAD_ARGUMENT', 'enter a model URL first'));
  // Relative URLs (e.g. /models/x.gguf) resolve against this page; cross-origin ones need CORS on their server.
  load(url, decodeURIComponent(url.split(/[?#]/)[0].split('/').pop() || url));
});
el.url.addEventListener('keydown', (e) => {
  if (e.key === 'Enter') el.load.click();
});
el.generate.addEventListener('click', generate);
el.stop.addEventListener('click', () => running?.abort());

const builds = supportedBuilds();
el.status.textContent = `No model loaded. Kernels: ${builds.relaxed ? 'relaxed SIMD' : builds.simd ? 'SIMD128' : 'none (WebAssembly SIMD is missing)'} · ${environment()}`;
setState('idle');
if (params.get('model')) {
  el.url.value = /** @type {string} */ (params.get('model'));
  el.load.click();
}
