// The download cache in a real browser (Debian's Chromium, driven by playwright-core): dist/browser.js on a page served
// by the loopback test server (test/util/http-server.ts), with the model from the same origin.
// - loadModel(url) caches in OPFS by default; a second page load makes no request for the model, and gives the same
//   tokens as Node; `cache: false` does request it (so it is the cache, not the browser's HTTP cache, that serves it);
// - a download stopped part way (aborted) resumes on the next page load with a Range request, into an entry of
//   several segments, byte-identical;
// - the Cache API store (where OPFS is missing) does the same.
// The model is a synthetic GGUF, so only a missing Chromium skips this.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { loadModel } from '../src/index.js';
import { cacheKey } from '../src/gguf/cache.js';
import { startServer, type TestServer } from './util/http-server.js';
import { makeSyntheticLlama } from './util/synthetic.js';
import { greedyIds } from './util/models.js';
import { ROOT } from './util/shared.js';
import { checkDist } from './util/dist.js';

const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const HAVE_CHROMIUM = existsSync(CHROMIUM);
if (!HAVE_CHROMIUM) {
  const line = '!'.repeat(100);
  console.warn(`\n${line}\n!!! SKIPPED: browser cache tests (test/cache-browser.test.ts): no Chromium at ${CHROMIUM} (set CHROMIUM=/path/to/chromium).\n${line}\n`);
}
// as test/browser.test.ts launches it: no Google services on a closed network, and no sandbox (CI runs as root)
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

// 5.8 MB: large enough that the browser receives it in several chunks, so a download can stop part way
const MODEL = makeSyntheticLlama({ dim: 192, nLayers: 3, nHeads: 4, nKvHeads: 4, ffn: 512, vocab: 320, ctx: 64, seed: 5 }, { keepWeights: false }).bytes;
const PROMPT = [1, 5, 9, 13];
const TOKENS = 6;
/** The page imports dist/browser.js itself (a function handed to page.evaluate cannot: the test runner rewrites import()). */
const PAGE = `<!doctype html><title>edgellm cache</title><script type="module">import * as lib from '/dist/browser.js'; window.edgellmLib = lib;</script>`;
type Hooks = { edgellmLib?: typeof import('../src/browser.js') };
const TYPES: Record<string, string> = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm' };

let server: TestServer;
let browser: Browser;
let expected: number[];

/** What a page did: its tokens (or its error), the entries of the cache it used, the SHA-256 of the cached bytes. */
interface PageRun { ids: number[]; error?: string; entries: Array<{ key: string; complete: boolean; size: number; downloaded: number; where: string }>; sha?: string }
interface How {
  cache?: false | { storage?: 'opfs' | 'cache-api'; segmentBytes?: number };
  /** abort the load once this many bytes have arrived, as a person closing the download would */
  abortAfter?: number;
  sha?: boolean;
}

/** Loads the model on a fresh page of `context` and generates greedily. */
async function runPage(context: BrowserContext, how: How = {}): Promise<PageRun> {
  const page: Page = await context.newPage();
  const problems: string[] = [];
  page.on('pageerror', (e) => problems.push(e.message));
  try {
    expect((await page.goto(`${server.url}/page.html`))?.status()).toBe(200);
    await page.waitForFunction(() => (window as unknown as Hooks).edgellmLib);
    const run = await page.evaluate(
      async ({ how, prompt, tokens }) => {
        const edgellm = (window as unknown as Hooks).edgellmLib!;
        const cache = how.cache === false ? false : how.cache ? await edgellm.openModelCache(how.cache) : undefined;
        const listed = async () =>
          (await (cache || (await edgellm.openModelCache())).list()).map(({ key, complete, size, downloaded, where }) => ({ key, complete, size, downloaded, where }));
        const controller = new AbortController();
        const ids: number[] = [];
        try {
          const model = await edgellm.loadModel('/m/model.gguf', {
            ...(cache === undefined ? {} : { cache }),
            signal: controller.signal,
            onProgress: (p) => void (p.phase === 'download' && how.abortAfter !== undefined && p.loaded >= how.abortAfter && controller.abort()),
          });
          await model.complete(prompt, { maxTokens: tokens, temperature: 0, onToken: (id: number) => ids.push(id) });
          await model.dispose();
        } catch (e) {
          return { ids, error: `${(e as { code?: string }).code}: ${(e as Error).message}`, entries: await listed() };
        }
        let sha: string | undefined;
        if (how.sha && cache) {
          const source = await cache.open(new URL('/m/model.gguf', location.href).href);
          const bytes = await source.read(0, source.size);
          await source.close();
          sha = [...new Uint8Array(await crypto.subtle.digest('SHA-256', bytes))].map((b) => b.toString(16).padStart(2, '0')).join('');
        }
        return { ids, entries: await listed(), sha };
      },
      { how, prompt: PROMPT, tokens: TOKENS },
    );
    expect(problems).toEqual([]);
    return run;
  } finally {
    await page.close();
  }
}

