// Bundles the TypeScript host with esbuild, one bundle per environment, and emits .d.ts with tsc:
// - dist/index.js: Node, Deno, Bun (reads model files and the kernels from disk);
// - dist/browser.js: browsers and WebViews, the package default (no Node built-ins; fetches the kernels);
// - dist/browser-worker.js: the module worker loadModelInWorker starts, found beside dist/browser.js;
// - dist/workers.js: Cloudflare Workers (imports the kernels as precompiled modules: `import m from './x.wasm'`);
// - dist/cli.js: the `edgellm` command.
// The kernel builds are copied beside the bundles, which find them at ./edgellm-{simd,relaxed}.wasm, and their
// shared-memory twins ./edgellm-{simd,relaxed}-shared.wasm for the threaded kernel pool (docs/threads.md).
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, readFileSync, rmSync } from 'node:fs';

const WASM = ['edgellm-simd.wasm', 'edgellm-relaxed.wasm', 'edgellm-simd-shared.wasm', 'edgellm-relaxed-shared.wasm'];
if (WASM.some((f) => !existsSync(`build/${f}`))) {
  console.error('build/edgellm-{simd,relaxed}[-shared].wasm are missing: run `npm run build:wasm` first');
  process.exit(1);
}
rmSync('dist', { recursive: true, force: true });
const common = {
  bundle: true,
  format: 'esm',
  target: 'es2022',
  sourcemap: true,
  define: { __EDGELLM_WASM_DIR__: JSON.stringify('./') },
  logLevel: 'warning',
};
await build({ ...common, entryPoints: ['src/index.ts'], outfile: 'dist/index.js', platform: 'neutral', external: ['node:*'] });
await build({ ...common, entryPoints: ['src/browser.ts'], outfile: 'dist/browser.js', platform: 'browser' });
await build({ ...common, entryPoints: ['src/browser-worker.ts'], outfile: 'dist/browser-worker.js', platform: 'browser' });
await build({ ...common, entryPoints: ['src/workers.ts'], outfile: 'dist/workers.js', platform: 'neutral', external: ['*.wasm'] });
await build({ ...common, entryPoints: ['src/cli.ts'], outfile: 'dist/cli.js', platform: 'node', banner: { js: '#!/usr/bin/env node' } });
chmodSync('dist/cli.js', 0o755);
for (const f of WASM) copyFileSync(`build/${f}`, `dist/${f}`);

// The browser and Workers bundles must not reach for Node built-ins, even in code that would not run there: bundlers
// for those targets reject them.
for (const f of ['dist/browser.js', 'dist/browser-worker.js', 'dist/workers.js']) {
  const m = /\bnode:[a-z_/]+|require\(/.exec(readFileSync(f, 'utf8'));
  if (m) {
    console.error(`${f} refers to ${m[0]}, which the browser and Workers cannot load`);
    process.exit(1);
  }
}
execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.json'], { stdio: 'inherit' });
