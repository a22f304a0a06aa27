import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createServer, type Server } from 'node:http';
import { createReadStream, readFileSync, statSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import type { AddressInfo } from 'node:net';
import { EdgeLLMError } from '../src/errors.js';
import { openLocalSource } from '../src/gguf/file.js';
import {
  GGMLType,
  GGUFValueType,
  dequantizeRow,
  f16ArrayToF32,
  f16ToF32,
  f32ToF16,
  quantizeRow,
  quantizeRowQ4_0,
  quantizeRowQ8_0,
  readGGUF,
  writeGGUF,
  type ByteSource,
  type GGUFFile,
  type GGUFWriterKV,
  type ModelSource,
} from '../src/gguf/index.js';
import { HAVE_MODELS, announceSkipIfNoModels, modelPath } from './util/shared.js';
import { makeSyntheticLlama } from './util/synthetic.js';

const T = GGUFValueType;

function readBytes(bytes: Uint8Array): Promise<GGUFFile> {
  return openLocalSource(bytes).then(readGGUF);
}

async function expectCode(p: Promise<unknown> | (() => unknown), code: string, ...fragments: string[]): Promise<EdgeLLMError> {
  let err: unknown;
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    err = e;
  }
  expect(err, `expected ${code}`).toBeInstanceOf(EdgeLLMError);
  const e = err as EdgeLLMError;
  expect(e.code, e.message).toBe(code);
  for (const f of fragments) expect(e.message).toContain(f);
  return e;
}

/** One of every metadata value type, scalars at their extremes, plus arrays of each, nested arrays and empty ones. */
const ALL_TYPES: GGUFWriterKV[] = [
  { key: 'u8', type: T.UINT8, value: 255 },
  { key: 'i8', type: T.INT8, value: -128 },
  { key: 'u16', type: T.UINT16, value: 65535 },
  { key: 'i16', type: T.INT16, value: -32768 },
  { key: 'u32', type: T.UINT32, value: 4294967295 },
  { key: 'i32', type: T.INT32, value: -2147483648 },
  { key: 'f32', type: T.FLOAT32, value: 1.5 },
  { key: 'bool.t', type: T.BOOL, value: true },
  { key: 'bool.f', type: T.BOOL, value: false },
  { key: 'str', type: T.STRING, value: 'héllo ▁wörld 🦙' },
  { key: 'str.empty', type: T.STRING, value: '' },
  { key: 'str.bom', type: T.STRING, value: '\uFEFFbom' },
  { key: 'u64', type: T.UINT64, value: 18446744073709551615n },
  { key: 'i64', type: T.INT64, value: -9223372036854775808n },
  { key: 'u64.small', type: T.UINT64, value: 4096n },
  { key: 'f64', type: T.FLOAT64, value: Math.PI },
  { key: 'a.u8', type: T.ARRAY, arrayType: T.UINT8, value: [0, 1, 255] },
  { key: 'a.i8', type: T.ARRAY, arrayType: T.INT8, value: [-128, 0, 127] },
  { key: 'a.u16', type: T.ARRAY, arrayType: T.UINT16, value: [0, 65535] },
  { key: 'a.i16', type: T.ARRAY, arrayType: T.INT16, value: [-32768, 32767] },
  { key: 'a.u32', type: T.ARRAY, arrayType: T.UINT32, value: [0, 4294967295] },
  { key: 'a.i32', type: T.ARRAY, arrayType: T.INT32, value: [-1, 2, -3] },
  { key: 'a.f32', type: T.ARRAY, arrayType: T.FLOAT32, value: [0.25, -1, 3.5] },
  { key: 'a.bool', type: T.ARRAY, arrayType: T.BOOL, value: [true, false, true] },
  { key: 'a.str', type: T.ARRAY, arrayType: T.STRING, value: ['<unk>', '▁the', '', 'ü'] },
  { key: 'a.u64', type: T.ARRAY, arrayType: T.UINT64, value: [0n, 18446744073709551615n] },
  { key: 'a.i64', type: T.ARRAY, arrayType: T.INT64, value: [-9223372036854775808n, 5n] },
  { key: 'a.f64', type: T.ARRAY, arrayType: T.FLOAT64, value: [Math.E, -0.5] },
  { key: 'a.empty', type: T.ARRAY, arrayType: T.UINT32, value: [] },
  {
    key: 'a.nested',
    type: T.ARRAY,
    arrayType: T.ARRAY,
    value: [
      { arrayType: T.STRING, value: ['x', 'y'] },
      { arrayType: T.INT32, value: [7] },
      { arrayType: T.ARRAY, value: [{ arrayType: T.UINT64, value: [9n] }] },
    ],
  },
];

