import { existsSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { ROOT } from './shared.js';

function newest(dir: string): number {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    t = Math.max(t, e.isDirectory() ? newest(p) : statSync(p).mtimeMs);
  }
  return t;
}

/**
 * The tests of the built package (CLI, examples, other runtimes) read dist/, which `npm test` builds first. They never
 * rebuild it themselves: several test files read dist/ at once. A missing dist/ is an error, a stale one a warning.
 */
export function checkDist(): void {
  const entry = path.join(ROOT, 'dist/index.js');
  if (!existsSync(entry)) throw new Error('dist/ is missing: run `npm run build` (npm test builds before testing)');
  const sources = Math.max(newest(path.join(ROOT, 'src')), newest(path.join(ROOT, 'assembly')));
  if (statSync(entry).mtimeMs < sources) console.warn('\n!!! dist/ is older than src/ or assembly/: these tests run the old build; `npm test` rebuilds first\n');
}
