// The browser example: a chat page. Open a GGUF (file picker or URL), then talk to it; one ChatSession keeps the
// model's KV cache between turns, so each turn prefills only its new tokens. Plain ES module, no build step.
//
// In an app, `import { loadModelInWorker } from 'edgellm'` resolves to this same browser build (the package's "browser"
// and default export condition); here the page imports it from the repository's dist/ (run `npm run build` first).
// dist/browser.js starts the model's worker from beside itself (dist/browser-worker.js), which fetches its kernels
// (edgellm-relaxed.wasm or edgellm-simd.wasm, or their -shared twins for threads) from there too.
//
// The model runs in a dedicated worker (loadModelInWorker), so the page stays responsive while it computes. Threads
// ('auto' by default: the cores the browser reports) need SharedArrayBuffer, which a page has only when cross-origin
// isolated (served with COOP/COEP, as serve.mjs does by default). Elsewhere (a plain static host, most mobile
// WebViews: serve.mjs --no-isolation) it runs one thread with the same replies, and the page shows why
// (model.info.threading).
//
// Query parameters: ?simd=auto|baseline|relaxed (the kernel build), ?threads=auto|N, ?ctx=N (context tokens),
// ?model=URL (load at once), ?worker=0 (run the model on the page's own thread with loadModel, single-threaded: a
// page's main thread may not Atomics.wait, so a threaded pool there would spin; the page waits on each token).
//
// Test hooks (read by test/browser.test.ts and examples/browser/screenshot.mjs; harmless elsewhere):
//   document.body.dataset.state: 'idle' | 'loading' | 'ready' | 'generating' | 'error'
//   window.edgellmLoaded = { name, build, memoryBytes, context, chatTemplate, threads, threading, worker } after each
//                          successful load (worker: whether the model runs in a worker)
//   window.edgellmTurns  = [{ user, text, ids, stopped, stats, messages }] one per finished turn of this chat
//                          (text: the reply as streamed; ids from onToken; stats: session.stats, absent when stopped;
//                          messages: session.messages after the turn)
//   window.edgellmError  = 'CODE: message' of the last error
import { loadModel, loadModelInWorker, supportedBuilds, EdgeLLMError } from '../../dist/browser.js';
import { PLAIN_STOP, PLAIN_TEMPLATE } from './chat-format.js';

/** the test hooks described above live on window */
const hooks = /** @type {Record<string, unknown>} */ (/** @type {unknown} */ (window));
const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));
const el = {
  newChat: /** @type {HTMLButtonElement} */ ($('new-chat')),
  setup: /** @type {HTMLDetailsElement} */ ($('setup')),
  modelLabel: $('model-label'),
  file: /** @type {HTMLInputElement} */ ($('file')),
  url: /** @type {HTMLInputElement} */ ($('url')),
  load: /** @type {HTMLButtonElement} */ ($('load')),
  context: /** @type {HTMLInputElement} */ ($('context')),
  simd: /** @type {HTMLSelectElement} */ ($('simd')),
  threads: /** @type {HTMLSelectElement} */ ($('threads')),
  maxTokens: /** @type {HTMLInputElement} */ ($('max-tokens')),
  temperature: /** @type {HTMLInputElement} */ ($('temperature')),
  system: /** @type {HTMLTextAreaElement} */ ($('system')),
  env: $('env'),
  progress: /** @type {HTMLProgressElement} */ ($('progress')),
  chat: $('chat'),
  empty: $('empty'),
  messages: $('messages'),
  error: $('error'),
  composer: /** @type {HTMLFormElement} */ ($('composer')),
  input: /** @type {HTMLTextAreaElement} */ ($('input')),
  send: /** @type {HTMLButtonElement} */ ($('send')),
  stop: /** @type {HTMLButtonElement} */ ($('stop')),
  status: $('status'),
};

/** @typedef {import('../../dist/browser.js').Model | import('../../dist/browser.js').WorkerModel} Model */
/** @typedef {import('../../dist/browser.js').ChatSession} ChatSession */

