// The wllama anchor: llama.cpp compiled to WebAssembly (npm @wllama/wllama), run where it is meant to run, in a browser
// (Debian's headless Chromium driven by playwright-core), on the same prompt as edgellm's bench.
//
//   import { runWllama } from './anchors/wllama.mjs';
//   const r = await runWllama({ model, promptText, promptIds, gen: 64, repeat: 3 });
//   standalone: node bench/anchors/wllama.mjs MODEL.gguf [--prompt-tokens 128] [--gen 64] [--repeat 3] [--threads 1] [--json]
//
// What runs: wllama 3.x ships one wasm build (memory64 + JSPI + SIMD128, compiled with pthreads). With n_threads 1 (the
// default, and what the bench compares) wllama starts it with no pthread pool, so all compute is on its one worker
// thread: the "single-thread" configuration of that build; threads > 1 gets a pool of that many. CPU only (n_gpu_layers 0), wllama's defaults otherwise (so flash attention "auto", i.e. on).
// Context = prompt + gen tokens; batch = ubatch = the whole prompt. @wllama/wllama and playwright-core are installed
// on demand into the bench cache (cache.mjs), never as dependencies. It is served from a loopback HTTP server with
// COOP/COEP headers, as a real deployment must be; the model goes through wllama's own loadModelFromUrl (into OPFS).
//
// The prompt: wllama 3.x completions take text only (an id array is rejected), so the runs complete `promptText`.
// First, in a separate browser, wllama's tokenization of it (BOS added as llama.cpp adds it) is checked to be exactly
// `promptIds` (see checkTokens in wllama/page.js); a mismatch throws, naming the first differing index.
//
// What is timed (llama.cpp's own timers inside the wasm, as wllama's completion result reports them):
// - one untimed warmup run, then `repeat` timed runs, each from an empty KV cache (cache_prompt: false; checked: every
//   run evaluates all prompt tokens), greedy (temperature 0), end-of-generation tokens banned (ignore_eos), exactly
//   `gen` tokens;
// - prefill tok/s = prompt tokens / prompt_ms, prompt_ms being from the start of prompt evaluation (tokenization
//   excluded) to the first token sampled from the last prompt position's logits, the prompt being one batch;
// - decode tok/s = (gen - 1) / predicted_ms, predicted_ms being from that first token to the last: gen - 1 one-token
//   forward passes, each with its sampling and wllama's main-thread <-> worker poll. This counts as edgellm's
//   GenerationStats does (generated - 1 over the time after the prefill), so the two are comparable.
//
// rss_mb is the peak resident set (VmHWM) of the Chromium renderer process that ran wllama: the page, its worker, the
// wasm heap with the weights, KV cache and compute buffers, and V8's compiled code all live there. Chromium keeps other
// renderers (a spare, a WebUI one); the one that ran wllama is the one that used the CPU during the timed runs (its CPU
// time over their wall time, ~1.0 per thread, is returned as renderer_cores). The browser, GPU, network and storage
// processes are Chromium's overhead, not wllama's, and are left out (the current sum of all is chromium_rss_mb). For
// tiny models the renderer's own 100-350 MB (V8, the 8.7 MB wasm module's compiled code, uncollected garbage)
// dominates and varies from run to run.
import { existsSync, readFileSync, readdirSync, statSync, createReadStream } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { ensurePackages } from './cache.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const PAGE_DIR = path.join(HERE, 'wllama');

export const WLLAMA_VERSION = '3.8.1';
const PLAYWRIGHT_VERSION = '1.65.1';
export const CHROMIUM = '/usr/bin/chromium';

// Without the background-networking flags Chromium keeps trying to reach Google services, flooding a closed network.
const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync',
];

/** Hours-long runs are legitimate for 1B models at ~1 tok/s; this only keeps a hung page from hanging forever. */
const STEP_TIMEOUT_MS = 60 * 60 * 1000;

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

// ───────────────────────────── loopback server ─────────────────────────────

const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.wasm': 'application/wasm', '.json': 'application/json' };

