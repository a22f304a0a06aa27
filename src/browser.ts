/**
 * The entry point for browsers and WebViews (and the package default): no Node built-ins. A model is a URL (a relative
 * path resolves against the page), bytes, or a Blob such as a picked File, which is read slice by slice. The kernels
 * are fetched from beside this module. Single-threaded, so it needs no SharedArrayBuffer or cross-origin isolation.
 */
import { loadModelOn, loadTokenizerOn, type LoadOptions, type Model, type ModelTokenizer, type Platform } from './api.js';
import { fetchRelativePath, type ModelSource } from './gguf/source.js';
import { compileOncePerBuild, fetchOk } from './runtime/kernels.js';

export * from './api.js';

const platform: Platform = { openPath: fetchRelativePath, fetchBytes: fetchOk, packagedKernels: compileOncePerBuild(fetchOk) };

/** Reads a GGUF (an http(s) or page-relative URL, bytes or a Blob), plans memory, loads the weights and the kernels. */
export function loadModel(src: ModelSource, options?: LoadOptions): Promise<Model> {
  return loadModelOn(platform, src, options);
}

/** Reads only the header of a GGUF (any source loadModel takes): its tokenizer and chat template, no weights. */
export function loadTokenizer(src: ModelSource, options?: Pick<LoadOptions, 'signal' | 'onProgress'>): Promise<ModelTokenizer> {
  return loadTokenizerOn(platform, src, options);
}