function tinyTensors() {
  const row = Float32Array.from({ length: 64 }, (_, i) => Math.sin(i) * 3);
  return [
    { name: 'f32', dims: [3], type: GGMLType.F32, data: quantizeRow(GGMLType.F32, [1, -2, 3.5]) },
    { name: 'f16', dims: [5, 1], type: GGMLType.F16, data: quantizeRow(GGMLType.F16, [1, -2, 3.5, 65504, 0]) },
    { name: 'q8', dims: [32, 2], type: GGMLType.Q8_0, data: quantizeRowQ8_0(row) },
    { name: 'q4', dims: [64, 1, 1, 1], type: GGMLType.Q4_0, data: quantizeRowQ4_0(row) },
    { name: 'unsupported-but-known', dims: [256], type: GGMLType.Q4_K, data: new Uint8Array(144) },
  ];
}

describe('writer -> reader round trip', () => {
  for (const version of [2, 3] as const) {
    for (const alignment of [undefined, 64, 4096]) {
      test(`v${version}, alignment ${alignment ?? 'default 32'}`, async () => {
        const tensors = tinyTensors();
        const bytes = writeGGUF({ version, alignment, metadata: ALL_TYPES, tensors });
        const g = await readBytes(bytes);
        expect(g.version).toBe(version);
        expect(g.alignment).toBe(alignment ?? 32);
        expect(g.has('general.alignment')).toBe(alignment !== undefined);
        expect(g.dataOffset % g.alignment).toBe(0);
        expect(g.fileSize).toBe(bytes.length);
        for (const kv of ALL_TYPES) {
          const got = g.metadata.get(kv.key);
          if (kv.type !== T.ARRAY) expect(got, kv.key).toEqual(kv.value);
          expect(g.typeOf(kv.key)).toEqual(kv.type === T.ARRAY ? { type: T.ARRAY, arrayType: kv.arrayType } : { type: kv.type });
        }
        expect(g.metadata.get('f32')).toBe(1.5);
        expect(g.metadata.get('a.u8')).toEqual(new Uint8Array([0, 1, 255]));
        expect(g.metadata.get('a.i8')).toEqual(new Int8Array([-128, 0, 127]));
        expect(g.metadata.get('a.u16')).toEqual(new Uint16Array([0, 65535]));
        expect(g.metadata.get('a.i16')).toEqual(new Int16Array([-32768, 32767]));
        expect(g.metadata.get('a.u32')).toEqual(new Uint32Array([0, 4294967295]));
        expect(g.metadata.get('a.i32')).toEqual(new Int32Array([-1, 2, -3]));
        expect(g.metadata.get('a.f32')).toEqual(new Float32Array([0.25, -1, 3.5]));
        expect(g.metadata.get('a.bool')).toEqual([true, false, true]);
        expect(g.metadata.get('a.str')).toEqual(['<unk>', '▁the', '', 'ü']);
        expect(g.metadata.get('a.u64')).toEqual(new BigUint64Array([0n, 18446744073709551615n]));
        expect(g.metadata.get('a.i64')).toEqual(new BigInt64Array([-9223372036854775808n, 5n]));
        expect(g.metadata.get('a.f64')).toEqual(new Float64Array([Math.E, -0.5]));
        expect(g.metadata.get('a.empty')).toEqual(new Uint32Array(0));
        expect(g.metadata.get('a.nested')).toEqual([['x', 'y'], new Int32Array([7]), [new BigUint64Array([9n])]]);
        expect(g.metadata.get('str.bom')).toBe('\uFEFFbom');

        expect(g.tensors.map((t) => t.name)).toEqual(tensors.map((t) => t.name));
        for (const t of tensors) {
          const info = g.tensor(t.name);
          expect(info.dims).toEqual(t.dims);
          expect(info.type).toBe(t.type);
          expect(info.byteSize).toBe(t.data.length);
          expect(info.offset % g.alignment).toBe(0);
          expect(info.offset).toBeGreaterThanOrEqual(g.dataOffset);
          expect(bytes.subarray(info.offset, info.offset + info.byteSize)).toEqual(t.data);
        }
        expect(g.tensor('q8').typeName).toBe('Q8_0');
        expect(g.tensor('q4').elements).toBe(64);
        expect(g.tensor('unsupported-but-known').typeName).toBe('Q4_K');
      });
    }
  }

  test('typed accessors convert and check types', async () => {
    const g = await readBytes(writeGGUF({ metadata: ALL_TYPES, tensors: [] }));
    expect(g.int('u8')).toBe(255);
    expect(g.int('i32')).toBe(-2147483648);
    expect(g.int('u64.small')).toBe(4096);
    expect(g.int('absent', 7)).toBe(7);
    expect(g.float('f32')).toBe(1.5);
    expect(g.float('u16')).toBe(65535);
    expect(g.float('f64')).toBe(Math.PI);
    expect(g.float('absent', 0.5)).toBe(0.5);
    expect(g.string('str')).toBe('héllo ▁wörld 🦙');
    expect(g.string('absent', 'x')).toBe('x');
    expect(g.bool('bool.t')).toBe(true);
    expect(g.bool('absent', false)).toBe(false);
    expect(g.stringArray('a.str')).toEqual(['<unk>', '▁the', '', 'ü']);
    expect(g.floatArray('a.f32')).toEqual(new Float32Array([0.25, -1, 3.5]));
    expect(g.floatArray('a.i8')).toEqual(new Float32Array([-128, 0, 127]));
    expect(g.floatArray('a.i64')).toEqual(new Float32Array([-9223372036854775808, 5]));
    expect(g.intArray('a.i32')).toEqual(new Int32Array([-1, 2, -3]));
    expect(g.intArray('a.u16')).toEqual(new Int32Array([0, 65535]));

    await expectCode(() => g.int('u64'), 'BAD_METADATA', 'u64', '2^53');
    await expectCode(() => g.int('f32'), 'BAD_METADATA', '"f32"', 'integer', 'f32');
    await expectCode(() => g.int('absent'), 'BAD_METADATA', '"absent"', 'missing');
    await expectCode(() => g.float('str'), 'BAD_METADATA', '"str"', 'number', 'string');
    await expectCode(() => g.string('u8'), 'BAD_METADATA', '"u8"', 'string', 'u8');
    await expectCode(() => g.bool('u8'), 'BAD_METADATA', '"u8"', 'bool');
    await expectCode(() => g.stringArray('a.i32'), 'BAD_METADATA', '"a.i32"', 'array of string', 'array of i32');
    await expectCode(() => g.floatArray('a.str'), 'BAD_METADATA', '"a.str"');
    await expectCode(() => g.intArray('a.f32'), 'BAD_METADATA', '"a.f32"');
    await expectCode(() => g.intArray('a.u32'), 'BAD_METADATA', '"a.u32"', '4294967295', 'i32');
    await expectCode(() => g.floatArray('absent'), 'BAD_METADATA', '"absent"');
    await expectCode(() => g.tensor('blk.0.attn_q.weight'), 'MISSING_TENSOR', 'blk.0.attn_q.weight');
  });

  test('writer refuses data of the wrong size', async () => {
    await expectCode(
      () => writeGGUF({ metadata: [], tensors: [{ name: 'w', dims: [32, 2], type: GGMLType.Q8_0, data: new Uint8Array(34) }] }),
      'BAD_ARGUMENT',
      '"w"',
      '68',
    );
    await expectCode(
      () => writeGGUF({ metadata: [], tensors: [{ name: 'w', dims: [33], type: GGMLType.Q8_0, data: new Uint8Array(34) }] }),
      'BAD_ARGUMENT',
      '33',
    );
  });

  test('a 128k-vocab header larger than the first read is parsed quickly and the data is never read', async () => {
    const m = makeSyntheticLlama({ dim: 32, nLayers: 1, nHeads: 2, nKvHeads: 1, ffn: 64, vocab: 128256, ctx: 64 }, { keepWeights: false });
    let maxEnd = 0;
    const inner = await openLocalSource(m.bytes);
    const counting: ByteSource = {
      name: 'counting',
      size: inner.size,
      read: (o, n) => {
        maxEnd = Math.max(maxEnd, o + n);
        return inner.read(o, n);
      },
      close: () => inner.close(),
    };
    const t0 = performance.now();
    const g = await readGGUF(counting);
    const ms = performance.now() - t0;
    expect(g.stringArray('tokenizer.ggml.tokens').length).toBe(128256);
    expect(g.dataOffset).toBeGreaterThan(1 << 20);
    expect(maxEnd).toBeLessThan(g.tensor('token_embd.weight').offset + g.tensor('token_embd.weight').byteSize);
    expect(ms).toBeLessThan(1000);
    console.log(`128k-vocab header (${g.dataOffset} bytes) parsed in ${ms.toFixed(1)} ms`);
  });
});

