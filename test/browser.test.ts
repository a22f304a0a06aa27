// The browser example (examples/browser/, a chat page) and loadModelInWorker in a real browser: headless Chromium
// (Debian's) driven by playwright-core, the page served by the example's own zero-dependency server.
//
// Without COOP/COEP (serve.mjs's `isolation: false`), as a mobile WebView or a plain static host would load it: the
// page is not cross-origin isolated and has no SharedArrayBuffer, so the model's worker runs the single-thread
// fallback (threads 'auto' asked; info.threading says why). Through the page's own controls, as a person would use
// them:
// - tiny-260k-q8_0 opened with the file picker (a File, read slice by slice), on a desktop viewport, with the keyboard
//   (Enter sends, Shift+Enter is a new line);
// - sotu-15m-q4_0 loaded by URL (fetched from the same server), in an emulated Android WebView (a phone-sized screen,
//   touch, isMobile, a WebView user agent): a conversation of several turns sent by tapping Send, a reply stopped
//   with Stop, a turn after it, and New chat;
// each with the default kernels (relaxed SIMD in current Chromium) and ?simd=baseline (SIMD128); the tiny model runs in
// the page's worker with the default kernels and on the page's own thread (?worker=0, loadModel) with SIMD128. Every
// reply must be exactly what Node's ChatSession gives for the same turns (greedy, the page's template and stop
// strings), token for token, with the same cache reuse, and the page must plan the same wasm memory as Node.
//
// With COOP/COEP (serve.mjs's default), the page is cross-origin isolated: the example page with ?threads=2 runs a
// threaded model in its worker and replies as Node's single thread does; and loadModelInWorker called directly (threads
// 2) gives Node's single-thread tokens and logits bit for bit, keeps the page's event loop running while the worker
// decodes (a setInterval on the page keeps ticking: counted, not timed), forwards abort, BUSY and errors with their
// codes, and dispose() ends the worker and the kernel pool's worker it started.
//
// The page tests dist/browser.js and dist/browser-worker.js, the bundles users get: `npm test` builds them first
// (`npm run build` otherwise).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { chromium, devices, type Browser, type BrowserContext, type BrowserContextOptions, type Page } from 'playwright-core';
import { loadModel, type ChatMessage, type Model, type TurnStats } from '../src/index.js';
import type { WorkerModel } from '../src/browser.js';
import { ISOLATION_HEADERS, startServer, type RunningServer } from '../examples/browser/serve.mjs';
import { PLAIN_STOP, PLAIN_TEMPLATE } from '../examples/browser/chat-format.js';
import { announceSkipIfNoModels, modelPath, MODELS } from './util/shared.js';
import { checkDist } from './util/dist.js';
import { greedyIds } from './util/models.js';

const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const HAVE_CHROMIUM = existsSync(CHROMIUM);
if (!HAVE_CHROMIUM) {
  const line = '!'.repeat(100);
  console.warn(`\n${line}\n!!! SKIPPED: browser tests (test/browser.test.ts): no Chromium at ${CHROMIUM} (set CHROMIUM=/path/to/chromium).\n${line}\n`);
}
const HAVE = announceSkipIfNoModels('browser tests (test/browser.test.ts)') && HAVE_CHROMIUM;

// Without these Chromium keeps trying to reach Google services from a closed network. --no-sandbox: CI runs as root.
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

// A phone: Pixel 7's viewport, scale, touch and isMobile, with an Android System WebView user agent (the "; wv").
const WEBVIEW: BrowserContextOptions = {
  ...devices['Pixel 7'],
  userAgent: 'Mozilla/5.0 (Linux; Android 14; Pixel 7 Build/AP2A.240805.005; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/156.0.0.0 Mobile Safari/537.36',
};
const DESKTOP: BrowserContextOptions = { viewport: { width: 1280, height: 800 } };

const CONTEXT = 1024; // the page's default
const MAX_TOKENS = 48; // per reply in the conversations
const TINY = {
  file: 'tiny-260k-q8_0.gguf',
  // typed with Shift+Enter between the lines
  turns: [['Once upon a time', 'there was a little dog.'], ['What did the dog do?']],
};
const SOTU = {
  file: 'sotu-15m-q4_0.gguf',
  // The third carries markup, which must show as text (the page never writes messages as HTML).
  turns: ['What is the state of the Union?', 'What should the Congress do this year?', 'Thank you, <b>Mr. President</b> & good night.'],
  // Stopped by Stop part way; greedy, Node's reply to it runs to well past the stop.
  long: 'Tell us about the history of the nation and its wars.',
  longMaxTokens: 200,
  after: 'What comes next?',
};
const STEP_MS = 60_000;

interface Turn { user: string; text: string; ids: number[]; stopped: boolean; stats?: TurnStats; messages: ChatMessage[] }
interface Loaded { name: string; build: string; memoryBytes: number; context: number; chatTemplate: boolean; threads: number; threading: string; worker: boolean }
/** The page's test hooks (see examples/browser/app.js). */
type Hooks = { edgellmLoaded?: Loaded; edgellmTurns?: Turn[]; edgellmError?: string };
// (page functions are serialized into the page, so they spell out `window as unknown as Hooks` themselves)

/**
 * Node: one model per file (single-threaded, the reference; or with threads, for its memory plan), shared by every
 * reference session (a session's replies do not depend on what the model's cache held before).
 */
const nodeModels = new Map<string, Model>();
async function nodeModel(file: string, threads = 1): Promise<Model> {
  const key = `${file} ${threads}`;
  if (!nodeModels.has(key)) nodeModels.set(key, await loadModel(modelPath(file), { contextLength: CONTEXT, threads }));
  return nodeModels.get(key)!;
}

