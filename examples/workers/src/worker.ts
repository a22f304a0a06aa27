/**
 * The worker with a bundled model: `./model.gguf` is a Data module (an ArrayBuffer), loaded on the first request.
 * Setting MODEL_URL overrides it. Deploy with wrangler (wrangler.toml), or build for workerd with build.mjs.
 */
import model from './model.gguf';
import { createWorker } from './app.js';

export default createWorker(model);