describe('f16', () => {
  test('known values', () => {
    const cases: Array<[number, number]> = [
      [0x0000, 0],
      [0x3c00, 1],
      [0xc000, -2],
      [0x7bff, 65504],
      [0x0400, 2 ** -14],
      [0x0001, 2 ** -24],
      [0x03ff, 1023 * 2 ** -24],
      [0x3555, 0.333251953125],
      [0x7c00, Infinity],
      [0xfc00, -Infinity],
    ];
    for (const [h, v] of cases) {
      expect(f16ToF32(h), h.toString(16)).toBe(v);
      expect(f32ToF16(v), String(v)).toBe(h);
    }
    expect(Object.is(f16ToF32(0x8000), -0)).toBe(true);
    expect(f32ToF16(-0)).toBe(0x8000);
    expect(Number.isNaN(f16ToF32(0x7e00))).toBe(true);
    expect(f32ToF16(NaN) & 0x7fff).toBe(0x7e00);
    // 6.1e-5 is just below the smallest normal 6.1035e-5: rounds to the subnormal 0x03ff or the normal 0x0400.
    expect(f32ToF16(6.1e-5)).toBe(0x03ff);
    expect(f32ToF16(6.104e-5)).toBe(0x0400);
    expect(f32ToF16(65519)).toBe(0x7bff); // below the midpoint to infinity
    expect(f32ToF16(65520)).toBe(0x7c00); // the tie rounds to even = infinity
    expect(f32ToF16(1e6)).toBe(0x7c00);
    expect(f32ToF16(-1e-9)).toBe(0x8000);
    // Ties to even: 1 + 2^-11 lies halfway between 1 and 1 + 2^-10.
    expect(f32ToF16(1 + 2 ** -11)).toBe(0x3c00);
    expect(f32ToF16(1 + 3 * 2 ** -11)).toBe(0x3c02);
    expect(f32ToF16(1 + 2 ** -11 + 2 ** -20)).toBe(0x3c01);
    // Subnormal ties: 0.5 and 1.5 units of 2^-24.
    expect(f32ToF16(2 ** -25)).toBe(0x0000);
    expect(f32ToF16(3 * 2 ** -25)).toBe(0x0002);
    expect(f32ToF16(2 ** -25 + 2 ** -40)).toBe(0x0001);
  });

  test('every half round-trips, bulk conversion matches', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const bulk = f16ArrayToF32(all, new Float32Array(65536));
    for (let h = 0; h < 65536; h++) {
      const v = f16ToF32(h);
      if (Number.isNaN(v)) {
        expect(Number.isNaN(bulk[h])).toBe(true);
        continue;
      }
      expect(Object.is(bulk[h], v)).toBe(true);
      expect(f32ToF16(v)).toBe(h);
    }
  });
});

