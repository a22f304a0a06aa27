/**
 * Model files on a filesystem: Node, Deno and Bun (all three have node:fs). Only the Node-family entry point and the
 * CLI import this, so the browser and Workers bundles carry no Node built-in.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { EdgeLLMError } from '../errors.js';
import { checkRange, openSource, readTarget, throwIfAborted, type ByteSource, type ModelSource, type OpenOptions } from './source.js';

/** A file read with positional reads, never loaded whole. */
export async function openFile(location: string | URL, opts: OpenOptions = {}): Promise<ByteSource> {
  const path = typeof location === 'string' ? location : fileURLToPath(location);
  throwIfAborted(opts.signal, `open ${path}`);
  let handle: FileHandle;
  let size: number;
  try {
    handle = await open(path, 'r');
  } catch (err) {
    throw new EdgeLLMError('BAD_SOURCE', `model path "${path}": cannot open: ${(err as Error).message}`, { cause: err });
  }
  try {
    const st = await handle.stat();
    if (!st.isFile()) throw new EdgeLLMError('BAD_SOURCE', `model path "${path}": not a regular file`);
    size = st.size;
  } catch (err) {
    await handle.close().catch(() => {});
    if (err instanceof EdgeLLMError) throw err;
    throw new EdgeLLMError('BAD_SOURCE', `model path "${path}": cannot stat: ${(err as Error).message}`, { cause: err });
  }
  let closed = false;
  return {
    name: path,
    size,
    async read(offset, length, into) {
      if (closed) throw new EdgeLLMError('DISPOSED', `read from ${path}: the source is closed`);
      checkRange(path, size, offset, length);
      const out = readTarget(into, length);
      let done = 0;
      // Positional reads may return fewer bytes than asked, so loop; 0 bytes means the file shrank under us.
      while (done < length) {
        const { bytesRead } = await handle.read(out, done, length - done, offset + done);
        if (bytesRead === 0) {
          throw new EdgeLLMError('TRUNCATED', `read from ${path}: file ended at ${offset + done}, expected ${size} bytes`);
        }
        done += bytesRead;
      }
      return out;
    },
    async close() {
      if (closed) return;
      closed = true;
      await handle.close();
    },
  };
}

/** openSource where paths and file: URLs are files. */
export function openLocalSource(source: ModelSource, opts: OpenOptions = {}): Promise<ByteSource> {
  return openSource(source, opts, openFile);
}
