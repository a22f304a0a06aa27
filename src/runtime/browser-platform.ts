/**
 * The browser platform (browser.ts's loadModel and the model worker, browser-worker.ts): relative paths and kernels are
 * fetched; URLs are cached in OPFS, else the Cache API, and where neither works (a private window, say) they are read
 * by ranges.
 */
import type { ModelCache, Platform } from '../api.js';
import { openModelCache } from '../gguf/cache-browser.js';
import { fetchRelativePath } from '../gguf/source.js';
import { compileOncePerBuild, fetchOk } from './kernels.js';

let browserCache: Promise<ModelCache | undefined> | undefined;
export const browserPlatform: Platform = {
  openPath: fetchRelativePath,
  fetchBytes: fetchOk,
  packagedKernels: compileOncePerBuild(fetchOk),
  defaultCache: () => (browserCache ??= openModelCache().catch(() => undefined)),
};
