import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 300_000,
    hookTimeout: 300_000,
    pool: 'forks',
    // CI has 2 cores; the default leaves one idle, and the real-model files are CPU-bound.
    maxWorkers: 2,
  },
});
