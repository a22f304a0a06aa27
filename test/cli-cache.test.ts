// The built CLI (dist/cli.js) with the download cache, against a real HTTP server on loopback: `run URL` downloads
// once and a second run makes no request; `--no-cache`; `edgellm cache ls|rm|clear` with --cache-dir and
// EDGELLM_CACHE; progress on stderr as plain lines when stderr is not a terminal. The model is a synthetic GGUF.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { cacheKey } from '../src/gguf/cache.js';
import { startServer, type TestServer } from './util/http-server.js';
import { makeSyntheticLlama } from './util/synthetic.js';
import { ROOT } from './util/shared.js';
import { checkDist } from './util/dist.js';

const CLI = path.join(ROOT, 'dist/cli.js');
const MODEL = makeSyntheticLlama({ dim: 64, nLayers: 2, nHeads: 2, nKvHeads: 2, ffn: 128, vocab: 320, ctx: 64, seed: 3 }, { keepWeights: false }).bytes;

let server: TestServer;
let dir: string;
beforeAll(async () => {
  checkDist();
  server = await startServer([{ path: '/m/tiny.gguf', bytes: MODEL }, { path: '/n/tiny.gguf', bytes: MODEL }]);
  dir = mkdtempSync(path.join(tmpdir(), 'edgellm-cli-cache-'));
});
afterAll(async () => {
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Spawned without blocking: the server answering it runs in this process. */
function cli(args: string[], env: Record<string, string> = {}) {
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const p = spawn(process.execPath, [CLI, ...args], { cwd: ROOT, env: { ...process.env, EDGELLM_DEBUG: '', EDGELLM_CACHE: '', ...env } });
    let stdout = '', stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

const url = (p = '/m/tiny.gguf') => `${server.url}${p}`;
const run = (extra: string[] = [], env?: Record<string, string>) => cli(['run', url(), '-p', 'the', '-n', '3', '--temperature', '0', '--threads', '1', ...extra], env);

describe('edgellm CLI: the download cache', () => {
  it('run URL downloads once; a second run makes no request at all; --no-cache keeps nothing', async () => {
    const from = server.log.length;
    const first = await run(['--cache-dir', dir]);
    expect(first.code, first.stderr).toBe(0);
    expect(server.log.slice(from).map((e) => [e.path, e.status, e.bodyBytes])).toEqual([['/m/tiny.gguf', 200, MODEL.length]]);
    // stderr is not a terminal here: progress comes as plain lines, not a redrawn bar
    expect(first.stderr).toMatch(/^download 100% [\d.]+ \w+ in [\d.]+ s/m);
    expect(first.stderr).toMatch(/^weights 100% [\d.]+ \w+ in [\d.]+ s/m);
    expect(first.stderr).not.toMatch(/\r|\x1b\[/);

    const again = server.log.length;
    const second = await run(['--cache-dir', dir]);
    expect(second.code, second.stderr).toBe(0);
    expect(second.stdout).toBe(first.stdout);
    expect(server.log.length).toBe(again);

    const other = mkdtempSync(path.join(tmpdir(), 'edgellm-cli-nocache-'));
    try {
      const before = server.log.length;
      const uncached = await run(['--no-cache'], { EDGELLM_CACHE: other });
      expect(uncached.code, uncached.stderr).toBe(0);
      expect(uncached.stdout).toBe(first.stdout);
      expect(server.log.length).toBeGreaterThan(before);
      expect(readdirSync(other)).toEqual([]);
    } finally {
      rmSync(other, { recursive: true, force: true });
    }
  });

  it('cache ls, rm and clear, with --cache-dir or EDGELLM_CACHE', async () => {
    expect((await run(['--cache-dir', dir])).code).toBe(0);
    expect((await cli(['run', url('/n/tiny.gguf'), '-p', 'the', '-n', '1', '--threads', '1'], { EDGELLM_CACHE: dir })).code).toBe(0);
    const ls = await cli(['cache', 'ls', '--cache-dir', dir]);
    expect(ls.code, ls.stderr).toBe(0);
    const lines = ls.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^NAME\s+SIZE\s+COMPLETE\s+URL$/);
    expect(lines.slice(1).sort()).toEqual(
      [url(), url('/n/tiny.gguf')].sort((a, b) => cacheKey(a).localeCompare(cacheKey(b))).map((u) => expect.stringMatching(new RegExp(`^${cacheKey(u)}\\s+\\S+ \\S+\\s+yes\\s+${u.replace(/[.]/g, '\\.')}$`))),
    );
    expect(ls.stderr).toMatch(new RegExp(`^2 cached models, .* in ${dir}`));
    const json = JSON.parse((await cli(['cache', 'ls', '--json'], { EDGELLM_CACHE: dir })).stdout);
    expect(json.map((e: { url: string }) => e.url).sort()).toEqual([url(), url('/n/tiny.gguf')]);

    const rm = await cli(['cache', 'rm', cacheKey(url()), '--cache-dir', dir]);
    expect(rm.code, rm.stderr).toBe(0);
    expect(rm.stderr).toMatch(/removed 1 cached model from/);
    const missing = await cli(['cache', 'rm', 'nothing.gguf', '--cache-dir', dir]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/^edgellm: error \[BAD_ARGUMENT\]: no cached model is named "nothing.gguf"/);
    const clear = await cli(['cache', 'clear'], { EDGELLM_CACHE: dir });
    expect(clear.code, clear.stderr).toBe(0);
    expect(clear.stderr).toMatch(/removed 1 cached model from/);
    expect(readdirSync(dir)).toEqual([]);

    const usage = await cli(['cache', '--cache-dir', dir]);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toMatch(/^edgellm: error \[USAGE\]: missing ls, rm or clear \(see `edgellm cache --help`\)/);
    expect((await cli(['cache', 'ls', 'extra'])).code).toBe(2);
    const help = await cli(['cache', '--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/EDGELLM_CACHE/);
  });
});

/** `script` (util-linux) runs a command on a real pseudo-terminal, as a user's shell would. */
const SCRIPT = ['/usr/bin/script', '/bin/script'].find((p) => existsSync(p));
if (!SCRIPT) console.warn('\n*** SKIPPED: the progress bar on a terminal (test/cli-cache.test.ts): no util-linux `script` to give the CLI a pseudo-terminal ***\n');

describe.skipIf(!SCRIPT)('edgellm CLI: progress on a terminal', () => {
  it('draws one redrawn line per step: a bar, the percentage, the amount and the rate, closed by a summary line', async () => {
    const empty = mkdtempSync(path.join(tmpdir(), 'edgellm-cli-tty-'));
    try {
      const command = `stty cols 100; '${process.execPath}' '${CLI}' run '${url()}' -p the -n 3 --temperature 0 --threads 1 --cache-dir '${empty}'`;
      const r = await new Promise<{ code: number | null; out: string }>((resolve) => {
        const p = spawn(SCRIPT!, ['-qec', command, '/dev/null'], { cwd: ROOT, env: { ...process.env, EDGELLM_DEBUG: '' } });
        let out = '';
        p.stdout.on('data', (d) => (out += d));
        p.on('close', (code) => resolve({ code, out }));
      });
      expect(r.code, r.out).toBe(0);
      // the terminal gets the bar redrawn in place (carriage return, erase to end of line), then the step's summary
      expect(r.out).toMatch(/\rdownload \[[█░]{5,30}\] +\d+% [\d.]+ \w+ \/ [\d.]+ \w+/);
      expect(r.out).toMatch(/\r\x1b\[Kdownload 100% [\d.]+ \w+ in [\d.]+ s/);
      expect(r.out).toMatch(/\rweights \[[█░]{5,30}\]/);
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });
});
