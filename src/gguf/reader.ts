/**
 * GGUF v2/v3 header reader (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md).
 *
 * The header is untrusted input: every count and length is checked against the bytes that remain in the file before
 * anything is allocated, so a corrupt or hostile file fails with an EdgeLLMError instead of a RangeError or an
 * out-of-memory. Only the header is read; tensor data stays in the source until the loader asks for it.
 *
 * Error codes: BAD_MAGIC, UNSUPPORTED_VERSION, TRUNCATED (the file ends before something the header declares, header
 * field or tensor data), BAD_METADATA (bad value type, bad UTF-8, duplicate key, bad general.alignment, too deep
 * nesting, bad bool), BAD_TENSOR (dims, duplicate name, misaligned offset, too many tensors), UNSUPPORTED_TYPE (a
 * tensor type id that ggml does not define, i.e. not in TYPE_TRAITS; known types edgellm cannot run are accepted here
 * and reported by the model loader).
 */
import { EdgeLLMError } from '../errors.js';
import type { ByteSource } from './source.js';
import { TYPE_TRAITS } from './types.js';

export type GGUFScalar = number | bigint | boolean | string;
export type GGUFValue =
  | GGUFScalar
  | GGUFValue[]
  | Uint8Array
  | Int8Array
  | Uint16Array
  | Int16Array
  | Uint32Array
  | Int32Array
  | Float32Array
  | Float64Array
  | BigInt64Array
  | BigUint64Array
  | boolean[]
  | string[];

export enum GGUFValueType {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
}

export interface TensorInfo {
  name: string;
  /** ggml ne order: dims[0] is the row length */
  dims: number[];
  /** GGMLType id */
  type: number;
  typeName: string;
  elements: number;
  byteSize: number;
  /** ABSOLUTE byte offset in the file */
  offset: number;
}

/** The declared type of a metadata value; arrayType is the element type of an array (the outer one for nested arrays). */
export interface GGUFValueTypeInfo {
  type: GGUFValueType;
  arrayType?: GGUFValueType;
}

export const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian u32
export const GGUF_DEFAULT_ALIGNMENT = 32;
export const MAX_TENSORS = 65536;
export const MAX_METADATA = 1 << 20;
export const MAX_ARRAY_DEPTH = 8;
export const MAX_ALIGNMENT = 1 << 20;
const MAX_DIMS = 4;
const FIRST_READ = 1 << 20;

const VALUE_TYPE_NAMES = ['u8', 'i8', 'u16', 'i16', 'u32', 'i32', 'f32', 'bool', 'string', 'array', 'u64', 'i64', 'f64'];
/** Encoded size of one value; for string and array, the smallest possible encoding (an empty one). */
const MIN_SIZE = [1, 1, 2, 2, 4, 4, 4, 1, 8, 12, 8, 8, 8];
const INTEGER_TYPES = new Set([0, 1, 2, 3, 4, 5, 10, 11]);
const NUMERIC_TYPES = new Set([0, 1, 2, 3, 4, 5, 6, 10, 11, 12]);
/** Smallest encodings of a key/value pair (empty key, u8 value) and of a tensor info (empty name, 1 dim). */
const MIN_KV_BYTES = 8 + 4 + 1;
const MIN_TENSOR_INFO_BYTES = 8 + 4 + 8 + 4 + 8;

export function valueTypeName(type: number): string {
  return VALUE_TYPE_NAMES[type] ?? `unknown(${type})`;
}

function describe(info: GGUFValueTypeInfo): string {
  return info.type === GGUFValueType.ARRAY ? `array of ${valueTypeName(info.arrayType ?? -1)}` : valueTypeName(info.type);
}

const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
// ignoreBOM keeps a leading U+FEFF in a token instead of silently dropping it.
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Thrown inside the parser when the buffer ends before the file does: the driver reads more and parses again. */
class NeedMore {
  constructor(readonly end: number) {}
}

class HeaderParser {
  pos = 0;
  /** The exact value of the last u64 read when it was beyond 2^53, for messages (the number is then approximate). */
  private lastBig: bigint | undefined;
  private readonly dv: DataView;

  constructor(
    private readonly buf: Uint8Array,
    private readonly fileSize: number,
    private readonly name: string,
  ) {
    this.dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }

  need(n: number, what: string): void {
    const end = this.pos + n;
    if (end > this.fileSize) {
      throw new EdgeLLMError(
        'TRUNCATED',
        `${this.name}: ${what} at offset ${this.pos} needs ${n} bytes, but the file ends at ${this.fileSize} (${this.fileSize - this.pos} left)`,
      );
    }
    if (end > this.buf.length) throw new NeedMore(end);
  }

