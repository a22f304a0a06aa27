/**
 * The entry point for Node, Deno and Bun: model paths and file: URLs are read from the filesystem (positional reads,
 * never the whole file), and the kernels are read from the package's own files.
 */
import { readFile } from 'node:fs/promises';
import type { GGUFFile } from './gguf/reader.js';
import { loadModelOn, loadTokenizerOn, readHeaderOn, type HeaderOptions, type LoadOptions, type Model, type ModelTokenizer, type Platform } from './api.js';
import { openFile } from './gguf/file.js';
import { openModelCache } from './gguf/cache-node.js';
import type { ModelSource } from './gguf/source.js';
import { compileOncePerBuild, fetchOk } from './runtime/kernels.js';

export * from './api.js';
export { openModelCache, defaultCacheDir } from './gguf/cache-node.js';

async function fetchBytes(url: URL): Promise<Uint8Array<ArrayBuffer>> {
  return url.protocol === 'file:' ? new Uint8Array(await readFile(url)) : fetchOk(url);
}

// URLs are cached in EDGELLM_CACHE or the user's cache directory (see gguf/cache-node.ts).
const platform: Platform = { openPath: openFile, fetchBytes, packagedKernels: compileOncePerBuild(fetchBytes), defaultCache: () => openModelCache() };

/** Reads a GGUF (a path, file: or http(s) URL, bytes or a Blob), plans memory, loads the weights and the kernels. */
export function loadModel(src: ModelSource, options?: LoadOptions): Promise<Model> {
  return loadModelOn(platform, src, options);
}

/** Reads only the header of a GGUF (any source loadModel takes): its tokenizer and chat template, no weights. */
export function loadTokenizer(src: ModelSource, options?: HeaderOptions): Promise<ModelTokenizer> {
  return loadTokenizerOn(platform, src, options);
}

/** The GGUF header (metadata and tensor table; no tensor data), as loadTokenizer reads it: what `edgellm info` shows. */
export function readHeader(src: ModelSource, options?: HeaderOptions): Promise<GGUFFile> {
  return readHeaderOn(platform, src, options);
}