/** Node's turns for the same user messages, as the page holds them: its template and stop strings, greedy. */
async function nodeTurns(file: string, users: string[], maxTokens = MAX_TOKENS, messages: ChatMessage[] = []): Promise<Turn[]> {
  const model = await nodeModel(file);
  const session = model.session({ template: PLAIN_TEMPLATE, overflow: 'drop-oldest', messages });
  const turns: Turn[] = [];
  for (const user of users) {
    const ids: number[] = [];
    let text = '';
    for await (const chunk of session.send(user, { maxTokens, temperature: 0, stop: PLAIN_STOP, onToken: (id) => ids.push(id) })) text += chunk;
    turns.push({ user, text, ids, stopped: false, stats: session.stats, messages: session.messages });
  }
  return turns;
}

/** Node's turns of both conversations, computed once for every suite. */
let references: Promise<{ tiny: Turn[]; sotu: Turn[] }> | undefined;
function nodeReferences(): Promise<{ tiny: Turn[]; sotu: Turn[] }> {
  references ??= (async () => {
    const tiny = await nodeTurns(TINY.file, TINY.turns.map((lines) => lines.join('\n')));
    const sotu = await nodeTurns(SOTU.file, SOTU.turns);
    // A conversation where a reply says nothing would not show much: the chosen turns all get text.
    for (const t of [...tiny, ...sotu]) expect(t.text.trim(), `Node's reply to ${JSON.stringify(t.user)}`).not.toBe('');
    return { tiny, sotu };
  })();
  return references;
}

/** What a turn's reply must equal in the browser: everything but the timings. */
function sameTurn(page: Turn, node: Turn): void {
  expect(page.stopped).toBe(false);
  expect(page.text).toBe(node.text);
  expect(page.ids).toEqual(node.ids);
  expect(page.messages).toEqual(node.messages);
  const { promptTokens, cachedTokens, prefilledTokens, generatedTokens, stopReason, droppedMessages } = node.stats!;
  expect(page.stats).toMatchObject({ promptTokens, cachedTokens, prefilledTokens, generatedTokens, stopReason, droppedMessages });
}

/** A page of the example with everything that goes wrong in it (errors, failed requests, HTTP errors) recorded. */
class ExamplePage {
  readonly problems: string[] = [];
  readonly log: string[] = [];
  private constructor(readonly page: Page) {
    page.on('pageerror', (e) => this.problems.push(`pageerror: ${e.stack ?? e.message}`));
    page.on('console', (m) => {
      this.log.push(`console.${m.type()}: ${m.text()}`);
      if (m.type() === 'error') this.problems.push(`console.error: ${m.text()}`);
    });
    page.on('requestfailed', (r) => this.problems.push(`request failed: ${r.url()}: ${r.failure()?.errorText}`));
    page.on('response', (r) => {
      if (r.status() >= 400) this.problems.push(`HTTP ${r.status()}: ${r.url()}`);
    });
  }

  static async open(context: BrowserContext, url: string, isolated = false): Promise<ExamplePage> {
    const p = new ExamplePage(await context.newPage());
    const response = await p.page.goto(url);
    expect(response?.status()).toBe(200);
    // Without isolation, served as a static host or a WebView would: no COOP/COEP headers.
    const headers = response!.headers();
    expect(headers['cross-origin-opener-policy']).toBe(isolated ? ISOLATION_HEADERS['Cross-Origin-Opener-Policy'] : undefined);
    expect(headers['cross-origin-embedder-policy']).toBe(isolated ? ISOLATION_HEADERS['Cross-Origin-Embedder-Policy'] : undefined);
    expect(await p.page.evaluate(() => globalThis.crossOriginIsolated)).toBe(isolated);
    await p.until('the page script to start', () => document.body.dataset.state === 'idle' || document.body.dataset.state === 'error');
    p.check();
    return p;
  }

  /** Fails with the page's errors and console, so a failure inside Chromium is readable from the test output. */
  check(what = 'the page'): void {
    if (this.problems.length) throw new Error(`${what}: ${this.problems.join('\n')}\n--- console ---\n${this.log.join('\n')}`);
    expect(this.problems).toEqual([]);
  }

  async until<A>(what: string, predicate: (arg: A) => unknown, arg?: A): Promise<void> {
    try {
      await this.page.waitForFunction(predicate as (arg: unknown) => unknown, arg, { timeout: STEP_MS, polling: 50 });
    } catch (e) {
      const state = await this.page.evaluate(() => `state ${document.body.dataset.state}; status: ${document.getElementById('status')?.textContent}; error: ${document.getElementById('error')?.textContent}`).catch(() => '?');
      throw new Error(`waiting for ${what}: ${(e as Error).message}\n${state}\n${this.problems.join('\n')}\n--- console ---\n${this.log.join('\n')}`);
    }
  }

  /** Waits for the load started by the caller; fails with the page's `code: message` if it shows one. */
  async loaded(): Promise<Loaded> {
    await this.until('the model to load', () => (window as unknown as Hooks).edgellmLoaded || (window as unknown as Hooks).edgellmError);
    const { edgellmLoaded, edgellmError } = await this.page.evaluate(() => ({ edgellmLoaded: (window as unknown as Hooks).edgellmLoaded, edgellmError: (window as unknown as Hooks).edgellmError }));
    expect(edgellmError, 'the page shows an error').toBeUndefined();
    expect(await this.page.getAttribute('body', 'data-state')).toBe('ready');
    // The test models are base models: the page says it writes a plain transcript instead.
    expect(edgellmLoaded!.chatTemplate).toBe(false);
    expect(await this.page.textContent('#messages .notice')).toContain('no chat template');
    expect(await this.page.isEnabled('#send')).toBe(true);
    this.check('loading');
    return edgellmLoaded!;
  }

