// hf: names and split GGUFs, resolved against a real loopback server standing in for the hub (HF_ENDPOINT), with a
// token required; split parts are written from a real model's tensors with llama.cpp's gguf-split metadata.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { EdgeLLMError, loadModel, loadTokenizer, type Model } from '../src/index.js';
import { expectCodeAsync } from './util/expect.js';
import { memorySource } from '../src/gguf/source.js';
import { openFile } from '../src/gguf/file.js';
import { GGUFValueType, readGGUF, type GGUFFile } from '../src/gguf/reader.js';
import { writeGGUF, type GGUFWriterKV } from '../src/gguf/writer.js';
import { parseHubName, pickQuantFile } from '../src/gguf/hub.js';
import { openGGUF } from '../src/gguf/split.js';
import { startServer, type TestServer } from './util/http-server.js';
import { announceSkipIfNoModels, modelPath, ROOT } from './util/shared.js';

const have = announceSkipIfNoModels('hf: names and split GGUFs (test/hub.test.ts)');
const SOTU = modelPath('sotu-15m-q8_0.gguf');
const TINY = modelPath('tiny-260k-q8_0.gguf');
const IDS = [1, 400, 3000, 29, 871, 17, 2];
const TOKEN = 'hf_test_token';

async function logits(model: Model, ids = IDS): Promise<Float32Array> {
  try {
    return await model.evaluate(ids);
  } finally {
    model.dispose();
  }
}

interface SplitOptions {
  /** tensors in each part (the first part may hold none, as gguf-split --no-tensor-first-split writes) */
  counts: number[];
  /** change a part's split keys or tensors before it is written, for the bad-input cases */
  edit?: (part: number, kv: Map<string, GGUFWriterKV>, tensors: string[]) => void;
}

/** A model's tensors written into parts as llama.cpp's gguf-split does: every key in the first part, split.* in all. */
function splitModel(file: Uint8Array, gguf: GGUFFile, { counts, edit }: SplitOptions): Uint8Array[] {
  const all = gguf.tensors.map((t) => t.name);
  expect(counts.reduce((a, b) => a + b, 0)).toBe(all.length);
  let next = 0;
  return counts.map((count, i) => {
    const kv = new Map<string, GGUFWriterKV>();
    if (i === 0) {
      for (const [key, value] of gguf.metadata) {
        const t = gguf.typeOf(key)!;
        kv.set(key, { key, type: t.type, arrayType: t.arrayType, value });
      }
    }
    kv.set('split.no', { key: 'split.no', type: GGUFValueType.UINT16, value: i });
    kv.set('split.count', { key: 'split.count', type: GGUFValueType.UINT16, value: counts.length });
    kv.set('split.tensors.count', { key: 'split.tensors.count', type: GGUFValueType.INT32, value: all.length });
    const names = all.slice(next, next + count);
    next += count;
    edit?.(i, kv, names);
    return writeGGUF({
      metadata: [...kv.values()],
      tensors: names.map((name) => {
        const t = gguf.tensor(name);
        return { name, dims: t.dims, type: t.type, data: file.subarray(t.offset, t.offset + t.byteSize) };
      }),
    });
  });
}

const partName = (prefix: string, i: number, n: number) => `${prefix}-${String(i + 1).padStart(5, '0')}-of-${String(n).padStart(5, '0')}.gguf`;

