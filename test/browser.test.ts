// The browser example (examples/browser/) in a real browser: headless Chromium (Debian's) driven by playwright-core,
// the page served by the example's own zero-dependency server with NO COOP/COEP headers, as a mobile WebView or a
// plain static host would load it. So the page is not cross-origin isolated and has no SharedArrayBuffer, which
// edgellm (single-threaded) does not need. Through the page's own controls:
// - tiny-260k-q8_0 opened with the file picker (a File, read slice by slice), on a desktop viewport;
// - sotu-15m-q4_0 loaded by URL (fetched from the same server), in an emulated Android WebView (small viewport, touch,
//   isMobile, a WebView user agent);
// each with the default kernels (relaxed SIMD in current Chromium) and ?simd=baseline (SIMD128). Every run must give
// exactly Node's 32 greedy token ids and text, and plan the same wasm memory as Node.
// The page tests dist/browser.js, the bundle users get: `npm test` builds it first (`npm run build` otherwise).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { chromium, devices, type Browser, type BrowserContext, type BrowserContextOptions, type Page } from 'playwright-core';
import { loadModel } from '../src/index.js';
import { startServer, type RunningServer } from '../examples/browser/serve.mjs';
import { announceSkipIfNoModels, modelPath, MODELS } from './util/shared.js';
import { checkDist } from './util/dist.js';

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

const N = 32;
const CONTEXT = 512; // the page's default
const TINY = { file: 'tiny-260k-q8_0.gguf', prompt: 'Once upon a time' };
const SOTU = { file: 'sotu-15m-q4_0.gguf', prompt: 'The state of the Union is' };
const STEP_MS = 60_000;

interface Reference { ids: number[]; text: string; memoryBytes: number }
interface LastRun { build: string; ids: number[]; text: string; memoryBytes: number; stopped: boolean; stats?: { generatedTokens: number; stopReason: string } }
interface Loaded { name: string; build: string; memoryBytes: number; context: number }
/** The page's test hooks (see examples/browser/app.js). */
type Hooks = { edgellmLoaded?: Loaded; edgellmLastRun?: LastRun; edgellmError?: string };
// (page functions are serialized into the page, so they spell out `window as unknown as Hooks` themselves)