describe('quantize', () => {
  const rand = (() => {
    let s = 12345;
    return () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 4294967296) * 2 - 1;
  })();

  test('Q8_0 and Q4_0 layouts and error bounds', () => {
    const x = Float32Array.from({ length: 256 }, () => rand() * 4);
    const q8 = quantizeRowQ8_0(x);
    expect(q8.length).toBe(8 * 34);
    const y8 = dequantizeRow(GGMLType.Q8_0, q8, 256);
    const q4 = quantizeRowQ4_0(x);
    expect(q4.length).toBe(8 * 18);
    const y4 = dequantizeRow(GGMLType.Q4_0, q4, 256);
    for (let b = 0; b < 8; b++) {
      const blk = x.subarray(b * 32, b * 32 + 32);
      const amax = Math.max(...blk.map(Math.abs));
      for (let j = 0; j < 32; j++) {
        expect(Math.abs(y8[b * 32 + j] - blk[j])).toBeLessThanOrEqual((amax / 127) * 0.5 + 1e-3 * amax);
        expect(Math.abs(y4[b * 32 + j] - blk[j])).toBeLessThanOrEqual((amax / 8) * 0.5 + 1e-3 * amax + amax / 8);
      }
    }
    // Q4_0: byte j holds element j (low nibble) and j + 16 (high nibble); value = (nibble - 8) * d.
    const block = new Uint8Array(18);
    block[0] = 0x00;
    block[1] = 0x3c; // d = 1
    for (let j = 0; j < 16; j++) block[2 + j] = j | ((15 - j) << 4);
    const v = dequantizeRow(GGMLType.Q4_0, block, 32);
    for (let j = 0; j < 16; j++) {
      expect(v[j]).toBe(j - 8);
      expect(v[j + 16]).toBe(7 - j);
    }
    // Zero block: d = 0, all quants are the middle value.
    expect([...quantizeRowQ4_0(new Float32Array(32)).subarray(2)]).toEqual(new Array(16).fill(0x88));
    expect([...quantizeRowQ8_0(new Float32Array(32))]).toEqual(new Array(34).fill(0));
    // The value of largest magnitude maps to -8 exactly (d = max / -8), so it survives Q4_0 exactly up to d's f16 rounding.
    const one = new Float32Array(32);
    one[5] = -2;
    expect(dequantizeRow(GGMLType.Q4_0, quantizeRowQ4_0(one), 32)[5]).toBe(-2);
    expect(dequantizeRow(GGMLType.Q8_0, quantizeRowQ8_0(one), 32)[5]).toBeCloseTo(-2, 2);
    // F32/F16 through the same entry points.
    expect(dequantizeRow(GGMLType.F32, quantizeRow(GGMLType.F32, [1.25, -3]), 2)).toEqual(new Float32Array([1.25, -3]));
    expect(dequantizeRow(GGMLType.F16, quantizeRow(GGMLType.F16, [1.25, 65504]), 2)).toEqual(new Float32Array([1.25, 65504]));
    expect(() => quantizeRowQ8_0(new Float32Array(31))).toThrow(EdgeLLMError);
    expect(() => dequantizeRow(GGMLType.IQ2_XXS, new Uint8Array(66), 256)).toThrow(EdgeLLMError);
    expect(() => dequantizeRow(GGMLType.Q4_K, new Uint8Array(143), 256)).toThrow(EdgeLLMError);
  });

  test.skipIf(!HAVE_MODELS)('bit-exact with ggml: re-quantizing the f16 master reproduces the q8_0 and q4_0 files byte for byte', async () => {
    const open = async (f: string) => {
      const src = await openLocalSource(modelPath(f));
      return { src, g: await readGGUF(src) };
    };
    const f16 = await open('sotu-15m-f16.gguf');
    const q8 = await open('sotu-15m-q8_0.gguf');
    const q4 = await open('sotu-15m-q4_0.gguf');
    try {
      let checked = 0;
      for (const t of f16.g.tensors) {
        if (t.type !== GGMLType.F16) continue;
        const x = dequantizeRow(GGMLType.F16, await f16.src.read(t.offset, t.byteSize), t.elements);
        for (const q of [q8, q4]) {
          const info = q.g.tensor(t.name);
          const want = await q.src.read(info.offset, info.byteSize);
          const got = quantizeRow(info.type, x);
          expect(got.length).toBe(want.length);
          expect(Buffer.compare(got, want), `${t.name} ${info.typeName}`).toBe(0);
          // and dequantize(quantize(x)) is what the loader will see
          if (t.name === 'blk.0.attn_q.weight') {
            const d = dequantizeRow(info.type, want, t.elements);
            let maxErr = 0;
            for (let i = 0; i < x.length; i++) maxErr = Math.max(maxErr, Math.abs(d[i] - x[i]));
            expect(maxErr).toBeLessThan(info.type === GGMLType.Q8_0 ? 0.01 : 0.1);
          }
          checked++;
        }
      }
      expect(checked).toBe(2 * (1 + 6 * 7)); // every 2-D tensor of both files
    } finally {
      await Promise.all([f16.src.close(), q8.src.close(), q4.src.close()]);
    }
  });
});

