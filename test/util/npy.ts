import { readFileSync } from 'node:fs';

/** NumPy v1 .npy of little-endian f32: a 10-byte preamble, a header whose length is at byte 8, then the data. */
export function readNpyF32(path: string): { shape: number[]; data: Float32Array } {
  const buf = readFileSync(path);
  const headerLen = buf.readUInt16LE(8);
  const header = buf.subarray(10, 10 + headerLen).toString('latin1');
  if (!header.includes("'<f4'")) throw new Error(`${path}: not little-endian f32: ${header}`);
  const shape = /'shape':\s*\(([^)]*)\)/.exec(header)![1].split(',').filter((s) => s.trim()).map(Number);
  const bytes = buf.subarray(10 + headerLen);
  const data = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
  return { shape, data };
}
