// The download cache on files (src/gguf/cache.ts over src/gguf/cache-node.ts), against a real HTTP server on
// loopback (test/util/http-server.ts): first downloads and hits with no request, resumes after a cut connection,
// restarts when the file changed, corrupt entries detected and fetched again, errors that leave nothing behind, two
// processes downloading one URL at once, and list/remove/clear. The models are synthetic GGUFs, so nothing is skipped.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { EdgeLLMError } from '../src/errors.js';
import { loadModel, loadTokenizer } from '../src/index.js';
import { cacheKey } from '../src/gguf/cache.js';
import { defaultCacheDir, openModelCache } from '../src/gguf/cache-node.js';
import type { ByteSource } from '../src/gguf/source.js';
import { startServer, type TestServer } from './util/http-server.js';
import { makeSyntheticLlama } from './util/synthetic.js';
import { ROOT } from './util/shared.js';
import { checkDist } from './util/dist.js';

const spec = { dim: 128, nLayers: 2, nHeads: 4, nKvHeads: 4, ffn: 256, vocab: 320, ctx: 64 };
const MODEL = makeSyntheticLlama({ ...spec, seed: 1 }, { keepWeights: false }).bytes;
const OTHER = makeSyntheticLlama({ ...spec, seed: 2 }, { keepWeights: false }).bytes;
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

let server: TestServer;
const dirs: string[] = [];
const freshDir = () => {
  const d = mkdtempSync(path.join(tmpdir(), 'edgellm-cache-test-'));
  dirs.push(d);
  return d;
};