const modelRequests = (from: number) => server.log.slice(from).filter((e) => e.path === '/m/model.gguf');

describe.skipIf(!HAVE_CHROMIUM)('model cache in Chromium', () => {
  beforeAll(async () => {
    checkDist();
    const dist = ['browser.js', 'edgellm-simd.wasm', 'edgellm-relaxed.wasm'].map((f) => ({ path: `/dist/${f}`, file: path.join(ROOT, 'dist', f) }));
    server = await startServer([
      { path: '/page.html', bytes: new TextEncoder().encode(PAGE) },
      ...dist,
      { path: '/m/model.gguf', bytes: MODEL },
    ]);
    // The test server sends application/octet-stream; a page and its module need their own types.
    server.set({ alter: (res, req) => void (res.headers['content-type'] = TYPES[path.extname(req.path)] ?? res.headers['content-type']) });
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
    const node = await loadModel(MODEL);
    expected = await greedyIds(node, PROMPT, TOKENS);
    await node.dispose();
  });
  afterAll(async () => {
    await browser?.close();
    await server?.close();
  });

  it('OPFS by default: the first page load downloads, the second makes no request for the model', async () => {
    const context = await browser.newContext();
    try {
      let from = server.log.length;
      const first = await runPage(context);
      expect(first.error).toBeUndefined();
      expect(first.ids).toEqual(expected);
      expect(modelRequests(from).map((e) => [e.status, e.bodyBytes])).toEqual([[200, MODEL.length]]);
      const key = cacheKey(`${server.url}/m/model.gguf`);
      expect(first.entries).toEqual([{ key, complete: true, size: MODEL.length, downloaded: MODEL.length, where: `opfs:/edgellm-cache/${key}` }]);

      from = server.log.length;
      const second = await runPage(context);
      expect(second.ids).toEqual(expected);
      expect(modelRequests(from)).toEqual([]);

      // without the cache the same page does go to the server: it was the cache, not the browser's HTTP cache
      from = server.log.length;
      const uncached = await runPage(context, { cache: false });
      expect(uncached.error).toBeUndefined();
      expect(uncached.ids).toEqual(expected);
      expect(modelRequests(from).length).toBeGreaterThan(0);
    } finally {
      await context.close();
    }
  });

  for (const storage of ['opfs', 'cache-api'] as const) {
    it(`${storage}: a download stopped part way resumes on the next page load with a Range request, byte-identical`, async () => {
      const context = await browser.newContext();
      try {
        const how: How = { cache: { storage, segmentBytes: 1_000_000 } }; // the model spans several segments
        let from = server.log.length;
        const stopped = await runPage(context, { ...how, abortAfter: 2_000_000 });
        expect(stopped.error).toMatch(/^ABORTED: /);
        const [partial] = stopped.entries;
        expect(partial).toMatchObject({ complete: false, size: MODEL.length });
        expect(partial.downloaded).toBeGreaterThanOrEqual(2_000_000);
        expect(partial.downloaded).toBeLessThan(MODEL.length);
        expect(partial.where).toMatch(storage === 'opfs' ? /^opfs:\/edgellm-cache\// : /^cache-api:edgellm\//);

        from = server.log.length;
        const resumed = await runPage(context, { ...how, sha: true });
        expect(resumed.error).toBeUndefined();
        expect(resumed.ids).toEqual(expected);
        expect(resumed.sha).toBe(createHash('sha256').update(MODEL).digest('hex'));
        expect(modelRequests(from).map((e) => [e.status, e.range, e.bodyBytes])).toEqual([[206, `bytes=${partial.downloaded}-`, MODEL.length - partial.downloaded]]);
        expect(resumed.entries).toEqual([expect.objectContaining({ complete: true, size: MODEL.length, downloaded: MODEL.length })]);

        from = server.log.length;
        expect((await runPage(context, how)).ids).toEqual(expected);
        expect(modelRequests(from)).toEqual([]);
      } finally {
        await context.close();
      }
    });
  }
});