/** @type {Model | undefined} */
let model;
let modelName = '';
/** The model's memory() as last seen (a worker's model answers asynchronously): see refreshMemory. */
/** @type {Awaited<ReturnType<Model['memory']>> | undefined} */
let memory;
/** @type {ChatSession | undefined} */
let session;
/** How this model's conversations are written: its own template, or the page's transcript (see chat-format.js). */
let format = /** @type {{ template?: string, stop?: string[] }} */ ({});
/** @type {AbortController | undefined} the running load or reply, which Stop (or a new load) aborts */
let running;
/** New chat was pressed while a reply streamed: start it once that reply has stopped. */
let newChatPending = false;
/** The bubbles of the messages the session still holds, oldest first (the system message has none). */
/** @type {HTMLLIElement[]} */
let live = [];

const params = new URLSearchParams(location.search);
if (['auto', 'baseline', 'relaxed'].includes(params.get('simd') ?? '')) el.simd.value = /** @type {string} */ (params.get('simd'));
const threadsParam = params.get('threads');
if (threadsParam && /^(auto|[1-9]\d*)$/.test(threadsParam)) {
  if (![...el.threads.options].some((o) => o.value === threadsParam)) el.threads.add(new Option(threadsParam, threadsParam));
  el.threads.value = threadsParam;
}
const inWorker = params.get('worker') !== '0';
if (!inWorker) {
  el.threads.value = '1';
  el.threads.title = 'the model runs on the page’s thread (?worker=0): one thread';
}
// The KV cache is the part of memory that grows with the context, and a phone's browser or WebView may refuse a large
// wasm memory; 1024 tokens holds a few turns of chat and keeps the plan close to the weights' size for small models.
// Past it the session drops the oldest turns (overflow: 'drop-oldest') rather than failing.
if (params.get('ctx')) el.context.value = /** @type {string} */ (params.get('ctx'));

const mb = (bytes) => `${(bytes / 1024 / 1024).toFixed(bytes < 10 * 1024 * 1024 ? 2 : 1)} MB`;
const rate = (perSecond) => (Number.isFinite(perSecond) ? perSecond.toFixed(perSecond < 100 ? 1 : 0) : '–');
const environment = () =>
  `crossOriginIsolated ${String(globalThis.crossOriginIsolated ?? false)} · SharedArrayBuffer ${typeof SharedArrayBuffer === 'undefined' ? 'absent' : 'present'}`;

/** `code: message` for EdgeLLMError (every failure edgellm reports), `name: message` for anything else. */
function describe(err) {
  if (err instanceof EdgeLLMError || (err && typeof err.code === 'string')) return `${err.code}: ${err.message}`;
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err);
}

function setState(state) {
  document.body.dataset.state = state;
  const loading = state === 'loading';
  const generating = state === 'generating';
  el.file.disabled = el.url.disabled = el.load.disabled = el.context.disabled = el.simd.disabled = loading || generating;
  el.threads.disabled = loading || generating || !inWorker;
  el.newChat.disabled = !session || loading;
  el.input.disabled = !session || loading;
  el.send.disabled = !session || loading || generating;
  // One slot: Send while idle, Stop while a reply streams (and while loading, to cancel the load).
  el.send.hidden = generating || loading;
  el.stop.hidden = !(generating || loading);
}

function showError(err) {
  const text = describe(err);
  hooks.edgellmError = text;
  el.error.textContent = text;
  console.warn('edgellm:', err);
}

/** The status: a few short lines rather than one long one, so that each fits a phone's width. */
function setStatus(...lines) {
  el.status.replaceChildren(
    ...lines.filter(Boolean).map((line) => {
      const span = document.createElement('span');
      span.textContent = line;
      return span;
    }),
  );
}

/** Asks the model for its memory now (a WorkerModel answers asynchronously; a Model at once). */
async function refreshMemory() {
  const asked = model;
  try {
    const m = await asked?.memory();
    if (asked === model) memory = m;
  } catch {
    // disposed meanwhile (a new load)
  }
}