beforeAll(async () => {
  server = await startServer([{ path: '/m/model.gguf', bytes: MODEL }]);
});
afterAll(async () => {
  await server.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
afterEach(() => {
  // each test sets what it needs; none inherits another's cuts or forced statuses
  server.set({ ranges: true, etag: true, contentLength: true, cutAfterBytes: undefined, cutRequests: 0, status: {}, alter: undefined, requireToken: undefined });
  server.serve({ path: '/m/model.gguf', bytes: MODEL });
});

async function readAll(source: ByteSource): Promise<Uint8Array> {
  try {
    return (await source.read(0, source.size)).slice();
  } finally {
    await source.close();
  }
}

const url = (p = '/m/model.gguf') => `${server.url}${p}`;
const requests = (from: number, p = '/m/model.gguf') => server.log.slice(from).filter((e) => e.path === p);

async function expectCode(p: Promise<unknown>, code: string): Promise<EdgeLLMError> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  expect(err, `expected an EdgeLLMError ${code}`).toBeInstanceOf(EdgeLLMError);
  expect((err as EdgeLLMError).code, (err as Error).message).toBe(code);
  return err as EdgeLLMError;
}

describe('model cache on files', () => {
  it('a first open downloads into the cache, a second makes no request at all', async () => {
    const cache = await openModelCache(freshDir());
    const from = server.log.length;
    const seen: number[] = [];
    const bytes = await readAll(await cache.open(url(), { onProgress: (loaded) => seen.push(loaded) }));
    expect(sha(bytes)).toBe(sha(MODEL));
    expect(requests(from)).toHaveLength(1);
    expect(requests(from)[0]).toMatchObject({ status: 200, bodyBytes: MODEL.length });
    expect(seen.at(-1)).toBe(MODEL.length);

    const again = server.log.length;
    expect(sha(await readAll(await cache.open(url())))).toBe(sha(MODEL));
    expect(server.log.length).toBe(again);

    const [entry] = await cache.list();
    expect(entry).toMatchObject({ url: url(), size: MODEL.length, complete: true, downloaded: MODEL.length, key: cacheKey(url()) });
    expect(entry.key).toMatch(/^model-[0-9a-f]{16}$/);
    expect(sha(readFileSync(entry.where))).toBe(sha(MODEL));
    // nothing but the data and its record is left: no partial, no lock, no temporary file
    expect(readdirSync(cache.where).sort()).toEqual([`${entry.key}.gguf`, `${entry.key}.json`]);
  });

  it('a connection cut mid-body resumes with a Range request, and the file is byte-identical', async () => {
    const cache = await openModelCache(freshDir());
    // once: the same open resumes by itself
    server.set({ cutAfterBytes: 300_000, cutRequests: 1 });
    let from = server.log.length;
    expect(sha(await readAll(await cache.open(url())))).toBe(sha(MODEL));
    let log = requests(from);
    // the client has what reached it before the cut (the server's last writes may be lost with the connection)
    expect(log.map((e) => [e.status, e.range])).toEqual([[200, undefined], [206, expect.stringMatching(/^bytes=\d+-$/)]]);
    const resumedAt = Number(/\d+/.exec(log[1].range!)![0]);
    expect(resumedAt).toBeGreaterThan(0);
    expect(resumedAt).toBeLessThanOrEqual(300_000);
    expect(log[1].bodyBytes).toBe(MODEL.length - resumedAt);

    // cut on every try: the open fails, the bytes so far are kept, and the next open continues from them
    await cache.clear();
    server.set({ cutAfterBytes: 200_000, cutRequests: 100 });
    from = server.log.length;
    const err = await expectCode(cache.open(url()), 'BAD_SOURCE');
    expect(err.message).toMatch(/kept, and the next open resumes/);
    const [partial] = await cache.list();
    expect(partial.complete).toBe(false);
    expect(partial.downloaded).toBeGreaterThan(0);
    expect(partial.where.endsWith('.gguf.partial')).toBe(true);
    server.set({ cutAfterBytes: undefined, cutRequests: 0 });
    from = server.log.length;
    expect(sha(await readAll(await cache.open(url())))).toBe(sha(MODEL));
    log = requests(from);
    expect(log).toHaveLength(1);
    expect(log[0]).toMatchObject({ status: 206, range: `bytes=${partial.downloaded}-`, bodyBytes: MODEL.length - partial.downloaded });
    expect((await cache.list())[0]).toMatchObject({ complete: true, downloaded: MODEL.length });
  });

  it('a download that stalls (no bytes, the connection open) is resumed after stallMs; the file is byte-identical', async () => {
    const cache = await openModelCache(freshDir());
    server.set({ cutAfterBytes: 300_000, cutRequests: 1, stallCuts: true });
    const from = server.log.length;
    try {
      expect(sha(await readAll(await cache.open(url(), { stallMs: 300 })))).toBe(sha(MODEL));
    } finally {
      server.set({ stallCuts: false });
    }
    const log = requests(from);
    expect(log.map((e) => [e.status, e.range])).toEqual([[200, undefined], [206, expect.stringMatching(/^bytes=\d+-$/)]]);
    expect(log[0].bodyBytes).toBe(300_000);
  });

  it('a file that changed between the cut and the resume is downloaded again from 0', async () => {
    const cache = await openModelCache(freshDir());
    server.set({ cutAfterBytes: 250_000, cutRequests: 100 });
    await expectCode(cache.open(url()), 'BAD_SOURCE');
    const [partial] = await cache.list();
    server.set({ cutAfterBytes: undefined, cutRequests: 0 });
    server.serve({ path: '/m/model.gguf', bytes: OTHER }); // another ETag
    const from = server.log.length;
    expect(sha(await readAll(await cache.open(url())))).toBe(sha(OTHER));
    // If-Range named the old ETag, so the server sent the whole new file (200), and that is what was kept
    expect(requests(from).map((e) => [e.status, e.range])).toEqual([[200, `bytes=${partial.downloaded}-`]]);
  });

  it('restarts from 0 when the server refuses the range (416) or answers with another one', async () => {
    const cache = await openModelCache(freshDir());
    server.set({ cutAfterBytes: 100_000, cutRequests: 100 });
    await expectCode(cache.open(url()), 'BAD_SOURCE');
    server.set({ cutAfterBytes: undefined, cutRequests: 0, alter: (res, req) => req.range && ((res.status = 416), (res.headers = { 'content-range': `bytes */${MODEL.length}` })) });
    let from = server.log.length;
    expect(sha(await readAll(await cache.open(url())))).toBe(sha(MODEL));
    expect(requests(from).map((e) => [e.status, e.range ?? ''])).toEqual([[416, expect.stringMatching(/^bytes=\d+-$/)], [200, '']]);

    await cache.clear();
    server.set({ alter: undefined, cutAfterBytes: 100_000, cutRequests: 100 });
    await expectCode(cache.open(url()), 'BAD_SOURCE');
    // a server that lies about the range it sends
    server.set({ cutAfterBytes: undefined, cutRequests: 0, alter: (res, req) => void (req.range && (res.headers['content-range'] = `bytes 0-${MODEL.length - 1}/${MODEL.length}`)) });
    from = server.log.length;
    expect(sha(await readAll(await cache.open(url())))).toBe(sha(MODEL));
    expect(requests(from).map((e) => e.range === undefined)).toEqual([false, true]);
  });

  it('a server without ranges, or without an ETag, starts again rather than trust a partial', async () => {
    const cache = await openModelCache(freshDir());
    server.set({ ranges: false, cutAfterBytes: 100_000, cutRequests: 1 });
    let from = server.log.length;
    expect(sha(await readAll(await cache.open(url())))).toBe(sha(MODEL));
    expect(requests(from).map((e) => e.status)).toEqual([200, 200]);

    await cache.clear();
    server.set({ ranges: true, etag: false, cutAfterBytes: 100_000, cutRequests: 1 });
    from = server.log.length;
    const err = await expectCode(cache.open(url()), 'BAD_SOURCE');
    expect(err.message).toMatch(/no ETag or Last-Modified to resume with, so nothing was kept/);
    expect(await cache.list()).toEqual([]);
    expect(sha(await readAll(await cache.open(url())))).toBe(sha(MODEL));

    // a chunked body (no Content-Length): the size is what arrived, and the header still has to parse
    await cache.clear();
    server.set({ etag: true, contentLength: false });
    expect(sha(await readAll(await cache.open(url())))).toBe(sha(MODEL));
    expect((await cache.list())[0]).toMatchObject({ complete: true, size: MODEL.length });
  });

  it('a truncated, corrupted or unreadable entry is detected at open, removed and fetched again, never used', async () => {
    const cache = await openModelCache(freshDir());
    await readAll(await cache.open(url()));
    const [entry] = await cache.list();
    const record = path.join(cache.where, `${entry.key}.json`);
    const corruptions: Array<[string, () => void]> = [
      ['truncated data', () => truncateSync(entry.where, MODEL.length - 1000)],
      ['a header that does not parse', () => writeFileSync(entry.where, Buffer.concat([Buffer.from('GGUX'), Buffer.from(MODEL.subarray(4))]))],
      ['a record that is not JSON', () => writeFileSync(record, '{"url": "http')],
      ['a record whose size disagrees', () => writeFileSync(record, readFileSync(record, 'utf8').replace(`"size":${MODEL.length}`, `"size":${MODEL.length + 1}`))],
      ['a record of another URL', () => writeFileSync(record, readFileSync(record, 'utf8').replace('/m/model.gguf', '/m/other.gguf'))],
      ['a huge record', () => writeFileSync(record, ' '.repeat(100_000))],
      ['the data missing', () => rmSync(entry.where)],
      ['the record missing', () => rmSync(record)],
    ];
    for (const [what, corrupt] of corruptions) {
      corrupt();
      const from = server.log.length;
      expect(sha(await readAll(await cache.open(url()))), what).toBe(sha(MODEL));
      expect(requests(from).map((e) => [e.status, e.bodyBytes]), what).toEqual([[200, MODEL.length]]);
      expect(await cache.list(), what).toEqual([expect.objectContaining({ key: entry.key, complete: true })]);
    }
    // get() never downloads: a corrupt entry is removed and reported absent
    truncateSync(entry.where, 100);
    const from = server.log.length;
    expect(await cache.get(url())).toBeUndefined();
    expect(server.log.length).toBe(from);
    expect(await cache.list()).toEqual([]);
  });

  it('404, 500 and a body that is not a GGUF leave no entry behind', async () => {
    const cache = await openModelCache(freshDir());
    server.set({ status: { '/m/model.gguf': 500 } });
    expect((await expectCode(cache.open(url()), 'BAD_SOURCE')).message).toMatch(/HTTP status 500/);
    expect(await cache.list()).toEqual([]);
    await expectCode(cache.open(url('/m/missing.gguf')), 'BAD_SOURCE');
    expect(await cache.list()).toEqual([]);
    server.set({ status: {} });
    server.serve({ path: '/m/page.gguf', bytes: new TextEncoder().encode('<html>not a model</html>'.repeat(100)) });
    expect((await expectCode(cache.open(url('/m/page.gguf')), 'BAD_MAGIC')).message).toMatch(/not a usable GGUF \(not kept\)/);
    expect(await cache.list()).toEqual([]);
    expect(readdirSync(cache.where)).toEqual([]);
  });

  it('credentials go to the server but never into a key or a record', async () => {
    const cache = await openModelCache(freshDir());
    server.set({ requireToken: 'sekrit' });
    const withToken = `${url()}?token=abc`;
    await expectCode(cache.open(withToken), 'BAD_SOURCE'); // 401 without the header
    await readAll(await cache.open(withToken, { headers: { Authorization: 'Bearer sekrit' } }));
    expect(cacheKey(withToken)).toBe(cacheKey(url()));
    const [entry] = await cache.list();
    expect(entry.url).toBe(url());
    const record = readFileSync(path.join(cache.where, `${entry.key}.json`), 'utf8');
    expect(record).not.toMatch(/abc|sekrit|token/);
    // and the entry serves the same URL without them, with no request
    const from = server.log.length;
    await readAll(await cache.open(url()));
    expect(server.log.length).toBe(from);
  });

  it('two opens of one URL at once in one process: one download, the same bytes', async () => {
    const cache = await openModelCache(freshDir());
    const from = server.log.length;
    const [a, b] = await Promise.all([cache.open(url()), cache.open(url())]);
    expect(sha(await readAll(a))).toBe(sha(MODEL));
    expect(sha(await readAll(b))).toBe(sha(MODEL));
    expect(requests(from)).toHaveLength(1);
  });

  it('two processes downloading one URL at once do not corrupt each other; a dead holder\'s lock is broken', async () => {
    const dir = freshDir();
    // The children run the cache module bundled from the sources, as dist/index.js would carry it.
    const bundle = path.join(freshDir(), 'cache-node.mjs');
    const { build } = await import('esbuild');
    await build({ entryPoints: [path.join(ROOT, 'src/gguf/cache-node.ts')], bundle: true, format: 'esm', platform: 'node', outfile: bundle, logLevel: 'warning' });
    const child = () =>
      new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
        const script = `
          const { openModelCache } = await import(${JSON.stringify(pathToFileURL(bundle).href)});
          const { createHash } = await import('node:crypto');
          const cache = await openModelCache(${JSON.stringify(dir)});
          const s = await cache.open(${JSON.stringify(url())});
          const b = await s.read(0, s.size);
          console.log(createHash('sha256').update(b).digest('hex'));
          await s.close();`;
        const p = spawn(process.execPath, ['--input-type=module', '-e', script]);
        let out = '', err = '';
        p.stdout.on('data', (d) => (out += d));
        p.stderr.on('data', (d) => (err += d));
        p.on('close', (code) => resolve({ code, out, err }));
      });
    // slow enough that both are in flight together: the server cuts each body once, so each resumes
    server.set({ cutAfterBytes: 150_000, cutRequests: 2 });
    const from = server.log.length;
    const results = await Promise.all([child(), child()]);
    for (const r of results) {
      expect(r.code, r.err).toBe(0);
      expect(r.out.trim()).toBe(sha(MODEL));
    }
    // one of them downloaded (with its resumes); the other waited and then used the entry
    const full = requests(from).filter((e) => e.status === 200);
    expect(full).toHaveLength(1);
    expect(requests(from).reduce((n, e) => n + e.bodyBytes, 0)).toBeLessThan(2 * MODEL.length);

    // a lock left by a process that died is taken over at once
    const dead = await new Promise<number>((resolve) => {
      const p = spawn(process.execPath, ['-e', '']);
      p.on('close', () => resolve(p.pid!));
    });
    const cache = await openModelCache(dir);
    await cache.clear();
    const { hostname } = await import('node:os');
    writeFileSync(path.join(dir, `${cacheKey(url())}.lock`), JSON.stringify({ pid: dead, host: hostname(), token: 'x' }));
    expect(sha(await readAll(await cache.open(url())))).toBe(sha(MODEL));
    expect(existsSync(path.join(dir, `${cacheKey(url())}.lock`))).toBe(false);
  });

  it('list, remove by URL, key or file name, and clear', async () => {
    const cache = await openModelCache(freshDir());
    server.serve({ path: '/a/model.gguf', bytes: OTHER });
    server.serve({ path: '/b/other.gguf', bytes: OTHER });
    for (const p of ['/m/model.gguf', '/a/model.gguf', '/b/other.gguf']) await readAll(await cache.open(url(p)));
    const all = await cache.list();
    expect(all.map((e) => e.url).sort()).toEqual([url('/a/model.gguf'), url('/b/other.gguf'), url('/m/model.gguf')]);
    expect(await cache.remove(url('/b/other.gguf'))).toBe(1);
    expect(await cache.remove(url('/b/other.gguf'))).toBe(0);
    // a file name names every entry of that name
    expect(await cache.remove('model.gguf')).toBe(2);
    expect(await cache.list()).toEqual([]);
    await readAll(await cache.open(url('/b/other.gguf')));
    expect(await cache.remove(cacheKey(url('/b/other.gguf')))).toBe(1);
    for (const p of ['/m/model.gguf', '/a/model.gguf']) await readAll(await cache.open(url(p)));
    expect(await cache.clear()).toBe(2);
    expect(readdirSync(cache.where)).toEqual([]);
  });

  it('loadModel goes through the cache; loadTokenizer reads a cached header but downloads nothing into the cache', async () => {
    const cache = await openModelCache(freshDir());
    server.serve({ path: '/t/other.gguf', bytes: OTHER });
    let from = server.log.length;
    const tokenizer = await loadTokenizer(url('/t/other.gguf'), { cache });
    expect(tokenizer.info.vocabSize).toBe(spec.vocab);
    expect(requests(from, '/t/other.gguf').reduce((n, e) => n + e.bodyBytes, 0)).toBeLessThan(OTHER.length);
    expect(await cache.list()).toEqual([]);

    from = server.log.length;
    const first = await loadModel(url(), { cache, contextLength: 16 });
    const expected = await first.complete([1, 5, 9], { maxTokens: 4 });
    await first.dispose();
    expect(requests(from).map((e) => e.bodyBytes)).toEqual([MODEL.length]);
    from = server.log.length;
    const second = await loadModel(url(), { cache, contextLength: 16 });
    expect(await second.complete([1, 5, 9], { maxTokens: 4 })).toBe(expected);
    await second.dispose();
    await loadTokenizer(url(), { cache });
    expect(server.log.length).toBe(from);
  });

  it('the default directory: EDGELLM_CACHE, else the platform\'s cache directory', () => {
    expect(defaultCacheDir({ EDGELLM_CACHE: '/x/y' }, 'linux', '/home/u')).toBe('/x/y');
    expect(defaultCacheDir({ XDG_CACHE_HOME: '/xdg' }, 'linux', '/home/u')).toBe('/xdg/edgellm');
    expect(defaultCacheDir({}, 'linux', '/home/u')).toBe('/home/u/.cache/edgellm');
    expect(defaultCacheDir({}, 'darwin', '/Users/u')).toBe('/Users/u/Library/Caches/edgellm');
    expect(defaultCacheDir({ LOCALAPPDATA: 'C:\\Users\\u\\AppData\\Local' }, 'win32', 'C:\\Users\\u')).toMatch(/edgellm[\\/]cache$/);
  });

  it.skipIf(!existsSync('/proc/self/status'))('loading a URL through the cache keeps peak RSS below the file size plus the planned memory', async () => {
    checkDist();
    // 16 layers of F32 at 512 wide: 210 MiB, well above what a Node process holds before any model plus what a
    // download leaves to the collector (the chunks fetch hands out: some 60 MiB before V8 collects them)
    const big = makeSyntheticLlama({ dim: 512, nLayers: 16, nHeads: 8, nKvHeads: 8, ffn: 1536, vocab: 320, ctx: 64, seed: 9 }, { keepWeights: false }).bytes;
    server.serve({ path: '/m/big.gguf', bytes: big });
    const dir = freshDir();
    const file = path.join(dir, 'big.gguf');
    writeFileSync(file, big);
    const cacheDir = freshDir();
    // VmHWM, not resourceUsage().maxRSS: Linux carries maxRSS over exec from the forked parent (this test worker).
    const child = (source: string) =>
      new Promise<{ peak: number; plannedBytes: number; fileSize: number }>((resolve, reject) => {
        const script = `
          const { readFileSync } = await import('node:fs');
          const hwm = () => Number(/VmHWM:\\s*(\\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'))[1]) * 1024;
          const { loadModel, openModelCache } = await import(${JSON.stringify(pathToFileURL(path.join(ROOT, 'dist/index.js')).href)});
          const src = ${source};
          const model = await loadModel(src, { contextLength: 64, cache: await openModelCache(${JSON.stringify(cacheDir)}) });
          console.log(JSON.stringify({ peak: hwm(), plannedBytes: model.memory().plannedBytes, fileSize: model.info.fileSize }));
          await model.dispose();`;
        const p = spawn(process.execPath, ['--input-type=module', '-e', script]);
        let out = '', err = '';
        p.stdout.on('data', (d) => (out += d));
        p.stderr.on('data', (d) => (err += d));
        p.on('close', (code) => (code === 0 ? resolve(JSON.parse(out.trim().split('\n').pop()!)) : reject(new Error(err))));
      });
    const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;
    const from = server.log.length;
    const downloading = await child(JSON.stringify(url('/m/big.gguf')));
    expect(requests(from, '/m/big.gguf').map((e) => e.bodyBytes)).toEqual([big.length]);
    const cached = await child(JSON.stringify(url('/m/big.gguf')));
    expect(requests(from, '/m/big.gguf')).toHaveLength(1);
    // the bytes read into memory first, then loaded: what a download held whole costs, and the line it crosses
    const whole = await child(`(b => new Uint8Array(b.buffer, b.byteOffset, b.length))(readFileSync(${JSON.stringify(file)}))`);
    const bound = big.length + downloading.plannedBytes;
    console.log(
      `peak RSS: downloading into the cache ${mib(downloading.peak)}, from the cache ${mib(cached.peak)}, the file in memory ${mib(whole.peak)}; ` +
        `file ${mib(big.length)} + planned ${mib(downloading.plannedBytes)} = ${mib(bound)}`,
    );
    expect(downloading.fileSize).toBe(big.length);
    expect(downloading.peak, 'downloading through the cache').toBeLessThan(bound);
    expect(cached.peak, 'loading from the cache').toBeLessThan(bound);
    expect(whole.peak, 'the test can tell: a file held whole is over the line').toBeGreaterThan(bound);
  });
});