describe('hf: names', () => {
  it('parses both forms; a malformed name is BAD_ARGUMENT naming the accepted forms', () => {
    expect(parseHubName('hf:bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M')).toEqual({ owner: 'bartowski', repo: 'Llama-3.2-1B-Instruct-GGUF', quant: 'Q4_K_M' });
    expect(parseHubName('hf:o/r/sub/dir/model.Q8_0.gguf')).toEqual({ owner: 'o', repo: 'r', file: 'sub/dir/model.Q8_0.gguf' });
    for (const bad of ['hf:', 'hf:owner', 'hf:owner/repo', 'hf:owner/repo:', 'hf:owner/repo/x.bin', 'hf:owner/repo/../x.gguf', 'hf:o/r:Q4 K', 'hf:o/r/a.gguf:Q8_0', 'hf:-o/r:Q8_0']) {
      let err: unknown;
      try {
        parseHubName(bad);
      } catch (e) {
        err = e;
      }
      expect(err, bad).toBeInstanceOf(EdgeLLMError);
      expect((err as EdgeLLMError).code, bad).toBe('BAD_ARGUMENT');
      expect((err as Error).message, bad).toMatch(/hf:OWNER\/REPO\/FILE\.gguf or hf:OWNER\/REPO:QUANT/);
    }
  });

  it('picks the file of a quant tag: a whole word, any case; one file over a split set; else a clear error', () => {
    const files = [
      'README.md',
      'Model-Q4_K_M.gguf',
      'Model-Q4_K_S.gguf',
      'model-q8_0.gguf',
      'mmproj-Model-F16.gguf',
      'Model-F16.gguf',
      'Q6_K/Model-Q6_K-00001-of-00002.gguf',
      'Q6_K/Model-Q6_K-00002-of-00002.gguf',
      'Model-Q4_K_M-00001-of-00002.gguf',
      'Model-Q4_K_M-00002-of-00002.gguf',
      'other-IQ4_XS.gguf',
      'more-IQ4_XS.gguf',
    ];
    expect(pickQuantFile(files, 'q4_k_m', 'o/r')).toBe('Model-Q4_K_M.gguf');
    expect(pickQuantFile(files, 'Q8_0', 'o/r')).toBe('model-q8_0.gguf');
    expect(pickQuantFile(files, 'F16', 'o/r')).toBe('Model-F16.gguf');
    expect(pickQuantFile(files, 'Q6_K', 'o/r')).toBe('Q6_K/Model-Q6_K-00001-of-00002.gguf');
    const ambiguous = (() => {
      try {
        pickQuantFile(files, 'IQ4_XS', 'o/r');
      } catch (e) {
        return e as EdgeLLMError;
      }
    })();
    expect(ambiguous?.code).toBe('BAD_ARGUMENT');
    expect(ambiguous?.message).toMatch(/other-IQ4_XS\.gguf.*more-IQ4_XS\.gguf/);
    const none = (() => {
      try {
        pickQuantFile(files, 'Q4_K', 'o/r'); // not a whole word of Q4_K_M or Q4_K_S
      } catch (e) {
        return e as EdgeLLMError;
      }
    })();
    expect(none?.code).toBe('BAD_SOURCE');
    expect(none?.message).toMatch(/F16, IQ4_XS, Q4_K_M, Q4_K_S, Q6_K, Q8_0/);
  });
});

