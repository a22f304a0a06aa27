// The Workers example (examples/workers) in workerd, the open-source Workers runtime: built with its build.mjs, served
// by `workerd serve`, asked over HTTP. Every model source the example supports runs a real model and must stream
// Node's greedy tokens:
//   - tiny-260k-q8_0 and sotu-15m-q4_0 bundled with the worker (a Data module);
//   - sotu-15m-q4_0 as a static asset (the ASSETS binding; here a workerd disk service);
//   - sotu-15m-f16, the largest model claimed to fit the 128 MB isolate, from MODEL_URL (a server in this test).
// POST /v1/chat/completions is asked exactly as OpenAI's Node client asks (its headers, its body, its SSE parsing) and
// must stream Node's greedy chat reply.
// The isolate's memory is read through workerd's inspector (V8 heap + ArrayBuffers, plus the wasm memory planned) and
// must stay under 128 MiB; workerd's process RSS is logged beside it.
import { afterAll, beforeAll, describe, expect, onTestFailed, test } from 'vitest';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createReadStream, existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { loadModel, type GenerationStats } from '../src/index.js';
import { announceSkipIfNoModels, modelPath, ROOT } from './util/shared.js';
import { checkDist } from './util/dist.js';

const HAVE = announceSkipIfNoModels('Workers example in workerd (test/workerd.test.ts)');
const WORKERD = path.join(ROOT, 'node_modules/.bin/workerd');
const BUILD = path.join(ROOT, 'examples/workers/build.mjs');
const N = 32;
const CONTEXT = 512; // the example's default CONTEXT_LENGTH
const MiB = 2 ** 20;
const ISOLATE_LIMIT = 128 * MiB;

const PROMPTS: Record<string, string> = {
  'tiny-260k-q8_0.gguf': 'Once upon a time',
  'sotu-15m-q4_0.gguf': 'The state of the Union is',
  'sotu-15m-f16.gguf': 'The state of the Union is',
};

interface Case {
  name: string;
  file: string;
  source: 'bundled' | 'asset' | 'url';
}
const CASES: Case[] = [
  { name: 'tiny-260k-q8_0 bundled', file: 'tiny-260k-q8_0.gguf', source: 'bundled' },
  { name: 'sotu-15m-q4_0 bundled', file: 'sotu-15m-q4_0.gguf', source: 'bundled' },
  { name: 'sotu-15m-q4_0 static asset', file: 'sotu-15m-q4_0.gguf', source: 'asset' },
  { name: 'sotu-15m-f16 from MODEL_URL', file: 'sotu-15m-f16.gguf', source: 'url' },
];

async function freePort(): Promise<number> {
  const server = createNetServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

const rssMiB = (pid: number, field: 'VmRSS' | 'VmHWM') => {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Math.round(Number(m[1]) / 1024) : NaN;
  } catch {
    return NaN; // not Linux
  }
};

/** One `workerd serve` of a build, with its stderr kept for failure messages. */
class Workerd {
  readonly log: string[] = [];
  private proc!: ChildProcess;
  private exited: string | undefined;
  url = '';
  inspector = 0;

  constructor(readonly dir: string) {}