/**
 * Serves the page, wllama's esm/ folder and the model on 127.0.0.1. COOP/COEP make the page crossOriginIsolated (what a
 * real wllama deployment needs for SharedArrayBuffer); CORP lets every resource load under COEP. Files are streamed,
 * with Content-Length and single-range support, since models run to gigabytes.
 */
function startServer({ wllamaDir, model }) {
  const routes = (url) => {
    if (url === '/' || url === '/index.html') return path.join(PAGE_DIR, 'page.html');
    if (url === '/page.js') return path.join(PAGE_DIR, 'page.js');
    if (url === '/model.gguf') return model;
    if (url.startsWith('/wllama/esm/')) {
      const file = path.normalize(path.join(wllamaDir, url.slice('/wllama/'.length)));
      if (file.startsWith(path.join(wllamaDir, 'esm') + path.sep)) return file;
    }
    return null;
  };
  const server = http.createServer((req, res) => {
    const file = routes(decodeURIComponent(new URL(req.url, 'http://x').pathname));
    const headers = {
      'Cross-Origin-Opener-Policy': 'same-origin',
      'Cross-Origin-Embedder-Policy': 'require-corp',
      'Cross-Origin-Resource-Policy': 'same-origin',
      'Cache-Control': 'no-store',
    };
    if (!file || !existsSync(file) || !statSync(file).isFile() || !['GET', 'HEAD'].includes(req.method)) {
      res.writeHead(404, headers).end();
      return;
    }
    const size = statSync(file).size;
    let start = 0, end = size - 1, status = 200;
    const range = /^bytes=(\d*)-(\d*)$/.exec(req.headers.range || '');
    if (range && (range[1] || range[2])) {
      if (range[1]) [start, end] = [Number(range[1]), range[2] ? Math.min(Number(range[2]), size - 1) : size - 1];
      else [start, end] = [Math.max(0, size - Number(range[2])), size - 1];
      if (start > end || start >= size) {
        res.writeHead(416, { ...headers, 'Content-Range': `bytes */${size}` }).end();
        return;
      }
      status = 206;
      headers['Content-Range'] = `bytes ${start}-${end}/${size}`;
    }
    Object.assign(headers, {
      'Content-Type': TYPES[path.extname(file)] || 'application/octet-stream',
      'Content-Length': String(end - start + 1),
      'Accept-Ranges': 'bytes',
    });
    res.writeHead(status, headers);
    if (req.method === 'HEAD') return res.end();
    createReadStream(file, { start, end }).on('error', (e) => res.destroy(e)).pipe(res);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

// ───────────────────────────── process memory ─────────────────────────────

/** Our Chromium processes: every descendant of this Node process, with its command line and memory (kB). */
function chromiumProcesses() {
  const procs = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const status = readFileSync(`/proc/${name}/status`, 'utf8');
      const field = (k) => Number((new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(status) || [])[1] || 0);
      procs.push({
        pid: Number(name),
        ppid: field('PPid'),
        hwmKb: field('VmHWM'),
        rssKb: field('VmRSS'),
        cmd: readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0').join(' '),
      });
    } catch {
      // the process exited while we looked
    }
  }
  const mine = new Set([process.pid]);
  let grew = true;
  while (grew) {
    grew = false;
    for (const p of procs) if (!mine.has(p.pid) && mine.has(p.ppid)) mine.add(p.pid), (grew = true);
  }
  return procs.filter((p) => p.pid !== process.pid && mine.has(p.pid));
}

/** CPU seconds (user + system, all threads) used so far by each of our Chromium renderer processes, by pid. */
function cpuByRenderer() {
  const cpu = new Map();
  for (const p of chromiumProcesses()) {
    if (!p.cmd.includes('--type=renderer')) continue;
    try {
      const stat = readFileSync(`/proc/${p.pid}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // fields from the 3rd on; the name may hold spaces
      cpu.set(p.pid, (Number(f[11]) + Number(f[12])) / 100); // utime + stime, in USER_HZ (100 on Linux)
    } catch {}
  }
  if (!cpu.size) throw new Error('wllama: found no Chromium renderer process');
  return cpu;
}

// ───────────────────────────── the anchor ─────────────────────────────

/**
 * Launches Chromium on the bench page and calls fn(step), where step(what, pageFunction, arg) evaluates in the page.
 * A page error, a renderer crash or a step running past STEP_TIMEOUT_MS fails the step with llama.cpp's last log
 * lines, instead of hanging. Each call is a fresh browser, so each gets a fresh renderer process.
 */
async function withBrowser({ chromium, origin, log }, fn) {
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
  try {
    const page = await browser.newPage();
    let fail;
    const failed = new Promise((_, reject) => (fail = reject));
    failed.catch(() => {});
    page.on('pageerror', (e) => fail(new Error(`the page threw: ${e.message}`)));
    page.on('crash', () => fail(new Error('the Chromium renderer crashed (out of memory?)')));
    page.on('console', (m) => {
      if (m.type() === 'error' || m.type() === 'warning') log(`wllama [${m.type()}] ${m.text()}`);
    });
    const step = async (what, pageFunction, arg) => {
      let timer;
      const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no result after ${STEP_TIMEOUT_MS / 60000} min`)), STEP_TIMEOUT_MS);
      });
      try {
        return await Promise.race([page.evaluate(pageFunction, arg), failed, timeout]);
      } catch (e) {
        let tail = [];
        try {
          tail = await page.evaluate(() => window.wllamaBench.nativeLogTail(15));
        } catch {}
        throw new Error(`wllama: ${what} failed: ${e.message.split('\n')[0]}` +
          (tail.length ? `\nllama.cpp log tail:\n  ${tail.join('\n  ')}` : ''));
      } finally {
        clearTimeout(timer);
      }
    };
    await page.goto(`${origin}/`);
    await Promise.race([page.waitForFunction(() => window.wllamaBenchReady === true, null, { timeout: 60000 }), failed]);
    return await fn(step, browser);
  } finally {
    await browser.close().catch(() => {});
  }
}