  async loadFile(file: string): Promise<Loaded> {
    await this.page.setInputFiles('#file', file);
    return this.loaded();
  }

  async loadUrl(url: string): Promise<Loaded> {
    await this.page.fill('#url', url);
    await this.page.click('#load');
    return this.loaded();
  }

  turns(): Promise<Turn[]> {
    return this.page.evaluate(() => (window as unknown as Hooks).edgellmTurns ?? []);
  }

  /** Waits for the turn under way to end (the page appends it to its turns) and checks the page is ready again. */
  async turnEnded(count: number): Promise<Turn> {
    await this.until(`turn ${count} to end`, (n) => ((window as unknown as Hooks).edgellmTurns?.length ?? 0) >= n || (window as unknown as Hooks).edgellmError, count);
    const { turns, error, state } = await this.page.evaluate(() => ({ turns: (window as unknown as Hooks).edgellmTurns!, error: (window as unknown as Hooks).edgellmError, state: document.body.dataset.state }));
    expect(error, 'the page shows an error').toBeUndefined();
    expect(state).toBe('ready');
    expect(turns).toHaveLength(count);
    expect(await this.page.isVisible('#send')).toBe(true);
    expect(await this.page.isVisible('#stop')).toBe(false);
    this.check('replying');
    return turns[count - 1];
  }

  /** Sets one of the settings under "Model" (folded away after a load), as a person would: unfold, type, fold. */
  async setting(id: string, value: string): Promise<void> {
    const folded = !(await this.page.evaluate(() => (document.getElementById('setup') as HTMLDetailsElement).open));
    if (folded) await this.page.click('#setup > summary');
    await this.page.fill(`#${id}`, value);
    if (folded) await this.page.click('#setup > summary');
  }

  /** Types a message and sends it with the Send button (tapped on a touch screen) or the Enter key. */
  async say(text: string, how: 'tap' | 'enter'): Promise<Turn> {
    const count = (await this.turns()).length;
    await this.page.fill('#input', text);
    if (how === 'tap') await this.page.tap('#send');
    else await this.page.press('#input', 'Enter');
    const turn = await this.turnEnded(count + 1);
    expect(turn.user).toBe(text.trim());
    expect(await this.page.inputValue('#input')).toBe('');
    return turn;
  }

  /** The text of the last assistant bubble, and whether it is marked stopped. */
  async lastReply(): Promise<{ text: string; stopped: boolean }> {
    return this.page.$$eval('#messages .msg.assistant', (els) => {
      const last = els[els.length - 1];
      return { text: last.querySelector('.text')!.textContent ?? '', stopped: last.classList.contains('stopped') };
    });
  }

  async status(): Promise<string> {
    return (await this.page.textContent('#status')) ?? '';
  }
}

/** loadModelInWorker called directly in a page: dist/browser.js imported as edgellmLib, the model kept as edgellmModel. */
type ApiHooks = { edgellmLib?: typeof import('../src/browser.js'); edgellmModel?: WorkerModel };
/** Imports dist/browser.js into `page` as window.edgellmLib, and waits for it. */
async function exposeLib(page: Page): Promise<void> {
  await page.addScriptTag({ type: 'module', content: "import * as lib from '/dist/browser.js'; window.edgellmLib = lib;" });
  await page.waitForFunction(() => (window as unknown as ApiHooks).edgellmLib);
}

const API = { prompt: 'The state of the Union is', maxTokens: 24, evalIds: [1, 450, 2106, 310] };

interface WorkerRun {
  threads: number;
  threading: string;
  ids: number[];
  text: string;
  /** setInterval ticks on the page between the first token and the last */
  ticksDecoding: number;
  tokenized: number[];
  detokenized: string;
  memoryBytes: number;
  /** evaluate(API.evalIds), as the bits of each float */
  logits: number[];
}

/**
 * In `page`: loadModelInWorker(sotu-15m by URL, { threads }), then one greedy generation while a setInterval on the
 * page counts ticks (read at each token), the page-side tokenizer, memory() and evaluate().
 */
async function runInWorker(page: Page, threads: number): Promise<WorkerRun> {
  await exposeLib(page);
  return page.evaluate(async ({ url, threads, context, prompt, maxTokens, evalIds }) => {
    const w = window as unknown as ApiHooks;
    const model = await w.edgellmLib!.loadModelInWorker(url, { threads, contextLength: context });
    w.edgellmModel = model;
    let ticks = 0;
    const timer = setInterval(() => ticks++, 0);
    const ids: number[] = [];
    const ticksAt: number[] = [];
    let text = '';
    try {
      const onToken = (id: number) => {
        ids.push(id);
        ticksAt.push(ticks);
      };
      for await (const chunk of model.generate(prompt, { maxTokens, onToken })) text += chunk;
    } finally {
      clearInterval(timer);
    }
    const logits = await model.evaluate(evalIds);
    return {
      threads: model.info.threads,
      threading: model.info.threading,
      ids,
      text,
      ticksDecoding: ticksAt[ticksAt.length - 1] - ticksAt[0],
      tokenized: model.tokenize(prompt),
      detokenized: model.detokenize(ids),
      memoryBytes: (await model.memory()).totalBytes,
      logits: Array.from(new Uint32Array(logits.buffer)),
    };
  }, { url: `/models/${SOTU.file}`, threads, context: CONTEXT, ...API });
}