  remaining(): number {
    return this.fileSize - this.pos;
  }

  u8(what: string): number {
    this.need(1, what);
    return this.buf[this.pos++];
  }
  u32(what: string): number {
    this.need(4, what);
    const v = this.dv.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }
  /** A u64 as a number; above 2^53 it is approximate, which only matters for values that fail a size check anyway. */
  u64n(what: string): number {
    this.need(8, what);
    const lo = this.dv.getUint32(this.pos, true);
    const hi = this.dv.getUint32(this.pos + 4, true);
    this.pos += 8;
    this.lastBig = hi >= 0x200000 ? (BigInt(hi) << 32n) | BigInt(lo) : undefined;
    return hi * 4294967296 + lo;
  }

  /** A u64 just read, exactly as the file has it. */
  show(n: number): string {
    return n > Number.MAX_SAFE_INTEGER && this.lastBig !== undefined ? String(this.lastBig) : String(n);
  }

  /** Bytes for one scalar of the given type, read as its JS value. */
  scalar(type: GGUFValueType, what: string): GGUFScalar {
    const dv = this.dv;
    switch (type) {
      case GGUFValueType.UINT8:
        return this.u8(what);
      case GGUFValueType.INT8:
        this.need(1, what);
        return dv.getInt8(this.pos++);
      case GGUFValueType.UINT16:
        this.need(2, what);
        this.pos += 2;
        return dv.getUint16(this.pos - 2, true);
      case GGUFValueType.INT16:
        this.need(2, what);
        this.pos += 2;
        return dv.getInt16(this.pos - 2, true);
      case GGUFValueType.UINT32:
        return this.u32(what);
      case GGUFValueType.INT32:
        this.need(4, what);
        this.pos += 4;
        return dv.getInt32(this.pos - 4, true);
      case GGUFValueType.FLOAT32:
        this.need(4, what);
        this.pos += 4;
        return dv.getFloat32(this.pos - 4, true);
      case GGUFValueType.BOOL: {
        const at = this.pos;
        const b = this.u8(what);
        if (b > 1) throw new EdgeLLMError('BAD_METADATA', `${this.name}: ${what} at offset ${at}: a bool must be 0 or 1, found ${b}`);
        return b === 1;
      }
      case GGUFValueType.STRING:
        return this.string(what);
      case GGUFValueType.UINT64:
        this.need(8, what);
        this.pos += 8;
        return dv.getBigUint64(this.pos - 8, true);
      case GGUFValueType.INT64:
        this.need(8, what);
        this.pos += 8;
        return dv.getBigInt64(this.pos - 8, true);
      case GGUFValueType.FLOAT64:
        this.need(8, what);
        this.pos += 8;
        return dv.getFloat64(this.pos - 8, true);
      default:
        throw new EdgeLLMError('BAD_METADATA', `${this.name}: ${what}: value type ${type} is not a scalar type`);
    }
  }

  string(what: string): string {
    const at = this.pos;
    // The length field is reported as `what` itself: building "length of ..." for each of 100k tokens costs time.
    const len = this.u64n(what);
    if (len > this.remaining()) {
      throw new EdgeLLMError(
        'TRUNCATED',
        `${this.name}: ${what} at offset ${at} declares ${this.show(len)} bytes, but only ${this.remaining()} remain in the file (size ${this.fileSize})`,
      );
    }
    this.need(len, what);
    const start = this.pos;
    this.pos += len;
    // A hand-written decoder for short tokens measured no faster than TextDecoder (~70 ns per token).
    if (len === 0) return '';
    return this.decode(start, len, what, at);
  }

  private decode(start: number, len: number, what: string, at: number): string {
    try {
      return utf8.decode(this.buf.subarray(start, start + len));
    } catch (err) {
      throw new EdgeLLMError('BAD_METADATA', `${this.name}: ${what} at offset ${at} is not valid UTF-8`, { cause: err });
    }
  }

  valueType(what: string): GGUFValueType {
    const at = this.pos;
    const t = this.u32(`value type of ${what}`);
    if (t > GGUFValueType.FLOAT64) {
      throw new EdgeLLMError('BAD_METADATA', `${this.name}: ${what} at offset ${at}: value type ${t} is not a GGUF value type (0..12)`);
    }
    return t;
  }

