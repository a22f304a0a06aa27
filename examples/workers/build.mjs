#!/usr/bin/env node
// Builds the Workers example for workerd (no wrangler needed): bundles the worker with esbuild, `edgellm` resolved to
// this repository's dist/workers.js as wrangler would resolve it (run `npm run build` first), and writes OUT/
// (default examples/workers/dist/):
//   worker.js, edgellm-simd.wasm, edgellm-relaxed.wasm  the bundle and its precompiled kernels (wasm modules)
//   model.gguf                                          with --model: the bundled model (a data module)
//   assets/<name>.gguf                                  with --asset: the model as a static asset (MODEL_URL=/<name>)
//   chat-template.jinja                                 with --chat-template: the CHAT_TEMPLATE var
//   config.capnp                                        the workerd config naming all of them
// Then: npx workerd serve OUT/config.capnp   (listens on --port, default 8787; override with --socket-addr http=HOST:PORT)
//
// Usage: node examples/workers/build.mjs (--model FILE.gguf | --asset FILE.gguf | --model-url URL)
//          [--out DIR] [--port 8787] [--context 512] [--budget 64MB] [--max-queue 8] [--max-tokens 1024] [--allow-local]
//          [--chat-template FILE.jinja] [--model-id NAME] [--cors-origin ORIGIN]
// Paths are relative to the current directory. --allow-local lets the worker fetch() private and loopback addresses
// (workerd blocks them by default), e.g. a MODEL_URL served from this machine. --chat-template embeds a Jinja chat
// template as the CHAT_TEMPLATE var, for /v1/chat/completions with a model that has none (or to replace its own);
// --model-id names the model in /v1/models (default: the file name without .gguf); --cors-origin sets CORS_ORIGIN.
import { copyFileSync, existsSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '../..');
const COMPATIBILITY_DATE = '2026-10-23';

