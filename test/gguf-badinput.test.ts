import { describe, expect, test } from 'vitest';
import { readFileSync } from 'node:fs';
import { EdgeLLMError, type ErrorCode } from '../src/errors.js';
import { GGMLType, GGUFValueType, openSource, readGGUF, writeGGUF, type GGUFFile } from '../src/gguf/index.js';
import { openLocalSource } from '../src/gguf/file.js';
import { announceSkipIfNoModels, modelPath } from './util/shared.js';
import { Rng } from '../src/generate/rng.js';

const T = GGUFValueType;
/** Every code readGGUF may throw on bad bytes. */
const READER_CODES = new Set<ErrorCode>(['BAD_MAGIC', 'UNSUPPORTED_VERSION', 'TRUNCATED', 'BAD_METADATA', 'BAD_TENSOR', 'UNSUPPORTED_TYPE']);

// Raw encoders, for headers the writer would refuse to produce.
const u32 = (v: number) => new Uint8Array(new Uint32Array([v]).buffer);
const u64 = (v: number | bigint) => new Uint8Array(new BigUint64Array([BigInt(v)]).buffer);
const str = (s: string | Uint8Array) => {
  const b = typeof s === 'string' ? new TextEncoder().encode(s) : s;
  return cat(u64(b.length), b);
};
function cat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
const MAGIC = new Uint8Array([0x47, 0x47, 0x55, 0x46]);
const head = (nTensors: number | bigint, nKV: number | bigint, version = 3) => cat(MAGIC, u32(version), u64(nTensors), u64(nKV));
const kvU32 = (key: string, v: number) => cat(str(key), u32(T.UINT32), u32(v));
/** A tensor info, followed (by the caller) by data. */
const info = (name: string, dims: Array<number | bigint>, type: number, offset: number | bigint) =>
  cat(str(name), u32(dims.length), ...dims.map(u64), u32(type), u64(offset));
const pad = (bytes: Uint8Array, extra = 4096) => cat(bytes, new Uint8Array(extra));

async function parse(bytes: Uint8Array): Promise<GGUFFile> {
  return readGGUF(await openLocalSource(bytes));
}

async function expectError(bytes: Uint8Array, code: ErrorCode, ...fragments: string[]): Promise<void> {
  let err: unknown;
  try {
    await parse(bytes);
  } catch (e) {
    err = e;
  }
  expect(err, `expected ${code}`).toBeInstanceOf(EdgeLLMError);
  expect((err as EdgeLLMError).code, (err as Error).message).toBe(code);
  for (const f of fragments) expect((err as Error).message).toContain(f);
}