  value(type: GGUFValueType, what: string, depth: number): GGUFValue {
    if (type !== GGUFValueType.ARRAY) return this.scalar(type, what);
    if (depth >= MAX_ARRAY_DEPTH) {
      throw new EdgeLLMError('BAD_METADATA', `${this.name}: ${what}: arrays nested deeper than ${MAX_ARRAY_DEPTH} levels`);
    }
    const elemType = this.valueType(`elements of ${what}`);
    const at = this.pos;
    const count = this.u64n(`element count of ${what}`);
    const minBytes = count * MIN_SIZE[elemType];
    if (minBytes > this.remaining()) {
      throw new EdgeLLMError(
        'TRUNCATED',
        `${this.name}: ${what} at offset ${at} declares ${this.show(count)} ${valueTypeName(elemType)} elements (at least ${minBytes} bytes), but only ${this.remaining()} remain in the file (size ${this.fileSize})`,
      );
    }
    switch (elemType) {
      case GGUFValueType.STRING: {
        const out: string[] = new Array(count);
        for (let i = 0; i < count; i++) out[i] = this.string(what);
        return out;
      }
      case GGUFValueType.BOOL: {
        const out: boolean[] = new Array(count);
        for (let i = 0; i < count; i++) out[i] = this.scalar(GGUFValueType.BOOL, what) as boolean;
        return out;
      }
      case GGUFValueType.ARRAY: {
        const out: GGUFValue[] = new Array(count);
        for (let i = 0; i < count; i++) out[i] = this.value(GGUFValueType.ARRAY, `${what}[${i}]`, depth + 1);
        return out;
      }
      default:
        return this.numericArray(elemType, count, what);
    }
  }

  private numericArray(type: GGUFValueType, count: number, what: string): GGUFValue {
    const size = MIN_SIZE[type];
    this.need(count * size, what);
    // A copy: aligned for the typed array, and independent of the caller's buffer (Uint8Array's slice: a Node Buffer's
    // slice is a view, so a file read with readFileSync would give misaligned views of the whole file).
    const bytes = Uint8Array.prototype.slice.call(this.buf, this.pos, this.pos + count * size);
    this.pos += count * size;
    if (!LITTLE_ENDIAN_HOST && size > 1) {
      for (let i = 0; i < bytes.length; i += size) {
        for (let a = i, b = i + size - 1; a < b; a++, b--) {
          const t = bytes[a];
          bytes[a] = bytes[b];
          bytes[b] = t;
        }
      }
    }
    const ab = bytes.buffer;
    switch (type) {
      case GGUFValueType.UINT8:
        return bytes;
      case GGUFValueType.INT8:
        return new Int8Array(ab);
      case GGUFValueType.UINT16:
        return new Uint16Array(ab);
      case GGUFValueType.INT16:
        return new Int16Array(ab);
      case GGUFValueType.UINT32:
        return new Uint32Array(ab);
      case GGUFValueType.INT32:
        return new Int32Array(ab);
      case GGUFValueType.FLOAT32:
        return new Float32Array(ab);
      case GGUFValueType.UINT64:
        return new BigUint64Array(ab);
      case GGUFValueType.INT64:
        return new BigInt64Array(ab);
      default:
        return new Float64Array(ab);
    }
  }
}

interface ParsedHeader {
  version: number;
  metadata: Map<string, GGUFValue>;
  types: Map<string, GGUFValueTypeInfo>;
  tensors: TensorInfo[];
  alignment: number;
  dataOffset: number;
}