/** The same as runInWorker, in Node on one thread: the reference. */
async function runInNode(): Promise<Omit<WorkerRun, 'threads' | 'threading' | 'ticksDecoding'>> {
  const model = await nodeModel(SOTU.file);
  const ids: number[] = [];
  const text = await model.complete(API.prompt, { maxTokens: API.maxTokens, onToken: (id) => ids.push(id) });
  const logits = await model.evaluate(API.evalIds);
  return {
    ids,
    text,
    tokenized: model.tokenize(API.prompt),
    detokenized: model.detokenize(ids),
    memoryBytes: model.memory().totalBytes,
    logits: Array.from(new Uint32Array(logits.buffer)),
  };
}

/** Disposes the page's edgellmModel and waits for every worker of the page to end (playwright sees nested ones too). */
async function disposeAndWait(page: Page): Promise<void> {
  await page.evaluate(() => (window as unknown as ApiHooks).edgellmModel!.dispose());
  await expect.poll(() => page.workers().length, { timeout: STEP_MS }).toBe(0).catch((e) => {
    console.log('workers still running after dispose:', page.workers().map((w) => w.url()));
    throw e;
  });
  const after = await page.evaluate(async () => {
    const model = (window as unknown as ApiHooks).edgellmModel!;
    const code = (e: unknown) => (e as { code?: string }).code;
    let tokenize: string | undefined;
    try {
      model.tokenize('x');
    } catch (e) {
      tokenize = code(e);
    }
    return { tokenize, complete: await model.complete('x').then(() => undefined, code) };
  });
  expect(after).toEqual({ tokenize: 'DISPOSED', complete: 'DISPOSED' });
}

afterAll(() => {
  for (const m of nodeModels.values()) m.dispose();
});

