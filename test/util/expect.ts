import { expect } from 'vitest';
import { EdgeLLMError, type ErrorCode } from '../../src/errors.js';
import { memorySource, readGGUF, writeGGUF, type GGUFWriterKV, type GGUFWriterTensor } from '../../src/gguf/index.js';

/** fn throws an EdgeLLMError with this code, whose message contains every one of `mentions`. */
export function expectCode(fn: () => unknown, code: string, ...mentions: string[]): EdgeLLMError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  return isCode(caught, code, mentions);
}

function isCode(caught: unknown, code: string, mentions: string[]): EdgeLLMError {
  expect(caught, `expected EdgeLLMError ${code}`).toBeInstanceOf(EdgeLLMError);
  const e = caught as EdgeLLMError;
  expect(e.code, e.message).toBe(code);
  for (const m of mentions) expect(e.message).toContain(m);
  return e;
}

/** Re-reads a GGUF and writes it again with its metadata and tensors edited: a crafted bad file in a few lines. */
export async function rewriteGGUF(
  bytes: Uint8Array,
  edit: { metadata?: (kvs: GGUFWriterKV[]) => GGUFWriterKV[]; tensors?: (ts: GGUFWriterTensor[]) => GGUFWriterTensor[] },
): Promise<Uint8Array> {
  const g = await readGGUF(memorySource(bytes));
  let metadata: GGUFWriterKV[] = [...g.metadata].map(([key, value]) => ({ key, value, ...g.typeOf(key)! }));
  let tensors: GGUFWriterTensor[] = g.tensors.map((t) => ({ name: t.name, dims: t.dims, type: t.type, data: bytes.subarray(t.offset, t.offset + t.byteSize) }));
  if (edit.metadata) metadata = edit.metadata(metadata);
  if (edit.tensors) tensors = edit.tensors(tensors);
  return writeGGUF({ version: 3, metadata, tensors });
}

/** fn's promise rejects with an EdgeLLMError with this code, whose message contains every one of `mentions`. */
export async function expectCodeAsync(fn: () => Promise<unknown>, code: ErrorCode, ...mentions: string[]): Promise<EdgeLLMError> {
  let caught: unknown;
  try {
    await fn();
  } catch (err) {
    caught = err;
  }
  return isCode(caught, code, mentions);
}