describe('synthetic llama', () => {
  test('metadata, tensors and kept weights match what the reader sees', async () => {
    const m = makeSyntheticLlama({
      dim: 64, nLayers: 2, nHeads: 4, nKvHeads: 2, ffn: 96, vocab: 300, ctx: 128, seed: 7,
      type: GGMLType.Q8_0, types: { 'blk.1.ffn_down.weight': GGMLType.Q4_0, 'output.weight': GGMLType.F16 },
    });
    const g = await readBytes(m.bytes);
    expect(g.string('general.architecture')).toBe('llama');
    expect(g.int('llama.embedding_length')).toBe(64);
    expect(g.int('llama.block_count')).toBe(2);
    expect(g.int('llama.rope.dimension_count')).toBe(16);
    expect(g.has('llama.attention.key_length')).toBe(false);
    expect(g.float('llama.attention.layer_norm_rms_epsilon')).toBeCloseTo(1e-5, 10);
    const tokens = g.stringArray('tokenizer.ggml.tokens');
    expect(tokens.length).toBe(300);
    expect(tokens.slice(0, 4)).toEqual(['<unk>', '<s>', '</s>', '<0x00>']);
    expect(tokens[258]).toBe('<0xFF>');
    expect(tokens[259]).toBe('▁the');
    expect(new Set(tokens).size).toBe(300);
    expect(g.intArray('tokenizer.ggml.token_type').slice(0, 4)).toEqual(new Int32Array([2, 3, 3, 6]));
    expect(g.bool('tokenizer.ggml.add_bos_token')).toBe(true);
    expect(g.tensors.length).toBe(3 + 2 * 9);
    expect(g.tensor('blk.0.attn_k.weight').dims).toEqual([64, 32]);
    expect(g.tensor('blk.0.attn_q.weight').typeName).toBe('Q8_0');
    expect(g.tensor('blk.1.ffn_down.weight').typeName).toBe('Q4_0');
    expect(g.tensor('output.weight').typeName).toBe('F16');
    expect(g.tensor('blk.0.ffn_norm.weight').typeName).toBe('F32');
    for (const t of g.tensors) {
      const stored = dequantizeRow(t.type, m.bytes.subarray(t.offset, t.offset + t.byteSize), t.elements);
      expect(m.weights.get(t.name), t.name).toEqual(stored);
    }
    const norm = m.weights.get('blk.0.attn_norm.weight')!;
    expect(Math.min(...norm)).toBeGreaterThanOrEqual(0.9);
    expect(Math.max(...norm)).toBeLessThanOrEqual(1.1);
    // deterministic
    expect(makeSyntheticLlama({ ...m.spec }).bytes).toEqual(m.bytes);
  });

  test('headDim, tied output, small vocab, and clear errors', async () => {
    const m = makeSyntheticLlama({ dim: 32, nLayers: 1, nHeads: 2, nKvHeads: 1, headDim: 24, ffn: 64, vocab: 10, ctx: 16, tied: true });
    const g = await readBytes(m.bytes);
    expect(g.int('llama.attention.key_length')).toBe(24);
    expect(g.int('llama.rope.dimension_count')).toBe(24);
    expect(g.tensor('blk.0.attn_q.weight').dims).toEqual([32, 48]);
    expect(g.tensor('blk.0.attn_output.weight').dims).toEqual([48, 32]);
    expect(g.tensorMap.has('output.weight')).toBe(false);
    expect(g.stringArray('tokenizer.ggml.tokens')).toEqual(['<unk>', '<s>', '</s>', '<0x00>', '<0x01>', '<0x02>', '<0x03>', '<0x04>', '<0x05>', '<0x06>']);
    expect(() =>
      makeSyntheticLlama({ dim: 48, nLayers: 1, nHeads: 2, nKvHeads: 1, ffn: 64, vocab: 10, ctx: 16, type: GGMLType.Q4_0 }),
    ).toThrow(/multiple of 32.*48/);
  });

  test('a smollm-135m-shaped Q8_0 model builds in a few seconds', async () => {
    const t0 = performance.now();
    const m = makeSyntheticLlama(
      { dim: 576, nLayers: 30, nHeads: 9, nKvHeads: 3, ffn: 1536, vocab: 49152, ctx: 2048, type: GGMLType.Q8_0, tied: true },
      { keepWeights: false },
    );
    const ms = performance.now() - t0;
    const g = await readBytes(m.bytes);
    expect(g.tensors.length).toBe(2 + 30 * 9);
    console.log(`smollm-shaped Q8_0 synthetic: ${(m.bytes.length / 2 ** 20).toFixed(1)} MiB in ${ms.toFixed(0)} ms`);
    expect(ms).toBeLessThan(10_000);
  });
});

