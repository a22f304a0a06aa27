// Removes the run's download cache (vitest.config.ts points EDGELLM_CACHE at it) when the run ends.
import { rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export default function setup(): () => void {
  return () => rmSync(path.join(os.tmpdir(), `edgellm-test-cache-${process.pid}`), { recursive: true, force: true });
}
