/**
 * The entry point for browsers and WebViews (and the package default): no Node built-ins. A model is a URL (a relative
 * path resolves against the page), bytes, or a Blob such as a picked File, which is read slice by slice. The kernels
 * are fetched from beside this module.
 *
 * loadModel runs the model on the calling thread, single-threaded unless asked (on a page's main thread a threaded
 * pool's coordinator would have to spin: it may not Atomics.wait). loadModelInWorker runs it in a dedicated module
 * worker (./browser-worker.js, beside this module), where `threads` can run when the page is cross-origin isolated,
 * and the page stays responsive either way.
 */
import type { GGUFFile } from './gguf/reader.js';
import { loadModelOn, loadTokenizerOn, readHeaderOn, type HeaderOptions, type LoadOptions, type Model, type ModelTokenizer } from './api.js';
import type { ModelSource } from './gguf/source.js';
import { browserPlatform } from './runtime/browser-platform.js';
import { EdgeLLMError } from './errors.js';
import { WorkerModel } from './runtime/worker-model.js';

export * from './api.js';
export { WorkerModel } from './runtime/worker-model.js';
export { openModelCache, type BrowserCacheOptions } from './gguf/cache-browser.js';

/** Reads a GGUF (an http(s) or page-relative URL, bytes or a Blob), plans memory, loads the weights and the kernels. */
export function loadModel(src: ModelSource, options?: LoadOptions): Promise<Model> {
  return loadModelOn(browserPlatform, src, options);
}

/** Reads only the header of a GGUF (any source loadModel takes): its tokenizer and chat template, no weights. */
export function loadTokenizer(src: ModelSource, options?: HeaderOptions): Promise<ModelTokenizer> {
  return loadTokenizerOn(browserPlatform, src, options);
}

/** The GGUF header as loadTokenizer reads it: version, metadata, tensor table. */
export function readHeader(src: ModelSource, options?: HeaderOptions): Promise<GGUFFile> {
  return readHeaderOn(browserPlatform, src, options);
}

export interface WorkerLoadOptions extends LoadOptions {
  /**
   * The worker script (default: browser-worker.js beside this module, which bundlers that follow
   * `new Worker(new URL(..., import.meta.url))` find and copy). A module worker that runs edgellm's browser-worker.js.
   */
  workerUrl?: string | URL;
}

/**
 * loadModel in a dedicated module worker: the model computes off the page's thread, and with `threads` (cross-origin
 * isolated pages: COOP/COEP) the kernel pool's coordinator runs there, where it may Atomics.wait. The source and
 * options are loadModel's (a page-relative URL is resolved against the page; bytes are copied to the worker, a Blob or
 * File is not). The WorkerModel mirrors Model (see runtime/worker-model.ts); dispose() terminates the worker and its pool.
 */
export async function loadModelInWorker(src: ModelSource, options: WorkerLoadOptions = {}): Promise<WorkerModel> {
  const { workerUrl, ...rest } = options;
  let worker: Worker;
  try {
    // Spelled out in the constructor call: that is the pattern bundlers recognise.
    worker = workerUrl === undefined ? new Worker(new URL('./browser-worker.js', import.meta.url), { type: 'module' }) : new Worker(workerUrl, { type: 'module' });
  } catch (e) {
    // e.g. a Content-Security-Policy whose worker-src (or script-src) does not allow the script
    throw new EdgeLLMError('WASM', `cannot start the model worker: ${(e as Error).message}`, { cause: e });
  }
  return WorkerModel.start(worker, src, rest);
}