function parseHeader(buf: Uint8Array, fileSize: number, name: string): ParsedHeader {
  const p = new HeaderParser(buf, fileSize, name);
  if (fileSize < 4) {
    throw new EdgeLLMError('TRUNCATED', `${name}: the file is ${fileSize} bytes, too short for the GGUF magic`);
  }
  p.need(4, 'magic');
  const magic = buf.subarray(0, 4);
  if (magic[0] !== 0x47 || magic[1] !== 0x47 || magic[2] !== 0x55 || magic[3] !== 0x46) {
    const hex = [...magic].map((b) => b.toString(16).padStart(2, '0')).join(' ');
    const text = [...magic].map((b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '.')).join('');
    throw new EdgeLLMError('BAD_MAGIC', `${name}: magic is ${hex} ("${text}"), expected 47 47 55 46 ("GGUF"): not a GGUF file`);
  }
  p.pos = 4;
  const version = p.u32('version');
  if (version !== 2 && version !== 3) {
    const swapped = (((version & 0xff) << 24) | ((version & 0xff00) << 8) | ((version >>> 8) & 0xff00) | (version >>> 24)) >>> 0;
    const hint =
      swapped >= 1 && swapped <= 3
        ? ` (this looks like a big-endian GGUF v${swapped}; only little-endian files are supported)`
        : version === 1
          ? ' (GGUF v1 is obsolete; convert the model again with a current llama.cpp)'
          : '';
    throw new EdgeLLMError('UNSUPPORTED_VERSION', `${name}: GGUF version ${version} is not supported, only 2 and 3${hint}`);
  }
  const nTensors = p.u64n('tensor count');
  const nKV = p.u64n('metadata count');
  if (nTensors > MAX_TENSORS) {
    throw new EdgeLLMError('BAD_TENSOR', `${name}: tensor count ${nTensors} exceeds the limit ${MAX_TENSORS}`);
  }
  if (nKV > MAX_METADATA) {
    throw new EdgeLLMError('BAD_METADATA', `${name}: metadata count ${nKV} exceeds the limit ${MAX_METADATA}`);
  }
  const minHeader = nTensors * MIN_TENSOR_INFO_BYTES + nKV * MIN_KV_BYTES;
  if (minHeader > p.remaining()) {
    throw new EdgeLLMError(
      'TRUNCATED',
      `${name}: ${nTensors} tensors and ${nKV} metadata entries need at least ${minHeader} header bytes, but only ${p.remaining()} remain after offset ${p.pos} (file size ${fileSize})`,
    );
  }

  const metadata = new Map<string, GGUFValue>();
  const types = new Map<string, GGUFValueTypeInfo>();
  for (let i = 0; i < nKV; i++) {
    const at = p.pos;
    const key = p.string(`key of metadata entry ${i}`);
    if (metadata.has(key)) {
      throw new EdgeLLMError('BAD_METADATA', `${name}: metadata key "${key}" appears twice (entry ${i} at offset ${at})`);
    }
    const what = `metadata "${key}"`;
    const type = p.valueType(what);
    let arrayType: GGUFValueType | undefined;
    if (type === GGUFValueType.ARRAY) {
      p.need(4, `element type of ${what}`);
      arrayType = buf[p.pos] | (buf[p.pos + 1] << 8) | (buf[p.pos + 2] << 16) | (buf[p.pos + 3] << 24);
    }
    metadata.set(key, p.value(type, what, 0));
    types.set(key, arrayType === undefined ? { type } : { type, arrayType });
  }

  let alignment = GGUF_DEFAULT_ALIGNMENT;
  if (metadata.has('general.alignment')) {
    const t = types.get('general.alignment')!;
    const a = metadata.get('general.alignment');
    if (t.type !== GGUFValueType.UINT32) {
      throw new EdgeLLMError('BAD_METADATA', `${name}: general.alignment must be a u32, found ${describe(t)}`);
    }
    if (typeof a !== 'number' || a === 0 || (a & (a - 1)) !== 0 || a > MAX_ALIGNMENT) {
      throw new EdgeLLMError('BAD_METADATA', `${name}: general.alignment ${a} must be a non-zero power of two ≤ ${MAX_ALIGNMENT}`);
    }
    alignment = a;
  }

  const tensors: TensorInfo[] = [];
  const seen = new Set<string>();
  const relOffsets: number[] = [];
  for (let i = 0; i < nTensors; i++) {
    const at = p.pos;
    const tname = p.string(`name of tensor ${i}`);
    if (seen.has(tname)) throw new EdgeLLMError('BAD_TENSOR', `${name}: tensor name "${tname}" appears twice (tensor ${i} at offset ${at})`);
    seen.add(tname);
    const what = `tensor "${tname}"`;
    const nDims = p.u32(`n_dims of ${what}`);
    if (nDims < 1 || nDims > MAX_DIMS) {
      throw new EdgeLLMError('BAD_TENSOR', `${name}: ${what} has n_dims ${nDims}, expected 1..${MAX_DIMS}`);
    }
    const dims: number[] = [];
    let elements = 1;
    for (let d = 0; d < nDims; d++) {
      const n = p.u64n(`dims[${d}] of ${what}`);
      if (n < 1 || n > Number.MAX_SAFE_INTEGER) {
        throw new EdgeLLMError('BAD_TENSOR', `${name}: ${what} has dims[${d}] = ${p.show(n)}, expected 1..2^53`);
      }
      if (elements > Number.MAX_SAFE_INTEGER / n) {
        throw new EdgeLLMError('BAD_TENSOR', `${name}: ${what} dims [${[...dims, n].join(', ')}...] have more than 2^53 elements`);
      }
      elements *= n;
      dims.push(n);
    }
    const type = p.u32(`type of ${what}`);
    const traits = TYPE_TRAITS.get(type);
    if (!traits) {
      throw new EdgeLLMError('UNSUPPORTED_TYPE', `${name}: ${what} has ggml type id ${type}, which is not a known ggml type`);
    }
    if (dims[0] % traits.blockSize !== 0) {
      throw new EdgeLLMError(
        'BAD_TENSOR',
        `${name}: ${what} of type ${traits.name} has row length dims[0] = ${dims[0]}, not a multiple of the block size ${traits.blockSize}`,
      );
    }
    const byteSize = (elements / traits.blockSize) * traits.typeSize;
    if (byteSize > Number.MAX_SAFE_INTEGER) {
      throw new EdgeLLMError('BAD_TENSOR', `${name}: ${what} of ${elements} ${traits.name} elements is larger than 2^53 bytes`);
    }
    const offset = p.u64n(`offset of ${what}`);
    relOffsets.push(offset);
    tensors.push({ name: tname, dims, type, typeName: traits.name, elements, byteSize, offset: 0 });
  }

  const dataOffset = Math.ceil(p.pos / alignment) * alignment;
  for (let i = 0; i < tensors.length; i++) {
    const t = tensors[i];
    const rel = relOffsets[i];
    if (rel % alignment !== 0) {
      throw new EdgeLLMError('BAD_TENSOR', `${name}: tensor "${t.name}" has data offset ${rel}, not a multiple of the alignment ${alignment}`);
    }
    const end = dataOffset + rel + t.byteSize;
    if (end > fileSize) {
      throw new EdgeLLMError(
        'TRUNCATED',
        `${name}: tensor "${t.name}" (${t.byteSize} bytes at data offset ${rel}) ends at byte ${end}, but the file is ${fileSize} bytes: the file is too short for its declared tensors`,
      );
    }
    t.offset = dataOffset + rel;
  }
  return { version, metadata, types, tensors, alignment, dataOffset };
}