const MODELS: Array<{ file: string; tensors: number; kinds: Record<string, string> }> = [
  { file: 'sotu-15m-f16.gguf', tensors: 56, kinds: { 'token_embd.weight': 'F16', 'blk.0.attn_q.weight': 'F16', 'output_norm.weight': 'F32' } },
  { file: 'sotu-15m-q8_0.gguf', tensors: 56, kinds: { 'token_embd.weight': 'Q8_0', 'blk.5.ffn_down.weight': 'Q8_0' } },
  { file: 'sotu-15m-q4_0.gguf', tensors: 56, kinds: { 'token_embd.weight': 'Q8_0', 'blk.0.attn_q.weight': 'Q4_0', 'blk.5.ffn_up.weight': 'Q4_0' } },
  { file: 'tiny-260k-f32.gguf', tensors: 47, kinds: { 'token_embd.weight': 'F32' } },
  { file: 'tiny-260k-q8_0.gguf', tensors: 47, kinds: { 'token_embd.weight': 'Q8_0' } },
  { file: 'needle-15m-f16.gguf', tensors: 56, kinds: { 'token_embd.weight': 'F16' } },
  { file: 'needle-15m-q8_0.gguf', tensors: 56, kinds: { 'token_embd.weight': 'Q8_0' } },
];

