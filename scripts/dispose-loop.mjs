// Loads a model in a worker with 2 threads in headless Chromium, generates, disposes, and checks that no worker is
// left, N times: the check for the Chromium stall of a nested worker's close (src/runtime/pool.ts, webExits;
// docs/threads.md). It shows best with the cores busy, e.g. two `node -e "for(;;){}"` beside it on 2 cores.
//
//   node scripts/dispose-loop.mjs [runs=40] [model=$EDGELLM_SHARED/models/sotu-15m-q4_0.gguf]
//
// Needs `npm run build` (it serves dist/) and Debian's chromium (CHROMIUM overrides the path).
import path from 'node:path';
import { chromium } from 'playwright-core';
import { REPO_ROOT, startServer } from '../examples/browser/serve.mjs';

const runs = Number(process.argv[2] ?? 40);
const model = path.resolve(process.argv[3] ?? path.join(process.env.EDGELLM_SHARED ?? path.join(REPO_ROOT, '../shared'), 'models/sotu-15m-q4_0.gguf'));
const server = await startServer({ port: 0, mounts: { '/models/': path.dirname(model) } });
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', headless: true, args: ['--no-sandbox', '--disable-gpu'] });
let stuck = 0;
try {
  for (let i = 0; i < runs; i++) {
    const page = await browser.newPage();
    await page.goto(server.url);
    await page.addScriptTag({ type: 'module', content: "import * as lib from '/dist/browser.js'; window.edgellmLib = lib;" });
    await page.waitForFunction(() => window.edgellmLib);
    // every other run with cold weights (an OPFS spill file in the worker), as test/browser.test.ts does
    await page.evaluate(async ({ url, cold }) => {
      const m = await window.edgellmLib.loadModelInWorker(url, { contextLength: 256, threads: 2, weights: cold ? 'cold' : undefined });
      await m.complete('The state of the Union is', { maxTokens: 16 });
      await m.dispose();
    }, { url: `/models/${path.basename(model)}`, cold: i % 2 === 1 });
    let left = page.workers().length;
    for (let k = 0; k < 50 && left > 0; k++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      left = page.workers().length;
    }
    if (left > 0) stuck++;
    console.log(`run ${i + 1}: ${left ? `${left} worker(s) still listed 5 s after dispose` : 'no worker left'}`);
    await page.close();
  }
} finally {
  await browser.close();
  server.close();
}
console.log(`${stuck} of ${runs} disposes left a worker behind`);
process.exitCode = stuck ? 1 : 0;