/** Memory as last seen: the wasm memory planned at load (it does not grow), and the KV cache's pages in use. */
function memoryLine() {
  if (!model || !memory) return '';
  const kvBytes = memory.kv.hotPagesInUse * memory.kv.pageBytes;
  return `wasm ${mb(memory.totalBytes)} · KV ${mb(kvBytes)} of ${mb(memory.kv.hotBytes)} in use`;
}

const threadsText = (n) => `${n} thread${n === 1 ? '' : 's'}`;

// ---- messages -------------------------------------------------------------------------------------------------------

const nearBottom = () => el.chat.scrollHeight - el.chat.scrollTop - el.chat.clientHeight < 48;
const scrollDown = () => (el.chat.scrollTop = el.chat.scrollHeight);

/** A message bubble. Model output goes in through textContent only, never as HTML. */
function bubble(role, text) {
  const li = document.createElement('li');
  li.className = `msg ${role}`;
  const body = document.createElement('span');
  body.className = 'text';
  body.textContent = text;
  const meta = document.createElement('span');
  meta.className = 'meta';
  li.append(body, meta);
  el.messages.append(li);
  el.empty.hidden = true;
  return li;
}
const bubbleText = (li) => /** @type {HTMLElement} */ (li.querySelector('.text'));
const bubbleMeta = (li) => /** @type {HTMLElement} */ (li.querySelector('.meta'));

function notice(text) {
  const li = document.createElement('li');
  li.className = 'notice';
  li.textContent = text;
  el.messages.append(li);
}

/** Fades the bubbles of messages the session no longer holds (it dropped the oldest turns to fit the context). */
function markDropped() {
  if (!session) return;
  const held = session.messages.filter((m) => m.role !== 'system').length;
  const gone = live.length - held;
  if (gone <= 0) return;
  for (const li of live.slice(0, gone)) {
    li.classList.add('dropped');
    li.title = 'no longer in the model’s context';
  }
  live = live.slice(gone);
  notice(`The context (${model?.info.context} tokens) is full: the oldest ${gone === 1 ? 'message was' : `${gone} messages were`} dropped.`);
}

// ---- chat -----------------------------------------------------------------------------------------------------------

function newChat() {
  if (!model) return;
  if (running && document.body.dataset.state === 'generating') {
    newChatPending = true;
    running.abort();
    return;
  }
  newChatPending = false;
  el.messages.replaceChildren();
  el.error.textContent = '';
  hooks.edgellmError = undefined;
  live = [];
  hooks.edgellmTurns = [];
  const system = el.system.value.trim();
  try {
    session = model.session({ system: system || undefined, template: format.template, overflow: 'drop-oldest' });
  } catch (err) {
    session = undefined;
    showError(err);
  }
  if (format.template !== undefined) {
    notice('This model’s file has no chat template (a base model), so the conversation is written as a plain “User: … / Assistant: …” transcript.');
  }
  el.empty.hidden = el.messages.childElementCount > 0;
  setState(session ? 'ready' : 'error');
}