/** Where wllama's tokens of the text (length m) and promptIds (n) part, from checkTokens' common prefix p. */
function mismatch({ completionTextTokens: m, commonPrefix: p, addBos }, promptIds) {
  const n = promptIds.length;
  const head = `wllama tokenizes the prompt text (BOS ${addBos ? 'added' : 'not added'}) to ${m} tokens, promptIds has ${n}; `;
  // p is the exact common prefix, except that the server always re-evaluates the last prompt token, so a common prefix
  // of m reads as m - 1. With m === n the embeddings decided that the last token differs.
  if (p === m - 1 && m < n) return head + `the text's first ${m - 1} tokens are promptIds' first ${m - 1}`;
  if (p >= n) return head + `promptIds are the text's first ${n} tokens`;
  return head + `the first mismatch is at index ${p}: promptIds[${p}] = ${promptIds[p]}, after ${JSON.stringify(promptIds.slice(Math.max(0, p - 3), p))}`;
}

/**
 * Runs wllama in headless Chromium on `promptText`, which must tokenize in wllama to exactly `promptIds`, and returns
 * { engine: 'wllama', version, build, prefill_tps, decode_tps, rss_mb, runs } with medians over the timed runs;
 * runs[0] is the warmup. See the header comment for what is timed.
 */
export async function runWllama({ model, promptText, promptIds, gen, repeat, threads = 1, log = (m) => console.error(m) }) {
  if (!Number.isInteger(threads) || threads < 1) throw new Error(`runWllama: threads must be a positive integer, got ${threads}`);
  if (!existsSync(model)) throw new Error(`runWllama: no such model file: ${model}`);
  if (!existsSync(CHROMIUM)) {
    throw new Error(`runWllama: the wllama anchor runs in Chromium, and ${CHROMIUM} is missing; install it with ` +
      '`sudo apt-get install -y chromium` (Debian/Ubuntu) and run again');
  }
  if (!Array.isArray(promptIds) || promptIds.length < 1) throw new Error('runWllama: promptIds must be a non-empty array');
  const { dir, require } = ensurePackages('wllama', { '@wllama/wllama': WLLAMA_VERSION, 'playwright-core': PLAYWRIGHT_VERSION }, { log });
  const { chromium } = require('playwright-core'); // CommonJS
  const server = await startServer({ wllamaDir: path.join(dir, 'node_modules', '@wllama', 'wllama'), model });
  const ctx = { chromium, origin: `http://127.0.0.1:${server.address().port}`, log };
  const modelUrl = `${ctx.origin}/model.gguf`;
  const n = promptIds.length;
  try {
    // 1. The tokenization check, in its own browser so that its extra model copy never counts in the bench's RSS.
    log(`wllama: checking that the prompt text tokenizes to the ${n} prompt ids`);
    const check = await withBrowser(ctx, (step) =>
      step('checking the tokenization', (c) => window.wllamaBench.checkTokens(c), { modelUrl, promptText, promptIds }));
    const same = check.embedTextTokens === n && check.embedIdsTokens === n && check.maxDiff < 1e-6;
    if (!same || check.completionTextTokens !== n || check.commonPrefix !== n - 1) throw new Error(mismatch(check, promptIds));

    // 2. The bench proper, in a fresh browser.
    return await withBrowser(ctx, async (step, browser) => {
      const nCtx = n + gen;
      log(`wllama: loading ${path.basename(model)} (context ${nCtx}, batch ${n}, ${threads} thread${threads > 1 ? 's' : ''})`);
      const info = await step('loading the model', (c) => window.wllamaBench.load(c), { modelUrl, nCtx, nBatch: n, threads });
      if (info.threads !== threads) throw new Error(`wllama: asked for ${threads} threads, got ${info.threads}`);
      log(`wllama: ${info.threadLog}`);
      // CPU time of every renderer over the timed runs: the one that ran wllama is the busy one (Chromium keeps others,
      // a spare and a WebUI one, that can be as large for tiny models), and its busy cores show how many threads ran.
      let cpu0, wall0;

      const runs = [];
      for (let r = 0; r <= repeat; r++) {
        if (r === Math.min(1, repeat)) [cpu0, wall0] = [cpuByRenderer(), performance.now()];
        const res = await step(`run ${r}`, (c) => window.wllamaBench.run(c), { promptText, gen });
        const t = res.timings;
        if (!t || t.prompt_n !== n || t.cache_n !== 0) {
          throw new Error(`wllama: run ${r} evaluated ${t?.prompt_n} prompt tokens with ${t?.cache_n} cached; want ${n} and 0`);
        }
        const run = {
          warmup: r === 0,
          prompt_tokens: t.prompt_n,
          generated_tokens: t.predicted_n,
          prefill_ms: t.prompt_ms,
          decode_ms: t.predicted_ms,
          prefill_tps: (t.prompt_n / t.prompt_ms) * 1e3,
          decode_tps: t.predicted_n > 1 ? ((t.predicted_n - 1) / t.predicted_ms) * 1e3 : 0,
          wall_ms: res.wallMs, // the whole createCompletion call as the page saw it, text tokenization included
        };
        runs.push(run);
        log(`wllama: ${run.warmup ? 'warmup' : `run ${r}`}: prefill ${run.prefill_tps.toFixed(1)} tok/s, decode ${run.decode_tps.toFixed(1)} tok/s, ` +
          `${run.generated_tokens} tokens (${(run.wall_ms / 1e3).toFixed(1)} s)`);
        if (run.generated_tokens !== gen) throw new Error(`wllama: run ${r} generated ${run.generated_tokens} tokens, not ${gen} (finish: ${res.finish})`);
      }

      const wallS = (performance.now() - wall0) / 1e3;
      const cpu1 = cpuByRenderer();
      const [pid, cpuS] = [...cpu1].map(([pid, t]) => [pid, t - (cpu0.get(pid) ?? 0)]).sort((a, b) => b[1] - a[1])[0];
      const peak = chromiumProcesses().find((p) => p.pid === pid);
      const cores = cpuS / wallS;
      const allMb = chromiumProcesses().reduce((s, p) => s + p.rssKb, 0) / 1024;
      log(`wllama: renderer ${pid}: peak RSS ${(peak.hwmKb / 1024).toFixed(1)} MB, ${cores.toFixed(2)} cores busy in the timed runs; ` +
        `all Chromium processes now ${allMb.toFixed(1)} MB`);

      const timed = runs.filter((r) => !r.warmup);
      return {
        engine: 'wllama',
        version: WLLAMA_VERSION,
        build: (info.multithread ? `multi-thread (pthread pool, n_threads ${threads}` : 'single-thread (n_threads 1, no pthread pool') +
          `; wllama.wasm: memory64 + JSPI + SIMD128, llama.cpp ${info.libllama}, CPU only; Chromium ${browser.version()})`,
        prefill_tps: median(timed.map((r) => r.prefill_tps)),
        decode_tps: median(timed.map((r) => r.decode_tps)),
        rss_mb: Number((peak.hwmKb / 1024).toFixed(1)),
        renderer_cores: Number(cores.toFixed(2)),
        chromium_rss_mb: Number(allMb.toFixed(1)),
        load_ms: info.loadMs,
        context: info.nCtx,
        batch: info.nBatch,
        ubatch: info.nUbatch,
        runs,
      };
    });
  } finally {
    server.close();
  }
}

