import { spawnSync } from 'node:child_process';
import { defineConfig } from 'vitest/config';

// Both kernel builds are tested in Node. Node 20 (V8 11.3) has relaxed SIMD only behind this V8 flag; newer Node ships
// it and may drop the flag, so it is passed only where this Node accepts it.
const RELAXED_FLAG = '--experimental-wasm-relaxed-simd';
const execArgv = spawnSync(process.execPath, [RELAXED_FLAG, '-e', '']).status === 0 ? [RELAXED_FLAG] : [];

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 300_000,
    hookTimeout: 300_000,
    pool: 'forks',
    execArgv,
    // CI has 2 cores; the default leaves one idle, and the real-model files are CPU-bound.
    maxWorkers: 2,
  },
});
