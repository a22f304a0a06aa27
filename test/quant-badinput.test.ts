// Bad quantized tensors through the whole loadModel, per type family: a row length that is not a multiple of the
// type's block, tensor bytes running past the end of the file, and the types edgellm does not run. Every one must fail
// with its code from the header alone: no tensor byte read, no wasm memory made.
import { describe, expect, test } from 'vitest';
import { loadModel, EdgeLLMError, type ErrorCode } from '../src/index.js';
import { GGMLType, memorySource, readGGUF, TYPE_TRAITS, typeName, writeGGUF, type GGUFWriterKV, type GGUFWriterTensor } from '../src/gguf/index.js';
import { WEIGHT_TYPE_NAMES, WEIGHT_TYPES } from '../src/model/weight-types.js';
import { makeSyntheticLlama } from './util/synthetic.js';

const T = GGMLType;
/** The families of issue 11, with the block of each: 32 for the legacy types, 256 for the K-quants and IQ4_XS. */
const BLOCK_TYPES = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.IQ4_NL, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.IQ4_XS];
/** Every block-free type and every quantized type a weight may have; BF16 has no block, so only truncation applies. */
const WEIGHT_FILE_TYPES = [T.F32, T.F16, T.BF16, ...BLOCK_TYPES];
/** ggml types that stay unsupported (issue 11: IQ1/IQ2/IQ3 and TQ; MXFP4 too). */
const UNSUPPORTED = [T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ3_XXS, T.IQ3_S, T.IQ1_S, T.IQ1_M, T.TQ1_0, T.TQ2_0, T.MXFP4];

// dim 256 so that every type, K-quants included, fits the matrices.
const BASE = makeSyntheticLlama({ dim: 256, nLayers: 1, nHeads: 4, nKvHeads: 2, ffn: 256, vocab: 300, ctx: 64, seed: 5 }, { keepWeights: false }).bytes;
const TARGET = 'blk.0.ffn_gate.weight';

/** Bytes of `type` for a tensor of `dims`: deterministic filler whose f16 fields are small finite numbers (0x2a2a). */
function filler(type: number, dims: number[]): Uint8Array {
  const t = TYPE_TRAITS.get(type)!;
  return new Uint8Array((dims.reduce((a, b) => a * b, 1) / t.blockSize) * t.typeSize).fill(0x2a);
}

/** BASE with TARGET re-typed to `type` (and moved to the end of the data, so a cut file truncates it). */
async function withTarget(type: number): Promise<Uint8Array> {
  const g = await readGGUF(memorySource(BASE));
  const metadata: GGUFWriterKV[] = [...g.metadata].map(([key, value]) => ({ key, value, ...g.typeOf(key)! }));
  const tensors: GGUFWriterTensor[] = g.tensors
    .filter((t) => t.name !== TARGET)
    .map((t) => ({ name: t.name, dims: t.dims, type: t.type, data: BASE.subarray(t.offset, t.offset + t.byteSize) }));
  const dims = g.tensor(TARGET).dims;
  tensors.push({ name: TARGET, dims, type, data: filler(type, dims) });
  return writeGGUF({ version: 3, metadata, tensors });
}

/** Rewrites dims[0] of tensor `name` in the header in place: the writer refuses to write such a file itself. */
async function setRowLength(bytes: Uint8Array, name: string, rowLength: number): Promise<Uint8Array> {
  const g = await readGGUF(memorySource(bytes));
  const key = new Uint8Array([...new Uint8Array(new BigUint64Array([BigInt(name.length)]).buffer), ...new TextEncoder().encode(name)]);
  const at = indexOf(bytes.subarray(0, g.dataOffset), key);
  expect(at, `tensor info of ${name}`).toBeGreaterThan(0);
  const out = bytes.slice();
  new DataView(out.buffer).setBigUint64(at + key.length + 4, BigInt(rowLength), true); // after n_dims (u32)
  return out;
}

function indexOf(hay: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = hay.length - needle.length; i >= 0; i--) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