describe.skipIf(!HAVE)('browser example (chat page) in headless Chromium (no cross-origin isolation)', () => {
  let server: RunningServer;
  let browser: Browser;
  let desktop: BrowserContext;
  let webview: BrowserContext;
  let tinyRef: Turn[];
  let sotuRef: Turn[];

  beforeAll(async () => {
    checkDist();
    ({ tiny: tinyRef, sotu: sotuRef } = await nodeReferences());
    server = await startServer({ port: 0, isolation: false, mounts: { '/models/': MODELS } });
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
    desktop = await browser.newContext(DESKTOP);
    webview = await browser.newContext(WEBVIEW);
  });

  afterAll(async () => {
    await browser?.close();
    await server?.close();
  });

  it('runs without cross-origin isolation or SharedArrayBuffer (the WebView condition), on a phone-sized screen', async () => {
    const p = await ExamplePage.open(webview, server.url);
    const env = await p.page.evaluate(() => ({
      crossOriginIsolated: globalThis.crossOriginIsolated,
      sab: typeof SharedArrayBuffer,
      ua: navigator.userAgent,
      width: window.innerWidth,
      touch: navigator.maxTouchPoints > 0,
      coarse: matchMedia('(pointer: coarse)').matches,
      overflow: document.documentElement.scrollWidth > window.innerWidth,
    }));
    expect(env.crossOriginIsolated).toBe(false);
    expect(env.sab).toBe('undefined');
    expect(env.ua).toContain('; wv)');
    expect(env.width).toBe(412);
    expect(env.touch).toBe(true);
    expect(env.coarse).toBe(true);
    expect(env.overflow, 'the page scrolls sideways on a phone').toBe(false);
    expect(await p.status()).toContain('crossOriginIsolated false · SharedArrayBuffer absent');
    // Nothing to send to before a model is loaded.
    expect(await p.page.isDisabled('#send')).toBe(true);
    expect(await p.page.isDisabled('#input')).toBe(true);
    await p.page.close();
  });

  for (const simd of ['auto', 'baseline'] as const) {
    const build = simd === 'auto' ? 'relaxed' : 'simd';
    // The page's worker (threads 'auto', the fallback's one thread here), or the page's own thread (loadModel).
    const worker = simd === 'auto';

    it(`tiny-260k by file picker with the keyboard, simd ${simd}, ${worker ? 'in a worker' : "on the page's thread"}: the ${build} build replies as Node does`, async () => {
      const p = await ExamplePage.open(desktop, `${server.url}?simd=${simd}${worker ? '' : '&worker=0'}`);
      await p.setting('max-tokens', String(MAX_TOKENS));
      const loaded = await p.loadFile(modelPath(TINY.file));
      expect(loaded).toMatchObject({ name: TINY.file, build, context: CONTEXT, memoryBytes: (await nodeModel(TINY.file)).memory().totalBytes, threads: 1, worker });
      expect(loaded.threading).toMatch(worker ? /^1: no SharedArrayBuffer \(not cross-origin isolated\) \(threads 'auto' \(\d+ cores\) asked\)$/ : /^1: threads 1$/);
      expect(await p.page.textContent('#model-label')).toContain(' · 1 thread · ');
      // The message box has the focus after a load on a desktop: typing goes straight in.
      expect(await p.page.evaluate(() => document.activeElement?.id)).toBe('input');

      for (const [i, lines] of TINY.turns.entries()) {
        // Shift+Enter is a new line inside the message, Enter sends it.
        await p.page.fill('#input', '');
        for (const [j, line] of lines.entries()) {
          if (j > 0) await p.page.keyboard.press('Shift+Enter');
          await p.page.keyboard.type(line);
        }
        expect(await p.page.inputValue('#input')).toBe(lines.join('\n'));
        expect(await p.turns()).toHaveLength(i);
        await p.page.keyboard.press('Enter');
        const turn = await p.turnEnded(i + 1);
        sameTurn(turn, tinyRef[i]);
        expect((await p.lastReply()).text).toBe(turn.text.trimStart());
      }
      const status = await p.status();
      expect(status).toContain(`${build} build`);
      expect(status).toMatch(/decode \d+(\.\d)? tok\/s/);
      expect(status).toContain('wasm ');
      await p.page.close();
    });

    it(`sotu-15m by URL in an Android WebView, simd ${simd}: a conversation with Stop and New chat, as Node replies`, async () => {
      const p = await ExamplePage.open(webview, `${server.url}?simd=${simd}`);
      await p.setting('max-tokens', String(MAX_TOKENS));
      // a page-relative URL, resolved against the page's location by loadModel
      const loaded = await p.loadUrl(`/models/${SOTU.file}`);
      expect(loaded).toMatchObject({ name: SOTU.file, build, context: CONTEXT, memoryBytes: (await nodeModel(SOTU.file)).memory().totalBytes, threads: 1, worker: true });
      // The fallback, and why: this page is not cross-origin isolated.
      expect(loaded.threading).toMatch(/^1: no SharedArrayBuffer \(not cross-origin isolated\)/);
      expect(await p.status()).toContain(`threads ${loaded.threading}, in a worker`);
      // The settings fold away after a load, leaving the screen to the conversation.
      expect(await p.page.evaluate(() => (document.getElementById('setup') as HTMLDetailsElement).open)).toBe(false);

      // Several turns, tapped: each the same reply as Node, and from the second on most of the prompt comes from the
      // KV cache (the status line says how much).
      for (const [i, text] of SOTU.turns.entries()) {
        const turn = await p.say(text, 'tap');
        sameTurn(turn, sotuRef[i]);
        expect(turn.text.trim()).not.toBe('');
        expect((await p.lastReply()).text).toBe(turn.text.trimStart());
        const status = await p.status();
        const { promptTokens, cachedTokens, prefilledTokens } = turn.stats!;
        expect(status).toContain(`prompt ${promptTokens} tokens: ${cachedTokens} from the cache, ${prefilledTokens} new`);
        expect(status).toMatch(/decode \d+(\.\d)? tok\/s · prefill \d+(\.\d)? tok\/s/);
        expect(status).toMatch(/wasm \d+\.\d+ MB · KV \d+\.\d+ MB of \d+\.\d+ MB in use/);
        expect(status).toContain(`${build} build`);
        if (i > 0) expect(turn.stats!.cachedTokens, 'turns after the first reuse the cache').toBeGreaterThan(sotuRef[i - 1].stats!.promptTokens / 2);
      }
      // Markup typed by the user is shown as text.
      expect(await p.page.$$eval('#messages .msg.user .text', (els) => els.map((e) => e.textContent))).toEqual(SOTU.turns);
      expect(await p.page.locator('#messages b').count()).toBe(0);

      // Stop: pressed once the reply has shown a few words. (The in-page observer presses it: a click from the test
      // process could come after this small model has already finished.) The partial reply stays, in the page and in
      // the session, and is where Node's full reply to the same turn starts.
      const [full] = await nodeTurns(SOTU.file, [SOTU.long], SOTU.longMaxTokens, sotuRef[sotuRef.length - 1].messages);
      expect(full.ids.length, "Node's reply to the long turn").toBeGreaterThan(40);
      await p.setting('max-tokens', String(SOTU.longMaxTokens));
      await p.page.fill('#input', SOTU.long);
      await p.page.evaluate(() => {
        const n = document.querySelectorAll('#messages .msg.assistant').length;
        const watch = new MutationObserver(() => {
          const reply = document.querySelectorAll('#messages .msg.assistant')[n];
          if ((reply?.querySelector('.text')?.textContent ?? '').length >= 12) {
            watch.disconnect();
            (document.getElementById('stop') as HTMLButtonElement).click();
          }
        });
        watch.observe(document.getElementById('messages')!, { subtree: true, childList: true, characterData: true });
      });
      await p.page.tap('#send');
      const stopped = await p.turnEnded(SOTU.turns.length + 1);
      expect(stopped.stopped).toBe(true);
      expect(stopped.text.trim()).not.toBe('');
      expect(stopped.ids.length).toBeLessThan(full.ids.length);
      expect(full.ids.slice(0, stopped.ids.length)).toEqual(stopped.ids);
      expect(full.text.startsWith(stopped.text)).toBe(true);
      expect(stopped.messages[stopped.messages.length - 1]).toEqual({ role: 'assistant', content: stopped.text });
      expect(await p.lastReply()).toEqual({ text: stopped.text.trimStart(), stopped: true });
      expect(await p.status()).toContain(`Stopped after ${stopped.ids.length} tokens`);

      // The next turn goes on from the partial reply: as a fresh Node session holding the same messages replies.
      await p.setting('max-tokens', String(MAX_TOKENS));
      const after = await p.say(SOTU.after, 'tap');
      const [afterRef] = await nodeTurns(SOTU.file, [SOTU.after], MAX_TOKENS, stopped.messages);
      expect(after.text).toBe(afterRef.text);
      expect(after.ids).toEqual(afterRef.ids);
      expect(after.messages).toEqual(afterRef.messages);
      expect(after.stats!.cachedTokens).toBeGreaterThan(0);

      // Still a phone layout after a long conversation: nothing sideways, the message box on screen, the newest reply
      // scrolled into view.
      const layout = await p.page.evaluate(() => {
        const box = (id: string) => document.getElementById(id)!.getBoundingClientRect();
        const replies = document.querySelectorAll('#messages .msg.assistant');
        const last = replies[replies.length - 1].getBoundingClientRect();
        const chat = box('chat');
        return {
          overflow: document.documentElement.scrollWidth > window.innerWidth,
          pageScrolls: document.documentElement.scrollHeight > window.innerHeight,
          inputBottom: box('input').bottom,
          sendRight: box('send').right,
          height: window.innerHeight,
          width: window.innerWidth,
          lastVisible: last.bottom <= chat.bottom + 1 && last.bottom > chat.top,
        };
      });
      expect(layout.overflow).toBe(false);
      expect(layout.pageScrolls, 'only the message list scrolls').toBe(false);
      expect(layout.inputBottom).toBeLessThanOrEqual(layout.height);
      expect(layout.sendRight).toBeLessThanOrEqual(layout.width);
      expect(layout.lastVisible).toBe(true);

      // New chat: an empty conversation (the notice only), whose first turn is the first turn again.
      await p.page.tap('#new-chat');
      expect(await p.page.locator('#messages .msg').count()).toBe(0);
      expect(await p.turns()).toEqual([]);
      const again = await p.say(SOTU.turns[0], 'tap');
      expect(again.text).toBe(sotuRef[0].text);
      expect(again.messages).toEqual(sotuRef[0].messages);
      await p.page.close();
    });
  }

  it('loadModelInWorker without isolation: threads 2 asked, the fallback runs 1 thread, says why, and gives the same tokens and logits', async () => {
    const p = await ExamplePage.open(desktop, server.url);
    const run = await runInWorker(p.page, 2);
    expect(run.threads).toBe(1);
    expect(run.threading).toBe('1: no SharedArrayBuffer (not cross-origin isolated) (threads 2 asked)');
    expect(run).toMatchObject(await runInNode());
    // (playwright learns of a page's workers as they attach, so these counts are polled)
    await expect.poll(() => p.page.workers().length, { timeout: STEP_MS }).toBe(1);
    await disposeAndWait(p.page);
    p.check();
    await p.page.close();
  });

  it('shows a failed load as `code: message`', async () => {
    const p = await ExamplePage.open(desktop, server.url);
    await p.page.fill('#url', '/examples/browser/index.html');
    await p.page.click('#load');
    await p.until('the error', () => (window as unknown as Hooks).edgellmError);
    expect(await p.page.textContent('#error')).toMatch(/^BAD_MAGIC: /);
    expect(await p.page.getAttribute('body', 'data-state')).toBe('error');
    expect(await p.page.isDisabled('#send')).toBe(true);
    p.check();
    await p.page.close();
  });
});