describe('crafted bad headers', () => {
  test('the crafting helpers make a valid file', async () => {
    const g = await parse(pad(cat(head(1, 1), kvU32('general.alignment', 32), info('w', [4], GGMLType.F32, 0))));
    expect(g.tensor('w').byteSize).toBe(16);
    expect(g.int('general.alignment')).toBe(32);
  });

  test('BAD_MAGIC shows the bytes read', async () => {
    await expectError(cat(new TextEncoder().encode('GGML'), u32(3), new Uint8Array(64)), 'BAD_MAGIC', '47 47 4d 4c', '"GGML"', 'magic');
    await expectError(new Uint8Array(64), 'BAD_MAGIC', '00 00 00 00');
  });

  test('UNSUPPORTED_VERSION', async () => {
    await expectError(pad(head(0, 0, 1)), 'UNSUPPORTED_VERSION', 'version 1');
    await expectError(pad(head(0, 0, 4)), 'UNSUPPORTED_VERSION', 'version 4');
    await expectError(pad(cat(MAGIC, new Uint8Array([0, 0, 0, 3]), new Uint8Array(16))), 'UNSUPPORTED_VERSION', 'big-endian');
  });

  test('TRUNCATED names what was being read and where', async () => {
    await expectError(new Uint8Array([0x47, 0x47]), 'TRUNCATED', 'magic');
    await expectError(cat(MAGIC, u32(3), u64(0)), 'TRUNCATED', 'metadata count', 'offset 16');
    await expectError(head(0, 1), 'TRUNCATED', '1 metadata entries');
    await expectError(head(10, 10), 'TRUNCATED', '10 tensors');
    await expectError(cat(head(0, 1), str('key'), u32(T.UINT64), u32(0)), 'TRUNCATED', 'metadata "key"');
    // A string declaring more bytes than the file has is refused before allocating.
    await expectError(cat(head(0, 1), u64(2n ** 62n), new Uint8Array(16)), 'TRUNCATED', 'key of metadata entry 0', '4611686018427387904');
    await expectError(cat(head(0, 1), str('tokens'), u32(T.ARRAY), u32(T.STRING), u64(1e12), new Uint8Array(64)), 'TRUNCATED', '"tokens"', '1000000000000');
    await expectError(cat(head(0, 1), str('scores'), u32(T.ARRAY), u32(T.FLOAT32), u64(100), new Uint8Array(64)), 'TRUNCATED', '"scores"');
    await expectError(cat(head(1, 0), info('w', [4], GGMLType.F32, 0)), 'TRUNCATED', '"w"', 'too short');
    const long = 'w'.repeat(30); // long enough to pass the minimum-size check on the counts
    await expectError(cat(head(1, 0), str(long), u32(2), u64(4)), 'TRUNCATED', `dims[1] of tensor "${long}"`);
  });

  test('BAD_METADATA', async () => {
    await expectError(pad(cat(head(0, 1), str('k'), u32(13), u32(0))), 'BAD_METADATA', 'metadata "k"', 'value type 13');
    await expectError(pad(cat(head(0, 1), str('k'), u32(T.ARRAY), u32(99), u64(1))), 'BAD_METADATA', 'elements of metadata "k"', '99');
    await expectError(pad(cat(head(0, 1), str(new Uint8Array([0x6b, 0xff, 0xfe])), u32(T.UINT8), new Uint8Array([1]))), 'BAD_METADATA', 'key of metadata entry 0', 'UTF-8');
    await expectError(
      pad(cat(head(0, 1), str('tokens'), u32(T.ARRAY), u32(T.STRING), u64(2), str('ok'), str(new Uint8Array([0xc3, 0x28])))),
      'BAD_METADATA',
      '"tokens"',
      'UTF-8',
    );
    await expectError(pad(cat(head(0, 2), kvU32('a.b', 1), kvU32('a.b', 2))), 'BAD_METADATA', '"a.b"', 'twice');
    await expectError(pad(cat(head(0, 1), str('general.alignment'), u32(T.UINT64), u64(32))), 'BAD_METADATA', 'general.alignment', 'u32', 'u64');
    await expectError(pad(cat(head(0, 1), kvU32('general.alignment', 48))), 'BAD_METADATA', 'general.alignment 48', 'power of two');
    await expectError(pad(cat(head(0, 1), kvU32('general.alignment', 0))), 'BAD_METADATA', 'general.alignment 0');
    await expectError(pad(cat(head(0, 1), kvU32('general.alignment', 1 << 21))), 'BAD_METADATA', 'general.alignment 2097152');
    await expectError(pad(cat(head(0, 1), str('flag'), u32(T.BOOL), new Uint8Array([2]))), 'BAD_METADATA', '"flag"', 'bool', '2');
    await expectError(pad(head(0, 2n ** 40n)), 'BAD_METADATA', 'metadata count 1099511627776');
    // Arrays of arrays nest 8 deep at most.
    const nest = (depth: number): Uint8Array =>
      depth === 0 ? cat(u32(T.UINT8), u64(1), new Uint8Array([1])) : cat(u32(T.ARRAY), u64(1), nest(depth - 1));
    expect((await parse(pad(cat(head(0, 1), str('deep'), u32(T.ARRAY), nest(7))))).metadata.get('deep')).toEqual([[[[[[[new Uint8Array([1])]]]]]]]);
    await expectError(pad(cat(head(0, 1), str('deep'), u32(T.ARRAY), nest(8))), 'BAD_METADATA', '"deep"', 'nested');
  });

  test('BAD_TENSOR', async () => {
    await expectError(pad(head(65537, 0), 65537 * 32), 'BAD_TENSOR', 'tensor count 65537');
    await expectError(pad(cat(head(1, 0), str('w'), u32(0))), 'BAD_TENSOR', '"w"', 'n_dims 0');
    await expectError(pad(cat(head(1, 0), str('w'), u32(5))), 'BAD_TENSOR', '"w"', 'n_dims 5');
    await expectError(pad(cat(head(1, 0), info('w', [4, 0], GGMLType.F32, 0))), 'BAD_TENSOR', '"w"', 'dims[1] = 0');
    await expectError(pad(cat(head(1, 0), info('w', [2n ** 60n], GGMLType.F32, 0))), 'BAD_TENSOR', '"w"', 'dims[0]');
    await expectError(pad(cat(head(1, 0), info('w', [2 ** 30, 2 ** 30, 2 ** 30], GGMLType.F32, 0))), 'BAD_TENSOR', '"w"', '2^53');
    await expectError(pad(cat(head(1, 0), info('w', [33, 2], GGMLType.Q8_0, 0))), 'BAD_TENSOR', '"w"', 'Q8_0', '33', 'block size 32');
    await expectError(pad(cat(head(2, 0), info('w', [4], GGMLType.F32, 0), info('w', [4], GGMLType.F32, 32))), 'BAD_TENSOR', '"w"', 'twice');
    await expectError(pad(cat(head(1, 0), info('w', [4], GGMLType.F32, 16))), 'BAD_TENSOR', '"w"', 'offset 16', 'alignment 32');
    await expectError(pad(cat(head(1, 1), kvU32('general.alignment', 64), info('w', [4], GGMLType.F32, 32))), 'BAD_TENSOR', 'offset 32', 'alignment 64');
  });

  test('UNSUPPORTED_TYPE for ids ggml does not define; known but unsupported types are left to the loader', async () => {
    await expectError(pad(cat(head(1, 0), info('w', [32], 4, 0))), 'UNSUPPORTED_TYPE', '"w"', 'type id 4');
    await expectError(pad(cat(head(1, 0), info('w', [32], 99, 0))), 'UNSUPPORTED_TYPE', '"w"', 'type id 99');
    const g = await parse(pad(cat(head(1, 0), info('w', [256], GGMLType.Q6_K, 0))));
    expect(g.tensor('w').typeName).toBe('Q6_K');
    expect(g.tensor('w').byteSize).toBe(210);
  });

  test('BAD_SOURCE', async () => {
    const e1 = await openLocalSource('/no/such/model.gguf').catch((e) => e);
    expect(e1).toBeInstanceOf(EdgeLLMError);
    expect(e1.code).toBe('BAD_SOURCE');
    expect(e1.message).toContain('/no/such/model.gguf');
    expect(e1.message).toContain('ENOENT');
    for (const bad of [42, null, { length: 3 }, new URL('ftp://host/m.gguf'), '/tmp']) {
      const e = await openLocalSource(bad as never).catch((x) => x);
      expect(e, String(bad)).toBeInstanceOf(EdgeLLMError);
      expect(e.code).toBe('BAD_SOURCE');
    }
    // Without a filesystem (the browser and Workers entry points), a path is an error that says what to pass instead.
    for (const path of ['/no/such/model.gguf', 'models/m.gguf', new URL('file:///m.gguf')]) {
      const e = await openSource(path).catch((x) => x);
      expect(e, String(path)).toBeInstanceOf(EdgeLLMError);
      expect(e.code).toBe('BAD_SOURCE');
      expect(e.message).toContain('need a filesystem');
    }
    const notFound = (async () => new Response('nope', { status: 404, statusText: 'Not Found' })) as typeof fetch;
    const e2 = await openLocalSource('https://models.example/x.gguf', { fetch: notFound }).catch((e) => e);
    expect(e2.code).toBe('BAD_SOURCE');
    expect(e2.message).toContain('https://models.example/x.gguf');
    expect(e2.message).toContain('404');
  });

  test('reads past the end of a source are TRUNCATED', async () => {
    const src = await openLocalSource(new Uint8Array(10));
    await expect(src.read(8, 4)).rejects.toMatchObject({ code: 'TRUNCATED', message: expect.stringContaining('offset 8 + length 4') });
    const blob = await openLocalSource(new Blob([new Uint8Array(10)]));
    await expect(blob.read(0, 11)).rejects.toMatchObject({ code: 'TRUNCATED' });
  });

  test('writer-made files with every value type survive cutting at every byte of the header', async () => {
    const bytes = writeGGUF({
      metadata: [
        { key: 'a', type: T.ARRAY, arrayType: T.STRING, value: ['x', 'yz'] },
        { key: 'n', type: T.ARRAY, arrayType: T.ARRAY, value: [{ arrayType: T.INT64, value: [1n] }] },
        { key: 'f', type: T.FLOAT64, value: 1 },
      ],
      tensors: [{ name: 't', dims: [32], type: GGMLType.Q8_0, data: new Uint8Array(34) }],
    });
    const end = (await parse(bytes)).tensor('t').offset + 34; // the padding after the last tensor may go
    for (let cut = 0; cut < end; cut++) await expectError(bytes.subarray(0, cut), 'TRUNCATED');
  });
});