// ───────────────────────────── standalone ─────────────────────────────

/**
 * Text of whole words that edgellm's tokenizer turns into exactly n ids (BOS included, as the model says). edgellm is
 * this repo's dist/ or, with EDGELLM_DIST=path/to/dist/index.js, another build.
 */
async function buildPrompt(modelPath, n) {
  const dist = process.env.EDGELLM_DIST ? path.resolve(process.env.EDGELLM_DIST) : path.join(HERE, '../../dist/index.js');
  const { loadModel } = await import(pathToFileURL(dist).href);
  let words;
  try {
    // Every word of it is one token in the synthetic models; ordinary English words, mostly single tokens elsewhere.
    words = (await import('../synthetic.mjs')).SYNTHETIC_TEXT.split(' ');
  } catch {
    words = 'the people of the united states in order to form a more perfect union establish justice and secure the blessings of liberty'.split(' ');
  }
  const model = await loadModel(modelPath, { contextLength: n + 8 });
  try {
    let text = '';
    let ids = model.tokenize(text);
    for (let i = 0; ids.length < n; i++) {
      if (i > 50 * n) throw new Error(`could not build a prompt of exactly ${n} tokens`);
      const cand = text ? `${text} ${words[i % words.length]}` : words[i % words.length];
      const candIds = model.tokenize(cand);
      if (candIds.length <= n) [text, ids] = [cand, candIds]; // skip words that would overshoot
    }
    return { promptText: text, promptIds: ids };
  } finally {
    model.dispose();
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const opt = (name, def) => {
    const i = args.indexOf(`--${name}`);
    if (i < 0) return def;
    const v = Number(args.splice(i, 2)[1]);
    if (!Number.isInteger(v) || v < 1) throw new Error(`--${name} needs a positive integer`);
    return v;
  };
  const promptTokens = opt('prompt-tokens', 128), gen = opt('gen', 64), repeat = opt('repeat', 3), threads = opt('threads', 1);
  const json = args.includes('--json');
  const [model] = args.filter((a) => a !== '--json');
  if (!model) {
    console.error('usage: node bench/anchors/wllama.mjs MODEL.gguf [--prompt-tokens 128] [--gen 64] [--repeat 3] [--threads 1] [--json]');
    process.exit(2);
  }
  const { promptText, promptIds } = await buildPrompt(model, promptTokens);
  const r = await runWllama({ model, promptText, promptIds, gen, repeat, threads });
  console.log(`wllama ${r.version} on ${path.basename(model)}: ${r.build}`);
  console.log(`prompt ${promptIds.length} ids, ${gen} generated; 1 warmup + ${repeat} timed runs; context ${r.context}, batch ${r.batch}`);
  console.log(`median prefill ${r.prefill_tps.toFixed(1)} tok/s, decode ${r.decode_tps.toFixed(1)} tok/s; renderer peak RSS ${r.rss_mb} MB`);
  if (json) console.log(JSON.stringify(r));
}
