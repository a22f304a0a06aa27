/**
 * The entry point for Node, Deno and Bun: model paths and file: URLs are read from the filesystem (positional reads,
 * never the whole file), and the kernels are read from the package's own files.
 */
import { readFile } from 'node:fs/promises';
import { loadModelOn, loadTokenizerOn, type LoadOptions, type Model, type ModelTokenizer, type Platform } from './api.js';
import { openFile } from './gguf/file.js';
import type { ModelSource } from './gguf/source.js';
import { compileOncePerBuild, fetchOk } from './runtime/kernels.js';

export * from './api.js';

async function fetchBytes(url: URL): Promise<Uint8Array<ArrayBuffer>> {
  return url.protocol === 'file:' ? new Uint8Array(await readFile(url)) : fetchOk(url);
}

const platform: Platform = { openPath: openFile, fetchBytes, packagedKernels: compileOncePerBuild(fetchBytes) };

/** Reads a GGUF (a path, file: or http(s) URL, bytes or a Blob), plans memory, loads the weights and the kernels. */
export function loadModel(src: ModelSource, options?: LoadOptions): Promise<Model> {
  return loadModelOn(platform, src, options);
}

/** Reads only the header of a GGUF (any source loadModel takes): its tokenizer and chat template, no weights. */
export function loadTokenizer(src: ModelSource, options?: Pick<LoadOptions, 'signal' | 'onProgress'>): Promise<ModelTokenizer> {
  return loadTokenizerOn(platform, src, options);
}