/** A Blob that records every range read, so a test can see that loading stopped at the header. */
class RecordingBlob extends Blob {
  reads: Array<[number, number]> = [];
  override slice(start?: number, end?: number, type?: string): Blob {
    this.reads.push([start ?? 0, end ?? this.size]);
    return super.slice(start, end, type);
  }
}

/** loadModel fails with `code`, every fragment in its message, having read nothing at or past the tensor data. */
async function expectEarly(bytes: Uint8Array, code: ErrorCode, fragments: string[], dataOffset: number): Promise<void> {
  const blob = new RecordingBlob([bytes as BlobPart]);
  const phases = new Set<string>();
  let err: unknown;
  try {
    (await loadModel(blob, { onProgress: (p) => phases.add(p.phase) })).dispose();
  } catch (e) {
    err = e;
  }
  expect(err, `expected ${code}`).toBeInstanceOf(EdgeLLMError);
  const e = err as EdgeLLMError;
  expect(e.code, e.message).toBe(code);
  for (const f of fragments) expect(e.message).toContain(f);
  expect(phases.has('weights'), 'weights began loading').toBe(false);
  expect(blob.reads.length, 'the header was read through the blob').toBeGreaterThan(0);
  for (const [start] of blob.reads) expect(start, `a read at ${start} is in the tensor data (from ${dataOffset})`).toBeLessThan(dataOffset);
}

describe('quantized tensors, crafted bad', () => {
  test('the crafted files are good before they are broken', async () => {
    for (const type of WEIGHT_FILE_TYPES) {
      const g = await readGGUF(memorySource(await withTarget(type)));
      expect(g.tensor(TARGET).typeName).toBe(typeName(type));
    }
    // The types that run load (the rest are UNSUPPORTED_TYPE, below and in quant-conformance).
    for (const type of WEIGHT_FILE_TYPES.filter((t) => WEIGHT_TYPES.has(t))) (await loadModel(await withTarget(type))).dispose();
  });

  for (const type of BLOCK_TYPES) {
    const block = TYPE_TRAITS.get(type)!.blockSize;
    // 256 + 32 for the 256-blocks: a row a 32-block type would take, the case llama.cpp's quantizer falls back on.
    const bad = block === 256 ? 288 : 256 + 16;
    test(`${typeName(type)}: a row length of ${bad} (block ${block}) is BAD_TENSOR naming the tensor`, async () => {
      const bytes = await setRowLength(await withTarget(type), TARGET, bad);
      const dataOffset = (await readGGUF(memorySource(await withTarget(type)))).dataOffset;
      await expectEarly(bytes, 'BAD_TENSOR', [`"${TARGET}"`, typeName(type), `dims[0] = ${bad}`, `block size ${block}`], dataOffset);
    });
  }

  for (const type of WEIGHT_FILE_TYPES) {
    test(`${typeName(type)}: bytes running past the end of the file are TRUNCATED naming the tensor`, async () => {
      const bytes = await withTarget(type);
      const g = await readGGUF(memorySource(bytes));
      const t = g.tensor(TARGET);
      expect(t.offset + t.byteSize, 'the target is the last tensor').toBeGreaterThanOrEqual(Math.max(...g.tensors.map((x) => x.offset + x.byteSize)));
      // One byte short, and half of the tensor gone: a block cut in two and whole blocks missing.
      for (const cut of [t.offset + t.byteSize - 1, t.offset + Math.floor(t.byteSize / 2)]) {
        await expectEarly(bytes.subarray(0, cut), 'TRUNCATED', [`"${TARGET}"`, `${t.byteSize} bytes`], g.dataOffset);
      }
    });
  }

  for (const type of UNSUPPORTED) {
    test(`${typeName(type)} is UNSUPPORTED_TYPE naming the tensor and listing the supported types`, async () => {
      expect(WEIGHT_TYPES.has(type)).toBe(false);
      const bytes = await withTarget(type);
      const dataOffset = (await readGGUF(memorySource(bytes))).dataOffset;
      await expectEarly(bytes, 'UNSUPPORTED_TYPE', [TARGET, typeName(type), ...WEIGHT_TYPE_NAMES], dataOffset);
    });
  }
});