describe.skipIf(!have)('hf: names and split GGUFs against a hub on loopback', () => {
  let hub: TestServer;
  let tmp: string;
  let sotu: Uint8Array;
  let tiny: Uint8Array;
  let tinyGGUF: GGUFFile;
  let single: Float32Array;
  const hf = () => ({ token: TOKEN, endpoint: hub.url });
  const savedCache = process.env.EDGELLM_CACHE;

  beforeAll(async () => {
    sotu = new Uint8Array(readFileSync(SOTU));
    tiny = new Uint8Array(readFileSync(TINY));
    tinyGGUF = await readGGUF(memorySource(tiny));
    const parts = splitModel(sotu, await readGGUF(memorySource(sotu)), { counts: [20, 20, 16] });
    hub = await startServer(
      [
        { path: '/tester/sotu-GGUF/resolve/main/sotu-15m-Q8_0.gguf', file: SOTU },
        { path: '/tester/sotu-GGUF/resolve/main/sotu-15m-Q4_0.gguf', file: modelPath('sotu-15m-q4_0.gguf') },
        { path: '/tester/sotu-GGUF/resolve/main/README.md', bytes: new TextEncoder().encode('# sotu') },
        ...parts.map((bytes, i) => ({ path: `/tester/sotu-split-GGUF/resolve/main/Q8_0/${partName('sotu-15m-Q8_0', i, 3)}`, bytes })),
      ],
      { requireToken: TOKEN },
    );
    tmp = mkdtempSync(path.join(tmpdir(), 'edgellm-split-'));
    // these tests are about the hub, not the download cache: a stray download lands in a temporary one
    process.env.EDGELLM_CACHE = path.join(tmp, 'cache');
    single = await logits(await loadModel(SOTU));
  });
  afterAll(async () => {
    await hub?.close();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
    if (savedCache === undefined) delete process.env.EDGELLM_CACHE;
    else process.env.EDGELLM_CACHE = savedCache;
  });

  it('hf:OWNER/REPO/FILE and hf:OWNER/REPO:QUANT resolve to the hub’s files, with the token on every request', async () => {
    const expected = (await loadTokenizer(SOTU)).tokenize('The state of the union');
    hub.log.length = 0;
    const byFile = await loadTokenizer('hf:tester/sotu-GGUF/sotu-15m-Q8_0.gguf', { hf: hf(), cache: false });
    expect(byFile.tokenize('The state of the union')).toEqual(expected);
    const byQuant = await loadTokenizer('hf:tester/sotu-GGUF:q8_0', { hf: hf(), cache: false });
    expect(byQuant.tokenize('The state of the union')).toEqual(expected);
    expect(hub.log.map((e) => e.path)).toContain('/api/models/tester/sotu-GGUF');
    expect(hub.log.every((e) => e.authorization === `Bearer ${TOKEN}` && e.status < 400)).toBe(true);
    // the header only, from a 16 MB file
    expect(hub.bodyBytes('/tester/sotu-GGUF/resolve/main/sotu-15m-Q8_0.gguf')).toBeLessThanOrEqual(2 * 2 ** 20);

    const model = await loadModel('hf:tester/sotu-GGUF:Q8_0', { hf: hf(), cache: false });
    expect(await logits(model)).toEqual(single);
  });

  it('HF_TOKEN and HF_ENDPOINT come from the environment; without a token the hub’s 401 is BAD_SOURCE saying so', async () => {
    const saved = { token: process.env.HF_TOKEN, endpoint: process.env.HF_ENDPOINT };
    try {
      process.env.HF_ENDPOINT = hub.url;
      delete process.env.HF_TOKEN;
      const err = await expectCodeAsync(() => loadTokenizer('hf:tester/sotu-GGUF:Q8_0', { cache: false }), 'BAD_SOURCE');
      expect(err.message).toMatch(/401.*HF_TOKEN/);
      await expectCodeAsync(() => loadTokenizer('hf:tester/sotu-GGUF/sotu-15m-Q8_0.gguf', { cache: false }), 'BAD_SOURCE');
      process.env.HF_TOKEN = TOKEN;
      expect((await loadTokenizer('hf:tester/sotu-GGUF:Q8_0', { cache: false })).info.vocabSize).toBe(32000);
      // a quant the repo lacks, and a repo that does not exist
      expect((await expectCodeAsync(() => loadTokenizer('hf:tester/sotu-GGUF:Q5_K_M', { cache: false }), 'BAD_SOURCE')).message).toMatch(/Q4_0, Q8_0/);
      expect((await expectCodeAsync(() => loadTokenizer('hf:tester/absent-GGUF:Q8_0', { cache: false }), 'BAD_SOURCE')).message).toMatch(/404/);
      process.env.HF_ENDPOINT = 'ftp://example.com';
      await expectCodeAsync(() => loadTokenizer('hf:tester/sotu-GGUF:Q8_0', { cache: false }), 'BAD_ARGUMENT');
    } finally {
      for (const [key, value] of [['HF_TOKEN', saved.token], ['HF_ENDPOINT', saved.endpoint]] as const) {
        if (value === undefined) delete process.env[key];
        else process.env[key] = value;
      }
    }
  });

  it('a split GGUF by hf:…:QUANT loads as one model, each tensor from its own part: the single file’s logits', async () => {
    hub.log.length = 0;
    const model = await loadModel('hf:tester/sotu-split-GGUF:Q8_0', { hf: hf(), cache: false });
    expect(model.info.tensorCount).toBe(56);
    expect(await logits(model)).toEqual(single);
    const parts = new Set(hub.log.filter((e) => e.path.includes('/resolve/')).map((e) => e.path.split('/').pop()));
    expect([...parts].sort()).toEqual([0, 1, 2].map((i) => partName('sotu-15m-Q8_0', i, 3)));
    // by its first part's file name too
    const byFile = await loadModel(`hf:tester/sotu-split-GGUF/Q8_0/${partName('sotu-15m-Q8_0', 0, 3)}`, { hf: hf(), cache: false });
    expect(await logits(byFile)).toEqual(single);
  });

  it('a split GGUF by local path loads as one model; a first part with no tensors works too', async () => {
    const local = await logits(await loadModel(TINY), [1, 30, 200, 7]);
    for (const counts of [[10, 20, 17], [0, 30, 17]]) {
      const dir = mkdtempSync(path.join(tmp, 'parts-'));
      splitModel(tiny, tinyGGUF, { counts }).forEach((bytes, i) => writeFileSync(path.join(dir, partName('tiny', i, 3)), bytes));
      const { source, gguf } = await openGGUF(path.join(dir, partName('tiny', 0, 3)), {}, openFile);
      expect(gguf.tensors.length).toBe(tinyGGUF.tensors.length);
      expect(gguf.fileSize).toBe(source.size);
      await source.close();
      expect(await logits(await loadModel(path.join(dir, partName('tiny', 0, 3))), [1, 30, 200, 7])).toEqual(local);
    }
  });

  it('an inconsistent split set is a clean error: missing part, wrong numbering, duplicate tensor, wrong total', async () => {
    const write = (name: string, opts: SplitOptions, drop?: number) => {
      const dir = mkdtempSync(path.join(tmp, `${name}-`));
      splitModel(tiny, tinyGGUF, opts).forEach((bytes, i) => i !== drop && writeFileSync(path.join(dir, partName('tiny', i, 3)), bytes));
      return (i: number) => path.join(dir, partName('tiny', i, 3));
    };
    const counts = [10, 20, 17];
    const missing = write('missing', { counts }, 2);
    expect((await expectCodeAsync(() => loadModel(missing(0)), 'BAD_SOURCE')).message).toMatch(/part 3 of 3/);
    expect((await expectCodeAsync(() => loadModel(missing(1)), 'BAD_ARGUMENT')).message).toMatch(/tiny-00001-of-00003\.gguf/);
    const numbering = write('numbering', { counts, edit: (i, kv) => i === 2 && kv.set('split.no', { key: 'split.no', type: GGUFValueType.UINT16, value: 1 }) });
    expect((await expectCodeAsync(() => loadModel(numbering(0)), 'BAD_METADATA')).message).toMatch(/split\.no 1, expected 2/);
    const count = write('count', { counts, edit: (i, kv) => i === 1 && kv.set('split.count', { key: 'split.count', type: GGUFValueType.UINT16, value: 4 }) });
    await expectCodeAsync(() => loadModel(count(0)), 'BAD_METADATA');
    const duplicate = write('duplicate', { counts, edit: (i, _kv, tensors) => i === 2 && (tensors[0] = tinyGGUF.tensors[0].name) });
    expect((await expectCodeAsync(() => loadModel(duplicate(0)), 'BAD_METADATA')).message).toMatch(/is in part 1 and part 3/);
    const total = write('total', {
      counts,
      edit: (i, kv) => i === 0 && kv.set('split.tensors.count', { key: 'split.tensors.count', type: GGUFValueType.INT32, value: 99 }),
    });
    expect((await expectCodeAsync(() => loadModel(total(0)), 'BAD_METADATA')).message).toMatch(/split\.tensors\.count is 99/);
    // bytes have no name to find the other parts by
    const bytes = new Uint8Array(readFileSync(missing(0)));
    expect((await expectCodeAsync(() => loadModel(bytes), 'BAD_SOURCE')).message).toMatch(/first part's path or URL/);
  });

  const CLI = path.join(ROOT, 'dist/cli.js');
  it.skipIf(!existsSync(CLI))('`edgellm info hf:…` transfers only the header', async () => {
    hub.log.length = 0;
    const r = await promisify(execFile)(process.execPath, [CLI, 'info', 'hf:tester/sotu-GGUF:Q8_0', '--json'], {
      encoding: 'utf8',
      maxBuffer: 64 << 20,
      env: { ...process.env, HF_ENDPOINT: hub.url, HF_TOKEN: TOKEN, EDGELLM_CACHE: path.join(tmp, 'cli-cache') },
    });
    expect(JSON.parse(r.stdout).tensor_count).toBe(56);
    expect(hub.bodyBytes('/tester/sotu-GGUF/resolve/main/sotu-15m-Q8_0.gguf')).toBeLessThanOrEqual(2 << 20);
  });
});
