/**
 * The worker that loadModelInWorker (browser.ts) starts, bundled to dist/browser-worker.js beside dist/browser.js: it
 * loads one model with the browser platform and serves the page's calls (runtime/worker-model.ts). Its kernels are fetched
 * from beside it, and with `threads` it starts the kernel pool's workers itself and is their thread 0.
 */
import { loadModelOn } from './api.js';
import { browserPlatform } from './runtime/browser-platform.js';
import { serveModel } from './runtime/worker-model.js';

serveModel((src, options, onHeader) => loadModelOn(browserPlatform, src, options, onHeader));
