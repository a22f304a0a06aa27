// Bundles the TypeScript host with esbuild (dist/index.js, dist/cli.js) and emits .d.ts with tsc.
// The wasm builds stay in build/ beside dist/, and the bundle is told where: ../build/edgellm-{simd,relaxed}.wasm.
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, rmSync } from 'node:fs';

if (!existsSync('build/edgellm-simd.wasm') || !existsSync('build/edgellm-relaxed.wasm')) {
  console.error('build/edgellm-{simd,relaxed}.wasm are missing: run `npm run build:wasm` first');
  process.exit(1);
}
rmSync('dist', { recursive: true, force: true });
const common = {
  bundle: true,
  format: 'esm',
  target: 'es2022',
  sourcemap: true,
  define: { __EDGELLM_WASM_DIR__: JSON.stringify('../build/') },
  logLevel: 'warning',
};
await build({ ...common, entryPoints: ['src/index.ts'], outfile: 'dist/index.js', platform: 'neutral', external: ['node:*'] });
await build({
  ...common,
  entryPoints: ['src/cli.ts'],
  outfile: 'dist/cli.js',
  platform: 'node',
  banner: { js: '#!/usr/bin/env node' },
});
chmodSync('dist/cli.js', 0o755);
execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.json'], { stdio: 'inherit' });