/** Node's greedy ids and text: the reference every browser run must equal. */
async function nodeReference(file: string, prompt: string): Promise<Reference> {
  const model = await loadModel(modelPath(file), { contextLength: CONTEXT });
  const ids: number[] = [];
  let text = '';
  for await (const chunk of model.generate(prompt, { maxTokens: N, temperature: 0, onToken: (id) => ids.push(id) })) text += chunk;
  const memoryBytes = model.memory().totalBytes;
  model.dispose();
  return { ids, text, memoryBytes };
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

  static async open(context: BrowserContext, url: string): Promise<ExamplePage> {
    const p = new ExamplePage(await context.newPage());
    const response = await p.page.goto(url);
    expect(response?.status()).toBe(200);
    // Served as a static host or a WebView would: no isolation headers.
    const headers = response!.headers();
    expect(headers['cross-origin-opener-policy']).toBeUndefined();
    expect(headers['cross-origin-embedder-policy']).toBeUndefined();
    await p.until('the page script to start', () => document.body.dataset.state === 'idle' || document.body.dataset.state === 'error');
    p.check();
    return p;
  }

  /** Fails with the page's errors and console, so a failure inside Chromium is readable from the test output. */
  check(what = 'the page'): void {
    if (this.problems.length) throw new Error(`${what}: ${this.problems.join('\n')}\n--- console ---\n${this.log.join('\n')}`);
    expect(this.problems).toEqual([]);
  }

  async until(what: string, predicate: () => unknown): Promise<void> {
    try {
      await this.page.waitForFunction(predicate, undefined, { timeout: STEP_MS, polling: 50 });
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

  /** Fills in the controls, presses Generate and waits for the run to end. */
  async generate(prompt: string, maxTokens: number, temperature = 0): Promise<LastRun> {
    await this.page.fill('#prompt', prompt);
    await this.page.fill('#max-tokens', String(maxTokens));
    await this.page.fill('#temperature', String(temperature));
    await this.page.click('#generate');
    await this.until('the generation to end', () => (window as unknown as Hooks).edgellmLastRun || (window as unknown as Hooks).edgellmError);
    const { run, error } = await this.page.evaluate(() => ({ run: (window as unknown as Hooks).edgellmLastRun, error: (window as unknown as Hooks).edgellmError }));
    expect(error, 'the page shows an error').toBeUndefined();
    expect(await this.page.getAttribute('body', 'data-state')).toBe('ready');
    this.check('generating');
    return run!;
  }

  async status(): Promise<string> {
    return (await this.page.textContent('#status')) ?? '';
  }
}

describe.skipIf(!HAVE)('browser example in headless Chromium (no cross-origin isolation)', () => {
  const ref = new Map<string, Reference>();
  let server: RunningServer;
  let browser: Browser;
  let desktop: BrowserContext;
  let webview: BrowserContext;

  beforeAll(async () => {
    checkDist();
    for (const c of [TINY, SOTU]) ref.set(c.file, await nodeReference(c.file, c.prompt));
    server = await startServer({ port: 0, mounts: { '/models/': MODELS } });
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
    await p.page.close();
  });

  for (const simd of ['auto', 'baseline'] as const) {
    const build = simd === 'auto' ? 'relaxed' : 'simd';

    it(`tiny-260k by file picker, simd ${simd}: the ${build} build gives Node's greedy tokens`, async () => {
      const p = await ExamplePage.open(desktop, `${server.url}?simd=${simd}`);
      expect(await p.page.evaluate(() => globalThis.crossOriginIsolated)).toBe(false);
      const loaded = await p.loadFile(modelPath(TINY.file));
      expect(loaded.name).toBe(TINY.file);
      expect(loaded.build).toBe(build);
      expect(loaded.context).toBe(CONTEXT);
      const want = ref.get(TINY.file)!;
      const run = await p.generate(TINY.prompt, N);
      expect(run.build).toBe(build);
      expect(run.ids).toEqual(want.ids);
      expect(run.text).toBe(want.text);
      expect(run.memoryBytes).toBe(want.memoryBytes);
      expect(run.stats?.generatedTokens).toBe(N);
      const status = await p.status();
      expect(status).toContain(`build ${build}`);
      expect(status).toMatch(/\d tok\/s decode/);
      expect(status).toContain('wasm memory');
      expect(await p.page.textContent('#output')).toBe(TINY.prompt + want.text);

      // Stop: pressed right after Generate, the run ends at the next token boundary, and the page stays usable.
      await p.page.evaluate(() => {
        (window as unknown as Hooks).edgellmLastRun = undefined;
        (document.getElementById('generate') as HTMLButtonElement).click();
        (document.getElementById('stop') as HTMLButtonElement).click();
      });
      await p.until('the stopped run', () => (window as unknown as Hooks).edgellmLastRun);
      const stopped = await p.page.evaluate(() => ({ run: (window as unknown as Hooks).edgellmLastRun!, error: (window as unknown as Hooks).edgellmError, state: document.body.dataset.state }));
      expect(stopped).toMatchObject({ run: { stopped: true }, error: undefined, state: 'ready' });
      expect(stopped.run.ids.length).toBeLessThan(N);
      expect((await p.generate(TINY.prompt, N)).ids).toEqual(want.ids);
      await p.page.close();
    });

    it(`sotu-15m by URL in an Android WebView, simd ${simd}: the ${build} build gives Node's greedy tokens`, async () => {
      const p = await ExamplePage.open(webview, `${server.url}?simd=${simd}`);
      // a page-relative URL, resolved against the page's location by loadModel
      const loaded = await p.loadUrl(`/models/${SOTU.file}`);
      expect(loaded.name).toBe(SOTU.file);
      expect(loaded.build).toBe(build);
      const want = ref.get(SOTU.file)!;
      const run = await p.generate(SOTU.prompt, N);
      expect(run.build).toBe(build);
      expect(run.ids).toEqual(want.ids);
      expect(run.text).toBe(want.text);
      expect(run.memoryBytes).toBe(want.memoryBytes);
      expect(await p.status()).toContain(`build ${build}`);
      await p.page.close();
    });
  }

  it('shows a failed load as `code: message`', async () => {
    const p = await ExamplePage.open(desktop, server.url);
    await p.page.fill('#url', '/examples/browser/index.html');
    await p.page.click('#load');
    await p.until('the error', () => (window as unknown as Hooks).edgellmError);
    expect(await p.page.textContent('#error')).toMatch(/^BAD_MAGIC: /);
    expect(await p.page.getAttribute('body', 'data-state')).toBe('error');
    expect(await p.page.isDisabled('#generate')).toBe(true);
    p.check();
    await p.page.close();
  });
});