/** Seeded (the project's xoshiro128**), so every case reproduces. */
function rng(seed: number): () => number {
  const r = new Rng(seed);
  return () => r.nextFloat();
}

/** The outcome must be a parse or an EdgeLLMError with a reader code: never a RangeError, TypeError or hang. */
async function outcome(bytes: Uint8Array, label: string): Promise<GGUFFile | EdgeLLMError> {
  try {
    return await parse(bytes);
  } catch (e) {
    if (!(e instanceof EdgeLLMError)) throw new Error(`${label}: not an EdgeLLMError: ${(e as Error)?.stack ?? e}`);
    expect(READER_CODES.has(e.code), `${label}: ${e.code} ${e.message}`).toBe(true);
    return e;
  }
}

const REAL = ['sotu-15m-f16.gguf', 'sotu-15m-q8_0.gguf', 'sotu-15m-q4_0.gguf', 'tiny-260k-f32.gguf', 'tiny-260k-q8_0.gguf'];

describe.skipIf(!announceSkipIfNoModels('gguf-badinput: real-model fuzzing'))('real models, truncated and corrupted', () => {
  for (const file of REAL) {
    test(`${file} cut at 20 seeded points is always TRUNCATED`, async () => {
      const bytes = new Uint8Array(readFileSync(modelPath(file)));
      const g = await parse(bytes);
      const end = g.tensors.reduce((a, t) => Math.max(a, t.offset + t.byteSize), 0);
      const next = rng(0x5eed ^ bytes.length);
      // Half inside the header (where each field can be the one cut), half inside the tensor data.
      const cuts = [0, 3, 23, g.dataOffset - 1, g.dataOffset, end - 1];
      while (cuts.length < 20) {
        cuts.push(cuts.length % 2 ? Math.floor(next() * g.dataOffset) : g.dataOffset + Math.floor(next() * (end - g.dataOffset)));
      }
      for (const cut of cuts) {
        const r = await outcome(bytes.subarray(0, cut), `${file} cut at ${cut}`);
        expect(r, `${file} cut at ${cut}`).toBeInstanceOf(EdgeLLMError);
        expect((r as EdgeLLMError).code, `${file} cut at ${cut}: ${(r as EdgeLLMError).message}`).toBe('TRUNCATED');
      }
    });
  }

  for (const file of ['tiny-260k-q8_0.gguf', 'sotu-15m-q4_0.gguf']) {
    test(`${file}: 1000 seeded byte flips in the header, plus 500 in its structural parts`, async () => {
      const bytes = new Uint8Array(readFileSync(modelPath(file)));
      const g = await parse(bytes);
      const next = rng(0xf11b ^ bytes.length);
      // The tensor infos sit at the end of the header; the counts and first keys at its start.
      const infosStart = g.dataOffset - g.tensors.length * 64;
      const counts = new Map<string, number>();
      const t0 = performance.now();
      for (let i = 0; i < 1500; i++) {
        const at =
          i < 1000
            ? Math.floor(next() * g.dataOffset)
            : i % 2
              ? Math.floor(next() * 256)
              : infosStart + Math.floor(next() * (g.dataOffset - infosStart));
        const mask = 1 + Math.floor(next() * 255);
        const old = bytes[at];
        // Flip in place and restore: the memory source is zero-copy, so no 13 MB copy per case.
        bytes[at] ^= mask;
        try {
          const r = await outcome(bytes, `${file} byte ${at} ^= ${mask}`);
          const key = r instanceof EdgeLLMError ? r.code : 'parsed';
          counts.set(key, (counts.get(key) ?? 0) + 1);
        } finally {
          bytes[at] = old;
        }
      }
      console.log(`${file}: ${JSON.stringify(Object.fromEntries(counts))} in ${(performance.now() - t0).toFixed(0)} ms`);
      expect([...counts.values()].reduce((a, b) => a + b, 0)).toBe(1500);
      expect(counts.size).toBeGreaterThan(2);
    });
  }
});
