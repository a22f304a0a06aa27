// The anchors (wllama, llama.cpp) are installed on demand into a cache folder outside the package, never as
// dependencies: `$EDGELLM_BENCH_CACHE`, else `$XDG_CACHE_HOME/edgellm-bench`, else `~/.cache/edgellm-bench`.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';

export function cacheRoot() {
  if (process.env.EDGELLM_BENCH_CACHE) return path.resolve(process.env.EDGELLM_BENCH_CACHE);
  const base = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
  return path.join(base, 'edgellm-bench');
}

/**
 * Makes sure `packages` ({ name: exactVersion }) are installed in cacheRoot()/`folder` and returns a `require` rooted
 * there (use `require.resolve` + import() for ESM packages). Installs only when the pinned versions are not already there.
 */
export function ensurePackages(folder, packages, { env = {}, log = (m) => console.error(m) } = {}) {
  const dir = path.join(cacheRoot(), folder);
  const stamp = path.join(dir, '.installed.json');
  const want = JSON.stringify(packages);
  if (!existsSync(stamp) || readFileSync(stamp, 'utf8') !== want) {
    mkdirSync(dir, { recursive: true });
    if (!existsSync(path.join(dir, 'package.json'))) writeFileSync(path.join(dir, 'package.json'), '{ "private": true }\n');
    const specs = Object.entries(packages).map(([name, version]) => `${name}@${version}`);
    log(`bench: installing ${specs.join(', ')} into ${dir} (once)`);
    execFileSync('npm', ['install', '--no-audit', '--no-fund', '--no-save', ...specs], {
      cwd: dir,
      stdio: ['ignore', 'inherit', 'inherit'],
      env: { ...process.env, ...env },
    });
    writeFileSync(stamp, want);
  }
  return { dir, require: createRequire(path.join(dir, 'package.json')) };
}