function missing(key: string, expected: string): EdgeLLMError {
  return new EdgeLLMError('BAD_METADATA', `metadata key "${key}" is missing (expected ${expected})`);
}

export class GGUFFile {
  readonly version: number;
  readonly metadata: Map<string, GGUFValue>;
  /** The declared GGUF type of every metadata value. */
  readonly metadataTypes: Map<string, GGUFValueTypeInfo>;
  readonly tensors: TensorInfo[];
  readonly tensorMap: Map<string, TensorInfo>;
  readonly alignment: number;
  readonly dataOffset: number;
  readonly fileSize: number;
  readonly sourceName: string;

  constructor(h: ParsedHeader, fileSize: number, sourceName: string) {
    this.version = h.version;
    this.metadata = h.metadata;
    this.metadataTypes = h.types;
    this.tensors = h.tensors;
    this.tensorMap = new Map(h.tensors.map((t) => [t.name, t]));
    this.alignment = h.alignment;
    this.dataOffset = h.dataOffset;
    this.fileSize = fileSize;
    this.sourceName = sourceName;
  }

  has(key: string): boolean {
    return this.metadata.has(key);
  }

  get(key: string): GGUFValue | undefined {
    return this.metadata.get(key);
  }

  typeOf(key: string): GGUFValueTypeInfo | undefined {
    return this.metadataTypes.get(key);
  }

  private wrongType(key: string, expected: string): EdgeLLMError {
    return new EdgeLLMError('BAD_METADATA', `metadata key "${key}": expected ${expected}, found ${describe(this.metadataTypes.get(key)!)}`);
  }

  /** Any integer type; a u64/i64 must be a safe integer. */
  int(key: string, fallback?: number): number {
    if (!this.metadata.has(key)) {
      if (fallback !== undefined) return fallback;
      throw missing(key, 'an integer');
    }
    const t = this.metadataTypes.get(key)!.type;
    if (!INTEGER_TYPES.has(t)) throw this.wrongType(key, 'an integer');
    const v = this.metadata.get(key)!;
    if (typeof v === 'bigint') {
      const n = Number(v);
      if (!Number.isSafeInteger(n)) throw new EdgeLLMError('BAD_METADATA', `metadata key "${key}": ${v} is beyond 2^53`);
      return n;
    }
    return v as number;
  }

