/**
 * The worker without a bundled model: MODEL_URL (an http(s) URL, or a path on the static-assets binding) says where
 * the model is. For models too big to bundle (a Worker is at most 10 MB gzipped on the paid plan, 3 MB on free).
 */
import { createWorker } from './app.js';

export default createWorker();