function checkModel(g: GGUFFile, m: (typeof MODELS)[number]): void {
  expect(g.version).toBe(3);
  expect(g.string('general.architecture')).toBe('llama');
  expect(g.tensors.length).toBe(m.tensors);
  for (const [name, kind] of Object.entries(m.kinds)) expect(g.tensor(name).typeName, name).toBe(kind);
  if (m.file.startsWith('tiny')) {
    expect(g.int('llama.embedding_length')).toBe(64);
    expect(g.int('llama.block_count')).toBe(5);
    expect(g.stringArray('tokenizer.ggml.tokens').length).toBe(512);
    expect(g.tensor('token_embd.weight').dims).toEqual([64, 512]);
  } else {
    expect(g.int('llama.embedding_length')).toBe(288);
    expect(g.int('llama.block_count')).toBe(6);
    expect(g.int('llama.attention.head_count_kv')).toBe(2);
    expect(g.stringArray('tokenizer.ggml.tokens').length).toBe(32000);
    expect(g.floatArray('tokenizer.ggml.scores').length).toBe(32000);
    expect(g.tensorMap.has('output.weight')).toBe(false);
  }
  if (m.file.includes('q4_0')) {
    for (const t of g.tensors) {
      const want = t.dims.length === 1 ? 'F32' : t.name === 'token_embd.weight' ? 'Q8_0' : 'Q4_0';
      expect(t.typeName, t.name).toBe(want);
    }
  }
  const last = g.tensors.reduce((a, t) => Math.max(a, t.offset + t.byteSize), 0);
  expect(last).toBeLessThanOrEqual(g.fileSize);
}