const { values: o } = parseArgs({
  options: {
    model: { type: 'string' },
    asset: { type: 'string' },
    'model-url': { type: 'string' },
    out: { type: 'string', default: path.join(HERE, 'dist') },
    port: { type: 'string', default: '8787' },
    context: { type: 'string' },
    budget: { type: 'string' },
    'max-queue': { type: 'string' },
    'max-tokens': { type: 'string' },
    'allow-local': { type: 'boolean', default: false },
    'chat-template': { type: 'string' },
    'model-id': { type: 'string' },
    'cors-origin': { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
});
const usage = 'usage: node examples/workers/build.mjs (--model FILE.gguf | --asset FILE.gguf | --model-url URL) [--out DIR] [--port N] [--context N] [--budget SIZE] [--max-queue N] [--max-tokens N] [--allow-local] [--chat-template FILE] [--model-id NAME] [--cors-origin ORIGIN]';
if (o.help) {
  console.log(usage);
  process.exit(0);
}
const sources = ['model', 'asset', 'model-url'].filter((k) => o[k] !== undefined);
if (sources.length !== 1) fail(`give exactly one of --model, --asset, --model-url\n${usage}`);
const file = o.model ?? o.asset;
if (file !== undefined && !existsSync(file)) fail(`${file}: no such file`);
if (o['model-url'] !== undefined && !/^https?:\/\//i.test(o['model-url'])) fail(`--model-url must be an http(s) URL, got ${o['model-url']}`);
if (o['chat-template'] !== undefined && !existsSync(o['chat-template'])) fail(`${o['chat-template']}: no such file`);
if (!/^\d+$/.test(o.port)) fail(`--port must be a number, got ${o.port}`);

const dist = path.join(ROOT, 'dist');
const WASM = ['edgellm-simd.wasm', 'edgellm-relaxed.wasm'];
if (![...WASM, 'workers.js'].every((f) => existsSync(path.join(dist, f)))) fail(`${dist}/workers.js and the wasm beside it are missing: run \`npm run build\` first`);
let esbuild;
try {
  esbuild = await import('esbuild');
} catch {
  fail('esbuild is missing: run `npm install` in the repository root');
}

const out = path.resolve(o.out);
// Replaces an earlier build, never a folder holding anything else.
if (existsSync(out) && readdirSync(out).length > 0 && !existsSync(path.join(out, 'config.capnp'))) fail(`${out} is not empty and holds no earlier build: give another --out`);
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });

// The worker. `edgellm` resolves as wrangler resolves it, through the package's exports with the `workerd` condition
// (here the package is this repository, found by its name); the wasm and the model stay imports, which workerd (and
// wrangler) turn into a compiled WebAssembly.Module and an ArrayBuffer.
const { metafile } = await esbuild.build({
  entryPoints: [path.join(HERE, 'src', o.model !== undefined ? 'worker.ts' : 'worker-url.ts')],
  outfile: path.join(out, 'worker.js'),
  bundle: true,
  format: 'esm',
  platform: 'neutral',
  target: 'es2022',
  conditions: ['workerd', 'worker', 'browser'],
  external: ['*.wasm', '*.gguf'],
  metafile: true,
  logLevel: 'warning',
});
const entry = Object.keys(metafile.inputs).find((f) => /(^|\/)dist\/[\w-]+\.js$/.test(f));
if (!entry?.endsWith('dist/workers.js')) fail(`'edgellm' resolved to ${entry}, not dist/workers.js: check the "workerd" condition in package.json "exports"`);
for (const f of WASM) copyFileSync(path.join(dist, f), path.join(out, f));

const modules = [
  '(name = "worker.js", esModule = embed "worker.js")',
  ...WASM.map((f) => `(name = "${f}", wasm = embed "${f}")`),
];
const bindings = [];
const services = ['(name = "main", worker = .worker)'];
const text = (name, value) => bindings.push(`(name = "${name}", text = ${JSON.stringify(String(value))})`);
if (o.model !== undefined) {
  copyFileSync(o.model, path.join(out, 'model.gguf'));
  modules.push('(name = "model.gguf", data = embed "model.gguf")');
} else if (o.asset !== undefined) {
  const name = path.basename(o.asset);
  mkdirSync(path.join(out, 'assets'));
  copyFileSync(o.asset, path.join(out, 'assets', name));
  // Like wrangler's static assets: a Fetcher bound as ASSETS. Relative disk paths are taken from workerd's cwd.
  services.push(`(name = "assets", disk = (path = ${JSON.stringify(path.join(out, 'assets'))}))`);
  bindings.push('(name = "ASSETS", service = "assets")');
  text('MODEL_URL', `/${encodeURIComponent(name)}`);
} else {
  text('MODEL_URL', o['model-url']);
}
if (o.context !== undefined) text('CONTEXT_LENGTH', o.context);
if (o.budget !== undefined) text('MEMORY_BUDGET', o.budget);
if (o['max-queue'] !== undefined) text('MAX_QUEUE', o['max-queue']);
if (o['max-tokens'] !== undefined) text('MAX_TOKENS', o['max-tokens']);
if (o['chat-template'] !== undefined) {
  // Embedded from a file: a template is many lines of quotes and braces, which need no escaping that way.
  copyFileSync(o['chat-template'], path.join(out, 'chat-template.jinja'));
  bindings.push('(name = "CHAT_TEMPLATE", text = embed "chat-template.jinja")');
}
// A bundled model has no name at run time, so it is given one; otherwise the worker takes MODEL_URL's file name.
if (o['model-id'] !== undefined || o.model !== undefined) text('MODEL_ID', o['model-id'] ?? path.basename(o.model).replace(/\.gguf$/i, ''));
if (o['cors-origin'] !== undefined) text('CORS_ORIGIN', o['cors-origin']);
if (o['allow-local']) services.push('(name = "internet", network = (allow = ["public", "private", "local"]))');

const list = (items) => (items.length ? `[\n    ${items.join(',\n    ')},\n  ]` : '[]');
writeFileSync(
  path.join(out, 'config.capnp'),
  `# Generated by examples/workers/build.mjs. Run: npx workerd serve ${path.relative(process.cwd(), path.join(out, 'config.capnp')) || 'config.capnp'}
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = ${list(services)},
  sockets = [ (name = "http", address = "*:${o.port}", http = (), service = "main") ],
);

const worker :Workerd.Worker = (
  modules = ${list(modules)},
  bindings = ${list(bindings)},
  compatibilityDate = "${COMPATIBILITY_DATE}",
);
`,
);

const size = (f) => `${(statSync(f).size / 2 ** 20).toFixed(1)} MiB`;
const model = o.model !== undefined ? `bundled ${path.basename(o.model)} (${size(o.model)})` : o.asset !== undefined ? `asset /${path.basename(o.asset)} (${size(o.asset)})` : `MODEL_URL ${o['model-url']}`;
console.log(`built ${path.relative(process.cwd(), out) || '.'}: ${model}; run: npx workerd serve ${path.relative(process.cwd(), path.join(out, 'config.capnp'))}`);

function fail(message) {
  console.error(`build.mjs: ${message}`);
  process.exit(1);
}