async function send() {
  const text = el.input.value.trim();
  if (!model || !session || running || !text) return;
  const chat = session;
  el.input.value = '';
  autosize();
  el.error.textContent = '';
  hooks.edgellmError = undefined;
  const userLi = bubble('user', text);
  const botLi = bubble('assistant', '');
  botLi.classList.add('pending');
  live.push(userLi);
  scrollDown();
  const ctrl = (running = new AbortController());
  setState('generating');

  const maxTokens = Math.max(1, Math.floor(Number(el.maxTokens.value) || 128));
  const temperature = Math.max(0, Number(el.temperature.value) || 0);
  /** @type {number[]} */
  const ids = [];
  let reply = '';
  let stopped = false;
  /** @type {unknown} */
  let failure;
  let tFirst = 0;
  setStatus('Reading the prompt…', memoryLine());
  try {
    const chunks = chat.send(text, { maxTokens, temperature, stop: format.stop, signal: ctrl.signal, onToken: (id) => ids.push(id) });
    for await (const chunk of chunks) {
      const follow = nearBottom();
      if (!tFirst) {
        tFirst = performance.now();
        botLi.classList.remove('pending');
      }
      reply += chunk;
      // The first token after "Assistant:" usually brings a space: the bubble does not show it.
      bubbleText(botLi).textContent = reply.trimStart();
      void refreshMemory();
      const secs = (performance.now() - tFirst) / 1000;
      setStatus(`Replying… ${ids.length} tokens${secs > 0.2 ? `, ${rate((ids.length - 1) / secs)} tok/s` : ''}`, memoryLine());
      if (follow) scrollDown();
    }
  } catch (err) {
    if (ctrl.signal.aborted && /** @type {{ code?: string }} */ (err)?.code === 'ABORTED') stopped = true;
    else failure = err;
  } finally {
    if (running === ctrl) running = undefined;
  }
  botLi.classList.remove('pending');
  bubbleText(botLi).textContent = reply.trimStart();
  await refreshMemory();

  // A turn that failed before any text leaves no trace in the session, so it leaves none on the page either: the text
  // goes back into the box to try again. (One that failed part way keeps what it got, as the session does.)
  if (failure && !reply) {
    userLi.remove();
    botLi.remove();
    live.pop();
    el.input.value = text;
    autosize();
    el.empty.hidden = el.messages.childElementCount > 0;
    showError(failure);
    setStatus(`${modelName}: the turn failed`, memoryLine());
    setState('ready');
    if (newChatPending) newChat();
    return;
  }
  live.push(botLi);

  const stats = stopped || failure ? undefined : chat.stats;
  if (stats) {
    bubbleMeta(botLi).textContent = `${stats.generatedTokens} tokens · ${rate(stats.decodeTokensPerSecond)} tok/s`;
    setStatus(
      `decode ${rate(stats.decodeTokensPerSecond)} tok/s · prefill ${rate(stats.prefillTokensPerSecond)} tok/s · ${model.info.build} build · ${threadsText(model.info.threads)}`,
      `prompt ${stats.promptTokens} tokens: ${stats.cachedTokens} from the cache, ${stats.prefilledTokens} new`,
      memoryLine(),
    );
  } else {
    botLi.classList.add('stopped');
    bubbleMeta(botLi).textContent = failure ? 'failed' : 'stopped';
    if (failure) showError(failure);
    const secs = tFirst ? (performance.now() - tFirst) / 1000 : 0;
    setStatus(`${failure ? 'Failed' : 'Stopped'} after ${ids.length} tokens${secs > 0.2 ? ` (${rate((ids.length - 1) / secs)} tok/s)` : ''}`, memoryLine());
  }
  markDropped();
  if (nearBottom()) scrollDown();
  /** @type {unknown[]} */ (hooks.edgellmTurns).push({ user: text, text: reply, ids, stopped, stats, messages: chat.messages });
  setState('ready');
  if (newChatPending) newChat();
}

// ---- loading --------------------------------------------------------------------------------------------------------

