import { spawnSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { defineConfig } from 'vitest/config';

// URL models go through the download cache by default: tests keep theirs out of the user's (removed after the run by
// test/util/global-setup.ts).
const CACHE = path.join(os.tmpdir(), `edgellm-test-cache-${process.pid}`);

// Both kernel builds are tested in Node. Node 20 (V8 11.3) has relaxed SIMD only behind this V8 flag; newer Node ships
// it and may drop the flag, so it is passed only where this Node accepts it.
const RELAXED_FLAG = '--experimental-wasm-relaxed-simd';
const execArgv = spawnSync(process.execPath, [RELAXED_FLAG, '-e', '']).status === 0 ? [RELAXED_FLAG] : [];

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    env: { EDGELLM_CACHE: CACHE },
    globalSetup: ['test/util/global-setup.ts'],
    testTimeout: 300_000,
    hookTimeout: 300_000,
    pool: 'forks',
    execArgv,
    // CI has 2 cores; the default leaves one idle, and the real-model files are CPU-bound.
    maxWorkers: 2,
  },
});