  async start(): Promise<void> {
    const port = await freePort();
    this.inspector = await freePort();
    this.url = `http://127.0.0.1:${port}`;
    this.proc = spawn(WORKERD, ['serve', path.join(this.dir, 'config.capnp'), '--socket-addr', `http=127.0.0.1:${port}`, '--inspector-addr', `127.0.0.1:${this.inspector}`], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.proc.stdout!.on('data', (d) => this.log.push(String(d)));
    this.proc.stderr!.on('data', (d) => this.log.push(String(d)));
    this.proc.on('exit', (code, signal) => (this.exited = `workerd exited with ${code ?? signal}`));
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (this.exited) throw new Error(`${this.exited} before serving:\n${this.stderr()}`);
      try {
        await fetch(`${this.url}/ready`);
        return;
      } catch {
        if (Date.now() > deadline) throw new Error(`workerd did not listen on ${this.url} within 30 s:\n${this.stderr()}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  get pid(): number {
    return this.proc.pid!;
  }

  stderr(): string {
    return this.log.join('') || '(workerd wrote nothing)';
  }

  async stop(): Promise<void> {
    if (!this.proc || this.exited) return;
    const gone = new Promise((resolve) => this.proc.once('exit', resolve));
    this.proc.kill('SIGTERM');
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), 3000);
    await gone;
    clearTimeout(timer);
  }
}

interface Line {
  id?: number;
  text?: string;
  done?: boolean;
  error?: { code: string; message: string };
  [key: string]: unknown;
}

/** POST /generate asking for ndjson: the lines, and how many reads the body arrived in. */
async function generateNdjson(base: string, body: unknown, signal?: AbortSignal): Promise<{ status: number; lines: Line[]; reads: number }> {
  const res = await fetch(`${base}/generate`, { method: 'POST', body: JSON.stringify(body), headers: { accept: 'application/x-ndjson' }, signal });
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let text = '';
  let reads = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    reads++;
    text += decoder.decode(value, { stream: true });
  }
  if (res.status === 200) expect(res.headers.get('content-type')).toMatch(/^application\/x-ndjson/);
  return { status: res.status, lines: text.split('\n').filter(Boolean).map((l) => JSON.parse(l)), reads };
}

/** The isolate's memory through the inspector: V8 heap and ArrayBuffer backing stores (wasm memory is not among them). */
async function isolateHeap(port: number): Promise<{ totalSize: number; usedSize: number; backingStorageSize: number }> {
  const script = `
    const ws = new WebSocket('ws://127.0.0.1:${port}/main');
    ws.onopen = () => ws.send(JSON.stringify({ id: 1, method: 'Runtime.getHeapUsage' }));
    ws.onmessage = (e) => { const m = JSON.parse(e.data); if (m.id === 1) { console.log(JSON.stringify(m.result)); ws.close(); process.exit(0); } };
    ws.onerror = (e) => { console.error(String(e.message ?? e)); process.exit(1); };
    setTimeout(() => { console.error('no answer from the inspector'); process.exit(1); }, 10000);`;
  // Node 22+ has WebSocket; Node 20 behind a flag.
  const flags = typeof (globalThis as { WebSocket?: unknown }).WebSocket === 'function' ? [] : ['--experimental-websocket'];
  const out = await new Promise<string>((resolve, reject) => {
    const p = spawn(process.execPath, [...flags, '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '', stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.on('exit', (code) => (code === 0 ? resolve(stdout) : reject(new Error(`inspector query failed (${code}): ${stderr}`))));
  });
  return JSON.parse(out.trim());
}

/** The example's plain chat template, given to the worker (--chat-template) and to Node: the test models carry none. */
const TEMPLATE_FILE = path.join(ROOT, 'examples/workers/chat-template.jinja');

/** The headers OpenAI's Node client (openai v4) sends with every request. */
const OPENAI_HEADERS = {
  'content-type': 'application/json',
  accept: 'application/json',
  authorization: 'Bearer sk-test-0000',
  'user-agent': 'OpenAI/JS 4.104.0',
  'x-stainless-lang': 'js',
  'x-stainless-package-version': '4.104.0',
  'x-stainless-os': 'Linux',
  'x-stainless-arch': 'x64',
  'x-stainless-runtime': 'node',
  'x-stainless-runtime-version': process.version,
  'x-stainless-retry-count': '0',
  'x-stainless-timeout': '600',
};

/**
 * A streamed response read as OpenAI's Node client reads it (openai v4 src/streaming.ts): lines split at \r\n, \n or
 * \r; `field: value` with one leading space dropped from the value; `:` comments skipped; a blank line ends an event;
 * data `[DONE]` ends the stream and anything after it is ignored; an event whose JSON has `error` is thrown.
 */
async function readOpenAIStream(res: Response): Promise<{ chunks: any[]; done: boolean }> {
  const chunks: any[] = [];
  let done = false;
  let event: string | null = null;
  let data: string[] = [];
  const dispatch = () => {
    if (event === null && data.length === 0) return;
    const sse = { event, data: data.join('\n') };
    event = null;
    data = [];
    if (done) return;
    if (sse.data.startsWith('[DONE]')) return void (done = true);
    expect(sse.event).toBeNull();
    const json = JSON.parse(sse.data);
    if (json && json.error) throw new Error(`the stream sent an error: ${JSON.stringify(json.error)}`);
    chunks.push(json);
  };
  const line = (l: string) => {
    if (l === '') return dispatch();
    if (l.startsWith(':')) return;
    const colon = l.indexOf(':');
    const field = colon < 0 ? l : l.slice(0, colon);
    let value = colon < 0 ? '' : l.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') event = value;
    else if (field === 'data') data.push(value);
  };
  const decoder = new TextDecoder();
  let buffer = '';
  for await (const bytes of res.body as unknown as AsyncIterable<Uint8Array>) {
    buffer += decoder.decode(bytes, { stream: true });
    // A trailing \r may be the first half of a \r\n split across reads: it stays with the unfinished last line.
    const hold = buffer.endsWith('\r') ? '\r' : '';
    const parts = buffer.slice(0, buffer.length - hold.length).split(/\r\n|\r|\n/);
    buffer = parts.pop()! + hold;
    for (const l of parts) line(l);
  }
  buffer += decoder.decode();
  if (buffer) line(buffer);
  dispatch();
  return { chunks, done };
}

describe.skipIf(!HAVE)('Workers example in workerd', () => {
  const reference = new Map<string, { ids: number[]; text: string; memoryBytes: number }>();
  const servers: Workerd[] = [];
  const memoryRows: string[] = [];
  let tmp = '';
  let modelServer: Server | undefined;
  let modelBase = '';

  beforeAll(async () => {
    checkDist();
    if (!existsSync(WORKERD)) throw new Error(`${WORKERD} is missing: run \`npm install\` (workerd is a devDependency)`);
    for (const file of new Set(CASES.map((c) => c.file))) {
      const model = await loadModel(modelPath(file), { contextLength: CONTEXT });
      const ids: number[] = [];
      const text = await model.complete(PROMPTS[file], { maxTokens: N, temperature: 0, onToken: (id) => ids.push(id) });
      reference.set(file, { ids, text, memoryBytes: model.memory().totalBytes });
      model.dispose();
    }
    tmp = mkdtempSync(path.join(tmpdir(), 'edgellm-workerd-'));
    // MODEL_URL's server: the shared models over HTTP, with a content-length as a static host or R2 would send.
    modelServer = createServer((req, res) => {
      const file = modelPath(path.basename(decodeURIComponent(req.url ?? '')));
      if (!file.endsWith('.gguf') || !existsSync(file)) return void res.writeHead(404).end();
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': statSync(file).size });
      createReadStream(file).pipe(res);
    });
    await new Promise<void>((resolve) => modelServer!.listen(0, '127.0.0.1', resolve));
    modelBase = `http://127.0.0.1:${(modelServer.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    await Promise.all(servers.map((s) => s.stop()));
    await new Promise((resolve) => (modelServer ? modelServer.close(resolve) : resolve(undefined)));
    if (tmp) rmSync(tmp, { recursive: true, force: true });
    if (memoryRows.length) {
      console.log(
        `\nWorkers isolate memory (context ${CONTEXT}), limit 128 MiB; RSS is workerd's whole process (≈55 MiB empty), a loose upper bound:\n` +
          `${'case'.padEnd(30)} ${'file'.padStart(6)} ${'wasm'.padStart(6)} ${'heap'.padStart(6)} ${'bufs'.padStart(6)} ${'total'.padStart(6)}   RSS idle → peak (MiB)\n` +
          memoryRows.join('\n') +
          '\n',
      );
    }
  });

  async function serve(c: Case, extra: string[] = []): Promise<Workerd> {
    const out = path.join(tmp, c.name.replace(/\W+/g, '-'));
    const source =
      c.source === 'bundled' ? ['--model', modelPath(c.file)] : c.source === 'asset' ? ['--asset', modelPath(c.file)] : ['--model-url', `${modelBase}/${c.file}`, '--allow-local'];
    execFileSync(process.execPath, [BUILD, ...source, '--out', out, ...extra], { cwd: ROOT, encoding: 'utf8', stdio: 'pipe' });
    const server = new Workerd(out);
    servers.push(server);
    onTestFailed(() => console.error(`--- workerd output (${c.name}) ---\n${server.stderr()}`));
    await server.start();
    return server;
  }

  for (const c of CASES) {
    test(`${c.name}: streams Node's ${N} greedy tokens, relaxed SIMD, within 128 MB`, async () => {
      const server = await serve(c);
      const ref = reference.get(c.file)!;
      const idleRss = rssMiB(server.pid, 'VmRSS');

      const info = await (await fetch(`${server.url}/`)).json();
      expect(info.source).toBe(c.source);
      expect(info.build).toBe('relaxed'); // workerd's V8 validates relaxed SIMD
      expect(info.context).toBe(CONTEXT);
      expect(info.memoryBytes).toBe(ref.memoryBytes);
      expect(info.modelBytes).toBe(statSync(modelPath(c.file)).size);

      const { status, lines, reads } = await generateNdjson(server.url, { prompt: PROMPTS[c.file], maxTokens: N, temperature: 0 });
      expect(status, JSON.stringify(lines)).toBe(200);
      const done = lines.at(-1)!;
      expect(done).toMatchObject({ done: true, build: 'relaxed', generatedTokens: N, stopReason: 'maxTokens' });
      const tokens = lines.filter((l) => l.id !== undefined);
      expect(tokens.map((l) => l.id)).toEqual(ref.ids);
      expect(lines.slice(0, -1).map((l) => l.text).join('')).toBe(ref.text);
      // Streamed as generated, not buffered to the end: at a millisecond or more per token, the lines arrive in many
      // reads (tiny-260k makes a token in ~0.2 ms, so its lines may coalesce).
      if (c.file.startsWith('sotu')) expect(reads, `${reads} reads for ${lines.length} lines`).toBeGreaterThan(N / 4);

      // The plain-text stream: a text body is the prompt (and maxTokens defaults to 64, of which Node's N come first).
      const res = await fetch(`${server.url}/generate`, { method: 'POST', body: PROMPTS[c.file], headers: { 'content-type': 'text/plain' } });
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toBe('text/plain; charset=utf-8');
      const text = await res.text();
      expect(text.startsWith(ref.text), text).toBe(true);

      const heap = await isolateHeap(server.inspector);
      const total = heap.totalSize + heap.backingStorageSize + info.memoryBytes;
      const f = (x: number) => (x / MiB).toFixed(1).padStart(6);
      memoryRows.push(
        `${c.name.padEnd(30)} ${f(info.modelBytes)} ${f(info.memoryBytes)} ${f(heap.totalSize)} ${f(heap.backingStorageSize)} ${f(total)}   ${idleRss} → ${rssMiB(server.pid, 'VmHWM')}`,
      );
      expect(total, `isolate: V8 heap ${heap.totalSize} + buffers ${heap.backingStorageSize} + wasm ${info.memoryBytes}`).toBeLessThan(ISOLATE_LIMIT);
    });
  }

  test('a model over MEMORY_BUDGET fails to load with a JSON error that says what would fit', async () => {
    const server = await serve(CASES[0], ['--budget', '1MB']);
    const res = await fetch(`${server.url}/`);
    expect(res.status).toBe(500);
    const { error } = await res.json();
    expect(error.code).toBe('BUDGET');
    expect(error.message).toMatch(/needs [\d.]+ MiB but memoryBudget is .*; a context of \d+ tokens would fit/);
  });

  test('bad requests get JSON errors; disconnects and concurrent requests leave the model usable', async () => {
    const c = CASES[1]; // sotu-15m-q4_0 bundled, with room for generations long enough to interrupt
    const server = await serve(c, ['--max-queue', '1', '--context', '2048', '--max-tokens', '4096']);
    const ids = reference.get(c.file)!.ids;
    const idsOf = (r: { lines: Line[] }) => r.lines.filter((l) => l.id !== undefined).map((l) => l.id);
    const post = (body: string, headers: Record<string, string> = {}) => fetch(`${server.url}/generate`, { method: 'POST', body, headers });
    const expectError = async (res: Response, status: number, code: string) => {
      expect(res.status).toBe(status);
      expect(res.headers.get('content-type')).toMatch(/^application\/json/);
      const body = await res.json();
      expect(body.error.code, JSON.stringify(body)).toBe(code);
      expect(typeof body.error.message).toBe('string');
      return body.error.message as string;
    };
    expect(await expectError(await post('{"prompt": '), 400, 'BAD_REQUEST')).toMatch(/not valid JSON/);
    expect(await expectError(await post('{"prompt":"hi","max_tokens":5}'), 400, 'BAD_REQUEST')).toMatch(/max_tokens/);
    expect(await expectError(await post('{"maxTokens":5}'), 400, 'BAD_REQUEST')).toMatch(/prompt/);
    expect(await expectError(await post('{"prompt":"hi","temperature":-1}'), 400, 'BAD_ARGUMENT')).toMatch(/temperature/);
    expect(await expectError(await post('{"prompt":"hi","maxTokens":1.5}'), 400, 'BAD_ARGUMENT')).toMatch(/maxTokens/);
    expect(await expectError(await post(JSON.stringify({ prompt: 'the '.repeat(2100) })), 400, 'CONTEXT_FULL')).toMatch(/context/);
    expect(await expectError(await post('{"prompt":"hi","maxTokens":5000}'), 400, 'BAD_ARGUMENT')).toMatch(/at most 4096/);
    await expectError(await fetch(`${server.url}/generate`), 405, 'METHOD_NOT_ALLOWED');
    await expectError(await fetch(`${server.url}/nope`), 404, 'NOT_FOUND');

    // A client that goes away mid-stream: its generation (2000 tokens, seconds of work) stops within a token or so,
    // and the model is free for the next request.
    const queue = async () => (await (await fetch(`${server.url}/`)).json()).queue;
    const ac = new AbortController();
    const res = await fetch(`${server.url}/generate`, { method: 'POST', body: JSON.stringify({ prompt: PROMPTS[c.file], maxTokens: 2000 }), signal: ac.signal });
    const reader = res.body!.getReader();
    await reader.read();
    expect((await queue()).running).toBe(true);
    ac.abort();
    await reader.read().catch(() => {});
    const aborted = Date.now();
    while ((await queue()).running && Date.now() - aborted < 1000) await new Promise((r) => setTimeout(r, 20));
    expect((await queue()).running, 'still generating 1 s after the client left').toBe(false);
    const after = await generateNdjson(server.url, { prompt: PROMPTS[c.file], maxTokens: N });
    expect(after.status).toBe(200);
    expect(idsOf(after)).toEqual(ids);

    // Concurrent requests: one runs, MAX_QUEUE (1 here) waits its turn, the rest get 503 with Retry-After.
    const results = await Promise.all([0, 1, 2].map(() => generateNdjson(server.url, { prompt: PROMPTS[c.file], maxTokens: 400 })));
    const ok = results.filter((r) => r.status === 200);
    const busy = results.filter((r) => r.status === 503);
    expect(results.map((r) => r.status).sort()).toEqual([200, 200, 503]);
    expect(busy[0].lines[0].error?.code).toBe('QUEUE_FULL');
    for (const r of ok) expect(idsOf(r).slice(0, N)).toEqual(ids);
    expect(await queue()).toMatchObject({ running: false, waiting: 0 });
  });
  test("POST /v1/chat/completions: the OpenAI Node client's streaming request gets Node's greedy chat reply", async () => {
    const file = 'tiny-260k-q8_0.gguf';
    const maxTokens = 24;
    const messages = [
      { role: 'system', content: 'You tell short stories.' },
      { role: 'user', content: 'Once upon a time' },
    ];
    const model = await loadModel(modelPath(file), { contextLength: CONTEXT });
    let stats: GenerationStats | undefined;
    let reference = '';
    const template = readFileSync(TEMPLATE_FILE, 'utf8');
    for await (const t of model.chat(messages, { template, maxTokens, temperature: 0, onStats: (s) => (stats = s) })) reference += t;
    model.dispose();
    const finish = stats!.stopReason === 'eos' || stats!.stopReason === 'stop' ? 'stop' : 'length';
    const usage = { prompt_tokens: stats!.promptTokens, completion_tokens: stats!.generatedTokens, total_tokens: stats!.promptTokens + stats!.generatedTokens };
    expect(reference.length).toBeGreaterThan(20);

    const server = await serve({ name: 'tiny-260k-q8_0 chat', file, source: 'bundled' }, ['--chat-template', TEMPLATE_FILE, '--cors-origin', '*']);
    const completions = `${server.url}/v1/chat/completions`;
    const post = (body: unknown) => fetch(completions, { method: 'POST', headers: OPENAI_HEADERS, body: JSON.stringify(body) });

    // Streamed, exactly as `openai.chat.completions.create({ ..., stream: true, stream_options: { include_usage: true } })` asks.
    const res = await post({ model: 'tiny-260k-q8_0', messages, stream: true, stream_options: { include_usage: true }, max_tokens: maxTokens, temperature: 0 });
    expect(res.status, await res.clone().text()).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    expect(res.headers.get('access-control-allow-origin')).toBe('*');
    const { chunks, done } = await readOpenAIStream(res);
    expect(done).toBe(true);
    const id = chunks[0].id;
    expect(id).toMatch(/^chatcmpl-\w+$/);
    for (const c of chunks) {
      expect(c).toMatchObject({ id, object: 'chat.completion.chunk', model: 'tiny-260k-q8_0' });
      expect(Number.isInteger(c.created)).toBe(true);
    }
    const [first, ...rest] = chunks;
    const usageChunk = rest.pop();
    const finishChunk = rest.pop();
    expect(first.choices).toEqual([{ index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }]);
    expect(first.usage).toBeNull(); // OpenAI sends "usage": null on every chunk but the last when usage is asked for
    for (const c of rest) {
      expect(c.choices).toEqual([{ index: 0, delta: { content: expect.any(String) }, logprobs: null, finish_reason: null }]);
      expect(c.usage).toBeNull();
    }
    expect(rest.map((c) => c.choices[0].delta.content).join('')).toBe(reference);
    expect(finishChunk.choices).toEqual([{ index: 0, delta: {}, logprobs: null, finish_reason: finish }]);
    expect(usageChunk.choices).toEqual([]);
    expect(usageChunk.usage).toMatchObject(usage);

    // Not streamed, content as text parts, the newer max_completion_tokens; a stop string cuts the same reply short.
    const parts = messages.map((m) => ({ role: m.role, content: [{ type: 'text', text: m.content }] }));
    const whole = await post({ model: 'any-name', messages: parts, max_completion_tokens: maxTokens, temperature: 0 });
    expect(whole.status).toBe(200);
    expect(whole.headers.get('content-type')).toMatch(/^application\/json/);
    const completion = await whole.json();
    expect(completion).toMatchObject({
      id: expect.stringMatching(/^chatcmpl-\w+$/),
      object: 'chat.completion',
      created: expect.any(Number),
      model: 'any-name',
      choices: [{ index: 0, message: { role: 'assistant', content: reference }, finish_reason: finish }],
      usage,
    });
    // The same conversation again: its KV is reused, all but the last prompt token (whose logits are needed), which
    // OpenAI's usage calls cached tokens.
    expect(completion.usage.prompt_tokens_details.cached_tokens).toBe(usage.prompt_tokens - 1);
    const stop = reference.slice(12, 16);
    const stopped = await (await post({ messages, max_tokens: maxTokens, temperature: 0, stop })).json();
    expect(stopped.choices[0]).toMatchObject({ message: { content: reference.slice(0, reference.indexOf(stop)) }, finish_reason: 'stop' });

    // Errors in OpenAI's shape, which its clients raise as APIError.
    const expectError = async (r: Response, status: number, param: string | null, code: string) => {
      expect(r.status).toBe(status);
      expect(r.headers.get('content-type')).toMatch(/^application\/json/);
      const body = await r.json();
      expect(body, JSON.stringify(body)).toEqual({ error: { message: expect.any(String), type: status < 500 ? 'invalid_request_error' : 'server_error', param, code } });
      return body.error.message as string;
    };
    await expectError(await post({ model: 'm', messages, n: 2 }), 400, 'n', 'unsupported_value');
    expect(await expectError(await post({ messages, frequency_penalty: 0.5 }), 400, 'frequency_penalty', 'unsupported_value')).toMatch(/repeat_penalty/);
    await expectError(await post({ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'https://x/y.png' } }] }] }), 400, 'messages[0].content[0].type', 'unsupported_value');
    await expectError(await post({ messages: [] }), 400, 'messages', 'invalid_type');
    await expectError(await post({ messages, max_tokens: 5000 }), 400, 'max_tokens', 'invalid_value');
    await expectError(await post({ messages: [{ role: 'user', content: 'the '.repeat(600) }] }), 400, 'messages', 'context_length_exceeded');
    await expectError(await fetch(`${server.url}/v1/nope`), 404, null, 'unknown_url');
    await expectError(await fetch(completions), 405, null, 'method_not_allowed');

    // The model list OpenAI's clients fetch, and the CORS preflight a browser sends before the client's request.
    expect(await (await fetch(`${server.url}/v1/models`, { headers: OPENAI_HEADERS })).json()).toEqual({
      object: 'list',
      data: [{ id: 'tiny-260k-q8_0', object: 'model', created: expect.any(Number), owned_by: 'edgellm' }],
    });
    const preflight = await fetch(completions, { method: 'OPTIONS', headers: { origin: 'https://app.example', 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization,content-type,x-stainless-os' } });
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get('access-control-allow-origin')).toBe('*');
    expect(preflight.headers.get('access-control-allow-headers')).toBe('authorization,content-type,x-stainless-os');

    // A model with no chat template, and none configured: the worker's setup is at fault, so a 500 the clients do not retry.
    const bare = await serve({ name: 'tiny-260k-q8_0 no template', file, source: 'bundled' });
    const noTemplate = await fetch(`${bare.url}/v1/chat/completions`, { method: 'POST', headers: OPENAI_HEADERS, body: JSON.stringify({ messages }) });
    expect(noTemplate.headers.get('x-should-retry')).toBe('false');
    expect(await expectError(noTemplate, 500, null, 'no_chat_template')).toMatch(/CHAT_TEMPLATE/);
  });
});
