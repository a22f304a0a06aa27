/**
 * A small GGUF v2/v3 writer, for tests and benchmarks that need synthetic models. It lays the file out as gguf-py
 * does: header, metadata, tensor infos, padding to the alignment, then each tensor's data padded to the alignment.
 */
import { EdgeLLMError } from '../errors.js';
import { GGUFValueType, GGUF_DEFAULT_ALIGNMENT, valueTypeName } from './reader.js';
import { TYPE_TRAITS, typeName } from './types.js';

export interface GGUFWriterKV {
  key: string;
  type: GGUFValueType;
  /** A scalar, or for ARRAY an array/typed array of elements of arrayType; elements of an ARRAY of ARRAY are GGUFWriterArray. */
  value: any;
  arrayType?: GGUFValueType;
}

/** One element of an array of arrays. */
export interface GGUFWriterArray {
  arrayType: GGUFValueType;
  value: any;
}

export interface GGUFWriterTensor {
  name: string;
  dims: number[];
  type: number;
  /** The tensor's bytes; or leave it out and give `fill`, which writes them straight into the file (no second copy). */
  data?: Uint8Array;
  fill?: (dst: Uint8Array) => void;
}

export interface GGUFWriterInput {
  version?: 2 | 3;
  alignment?: number;
  metadata: GGUFWriterKV[];
  tensors: GGUFWriterTensor[];
}

const SCALAR_SIZE: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };
const encoder = new TextEncoder();

/** Grows as values are appended; only the header goes through it, tensor data is copied once into the final file. */
class ByteWriter {
  buf = new Uint8Array(1 << 16);
  dv = new DataView(this.buf.buffer);
  pos = 0;

  reserve(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.pos + n) cap *= 2;
    const grown = new Uint8Array(cap);
    grown.set(this.buf.subarray(0, this.pos));
    this.buf = grown;
    this.dv = new DataView(grown.buffer);
  }
  u32(v: number): void {
    this.reserve(4);
    this.dv.setUint32(this.pos, v, true);
    this.pos += 4;
  }
  u64(v: number | bigint): void {
    this.reserve(8);
    this.dv.setBigUint64(this.pos, BigInt(v), true);
    this.pos += 8;
  }
  string(s: string): void {
    const bytes = encoder.encode(s);
    this.u64(bytes.length);
    this.reserve(bytes.length);
    this.buf.set(bytes, this.pos);
    this.pos += bytes.length;
  }
  scalar(type: GGUFValueType, v: any, what: string): void {
    if (type === GGUFValueType.STRING) {
      if (typeof v !== 'string') throw bad(`${what}: expected a string, got ${typeof v}`);
      return this.string(v);
    }
    const size = SCALAR_SIZE[type];
    if (size === undefined) throw bad(`${what}: value type ${type} is not a scalar type`);
    this.reserve(size);
    const dv = this.dv;
    const p = this.pos;
    switch (type) {
      case GGUFValueType.UINT8:
        dv.setUint8(p, Number(v));
        break;
      case GGUFValueType.INT8:
        dv.setInt8(p, Number(v));
        break;
      case GGUFValueType.UINT16:
        dv.setUint16(p, Number(v), true);
        break;
      case GGUFValueType.INT16:
        dv.setInt16(p, Number(v), true);
        break;
      case GGUFValueType.UINT32:
        dv.setUint32(p, Number(v), true);
        break;
      case GGUFValueType.INT32:
        dv.setInt32(p, Number(v), true);
        break;
      case GGUFValueType.FLOAT32:
        dv.setFloat32(p, Number(v), true);
        break;
      case GGUFValueType.BOOL:
        dv.setUint8(p, v ? 1 : 0);
        break;
      case GGUFValueType.UINT64:
        dv.setBigUint64(p, BigInt(v), true);
        break;
      case GGUFValueType.INT64:
        dv.setBigInt64(p, BigInt(v), true);
        break;
      case GGUFValueType.FLOAT64:
        dv.setFloat64(p, Number(v), true);
        break;
    }
    this.pos += size;
  }
  array(arrayType: GGUFValueType | undefined, v: any, what: string): void {
    if (arrayType === undefined || arrayType < 0 || arrayType > GGUFValueType.FLOAT64) {
      throw bad(`${what}: an ARRAY needs an arrayType 0..12, got ${arrayType}`);
    }
    if (v === null || typeof v !== 'object' || typeof v.length !== 'number') throw bad(`${what}: an ARRAY value must be array-like`);
    this.u32(arrayType);
    this.u64(v.length);
    for (let i = 0; i < v.length; i++) {
      if (arrayType === GGUFValueType.ARRAY) {
        const inner = v[i] as GGUFWriterArray;
        this.array(inner?.arrayType, inner?.value, `${what}[${i}]`);
      } else {
        this.scalar(arrayType, v[i], `${what}[${i}]`);
      }
    }
  }
}

