/**
 * The entry point for Cloudflare Workers (workerd): Workers compile no wasm from bytes at run time, so both kernel
 * builds are imported as precompiled WebAssembly.Module objects, which wrangler and workerd resolve at deploy time.
 * A model is bytes (e.g. a bundled Data module or an R2 object's arrayBuffer()), a Blob, or an http(s) URL.
 */
import { loadModelOn, loadTokenizerOn, type LoadOptions, type Model, type ModelTokenizer, type Platform } from './api.js';
import { fetchRelativePath, type ModelSource } from './gguf/source.js';
import { fetchOk, type KernelBuild } from './runtime/kernels.js';
import simd from './edgellm-simd.wasm';
import relaxed from './edgellm-relaxed.wasm';

import { EdgeLLMError } from './errors.js';

export * from './api.js';

const modules: Record<KernelBuild, WebAssembly.Module> = { simd, relaxed };

// No defaultCache: a Worker has no storage that outlives it to keep a model in, so URLs are read by ranges; a
// ModelCache of one's own can still be passed as `cache`.
const platform: Platform = {
  openPath: fetchRelativePath,
  fetchBytes: fetchOk,
  // Workers have no threads (no Worker to start), so only the unshared builds are bundled.
  packagedKernels: async (build, shared) => {
    if (shared) throw new EdgeLLMError('WASM', 'the Workers bundle has no shared-memory kernel builds (no threads in Workers)');
    return modules[build];
  },
};

/** Reads a GGUF (bytes, a Blob or an http(s) URL), plans memory, loads the weights; the kernels are already compiled. */
export function loadModel(src: ModelSource, options?: LoadOptions): Promise<Model> {
  return loadModelOn(platform, src, options);
}

/** Reads only the header of a GGUF (any source loadModel takes): its tokenizer and chat template, no weights. */
export function loadTokenizer(src: ModelSource, options?: Pick<LoadOptions, 'signal' | 'onProgress' | 'hf' | 'cache'>): Promise<ModelTokenizer> {
  return loadTokenizerOn(platform, src, options);
}