async function load(source, name) {
  running?.abort();
  const ctrl = (running = new AbortController());
  // Drop the previous model first, so its wasm memory can be collected before the next one is allocated.
  // (A worker's model: its worker, and the kernel pool's workers, end here.)
  model?.dispose();
  model = undefined;
  memory = undefined;
  session = undefined;
  el.error.textContent = '';
  el.messages.replaceChildren();
  el.empty.hidden = false;
  live = [];
  hooks.edgellmLoaded = undefined;
  hooks.edgellmError = undefined;
  hooks.edgellmTurns = [];
  el.modelLabel.textContent = `loading ${name}…`;
  setState('loading');
  el.progress.hidden = false;
  el.progress.removeAttribute('value');
  setStatus(`Opening ${name}…`, environment());
  const t0 = performance.now();
  try {
    const context = Number(el.context.value);
    const options = {
      contextLength: Number.isInteger(context) && context > 0 ? context : 1024,
      simd: /** @type {'auto' | 'baseline' | 'relaxed'} */ (el.simd.value),
      threads: el.threads.value === 'auto' ? /** @type {'auto'} */ ('auto') : Number(el.threads.value),
      signal: ctrl.signal,
      onProgress: ({ phase, loaded, total }) => {
        if (total) el.progress.value = loaded / total;
        else el.progress.removeAttribute('value');
        setStatus(`${phase === 'download' ? 'Downloading' : 'Loading weights'}: ${mb(loaded)}${total ? ` of ${mb(total)}` : ''}`, environment());
      },
    };
    /** @type {Model} */
    const loaded = inWorker ? await loadModelInWorker(source, options) : await loadModel(source, { ...options, threads: 1 });
    model = loaded;
    modelName = name;
    await refreshMemory();
    const hasTemplate = loaded.text.info.chatTemplate;
    format = hasTemplate ? {} : { template: PLAIN_TEMPLATE, stop: PLAIN_STOP };
    const i = loaded.info;
    el.modelLabel.textContent = `${name} · ${i.build} · ${threadsText(i.threads)} · ${i.context} tokens`;
    hooks.edgellmLoaded = {
      name, build: i.build, memoryBytes: memory?.totalBytes, context: i.context, chatTemplate: hasTemplate,
      threads: i.threads, threading: i.threading, worker: inWorker,
    };
    el.progress.hidden = true;
    setStatus(
      `${name} loaded in ${((performance.now() - t0) / 1000).toFixed(2)} s (${i.architecture}, ${i.nLayers} layers, dim ${i.dim})`,
      `threads ${i.threading}${inWorker ? ', in a worker' : ', on the page’s thread'}`,
      memoryLine(),
    );
    // Out of the way of the conversation, which needs the height on a phone.
    el.setup.open = false;
    newChat();
    // Not on touch screens: focusing would pop up the keyboard over the page before the user asked for it.
    if (!matchMedia('(pointer: coarse)').matches) el.input.focus();
  } catch (err) {
    el.progress.hidden = true;
    el.modelLabel.textContent = 'none loaded';
    if (!ctrl.signal.aborted) showError(err);
    setStatus(ctrl.signal.aborted ? 'Loading stopped.' : 'No model loaded.', environment());
    setState(ctrl.signal.aborted ? 'idle' : 'error');
  } finally {
    if (running === ctrl) running = undefined;
  }
}

// ---- controls -------------------------------------------------------------------------------------------------------

/** The message box grows with its text, up to its max-height (then it scrolls). */
function autosize() {
  el.input.style.height = 'auto';
  el.input.style.height = `${el.input.scrollHeight + 2}px`;
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
el.composer.addEventListener('submit', (e) => {
  e.preventDefault();
  send();
});
el.input.addEventListener('keydown', (e) => {
  // Enter sends, Shift+Enter is a new line; not while an input method is composing (Enter picks its candidate).
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    if (!el.send.disabled) el.composer.requestSubmit();
  }
});
el.input.addEventListener('input', autosize);
el.stop.addEventListener('click', () => running?.abort());
el.newChat.addEventListener('click', () => {
  newChat();
  if (!matchMedia('(pointer: coarse)').matches) el.input.focus();
});

const builds = supportedBuilds();
const kernels = builds.relaxed ? 'relaxed SIMD' : builds.simd ? 'SIMD128' : 'none (WebAssembly SIMD is missing)';
el.env.textContent = `Kernels here: ${kernels} · ${environment()}`;
setStatus(`No model loaded. Kernels: ${kernels}`, environment());
hooks.edgellmTurns = [];
setState('idle');
if (params.get('model')) {
  el.url.value = /** @type {string} */ (params.get('model'));
  el.load.click();
}