function bad(message: string): EdgeLLMError {
  return new EdgeLLMError('BAD_ARGUMENT', `writeGGUF: ${message}`);
}

export function tensorByteSize(name: string, dims: number[], type: number): number {
  const traits = TYPE_TRAITS.get(type);
  if (!traits) throw bad(`tensor "${name}": unknown ggml type ${type}`);
  if (dims.length < 1 || dims.length > 4 || dims.some((d) => !Number.isSafeInteger(d) || d < 1)) {
    throw bad(`tensor "${name}": dims [${dims.join(', ')}] must be 1..4 positive integers`);
  }
  if (dims[0] % traits.blockSize !== 0) {
    throw bad(`tensor "${name}": row length ${dims[0]} is not a multiple of the ${traits.name} block size ${traits.blockSize}`);
  }
  const elements = dims.reduce((a, b) => a * b, 1);
  return (elements / traits.blockSize) * traits.typeSize;
}

export function writeGGUF(input: GGUFWriterInput): Uint8Array {
  const version = input.version ?? 3;
  if (version !== 2 && version !== 3) throw bad(`version ${version} must be 2 or 3`);
  const alignment = input.alignment ?? GGUF_DEFAULT_ALIGNMENT;
  if (!Number.isInteger(alignment) || alignment < 1 || (alignment & (alignment - 1)) !== 0) {
    throw bad(`alignment ${alignment} must be a power of two`);
  }
  const metadata = [...input.metadata];
  if (input.alignment !== undefined && !metadata.some((kv) => kv.key === 'general.alignment')) {
    metadata.push({ key: 'general.alignment', type: GGUFValueType.UINT32, value: alignment });
  }

  const w = new ByteWriter();
  w.u32(0x46554747);
  w.u32(version);
  w.u64(input.tensors.length);
  w.u64(metadata.length);
  for (const kv of metadata) {
    w.string(kv.key);
    w.u32(kv.type);
    const what = `metadata "${kv.key}" (${valueTypeName(kv.type)})`;
    if (kv.type === GGUFValueType.ARRAY) w.array(kv.arrayType, kv.value, what);
    else w.scalar(kv.type, kv.value, what);
  }
  const sizes: number[] = [];
  let dataSize = 0;
  for (const t of input.tensors) {
    const size = tensorByteSize(t.name, t.dims, t.type);
    if (t.data ? t.data.length !== size : !t.fill) {
      throw bad(`tensor "${t.name}" (${typeName(t.type)} [${t.dims.join(', ')}]): data has ${t.data?.length ?? 'no'} bytes, expected ${size}`);
    }
    sizes.push(size);
    w.string(t.name);
    w.u32(t.dims.length);
    for (const d of t.dims) w.u64(d);
    w.u32(t.type);
    w.u64(dataSize);
    dataSize += Math.ceil(size / alignment) * alignment;
  }
  const dataOffset = Math.ceil(w.pos / alignment) * alignment;
  const out = new Uint8Array(dataOffset + dataSize);
  out.set(w.buf.subarray(0, w.pos));
  let at = dataOffset;
  input.tensors.forEach((t, i) => {
    const dst = out.subarray(at, at + sizes[i]);
    if (t.data) dst.set(t.data);
    else t.fill!(dst);
    at += Math.ceil(sizes[i] / alignment) * alignment;
  });
  return out;
}