describe.skipIf(!HAVE)('threads in headless Chromium with COOP/COEP (cross-origin isolated)', () => {
  let server: RunningServer;
  let browser: Browser;
  let desktop: BrowserContext;
  let sotuRef: Turn[];

  beforeAll(async () => {
    checkDist();
    ({ sotu: sotuRef } = await nodeReferences());
    // serve.mjs's default: the isolation headers
    server = await startServer({ port: 0, mounts: { '/models/': MODELS } });
    expect(server.isolation).toBe(true);
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
    desktop = await browser.newContext(DESKTOP);
  });

  afterAll(async () => {
    await browser?.close();
    await server?.close();
  });

  it('the example page with ?threads=2 runs 2 threads in its worker and replies as Node does on one', async () => {
    const p = await ExamplePage.open(desktop, `${server.url}?threads=2`, true);
    expect(await p.status()).toContain('crossOriginIsolated true · SharedArrayBuffer present');
    await p.setting('max-tokens', String(MAX_TOKENS));
    const loaded = await p.loadUrl(`/models/${SOTU.file}`);
    expect(loaded).toMatchObject({ name: SOTU.file, threads: 2, threading: '2: threads 2', worker: true, context: CONTEXT });
    // The threaded plan: the pool's control block and per-thread attention scratch, as Node plans them.
    expect(loaded.memoryBytes).toBe((await nodeModel(SOTU.file, 2)).memory().totalBytes);
    expect(await p.page.textContent('#model-label')).toContain(' · 2 threads · ');
    await expect.poll(() => p.page.workers().length, { message: "the model's worker and the pool's second thread", timeout: STEP_MS }).toBe(2);
    for (const [i, text] of SOTU.turns.slice(0, 2).entries()) {
      sameTurn(await p.say(text, 'enter'), sotuRef[i]);
      expect(await p.status()).toContain(' build · 2 threads');
    }
    await p.page.close();
  });

  it('loadModelInWorker, threads 2: the single-thread tokens and logits, a page that keeps running, abort, errors and dispose', async () => {
    const p = await ExamplePage.open(desktop, server.url, true);
    const run = await runInWorker(p.page, 2);
    expect(run.threads).toBe(2);
    expect(run.threading).toBe('2: threads 2');
    const node = await runInNode();
    expect(run).toMatchObject({ ...node, memoryBytes: (await nodeModel(SOTU.file, 2)).memory().totalBytes });
    // The page's own timer ran while the worker decoded (counted, not timed).
    expect(run.ticksDecoding).toBeGreaterThan(0);
    await expect.poll(() => p.page.workers().length, { timeout: STEP_MS }).toBe(2);

    const r = await p.page.evaluate(async ({ prompt }) => {
      const w = window as unknown as ApiHooks;
      const { EdgeLLMError } = w.edgellmLib!;
      const model = w.edgellmModel!;
      const failure = (e: unknown) => ({ code: (e as { code?: string }).code, edgellm: e instanceof EdgeLLMError });
      // Aborted at its third token: nothing after it arrives, and the call rejects with ABORTED.
      const ctrl = new AbortController();
      const aborted: number[] = [];
      let abortedWith;
      try {
        const onToken = (id: number) => {
          aborted.push(id);
          if (aborted.length === 3) ctrl.abort();
        };
        for await (const _ of model.generate(prompt, { maxTokens: 64, signal: ctrl.signal, onToken }));
      } catch (e) {
        abortedWith = failure(e);
      }
      // A second call while one runs, as in Model.
      const first = model.complete(prompt, { maxTokens: 8 });
      const busy = await model.complete(prompt, { maxTokens: 8 }).then(() => null, failure);
      const firstText = await first;
      const bad = await model.complete([-1]).then(() => null, failure);
      // A consumer that stops early: the worker stops too, and the next call finds the model free.
      for await (const _ of model.generate(prompt, { maxTokens: 64 })) break;
      const afterBreak = await model.complete(prompt, { maxTokens: 8 });
      return { aborted, abortedWith, busy, firstText, bad, afterBreak };
    }, API);
    const eight = await (await nodeModel(SOTU.file)).complete(API.prompt, { maxTokens: 8 });
    expect(r).toEqual({
      aborted: node.ids.slice(0, 3),
      abortedWith: { code: 'ABORTED', edgellm: true },
      busy: { code: 'BUSY', edgellm: true },
      firstText: eight,
      bad: { code: 'BAD_ARGUMENT', edgellm: true },
      afterBreak: eight,
    });

    // dispose() ends the model's worker and the kernel pool's worker it started.
    await disposeAndWait(p.page);
    p.check();
    await p.page.close();
  });

  it('a load aborted once the pool has started ends every worker; a worker script that does not load is a WASM error', async () => {
    const p = await ExamplePage.open(desktop, server.url, true);
    await exposeLib(p.page);
    const r = await p.page.evaluate(async ({ url, context }) => {
      const { loadModelInWorker, EdgeLLMError } = (window as unknown as ApiHooks).edgellmLib!;
      const failure = (e: unknown) => ({ code: (e as { code?: string }).code, edgellm: e instanceof EdgeLLMError, message: (e as Error).message });
      const ctrl = new AbortController();
      // The weights are read after the pool has started (so its worker is running by then).
      const onProgress = (p: { phase: string }) => p.phase === 'weights' && ctrl.abort();
      const aborted = await loadModelInWorker(url, { threads: 2, contextLength: context, signal: ctrl.signal, onProgress }).then(() => null, failure);
      const missing = await loadModelInWorker(url, { workerUrl: '/dist/no-such-worker.js' }).then(() => null, failure);
      return { aborted, missing };
    }, { url: `/models/${SOTU.file}`, context: CONTEXT });
    expect(r.aborted).toMatchObject({ code: 'ABORTED', edgellm: true });
    expect(r.missing).toMatchObject({ code: 'WASM', edgellm: true });
    expect(r.missing!.message).toContain('did not load');
    await expect.poll(() => p.page.workers().length, { timeout: STEP_MS }).toBe(0);
    // The 404 of the missing script is expected here.
    expect(p.problems.filter((line) => !line.includes('no-such-worker.js'))).toEqual([]);
    await p.page.close();
  });
  it('a Content-Security-Policy that refuses blob: workers: threads 2 asked, 1 runs, says why, and gives the same tokens', async () => {
    const page = await desktop.newPage();
    // The page's policy allows workers from its own origin only; the pool starts its workers from Blob URLs.
    await page.route(`${server.url}**`, async (route) => {
      const response = await route.fetch();
      await route.fulfill({ response, headers: { ...response.headers(), 'content-security-policy': "worker-src 'self'" } });
    });
    await page.goto(server.url);
    await exposeLib(page);
    const r = await page.evaluate(async ({ url, context, prompt, maxTokens }) => {
      const model = await (window as unknown as ApiHooks).edgellmLib!.loadModel(url, { threads: 2, contextLength: context });
      const text = await model.complete(prompt, { maxTokens });
      const out = { threads: model.info.threads, threading: model.info.threading, text };
      model.dispose();
      return out;
    }, { url: `/models/${SOTU.file}`, context: CONTEXT, prompt: API.prompt, maxTokens: 8 });
    expect(r.threads).toBe(1);
    expect(r.threading).toMatch(/^1: kernel pool worker 1 did not start: .*worker-src blob:.* \(threads 2 asked\)$/);
    expect(r.text).toBe(await (await nodeModel(SOTU.file)).complete(API.prompt, { maxTokens: 8 }));
    await page.close();
  });
});