  /** Any numeric type. */
  float(key: string, fallback?: number): number {
    if (!this.metadata.has(key)) {
      if (fallback !== undefined) return fallback;
      throw missing(key, 'a number');
    }
    if (!NUMERIC_TYPES.has(this.metadataTypes.get(key)!.type)) throw this.wrongType(key, 'a number');
    return Number(this.metadata.get(key));
  }

  string(key: string, fallback?: string): string {
    if (!this.metadata.has(key)) {
      if (fallback !== undefined) return fallback;
      throw missing(key, 'a string');
    }
    if (this.metadataTypes.get(key)!.type !== GGUFValueType.STRING) throw this.wrongType(key, 'a string');
    return this.metadata.get(key) as string;
  }

  bool(key: string, fallback?: boolean): boolean {
    if (!this.metadata.has(key)) {
      if (fallback !== undefined) return fallback;
      throw missing(key, 'a bool');
    }
    if (this.metadataTypes.get(key)!.type !== GGUFValueType.BOOL) throw this.wrongType(key, 'a bool');
    return this.metadata.get(key) as boolean;
  }

  stringArray(key: string): string[] {
    if (!this.metadata.has(key)) throw missing(key, 'an array of string');
    const t = this.metadataTypes.get(key)!;
    if (t.type !== GGUFValueType.ARRAY || t.arrayType !== GGUFValueType.STRING) throw this.wrongType(key, 'an array of string');
    return this.metadata.get(key) as string[];
  }

  /** Any numeric array, converted to f32. */
  floatArray(key: string): Float32Array {
    if (!this.metadata.has(key)) throw missing(key, 'a numeric array');
    const t = this.metadataTypes.get(key)!;
    if (t.type !== GGUFValueType.ARRAY || !NUMERIC_TYPES.has(t.arrayType!)) throw this.wrongType(key, 'a numeric array');
    const v = this.metadata.get(key) as ArrayLike<number | bigint>;
    if (v instanceof Float32Array) return v;
    const out = new Float32Array(v.length);
    for (let i = 0; i < v.length; i++) out[i] = Number(v[i]);
    return out;
  }

  /** Any integer array whose values fit in i32. */
  intArray(key: string): Int32Array {
    if (!this.metadata.has(key)) throw missing(key, 'an integer array');
    const t = this.metadataTypes.get(key)!;
    if (t.type !== GGUFValueType.ARRAY || !INTEGER_TYPES.has(t.arrayType!)) throw this.wrongType(key, 'an integer array');
    const v = this.metadata.get(key) as ArrayLike<number | bigint>;
    if (v instanceof Int32Array) return v;
    const out = new Int32Array(v.length);
    for (let i = 0; i < v.length; i++) {
      const n = Number(v[i]);
      if (n < -2147483648 || n > 2147483647) {
        throw new EdgeLLMError('BAD_METADATA', `metadata key "${key}": element ${i} = ${v[i]} does not fit in an i32`);
      }
      out[i] = n;
    }
    return out;
  }

  tensor(name: string): TensorInfo {
    const t = this.tensorMap.get(name);
    if (!t) throw new EdgeLLMError('MISSING_TENSOR', `tensor "${name}" is not in ${this.sourceName} (it has ${this.tensors.length} tensors)`);
    return t;
  }
}

/** The headers already read from each open source (see knownHeader). */
const headers = new WeakMap<ByteSource, GGUFFile>();

/**
 * Reads and validates the header; reads more of the file only as far as the header goes. A source whose header was
 * read before (or vouched for by knownHeader) is not read again.
 */
export async function readGGUF(source: ByteSource): Promise<GGUFFile> {
  const known = headers.get(source);
  if (known) return known;
  const fileSize = source.size;
  let want = Math.min(fileSize, FIRST_READ);
  for (;;) {
    const buf = await source.read(0, want);
    try {
      const gguf = new GGUFFile(parseHeader(buf, fileSize, source.name), fileSize, source.name);
      headers.set(source, gguf);
      return gguf;
    } catch (err) {
      if (!(err instanceof NeedMore)) throw err;
      // Re-parse from the start with a larger prefix: simpler than resuming, and doubling bounds the extra work to ~2x.
      want = Math.min(fileSize, Math.max(want * 2, err.end + (1 << 16)));
    }
  }
}

/**
 * Records that `source` holds the header `gguf`, read from the same bytes under another source (the download cache
 * checks a file's header before it hands the file out), so that readGGUF(source) does not parse it again.
 */
export function knownHeader<S extends ByteSource>(source: S, gguf: GGUFFile): S {
  headers.set(source, gguf);
  return source;
}