describe.skipIf(!announceSkipIfNoModels('gguf: real models'))('real models from every source kind', () => {
  let server: Server;
  let base = '';
  beforeAll(async () => {
    server = createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://x');
      const name = url.pathname.split('/').pop()!;
      if (!/^[\w.-]+\.gguf$/.test(name)) {
        res.writeHead(404).end('not found');
        return;
      }
      let size: number;
      try {
        size = statSync(modelPath(name)).size;
      } catch {
        res.writeHead(404).end('not found');
        return;
      }
      // /chunked/ omits content-length so the download has to grow its buffer.
      const headers: Record<string, string | number> = { 'content-type': 'application/octet-stream' };
      if (!url.pathname.startsWith('/chunked/')) headers['content-length'] = size;
      res.writeHead(200, headers);
      createReadStream(modelPath(name), { highWaterMark: 256 * 1024 }).pipe(res);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  for (const m of MODELS) {
    test(m.file, async () => {
      const path = modelPath(m.file);
      const file = readFileSync(path);
      const ab = file.buffer.slice(file.byteOffset, file.byteOffset + file.length);
      const sources: Array<[string, ModelSource]> = [
        ['path', path],
        ['file URL', pathToFileURL(path)],
        ['file URL string', pathToFileURL(path).href],
        ['Uint8Array', new Uint8Array(file)],
        ['ArrayBuffer', ab],
        ['Blob', new Blob([file])],
        ['http URL string', `${base}/models/${m.file}`],
        ['http URL', new URL(`${base}/chunked/${m.file}`)],
      ];
      for (const [kind, s] of sources) {
        const progress: Array<[number, number | undefined]> = [];
        const src = await openLocalSource(s, { onProgress: (l, t) => progress.push([l, t]) });
        try {
          expect(src.size, kind).toBe(file.length);
          const g = await readGGUF(src);
          checkModel(g, m);
          const t = g.tensor('blk.0.ffn_norm.weight');
          expect(Buffer.compare(await src.read(t.offset, t.byteSize), file.subarray(t.offset, t.offset + t.byteSize)), kind).toBe(0);
          await expectCode(src.read(file.length - 4, 8), 'TRUNCATED', `${file.length - 4}`, '8', `${file.length}`);
          if (kind === 'http URL string') {
            // this server has no Range support: with a length, the file is read as one forward stream, as far as the
            // reads went (test/remote.test.ts has the range reads)
            expect(progress.length, kind).toBeGreaterThan(0);
            expect(progress.at(-1)![0]).toBeLessThanOrEqual(file.length);
            expect(progress.at(-1)![1]).toBe(file.length);
          } else if (kind === 'http URL') {
            // and without one, it is downloaded whole
            expect(progress.length, kind).toBeGreaterThan(2);
            expect(progress.at(-1)![0]).toBe(file.length);
            expect(progress.at(-1)![1]).toBeUndefined();
          }
          for (let i = 1; i < progress.length; i++) expect(progress[i][0]).toBeGreaterThanOrEqual(progress[i - 1][0]);
        } finally {
          await src.close();
        }
      }
    });
  }

  test('the reader reads only the header', async () => {
    const inner = await openLocalSource(modelPath('sotu-15m-f16.gguf'));
    let bytesRead = 0;
    const g = await readGGUF({ name: inner.name, size: inner.size, read: (o, n) => ((bytesRead += n), inner.read(o, n)), close: () => inner.close() });
    await inner.close();
    expect(bytesRead).toBeLessThanOrEqual(1 << 20);
    expect(bytesRead).toBeLessThan(g.fileSize / 10);
  });

  test('http errors and aborts', async () => {
    await expectCode(openLocalSource(`${base}/models/absent.gguf`), 'BAD_SOURCE', `${base}/models/absent.gguf`, '404');
    // a body with no length (and no ranges) is downloaded at open: aborted while it arrives
    const ctrl = new AbortController();
    await expectCode(
      openLocalSource(`${base}/chunked/sotu-15m-f16.gguf`, { signal: ctrl.signal, onProgress: (l) => l > 0 && ctrl.abort() }),
      'ABORTED',
    );
    const pre = new AbortController();
    pre.abort();
    await expectCode(openLocalSource(`${base}/models/tiny-260k-f32.gguf`, { signal: pre.signal }), 'ABORTED');
    const failing = (async () => {
      throw new TypeError('fetch failed');
    }) as unknown as typeof fetch;
    await expectCode(openLocalSource('https://example.invalid/m.gguf', { fetch: failing }), 'BAD_SOURCE', 'example.invalid', 'fetch failed');
  });
});