// Cross-origin isolated, so the worker runs 2 threads and cold pages are read into a SharedArrayBuffer's memory. Its
// own Chromium: run inside the suite above, sharing its browser, a model worker outlived dispose() by a minute in every
// run under load (3 of 3), against none in 4 full-suite runs this way.
describe.skipIf(!HAVE)('the cold KV tier in OPFS (headless Chromium, loadModelInWorker, 2 threads)', () => {
  let server: RunningServer;
  let browser: Browser;
  let desktop: BrowserContext;
  const context = 256;
  const maxTokens = 64;

  beforeAll(async () => {
    checkDist();
    server = await startServer({ port: 0, mounts: { '/models/': MODELS } });
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
    desktop = await browser.newContext(DESKTOP);
  });

  afterAll(async () => {
    await browser?.close();
    await server?.close();
  });

  it("gives Node's tokens with pages written to OPFS and read back, sweeps a dead page's directory, leaves none after dispose, and is refused on the page's thread", async () => {
    // Node, all hot: the reference tokens, and the plan's sizes for a cold run: wasm room for 24 pages (8 of them
    // staging slots), 16 pages warm, the rest of the 8 pages per KV head cold.
    const hot = await loadModel(modelPath(SOTU.file), { contextLength: context, kv: { pageTokens: 8 } });
    const ids = await greedyIds(hot, API.prompt, maxTokens);
    const u = hot.memory().kv;
    void hot.dispose();
    const kv = { pageTokens: 8, hotBytes: u.hotBytes - (u.hotPageSlots - 24) * u.pageBytes, warmBytes: 16 * u.pageBytes, coldBytes: '16MB' };

    const p = await ExamplePage.open(desktop, server.url, true);
    await exposeLib(p.page);
    const r = await p.page.evaluate(async ({ url, context, kv, prompt, maxTokens }) => {
      const lib = (window as unknown as ApiHooks).edgellmLib!;
      const root = (await navigator.storage.getDirectory()) as FileSystemDirectoryHandle & { keys(): AsyncIterable<string> };
      const dirs = async () => {
        const out: string[] = [];
        for await (const name of root.keys()) if (name.startsWith('edgellm-spill-')) out.push(name);
        return out.sort();
      };
      // As a page that died with its model's directory would leave it: no Web Lock holds it.
      await (await root.getDirectoryHandle('edgellm-spill-deadbeef', { create: true })).getFileHandle('kv-pages', { create: true });
      const before = await dirs();
      const onPage = await lib.loadModel(url, { contextLength: context, kv }).then(() => null, (e) => ({ code: e.code, message: e.message }));
      const model = await lib.loadModelInWorker(url, { contextLength: context, kv, threads: 2 });
      const during = await dirs();
      const ids: number[] = [];
      await model.complete(prompt, { maxTokens, onToken: (id) => ids.push(id) });
      const usage = (await model.memory()).kv;
      await model.dispose();
      return { before, onPage, during, ids, usage, threads: model.info.threads, after: await dirs() };
    }, { url: `/models/${SOTU.file}`, context, kv, prompt: API.prompt, maxTokens });

    expect(r.before).toEqual(['edgellm-spill-deadbeef']);
    expect(r.onPage?.code).toBe('BAD_ARGUMENT');
    expect(r.onPage?.message).toMatch(/only in dedicated workers: load the model with loadModelInWorker/);
    expect(r.during, "the model's own directory; the dead one swept").toHaveLength(1);
    expect(r.during[0]).not.toBe('edgellm-spill-deadbeef');
    expect(r.threads).toBe(2);
    expect(r.ids).toEqual(ids);
    expect(r.usage.coldPagesInUse, 'pages went cold').toBeGreaterThan(0);
    expect(r.usage.coldPagesStaged, 'cold pages were read back').toBeGreaterThan(0);
    expect(r.usage.coldBytesAllocated).toBeGreaterThanOrEqual(r.usage.coldPagesInUse * r.usage.pageBytes);
    expect(r.after, 'dispose removed the directory').toEqual([]);
    await expect.poll(() => p.page.workers().length, { timeout: STEP_MS }).toBe(0);
    p.check();
    await p.page.close();
  });

  it("cold weights: every layer streamed from an OPFS spill file in the model's worker gives Node's tokens, and dispose removes it", async () => {
    const ref = await loadModel(modelPath(SOTU.file), { contextLength: context });
    const ids = await greedyIds(ref, API.prompt, maxTokens);
    void ref.dispose();

    const p = await ExamplePage.open(desktop, server.url, true);
    await exposeLib(p.page);
    const r = await p.page.evaluate(async ({ url, context, prompt, maxTokens }) => {
      const lib = (window as unknown as ApiHooks).edgellmLib!;
      const root = (await navigator.storage.getDirectory()) as FileSystemDirectoryHandle & { keys(): AsyncIterable<string> };
      const dirs = async () => {
        const out: string[] = [];
        for await (const name of root.keys()) if (name.startsWith('edgellm-spill-')) out.push(name);
        return out;
      };
      const model = await lib.loadModelInWorker(url, { contextLength: context, weights: 'cold', threads: 2 });
      const ids: number[] = [];
      await model.complete(prompt, { maxTokens, onToken: (id) => ids.push(id) });
      const { weights, regions } = await model.memory();
      const during = await dirs();
      await model.dispose();
      return { ids, weights, slots: regions.filter((g) => g.name.startsWith('weights.slot')).length, during, after: await dirs() };
    }, { url: `/models/${SOTU.file}`, context, prompt: API.prompt, maxTokens });

    expect(r.ids).toEqual(ids);
    expect(r.weights.layers.every((x) => x === 'cold')).toBe(true);
    expect(r.weights.spill).toMatch(/^opfs:\/edgellm-spill-/);
    expect(r.weights.stages, 'every layer read back from OPFS on every pass').toBeGreaterThan(r.weights.layers.length);
    // a worker cannot read another's OPFS handle: cold layers are staged on the model worker's thread, one slot
    expect(r.weights.stagedAhead).toBe(0);
    expect(r.slots).toBe(1);
    expect(r.during).toHaveLength(1);
    expect(r.after, 'dispose removed the directory').toEqual([]);
    await expect.poll(() => p.page.workers().length, { timeout: STEP_MS }).toBe(0);
    p.check();
    await p.page.close();
  });
});
