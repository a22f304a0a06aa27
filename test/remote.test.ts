// Models read over HTTP from a real server on loopback (test/util/http-server.ts): range reads, the range-less stream,
// broken connections, and servers that answer wrongly. Byte counts come from the server's own log.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { EdgeLLMError, loadModel, loadTokenizer, type Model } from '../src/index.js';
import { expectCodeAsync } from './util/expect.js';
import { openLocalSource } from '../src/gguf/file.js';
import { readGGUF } from '../src/gguf/reader.js';
import { openHttp } from '../src/gguf/source.js';
import { startServer, type TestServer } from './util/http-server.js';
import { announceSkipIfNoModels, modelPath, ROOT } from './util/shared.js';

const have = announceSkipIfNoModels('HTTP range-read tests (test/remote.test.ts)');
const FILE = modelPath('sotu-15m-q8_0.gguf');
const IDS = [1, 400, 3000, 29, 871, 17, 2];
const MiB = 1 << 20;

async function logits(model: Model): Promise<Float32Array> {
  try {
    return await model.evaluate(IDS);
  } finally {
    model.dispose();
  }
}

describe.skipIf(!have)('HTTP sources', () => {
  let server: TestServer;
  let bytes: Uint8Array;
  let url: string;
  let local: Float32Array;
  const P = '/m/sotu.gguf';

  // These tests are about the network: no load goes through a download cache (a stray one lands in a temporary one).
  const cacheDir = mkdtempSync(path.join(tmpdir(), 'edgellm-remote-cache-'));
  const savedCache = process.env.EDGELLM_CACHE;
  beforeAll(async () => {
    process.env.EDGELLM_CACHE = cacheDir;
    bytes = new Uint8Array(readFileSync(FILE));
    server = await startServer([{ path: P, file: FILE }]);
    url = server.url + P;
    local = await logits(await loadModel(FILE));
  });
  afterAll(async () => {
    await server?.close();
    if (savedCache === undefined) delete process.env.EDGELLM_CACHE;
    else process.env.EDGELLM_CACHE = savedCache;
    rmSync(cacheDir, { recursive: true, force: true });
  });

  const fresh = (opts: Parameters<TestServer['set']>[0] = {}) => {
    server.log.length = 0;
    server.set({ ranges: true, etag: true, contentLength: true, cutAfterBytes: undefined, cutRequests: 0, stallCuts: false, status: {}, alter: undefined, ...opts });
  };

  it('loadTokenizer and the header of a URL transfer about the header, with or without Range support', async () => {
    const expected = (await loadTokenizer(FILE)).tokenize('Once upon a time, a bear');
    for (const ranges of [true, false]) {
      fresh({ ranges });
      const tok = await loadTokenizer(url, { cache: false });
      expect(tok.tokenize('Once upon a time, a bear')).toEqual(expected);
      if (ranges) {
        // the header is 0.7 MB of a 16 MB file: one 1 MiB probe covers it
        expect(server.bodyBytes(P)).toBeLessThanOrEqual(2 * MiB);
        expect(server.log.every((e) => e.status === 206)).toBe(true);
      } else {
        expect(server.log.filter((e) => e.path === P)).toHaveLength(1);
        expect(server.log[0].status).toBe(200);
      }
    }
    fresh();
    const source = await openLocalSource(url);
    const gguf = await readGGUF(source);
    await source.close();
    expect(gguf.tensors.length).toBe(56);
    expect(server.bodyBytes(P)).toBeLessThan(bytes.length / 8);
  });

  it('loadModel from a URL, with and without Range support, gives the local file’s logits, reading no more than a loader buffer at once', async () => {
    for (const ranges of [true, false]) {
      fresh({ ranges });
      const progress: number[] = [];
      const model = await loadModel(url, { cache: false, onProgress: (p) => p.phase === 'download' && progress.push(p.loaded) });
      const readBytes = model.memory().weights.readBytes;
      expect(await logits(model)).toEqual(local);
      const requests = server.log.filter((e) => e.path === P);
      if (ranges) {
        expect(requests.every((e) => e.status === 206)).toBe(true);
        // the probe, then one request per loader read: never a larger body
        for (const r of requests.slice(1)) expect(r.bodyBytes).toBeLessThanOrEqual(readBytes);
        expect(requests[0].bodyBytes).toBe(MiB);
      } else {
        // one forward stream: the loader reads in file order, so the GET never restarts
        expect(requests).toHaveLength(1);
        expect(requests[0].status).toBe(200);
      }
      // onProgress counts the bytes the server sent (the stream may still have some in flight when it is closed)
      expect(progress.at(-1)).toBeLessThanOrEqual(server.bodyBytes(P));
      if (ranges) expect(progress.at(-1)).toBe(server.bodyBytes(P));
      for (let i = 1; i < progress.length; i++) expect(progress[i]).toBeGreaterThanOrEqual(progress[i - 1]);
    }
    // layers streamed from a host copy: the loader keeps each layer's tensors together, still in one forward pass
    fresh({ ranges: false });
    expect(await logits(await loadModel(url, { cache: false, weights: 'warm' }))).toEqual(local);
    expect(server.log.filter((e) => e.path === P)).toHaveLength(1);
  });

  it('a connection cut mid-body is resumed where it stopped; the bytes are identical', async () => {
    for (const ranges of [true, false]) {
      // With ranges the read's own request breaks off after 300 KB; without, the one GET does, and is restarted.
      fresh({ ranges, cutAfterBytes: ranges ? undefined : 300_000, cutRequests: ranges ? 0 : 1 });
      const source = await openHttp(url);
      expect(source.ranges).toBe(ranges);
      if (ranges) server.set({ cutAfterBytes: 300_000, cutRequests: 1 });
      const at = 5 * MiB + 3;
      const got = await source.read(at, 3 * MiB, new Uint8Array(4 * MiB));
      expect(Buffer.from(got).equals(Buffer.from(bytes.subarray(at, at + 3 * MiB)))).toBe(true);
      await source.close();
      expect(server.log.some((e) => e.bodyBytes === 300_000), 'a request was cut after 300 KB').toBe(true);
      if (ranges) {
        const reads = server.log.filter((e) => e.range !== `bytes=0-${MiB - 1}`);
        expect(reads.map((e) => [e.range, e.bodyBytes])).toEqual([
          [`bytes=${at}-${at + 3 * MiB - 1}`, 300_000],
          [`bytes=${at + 300_000}-${at + 3 * MiB - 1}`, 3 * MiB - 300_000],
        ]);
      }
    }
    // the same through a whole model load, cut during the weights
    fresh({ cutAfterBytes: 1_000_000, cutRequests: 4 });
    expect(await logits(await loadModel(url, { cache: false }))).toEqual(local);
    expect(server.log.filter((e) => e.bodyBytes === 1_000_000 && e.range !== `bytes=0-${MiB - 1}`).length).toBeGreaterThan(0);
  });

  it('a connection that stalls (the bytes stop, the socket stays open) is given up after stallMs and resumed: identical bytes', async () => {
    for (const ranges of [true, false]) {
      fresh({ ranges, stallCuts: true, cutAfterBytes: ranges ? undefined : 300_000, cutRequests: ranges ? 0 : 1 });
      const source = await openHttp(url, { stallMs: 300 });
      if (ranges) server.set({ cutAfterBytes: 300_000, cutRequests: 1 });
      const at = 5 * MiB + 3;
      const got = await source.read(at, 3 * MiB, new Uint8Array(4 * MiB));
      expect(Buffer.from(got).equals(Buffer.from(bytes.subarray(at, at + 3 * MiB))), `ranges ${ranges}`).toBe(true);
      await source.close();
      expect(server.log.some((e) => e.bodyBytes === 300_000), 'a request stalled after 300 KB').toBe(true);
    }
    // one that stalls on every try ends as BAD_SOURCE, not a hang
    fresh({ stallCuts: true });
    const source = await openHttp(url, { stallMs: 200 });
    server.set({ cutAfterBytes: 10_000, cutRequests: 1000 });
    const err = await expectCodeAsync(() => source.read(5 * MiB, MiB), 'BAD_SOURCE');
    expect(err.message).toMatch(/no bytes for 0\.2 s/);
    await source.close();
  });

  it('a cut that keeps happening is a clean BAD_SOURCE naming the URL and the offset', async () => {
    for (const ranges of [true, false]) {
      // without ranges the one GET is under way from the open: cut it and every restart
      fresh({ ranges, cutAfterBytes: ranges ? undefined : 50_000, cutRequests: 1000 });
      const source = await openHttp(url);
      server.set({ cutAfterBytes: 50_000, cutRequests: 1000 });
      const err = await expectCodeAsync(() => source.read(8 * MiB, MiB), 'BAD_SOURCE');
      expect(err.message).toContain(url);
      expect(err.message).toMatch(/offset \d+|bytes \d+-\d+/);
      expect(err.message).toMatch(/5 times/);
      await source.close();
    }
  });

  it('404, 416 and 500 answers are BAD_SOURCE with the status, at open and mid-load', async () => {
    for (const status of [404, 416, 500]) {
      fresh({ status: { [P]: status } });
      const err = await expectCodeAsync(() => openHttp(url), 'BAD_SOURCE');
      expect(err.message).toContain(String(status));
      fresh();
      const source = await openHttp(url);
      server.set({ status: { [P]: status } });
      expect((await expectCodeAsync(() => source.read(4 * MiB, 1000), 'BAD_SOURCE')).message).toContain(String(status));
      await source.close();
    }
    fresh();
    await expectCodeAsync(() => loadModel(server.url + '/no/such.gguf', { cache: false }), 'BAD_SOURCE');
  });

  it('a file that changes on the server mid-load is a clean error, never mixed bytes', async () => {
    for (const ranges of [true, false]) {
      fresh({ ranges });
      const source = await openHttp(url);
      const changed = bytes.slice();
      changed[5 * MiB] ^= 1;
      server.serve({ path: P, bytes: changed });
      try {
        // without ranges, reading behind the stream restarts the GET, whose new ETag gives the change away
        const read = ranges ? () => source.read(5 * MiB, 1000) : async () => (await source.read(6 * MiB, 10), source.read(5 * MiB, 10));
        expect((await expectCodeAsync(read, 'BAD_SOURCE')).message).toMatch(/changed on the server/);
      } finally {
        await source.close();
        server.serve({ path: P, file: FILE });
      }
    }
  });

  it('answers that contradict the request are BAD_SOURCE: a lying Content-Range, a size past 2^53, a range ignored', async () => {
    fresh();
    const source = await openHttp(url);
    server.set({
      alter: (res) => {
        if (res.headers['content-range']) res.headers['content-range'] = res.headers['content-range'].replace(/^bytes (\d+)/, (_, a) => `bytes ${Number(a) + 1}`);
      },
    });
    expect((await expectCodeAsync(() => source.read(4 * MiB, 1000), 'BAD_SOURCE')).message).toMatch(/Content-Range/);
    // a server that starts answering ranges with the whole file
    server.set({ alter: undefined, ranges: false });
    expect((await expectCodeAsync(() => source.read(4 * MiB, 1000), 'BAD_SOURCE')).message).toMatch(/whole file/);
    await source.close();

    fresh({ alter: (res) => void (res.headers['content-range'] = 'bytes 0-1048575/99999999999999999999') });
    await expectCodeAsync(() => openHttp(url), 'BAD_SOURCE');
    fresh({ alter: (res) => void (res.headers['content-range'] = `bytes 0-1048575/${2 ** 53 + 2}`) });
    await expectCodeAsync(() => openHttp(url), 'BAD_SOURCE');
    fresh({ ranges: false, alter: (res) => void (res.headers['content-length'] = String(2 ** 53 + 1)) });
    await expectCodeAsync(() => openHttp(url), 'BAD_SOURCE');

    // an empty file: its size is 0, and the reader says so
    fresh();
    server.serve({ path: '/empty.gguf', bytes: new Uint8Array(0) });
    await expectCodeAsync(() => loadTokenizer(server.url + '/empty.gguf', { cache: false }), 'TRUNCATED');
  });

  it('abort during a URL load is ABORTED', async () => {
    for (const ranges of [true, false]) {
      fresh({ ranges });
      const controller = new AbortController();
      const run = () =>
        loadModel(url, { cache: false, signal: controller.signal, onProgress: (p) => p.phase === 'download' && p.loaded > 3 * MiB && controller.abort() });
      await expectCodeAsync(run, 'ABORTED');
    }
  });

  const DIST = path.join(ROOT, 'dist/index.js');
  it.skipIf(!existsSync(DIST))('memory: a URL load holds no more of the file than a loader buffer, unlike a whole download', async () => {
    // A child process (dist/) loads the f16 model, sampling the host memory in ArrayBuffers every 2 MB of progress (the
    // file's bytes can only be held there: wasm memory is not counted in it). A gc() before each sample: fetch drops a
    // chunk per socket read, and V8 collects them only after ~64 MB, which would measure the collector's slack rather
    // than what the loader holds.
    const F16 = modelPath('sotu-15m-f16.gguf');
    const fileBytes = readFileSync(F16).length;
    const script = `
      const { loadModel } = await import(${JSON.stringify(DIST)});
      let arrayBuffers = 0, last = -Infinity;
      const sample = (p) => {
        if (Math.abs(p.loaded - last) < 2 ** 21) return;
        last = p.loaded;
        gc();
        arrayBuffers = Math.max(arrayBuffers, process.memoryUsage().arrayBuffers);
      };
      const model = await loadModel(process.argv[1], { cache: false, onProgress: sample });
      console.log(JSON.stringify({ arrayBuffers, rss: process.resourceUsage().maxRSS * 1024, planned: model.memory().plannedBytes }));`;
    const peak = async (source: string) => {
      const r = await promisify(execFile)(process.execPath, ['--expose-gc', '--input-type=module', '-e', script, source], { encoding: 'utf8', env: { ...process.env, EDGELLM_CACHE: cacheDir } });
      return JSON.parse(r.stdout) as { arrayBuffers: number; rss: number; planned: number };
    };
    server.serve({ path: '/m/f16.gguf', file: F16 });
    const f16 = server.url + '/m/f16.gguf';
    const local = await peak(F16);
    fresh({ ranges: true });
    const ranged = await peak(f16);
    fresh({ ranges: false });
    const streamed = await peak(f16);
    // the control: no Range and no length, the one case that downloads the file whole before parsing
    fresh({ ranges: false, contentLength: false });
    const whole = await peak(f16);
    console.log(`peak host ArrayBuffers / RSS, MB: local ${local.arrayBuffers / MiB | 0} / ${local.rss / MiB | 0}, ranges ${ranged.arrayBuffers / MiB | 0} / ${ranged.rss / MiB | 0}, stream ${streamed.arrayBuffers / MiB | 0} / ${streamed.rss / MiB | 0}, whole ${whole.arrayBuffers / MiB | 0} / ${whole.rss / MiB | 0} (file ${fileBytes / MiB | 0}, planned ${local.planned / MiB | 0})`);
    expect(whole.arrayBuffers).toBeGreaterThan(local.arrayBuffers + fileBytes);
    // RSS is printed, not asserted: it moves by tens of MB with the collector's timing (under load, even the local one)
    for (const url of [ranged, streamed]) expect(url.arrayBuffers).toBeLessThan(local.arrayBuffers + fileBytes / 3);
  });

  const CLI = path.join(ROOT, 'dist/cli.js');
  it.skipIf(!existsSync(CLI))('`edgellm info URL` transfers only about the header', async () => {
    fresh();
    // asynchronously: the server answering the CLI runs in this process
    const r = await promisify(execFile)(process.execPath, [CLI, 'info', url, '--json'], { encoding: 'utf8', maxBuffer: 64 * MiB, env: { ...process.env, EDGELLM_CACHE: cacheDir } });
    const info = JSON.parse(r.stdout);
    expect(info.file_size).toBe(bytes.length);
    expect(info.tensor_count).toBe(56);
    expect(server.bodyBytes(P)).toBeLessThanOrEqual(2 * MiB);
  });
});
