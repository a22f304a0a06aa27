/**
 * The `edgellm` command: run a prompt, measure perplexity, or inspect a GGUF header.
 *
 * Output contract: stdout carries only the product (generated text, the perplexity summary, the info report), so it can
 * be piped; everything about the run (load time, speed, progress) goes to stderr. Every failure is one line,
 * `edgellm: error [CODE]: message`, exit 1, or exit 2 for a usage error; stacks only with EDGELLM_DEBUG=1.
 */
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { EdgeLLMError, loadModel, loadTokenizer, openModelCache, readHeader, type CacheEntry, type ChatSession, type GenerateOptions, type GenerationStats, type KVType, type LoadOptions, type Model, type PerplexityWindow } from './index.js';
import { valueTypeName, GGUFValueType, type GGUFFile, type GGUFValue, type GGUFValueTypeInfo, type TensorInfo } from './gguf/reader.js';
import { readLlamaConfig, type LlamaConfig } from './model/config.js';
import { formatBytes } from './plan/arena.js';
import { withProgress } from './progress.js';

// ───────────────────────────── argument parsing ─────────────────────────────

/** A mistake in how the command was called: exit 2, and the message points to the command's help. */
class UsageError extends Error {
  constructor(message: string, readonly command?: string) {
    super(message);
  }
}

type FlagKind = 'string' | 'int' | 'number' | 'bool' | 'list';

interface FlagSpec {
  name: string;
  short?: string;
  kind: FlagKind;
}

interface Parsed {
  positionals: string[];
  flags: Map<string, string | number | boolean | string[]>;
}

const HELP_FLAG: FlagSpec = { name: 'help', short: 'h', kind: 'bool' };

/** `--flag value`, `--flag=value`, `-p value`; a value may start with '-' (e.g. `--seed -1`); `--` ends the flags. */
function parseArgs(args: string[], specs: FlagSpec[], command: string): Parsed {
  const all = [...specs, HELP_FLAG];
  const positionals: string[] = [];
  const flags: Parsed['flags'] = new Map();
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === '--') {
      positionals.push(...args.slice(i + 1));
      break;
    }
    if (!arg.startsWith('-') || arg === '-') {
      positionals.push(arg);
      continue;
    }
    const eq = arg.startsWith('--') ? arg.indexOf('=') : -1;
    const given = eq >= 0 ? arg.slice(0, eq) : arg;
    const spec = given.startsWith('--') ? all.find((s) => `--${s.name}` === given) : all.find((s) => s.short && `-${s.short}` === given);
    if (!spec) throw new UsageError(`unknown option ${given}`, command);
    if (spec.kind === 'bool') {
      if (eq >= 0) throw new UsageError(`${given} takes no value`, command);
      flags.set(spec.name, true);
      continue;
    }
    let raw: string;
    if (eq >= 0) raw = arg.slice(eq + 1);
    else if (i + 1 < args.length) raw = args[++i];
    else throw new UsageError(`${given} needs a value`, command);
    const value = convert(given, spec.kind, raw, command);
    if (spec.kind === 'list') flags.set(spec.name, [...((flags.get(spec.name) as string[] | undefined) ?? []), raw]);
    else flags.set(spec.name, value);
  }
  return { positionals, flags };
}

function convert(flag: string, kind: FlagKind, raw: string, command: string): string | number {
  if (kind === 'int') {
    if (!/^[+-]?\d+$/.test(raw.trim()) || !Number.isSafeInteger(Number(raw))) throw new UsageError(`${flag} needs an integer, got ${JSON.stringify(raw)}`, command);
    return Number(raw);
  }
  if (kind === 'number') {
    const n = Number(raw);
    if (raw.trim() === '' || !Number.isFinite(n)) throw new UsageError(`${flag} needs a number, got ${JSON.stringify(raw)}`, command);
    return n;
  }
  return raw;
}

function positionals(p: Parsed, names: string[], command: string): string[] {
  if (p.positionals.length < names.length) throw new UsageError(`missing ${names[p.positionals.length]}`, command);
  if (p.positionals.length > names.length) throw new UsageError(`unexpected argument ${JSON.stringify(p.positionals[names.length])}`, command);
  return p.positionals;
}

const num = (p: Parsed, name: string) => p.flags.get(name) as number | undefined;

// ───────────────────────────── help ─────────────────────────────

const USAGE = `edgellm: run Llama-family GGUF models in WebAssembly

Usage:
  edgellm run MODEL -p PROMPT [options]       generate text from a prompt (--chat: one user turn)
  edgellm chat MODEL [--system TEXT]          talk to a model through its chat template
  edgellm tokenize MODEL [TEXT] [options]     print the token ids of a text (reads only the header)
  edgellm perplexity MODEL TEXTFILE [options] score a text file (llama.cpp-style perplexity)
  edgellm info MODEL [--json]                 describe a GGUF file from its header, without loading weights
  edgellm cache ls|rm NAME|clear              the downloaded models kept between runs

MODEL is a .gguf path, an http(s) URL, or a hub name: hf:OWNER/REPO/FILE.gguf or hf:OWNER/REPO:QUANT
(HF_TOKEN and HF_ENDPOINT are honoured). A split GGUF is named by its first part (-00001-of-0000N.gguf).
Run \`edgellm COMMAND --help\` for a command's options.

Options:
  -h, --help     show help
  --version      print the version

Set EDGELLM_DEBUG=1 to see stack traces on errors.`;

/** The help lines of SAMPLING_FLAGS, shared by run and chat. */
const SAMPLING_HELP = `  -n, --max-tokens N       most tokens to generate (default 128 for run, 1024 per reply for chat)
  --temperature T          0 = greedy (default 0)
  --top-k K                keep the K most likely tokens, 0 = off (default 40)
  --top-p P                nucleus sampling, 1 = off (default 0.95)
  --min-p P                drop tokens below P × the best one, 0 = off (default 0.05)
  --repeat-penalty R       penalize recent tokens, 1 = off (default 1)
  --repeat-last-n N        how far back the penalty looks (default 64)
  --seed S                 random seed (default: random)
  --stop STR               stop before STR; repeatable`;

/** The help lines of ENGINE_FLAGS, shared by run, chat and perplexity. */
const ENGINE_HELP = `  --threads N|auto         threads (default auto: the cores, at most 8; 1 runs without workers)
  --kv f32|f16|int8|int4   KV page type (default f32; f16 as llama.cpp; int8/int4 quantized per page)
  --page-tokens N          tokens per KV page (default 32)
  --kv-hot SIZE            wasm memory for the KV cache, e.g. 8MB (default: every page hot)
  --kv-warm SIZE           host memory for the KV pages beyond --kv-hot (the warm tier)
  --kv-cold SIZE           disk for the KV pages beyond both (the cold tier: a file in a temp directory of its own)
  --attention full|sparse  which pages each query reads (default full)
  --top-k-pages N          sparse: pages picked by Quest score per KV head (default 4)
  --window N               sparse: recent tokens always read (default 64)
  --sinks N                sparse: first tokens always read (default 4)
  --memory-budget SIZE     the most memory the model may take (wasm, host tiers), e.g. 512MB; fails before
                           allocating if no plan fits, and says what would
  --weights auto|resident|warm|cold
                           where the layers' weights live (default auto: resident unless the budget says
                           otherwise; warm: host memory; cold: a spill file), the same tokens
  --stage-ahead on|off     streamed layers: a worker copies the next one in while one runs (default: where a core is free)
  --memory-per-instance SIZE
                           the largest wasm memory of one kernel instance (default 4GiB less 64KiB); a larger
                           model is split over several, whole layers each, the same tokens
  --cache-dir DIR          where downloaded models are kept (default EDGELLM_CACHE, else the user's cache dir)
  --no-cache               read a URL with range requests and keep nothing
  -v, --verbose            print the memory plan: where weights and KV pages live, against the budget`;

/** The help lines of MODEL_FLAGS, shared by run and chat. */
const MODEL_HELP = `  --ctx N                  context length to plan (default: the model's, at most 4096)
  --batch N                prompt tokens per forward batch (default 32)
${ENGINE_HELP}`;

const HELP: Record<string, string> = {
  run: `Usage: edgellm run MODEL -p PROMPT [options]

Streams the generated text (only that) to stdout; load time and speed go to stderr. Ctrl-C stops (exit 130).

Options:
  -p, --prompt TEXT        the prompt (required); tokenized with BOS as the model asks
  --chat                   send the prompt as one user turn through the model's chat template
  --system TEXT            with --chat: a system message first
  --template FILE          with --chat: a Jinja chat template to use instead of the file's
${SAMPLING_HELP}
${MODEL_HELP}
  -h, --help               show this help`,
  chat: `Usage: edgellm chat MODEL [options]

An interactive chat through the model's chat template; the conversation keeps its KV cache, so each turn prefills
only its new tokens. Replies stream to stdout, speed to stderr. Up/down recall earlier lines; Ctrl-C stops a reply
(at the prompt, it quits); Ctrl-D quits. With stdin not a terminal, each line is one user turn.

Options:
  --system TEXT            a system message
  --template FILE          a Jinja chat template to use instead of the file's
  --drop-oldest            when the context fills, drop the oldest turns (default: stop with CONTEXT_FULL)
${SAMPLING_HELP}
${MODEL_HELP}
  -h, --help               show this help`,
  tokenize: `Usage: edgellm tokenize MODEL [TEXT] [options]

Prints the token ids of TEXT (or of --file, or of stdin), space-separated. Reads only the GGUF header, so a
vocab-only file works.

Options:
  --file F                 tokenize the contents of file F
  --special                turn the text of control tokens (<|im_start|>, ...) into their ids
  --no-bos                 never prepend BOS (default: as the vocabulary says)
  --json                   print a JSON array of ids
  --pieces                 print one token per line: id and its text
  -h, --help               show this help`,
  perplexity: `Usage: edgellm perplexity MODEL TEXTFILE [options]

Tokenizes the text without BOS and scores consecutive windows, each BOS + the next CTX-1 tokens, as llama.cpp's
perplexity does. Progress per window on stderr; the summary on stdout.

Options:
  --ctx N                  tokens per window, BOS included (default 2048)
  --windows N              how many windows to score (default: as many as the text fills)
  --batch N                tokens per forward batch (default 32)
${ENGINE_HELP}
  --json                   end stdout with one JSON line: {"ppl", "tokens_scored", "windows": [...], ...}
  -h, --help               show this help`,
  cache: `Usage: edgellm cache ls|rm NAME|clear [options]

Models downloaded from URLs and hf: names are kept here, so a second run makes no request for them; an interrupted
download resumes where it stopped. The directory is --cache-dir, else EDGELLM_CACHE, else the user's cache directory
(~/.cache/edgellm; ~/Library/Caches/edgellm on macOS; %LOCALAPPDATA%\\edgellm\\cache on Windows).

  ls                       list the entries: name, size, whether complete, URL (stdout)
  rm NAME|URL              remove an entry: its NAME from ls, its URL, or a file name (every entry of that name)
  clear                    remove every entry

Options:
  --cache-dir DIR          the cache directory
  --json                   ls: print the entries as one JSON array
  -h, --help               show this help`,
  info: `Usage: edgellm info MODEL [options]

Reads only the GGUF header: architecture and hyperparameters, tensor types, metadata and the tensor table.
An http(s) URL or hf: name transfers only about the header (range requests). For a split GGUF, the part named.

Options:
  --json                   print one JSON object instead
  --all-tensors            list every tensor even for big models (default: per-layer tensors grouped)
  -h, --help               show this help`,
};

function version(): string {
  // dist/cli.js sits one level below package.json, in the repo and in an installed package alike.
  try {
    return JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).version as string;
  } catch {
    return 'unknown';
  }
}

// ───────────────────────────── shared bits ─────────────────────────────

/** Ctrl-C aborts the running work through its signal; a second Ctrl-C leaves at once. */
function interruptible(): AbortController {
  const controller = new AbortController();
  process.on('SIGINT', () => {
    if (controller.signal.aborted) process.exit(130);
    controller.abort(new Error('SIGINT'));
  });
  return controller;
}

function stderr(line: string): void {
  process.stderr.write(line + '\n');
}

async function load(source: string, opts: LoadOptions, verbose = false): Promise<Model> {
  const t0 = performance.now();
  // download and weight repacking (both in bytes) on stderr: a bar on a terminal, plain lines in a log (progress.ts)
  const model = await withProgress(process.stderr, {}, (progress) => loadModel(source, { ...opts, onProgress: (p) => progress.update(p) }));
  const ms = performance.now() - t0;
  const i = model.info;
  const types = Object.entries(i.tensorTypes).map(([t, n]) => `${n} ${t}`).join(', ');
  stderr(
    `loaded ${i.name || i.architecture} in ${ms.toFixed(0)} ms: ${i.nLayers} layers, dim ${i.dim}, vocab ${i.vocab}, tensors ${types}; ` +
      `context ${i.context}, wasm memory ${formatBytes(i.memoryBytes)}, threads ${i.threading}`,
  );
  if (verbose) stderr(planTable(model));
  return model;
}

/** The memory plan as a short table (-v): where each kind of bytes lives, and the total against the budget. */
function planTable(model: Model): string {
  const m = model.memory(), w = m.weights, kv = m.kv;
  const count = (tier: string) => w.layers.filter((r) => r === tier).length;
  const layers = ['resident', 'warm', 'cold'].map((t) => `${count(t)} ${t}`).filter((t) => !t.startsWith('0 ')).join(', ');
  const rows: Array<[string, string, number]> = [
    ['wasm', `weights (${layers} layers; embeddings, output, norms)`, w.residentBytes],
    ['wasm', 'weight slots (streamed layers are copied in before they run)', w.slotBytes],
    ['wasm', `KV cache, hot (${kv.hotPageSlots} page slots, ${kv.stagingSlots} staging)`, kv.hotBytes],
    ['wasm', 'activations, scratch, kernels', m.totalBytes - w.residentBytes - w.slotBytes - kv.hotBytes],
    ['host', 'weights, warm (layer images)', w.warmBytes],
    ['host', 'KV pages, warm', kv.warmBytes],
    ['host', 'largest read held while loading', w.readBytes],
    ['disk', 'weights, cold (the spill file)', w.coldBytes],
    ['disk', 'KV pages, cold', kv.coldBytes],
  ];
  const lines = rows.filter(([, , bytes]) => bytes > 0).map(([where, what, bytes]) => `  ${where.padEnd(5)} ${what.padEnd(62)} ${formatBytes(bytes).padStart(11)}`);
  const budget = m.budgetBytes ? ` of the budget ${formatBytes(m.budgetBytes)}` : ' (no budget given)';
  // past one wasm memory's limit the layers are split over kernel instances, a memory each
  const instances = m.instances.length > 1
    ? [`  wasm in ${m.instances.length} kernel instances: ${m.instances.map((i, n) => `#${n} layers ${i.layers[0]}-${i.layers[1] - 1} ${formatBytes(i.bytes)}`).join(', ')}`]
    : [];
  return ['memory plan:', ...lines, ...instances, `  in memory (wasm + host): ${formatBytes(m.plannedBytes)}${budget}`].join('\n');
}

/** Options given as undefined must be absent, not present-and-undefined, for the library's defaults to apply. */
function withoutUndefined<T extends object>(o: T): T {
  for (const k of Object.keys(o) as (keyof T)[]) if (o[k] === undefined) delete o[k];
  return o;
}

/** The threads, KV cache and attention flags, shared by run, chat and perplexity. */
const ENGINE_FLAGS: FlagSpec[] = [
  { name: 'threads', kind: 'string' },
  { name: 'kv', kind: 'string' },
  { name: 'page-tokens', kind: 'int' },
  { name: 'kv-hot', kind: 'string' },
  { name: 'kv-warm', kind: 'string' },
  { name: 'kv-cold', kind: 'string' },
  { name: 'attention', kind: 'string' },
  { name: 'top-k-pages', kind: 'int' },
  { name: 'window', kind: 'int' },
  { name: 'sinks', kind: 'int' },
  { name: 'memory-budget', kind: 'string' },
  { name: 'weights', kind: 'string' },
  { name: 'memory-per-instance', kind: 'string' },
  { name: 'stage-ahead', kind: 'string' },
  { name: 'cache-dir', kind: 'string' },
  { name: 'no-cache', kind: 'bool' },
  { name: 'verbose', short: 'v', kind: 'bool' },
];

/** The loader validates the values (BAD_ARGUMENT naming the choices); absent flags stay absent, for its defaults. */
function engineOptions(p: Parsed): Pick<LoadOptions, 'threads' | 'kv' | 'attention' | 'memoryBudget' | 'weights' | 'memoryPerInstance' | 'stageAhead' | 'cache'> {
  useCacheDir(p);
  const defined = <T extends object>(o: T): T | undefined => (Object.keys(withoutUndefined(o)).length ? o : undefined);
  const threads = p.flags.get('threads') as string | undefined;
  if (threads !== undefined && threads !== 'auto' && !/^[1-9][0-9]*$/.test(threads)) throw new UsageError(`--threads is a count or auto, got ${threads}`);
  const ahead = p.flags.get('stage-ahead') as string | undefined;
  if (ahead !== undefined && ahead !== 'on' && ahead !== 'off') throw new UsageError(`--stage-ahead is on or off, got ${ahead}`);
  return {
    // The command line uses the cores by default, as llama.cpp's tools do (the library defaults to 1: an app opts in).
    threads: threads === undefined || threads === 'auto' ? 'auto' : Number(threads),
    kv: defined({
      type: p.flags.get('kv') as KVType | undefined,
      pageTokens: num(p, 'page-tokens'),
      hotBytes: p.flags.get('kv-hot') as string | undefined,
      warmBytes: p.flags.get('kv-warm') as string | undefined,
      coldBytes: p.flags.get('kv-cold') as string | undefined,
    }),
    attention: defined({
      mode: p.flags.get('attention') as 'full' | 'sparse' | undefined,
      topKPages: num(p, 'top-k-pages'),
      windowTokens: num(p, 'window'),
      sinkTokens: num(p, 'sinks'),
    }),
    memoryBudget: p.flags.get('memory-budget') as string | undefined,
    weights: p.flags.get('weights') as LoadOptions['weights'],
    memoryPerInstance: p.flags.get('memory-per-instance') as string | undefined,
    stageAhead: ahead === undefined ? undefined : ahead === 'on',
    ...(p.flags.get('no-cache') ? { cache: false as const } : {}),
  };
}

/** What the KV cache and attention did: one stderr line, and the numbers for --json. */
function cacheReport(model: Model) {
  const kv = model.memory().kv;
  const a = model.attentionStats();
  const attention = { mode: model.info.attention, mean_tokens_read: a.meanTokensRead, mean_positions: a.meanPositions, pages_scored: a.pagesScored };
  const warm = kv.warmBytes ? `, warm ${formatBytes(kv.warmBytes)} (${kv.warmPagesInUse} pages in use)` : '';
  const cold = kv.coldBytes ? `, cold ${formatBytes(kv.coldBytes)} (${kv.coldPagesInUse} pages in use)` : '';
  const staged = kv.warmBytes || kv.coldBytes ? `, ${kv.pagesStaged} pages staged` : '';
  const line =
    `kv ${kv.type}: ${kv.bytesPerToken.toFixed(0)} B/token, hot ${formatBytes(kv.hotBytes)} (${kv.hotPagesInUse}/${kv.hotPageSlots} page slots in use)${warm}${cold}${staged}; ` +
    `attention ${attention.mode}: ${a.meanTokensRead.toFixed(1)} of ${a.meanPositions.toFixed(1)} positions read per query`;
  return { line, kv, attention };
}

// ───────────────────────────── run and chat ─────────────────────────────

const SAMPLING_FLAGS: FlagSpec[] = [
  { name: 'max-tokens', short: 'n', kind: 'int' },
  { name: 'temperature', kind: 'number' },
  { name: 'top-k', kind: 'int' },
  { name: 'top-p', kind: 'number' },
  { name: 'min-p', kind: 'number' },
  { name: 'repeat-penalty', kind: 'number' },
  { name: 'repeat-last-n', kind: 'int' },
  { name: 'seed', kind: 'int' },
  { name: 'stop', kind: 'list' },
];

/** Loading flags shared by run and chat. */
const MODEL_FLAGS: FlagSpec[] = [
  { name: 'ctx', kind: 'int' },
  { name: 'batch', kind: 'int' },
  ...ENGINE_FLAGS,
];

const RUN_FLAGS: FlagSpec[] = [
  { name: 'prompt', short: 'p', kind: 'string' },
  { name: 'chat', kind: 'bool' },
  { name: 'system', kind: 'string' },
  { name: 'template', kind: 'string' },
  ...SAMPLING_FLAGS,
  ...MODEL_FLAGS,
];

const CHAT_FLAGS: FlagSpec[] = [
  { name: 'system', kind: 'string' },
  { name: 'template', kind: 'string' },
  { name: 'drop-oldest', kind: 'bool' },
  ...SAMPLING_FLAGS,
  ...MODEL_FLAGS,
];

function loadFor(p: Parsed, source: string, signal: AbortSignal): Promise<Model> {
  return load(source, {
    contextLength: num(p, 'ctx'),
    batchSize: num(p, 'batch'),
    ...engineOptions(p),
    signal,
  }, p.flags.get('verbose') === true);
}

function samplingOptions(p: Parsed, defaultMaxTokens: number): GenerateOptions {
  return withoutUndefined({
    maxTokens: num(p, 'max-tokens') ?? defaultMaxTokens,
    temperature: num(p, 'temperature'),
    topK: num(p, 'top-k'),
    topP: num(p, 'top-p'),
    minP: num(p, 'min-p'),
    repeatPenalty: num(p, 'repeat-penalty'),
    repeatLastN: num(p, 'repeat-last-n'),
    seed: num(p, 'seed'),
    stop: p.flags.get('stop') as string[] | undefined,
  });
}

function speedLine(s: GenerationStats): string {
  const cached = s.cachedTokens ? ` (${s.cachedTokens} cached, ${s.prefilledTokens} prefilled)` : '';
  return (
    `prefill ${s.prefillTokensPerSecond.toFixed(1)} tok/s, decode ${s.decodeTokensPerSecond.toFixed(1)} tok/s (${s.generatedTokens} tokens)` +
    `; prompt ${s.promptTokens} tokens${cached}, stopped by ${s.stopReason}`
  );
}

/** A file the user named, as UTF-8 text; an unreadable one is BAD_SOURCE naming what it was for. */
async function readTextFile(file: string, what: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    throw new EdgeLLMError('BAD_SOURCE', `${what} "${file}": cannot read: ${(err as Error).message}`, { cause: err });
  }
}

async function readTemplate(p: Parsed): Promise<string | undefined> {
  const file = p.flags.get('template') as string | undefined;
  return file === undefined ? undefined : readTextFile(file, 'template file');
}

async function run(p: Parsed, controller: AbortController): Promise<void> {
  const [source] = positionals(p, ['MODEL'], 'run');
  const prompt = p.flags.get('prompt') as string | undefined;
  if (prompt === undefined) throw new UsageError('missing -p/--prompt', 'run');
  const chat = p.flags.get('chat') === true;
  for (const flag of ['system', 'template']) {
    if (!chat && p.flags.has(flag)) throw new UsageError(`--${flag} needs --chat`, 'run');
  }
  const template = await readTemplate(p);
  const signal = controller.signal;
  const model = await loadFor(p, source, signal);
  const opts: GenerateOptions = { ...samplingOptions(p, 128), signal, onStats: (s) => stderr(speedLine(s)) };
  const system = p.flags.get('system') as string | undefined;
  const messages = [...(system !== undefined ? [{ role: 'system', content: system }] : []), { role: 'user', content: prompt }];
  let wrote = false;
  try {
    const stream = chat ? model.chat(messages, { ...opts, template }) : model.generate(prompt, opts);
    for await (const chunk of stream) {
      process.stdout.write(chunk);
      wrote = true;
    }
    process.stdout.write('\n');
    stderr(cacheReport(model).line);
  } catch (err) {
    // End a text cut short (Ctrl-C) with its newline too, so the shell prompt starts on a fresh line.
    if (wrote) process.stdout.write('\n');
    throw err;
  }
}

/**
 * The chat loop. Ctrl-C stops the reply being generated; at the prompt it quits, as does Ctrl-D (end of input).
 * On a terminal readline keeps the line history; piped input is read line by line, each line one turn.
 */
async function chat(p: Parsed): Promise<void> {
  const [source] = positionals(p, ['MODEL'], 'chat');
  const template = await readTemplate(p);
  const loading = new AbortController();
  const onLoadInterrupt = () => loading.abort(new Error('SIGINT'));
  process.once('SIGINT', onLoadInterrupt);
  let model: Model;
  try {
    model = await loadFor(p, source, loading.signal);
  } finally {
    process.off('SIGINT', onLoadInterrupt);
  }
  const session: ChatSession = model.session({
    system: p.flags.get('system') as string | undefined,
    template,
    overflow: p.flags.get('drop-oldest') ? 'drop-oldest' : 'error',
  });
  const sampling = samplingOptions(p, 1024);
  const terminal = process.stdin.isTTY === true && process.stdout.isTTY === true;
  const rl = createInterface({ input: process.stdin, output: process.stdout, terminal, historySize: 200, prompt: terminal ? '> ' : '' });
  let reply: AbortController | undefined;
  const interrupt = () => {
    if (reply) reply.abort(new Error('SIGINT'));
    else rl.close();
  };
  rl.on('SIGINT', interrupt);
  process.on('SIGINT', interrupt);
  if (terminal) stderr('(Ctrl-C stops a reply, Ctrl-D quits)');
  rl.prompt();
  try {
    for await (const line of rl) {
      if (line.trim() === '') {
        rl.prompt();
        continue;
      }
      reply = new AbortController();
      let wrote = false;
      try {
        for await (const chunk of session.send(line, { ...sampling, signal: reply.signal, onStats: (s) => stderr(speedLine(s)) })) {
          process.stdout.write(chunk);
          wrote = true;
        }
        process.stdout.write('\n');
      } catch (err) {
        if (wrote) process.stdout.write('\n');
        if (!(err instanceof EdgeLLMError && err.code === 'ABORTED')) throw err;
        stderr('(reply stopped)');
      } finally {
        reply = undefined;
      }
      rl.prompt();
    }
  } finally {
    process.off('SIGINT', interrupt);
    rl.close();
    model.dispose();
  }
  if (terminal) process.stdout.write('\n');
}

// ───────────────────────────── tokenize ─────────────────────────────

const TOKENIZE_FLAGS: FlagSpec[] = [
  { name: 'file', kind: 'string' },
  { name: 'special', kind: 'bool' },
  { name: 'no-bos', kind: 'bool' },
  { name: 'json', kind: 'bool' },
  { name: 'pieces', kind: 'bool' },
];

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

async function tokenize(p: Parsed, controller: AbortController): Promise<void> {
  if (p.positionals.length > 2) throw new UsageError(`unexpected argument ${JSON.stringify(p.positionals[2])}`, 'tokenize');
  const [source, given] = p.positionals;
  if (source === undefined) throw new UsageError('missing MODEL', 'tokenize');
  const file = p.flags.get('file') as string | undefined;
  if (given !== undefined && file !== undefined) throw new UsageError('give TEXT or --file, not both', 'tokenize');
  let text: string;
  if (given !== undefined) text = given;
  else if (file !== undefined) text = await readTextFile(file, 'text file');
  else if (!process.stdin.isTTY) text = await readStdin();
  else throw new UsageError('missing TEXT (or --file F, or text on stdin)', 'tokenize');
  const tokenizer = await loadTokenizer(source, { signal: controller.signal });
  const ids = tokenizer.tokenize(text, { special: p.flags.get('special') === true, ...(p.flags.get('no-bos') ? { bos: false } : {}) });
  if (p.flags.get('json')) process.stdout.write(JSON.stringify(ids) + '\n');
  else if (p.flags.get('pieces')) process.stdout.write(ids.map((id) => `${id}\t${JSON.stringify(tokenizer.detokenize([id], { special: true }))}\n`).join(''));
  else process.stdout.write(ids.join(' ') + '\n');
  stderr(`${ids.length} tokens (${tokenizer.info.model}${tokenizer.info.pre ? `/${tokenizer.info.pre}` : ''} vocabulary of ${tokenizer.info.vocabSize})`);
}

// ───────────────────────────── perplexity ─────────────────────────────

const PPL_FLAGS: FlagSpec[] = [
  { name: 'ctx', kind: 'int' },
  { name: 'windows', kind: 'int' },
  { name: 'batch', kind: 'int' },
  ...ENGINE_FLAGS,
  { name: 'json', kind: 'bool' },
];

async function perplexity(p: Parsed, controller: AbortController): Promise<void> {
  const [source, textFile] = positionals(p, ['MODEL', 'TEXTFILE'], 'perplexity');
  const window = num(p, 'ctx') ?? 2048;
  if (window < 2) throw new UsageError(`--ctx must be at least 2, got ${window}`, 'perplexity');
  const windowsAsked = num(p, 'windows');
  if (windowsAsked !== undefined && windowsAsked < 1) throw new UsageError(`--windows must be at least 1, got ${windowsAsked}`, 'perplexity');
  const text = await readTextFile(textFile, 'text file');
  // The KV cache only has to hold one window.
  const model = await load(source, { contextLength: window, batchSize: num(p, 'batch'), ...engineOptions(p), signal: controller.signal }, p.flags.get('verbose') === true);
  if (window > model.info.contextLength) {
    stderr(`warning: window ${window} is longer than the model's training context of ${model.info.contextLength}`);
  }
  let done = 0, nllSum = 0, scored = 0;
  let tWindow = performance.now();
  const t0 = tWindow;
  const r = await withProgress(process.stderr, { perplexity: 'tokens' }, (progress) => {
    const onWindow = (w: PerplexityWindow, total: number) => {
      done++;
      nllSum += w.nll * w.tokensScored;
      scored += w.tokensScored;
      const t = performance.now();
      progress.log(
        `window ${done}/${total} (tokens ${w.firstToken}..${w.firstToken + window - 2}): ppl ${w.ppl.toFixed(4)}, ` +
          `running ppl ${Math.exp(nllSum / scored).toFixed(4)}, ${(window / ((t - tWindow) / 1000)).toFixed(0)} tok/s`,
      );
      tWindow = t;
    };
    return model.perplexity(text, { window, windows: windowsAsked, signal: controller.signal, onWindow, onProgress: (p) => progress.update(p) });
  });
  const seconds = (performance.now() - t0) / 1000;
  const cache = cacheReport(model);
  stderr(cache.line);
  process.stdout.write(
    `perplexity ${r.ppl.toFixed(4)} (nll ${r.nll.toFixed(6)}) over ${r.tokensScored} tokens: ` +
      `${r.windows.length} window${r.windows.length === 1 ? '' : 's'} of ${r.window} from ${r.textTokens} text tokens, ${seconds.toFixed(1)} s\n`,
  );
  if (p.flags.get('json')) {
    const json = {
      ppl: r.ppl,
      nll: r.nll,
      tokens_scored: r.tokensScored,
      text_tokens: r.textTokens,
      window: r.window,
      windows: r.windows.map((w) => ({ first_token: w.firstToken, nll: w.nll, ppl: w.ppl, tokens_scored: w.tokensScored })),
      model: source,
      text: textFile,
      seconds,
      kv: cache.kv,
      attention: cache.attention,
    };
    process.stdout.write(JSON.stringify(json) + '\n');
  }
}

// ───────────────────────────── info ─────────────────────────────

const INFO_FLAGS: FlagSpec[] = [
  { name: 'json', kind: 'bool' },
  { name: 'all-tensors', kind: 'bool' },
];

/** Past this many tensors, per-layer tensors of the same shape are shown as one row. */
const COMPACT_TENSORS = 64;
/** Arrays longer than this are summarized as `[N × type]`. */
const SHORT_ARRAY = 8;
const PREVIEW_CHARS = 60;

async function info(p: Parsed, controller: AbortController): Promise<void> {
  const [path] = positionals(p, ['MODEL'], 'info');
  // the header only: a cached copy's, or about the header's bytes of a URL or hf: name
  const gguf = await readHeader(path, { signal: controller.signal });
  let config: LlamaConfig | undefined;
  let configError: string | undefined;
  if (gguf.has('general.architecture') && typeof gguf.get('general.architecture') === 'string') {
    try {
      config = readLlamaConfig(gguf);
    } catch (err) {
      if (!(err instanceof EdgeLLMError)) throw err;
      configError = `[${err.code}] ${err.message}`;
    }
  }
  const types = new Map<string, { count: number; bytes: number }>();
  for (const t of gguf.tensors) {
    const e = types.get(t.typeName) ?? { count: 0, bytes: 0 };
    e.count++;
    e.bytes += t.byteSize;
    types.set(t.typeName, e);
  }

  if (p.flags.get('json')) {
    const json = {
      file: path,
      file_size: gguf.fileSize,
      gguf_version: gguf.version,
      alignment: gguf.alignment,
      data_offset: gguf.dataOffset,
      architecture: gguf.has('general.architecture') ? jsonValue(gguf.get('general.architecture')!) : null,
      config: config ?? null,
      ...(configError ? { config_error: configError } : {}),
      tensor_count: gguf.tensors.length,
      tensor_types: Object.fromEntries(types),
      metadata: Object.fromEntries([...gguf.metadata].map(([k, v]) => [k, jsonValue(v, typeLabel(gguf, k))])),
      tensors: gguf.tensors.map((t) => ({ name: t.name, type: t.typeName, dims: t.dims, offset: t.offset, bytes: t.byteSize })),
    };
    process.stdout.write(JSON.stringify(json) + '\n');
    return;
  }

  const out: string[] = [];
  const totalTensorBytes = gguf.tensors.reduce((s, t) => s + t.byteSize, 0);
  out.push(`file           ${path}`);
  out.push(`size           ${formatBytes(gguf.fileSize)} (${gguf.fileSize} bytes)`);
  out.push(`gguf           version ${gguf.version}, ${gguf.metadata.size} metadata keys, ${gguf.tensors.length} tensors, alignment ${gguf.alignment}, data at ${gguf.dataOffset}`);
  out.push(`architecture   ${gguf.has('general.architecture') ? String(gguf.get('general.architecture')) : '(none)'}`);
  if (config) {
    out.push(`name           ${config.name || '(none)'}`);
    out.push(`layers         ${config.nLayers}`);
    out.push(`dim            ${config.dim}`);
    out.push(`ffn            ${config.ffn}`);
    out.push(`heads          ${config.nHeads} (kv ${config.nKvHeads}, head dim ${config.headDim}, rope dims ${config.nRot})`);
    out.push(`vocab          ${config.vocab}`);
    out.push(`context        ${config.contextLength}`);
    out.push(`rope           ${ropeLine(config, config.arch.ropeFreqs && gguf.tensorMap.has('rope_freqs.weight'))}`);
    out.push(`attention      ${attentionLine(config)}`);
    out.push(`block          ${blockLine(config, config.arch.qkvBias !== 'none' && gguf.tensorMap.has('blk.0.attn_q.bias'))}`);
    out.push(`rms eps        ${f32(config.rmsEps)}`);
    out.push(`parameters     ${formatCount(gguf.tensors.reduce((s, t) => s + t.elements, 0))}`);
  } else if (configError) {
    out.push(`config         not runnable: ${configError}`);
  }
  out.push('');
  out.push('tensor types');
  for (const [name, e] of [...types].sort((a, b) => b[1].bytes - a[1].bytes)) {
    out.push(`  ${name.padEnd(8)} ${String(e.count).padStart(5)} tensors  ${formatBytes(e.bytes).padStart(10)}`);
  }
  out.push(`  ${'total'.padEnd(8)} ${String(gguf.tensors.length).padStart(5)} tensors  ${formatBytes(totalTensorBytes).padStart(10)}`);
  out.push('');
  out.push(`metadata (${gguf.metadata.size} keys)`);
  const keyWidth = Math.min(44, Math.max(...[...gguf.metadata.keys()].map((k) => k.length), 0));
  for (const [key, value] of gguf.metadata) {
    const label = typeLabel(gguf, key);
    out.push(`  ${key.padEnd(keyWidth)}  ${label.padEnd(9)} ${preview(value, gguf.typeOf(key))}`);
  }
  out.push('');
  out.push(...tensorTable(gguf.tensors, !p.flags.get('all-tensors') && gguf.tensors.length > COMPACT_TENSORS));
  process.stdout.write(out.join('\n') + '\n');
}

/** The architecture's particulars, as the forward pass will run them. */
function ropeLine(c: LlamaConfig, freqFactors: boolean): string {
  const parts = [`${c.ropeMode} mode`, `base ${c.ropeBase}`];
  if (freqFactors) parts.push('frequency factors (rope_freqs.weight)');
  if (c.ropeBaseLocal !== c.ropeBase) parts.push(`local layers base ${c.ropeBaseLocal}`);
  if (c.ropeScale !== 1) parts.push(`linear scaling ×${1 / c.ropeScale}${c.window.some((w) => w > 0) ? ' (global layers)' : ''}`);
  if (c.nRot < c.headDim) parts.push(`partial: ${c.nRot} of ${c.headDim} dims`);
  return parts.join(', ');
}

function attentionLine(c: LlamaConfig): string {
  const local = c.window.map((w, l) => (w > 0 ? l : -1)).filter((l) => l >= 0);
  const parts = [`scale 1/√${c.headDim}`];
  if (local.length) parts.push(`sliding window ${c.window[local[0]]} on ${local.length} of ${c.nLayers} layers (global: ${c.window.map((w, l) => (w ? '' : l)).filter((x) => x !== '').join(' ') || 'none'})`);
  else parts.push('full causal on every layer');
  if (c.attnSoftcap) parts.push(`score soft-cap ${c.attnSoftcap}`);
  if (c.finalSoftcap) parts.push(`final-logit soft-cap ${c.finalSoftcap}`);
  return parts.join(', ');
}

function blockLine(c: LlamaConfig, biases: boolean): string {
  const a = c.arch;
  const steps = [a.fusedQKV ? 'fused qkv' : 'q/k/v', biases ? 'q/k/v biases' : '', a.qkNorm ? 'q/k head norms' : '',
    a.postNorms ? 'post-attention/FFN norms' : '', a.fusedGateUp ? 'fused gate+up' : '', a.ffnActivation === 'gelu' ? 'GELU-tanh FFN' : 'SiLU FFN',
    a.scaleEmbedding ? 'embedding ×√dim' : ''];
  return steps.filter(Boolean).join(', ');
}

function typeLabel(gguf: GGUFFile, key: string): string {
  const t = gguf.typeOf(key);
  if (!t) return '?';
  return t.type === GGUFValueType.ARRAY ? `[${valueTypeName(t.arrayType ?? -1)}]` : valueTypeName(t.type);
}

function isArray(v: GGUFValue): v is Exclude<GGUFValue, string | number | bigint | boolean> {
  return Array.isArray(v) || ArrayBuffer.isView(v);
}

function preview(v: GGUFValue, type?: GGUFValueTypeInfo): string {
  if (isArray(v)) {
    const items = Array.from(v as ArrayLike<GGUFValue>);
    const element = type?.arrayType;
    if (items.length > SHORT_ARRAY) return `[${items.length} × ${element !== undefined ? valueTypeName(element) : 'value'}]`;
    return clip(`[${items.map((x) => preview(x, element !== undefined ? { type: element } : undefined)).join(', ')}]`);
  }
  if (typeof v === 'string') return clip(JSON.stringify(v));
  if (typeof v === 'number' && type?.type === GGUFValueType.FLOAT32) return f32(v);
  return String(v);
}

/** An f32 widened to f64 prints as 0.000009999999747378752; 7 significant digits say what the file meant (1e-5). */
function f32(v: number): string {
  return String(Number(v.toPrecision(7)));
}

function clip(s: string): string {
  return s.length > PREVIEW_CHARS ? `${s.slice(0, PREVIEW_CHARS - 1)}… (${s.length} chars)` : s;
}

/** JSON keeps scalars whole (bigints as numbers when safe) and summarizes long arrays like the text report does. */
function jsonValue(v: GGUFValue, label?: string): unknown {
  if (isArray(v)) {
    const items = Array.from(v as ArrayLike<GGUFValue>);
    if (items.length > SHORT_ARRAY) return `[${items.length} × ${label?.slice(1, -1) ?? 'value'}]`;
    return items.map((x) => jsonValue(x));
  }
  if (typeof v === 'bigint') return Number.isSafeInteger(Number(v)) ? Number(v) : v.toString();
  return v;
}

function tensorTable(tensors: TensorInfo[], compact: boolean): string[] {
  type Row = { name: string; type: string; dims: string; bytes: number; count: number };
  const rows: Row[] = [];
  const row = (t: TensorInfo, name = t.name, count = 1): Row => ({ name, type: t.typeName, dims: `[${t.dims.join(', ')}]`, bytes: t.byteSize * count, count });
  if (compact) {
    // Group blk.N.<rest> by <rest>: one row per kind of layer tensor when every layer agrees on type and shape.
    const groups = new Map<string, { layers: number[]; tensors: TensorInfo[] }>();
    const order: (TensorInfo | string)[] = [];
    for (const t of tensors) {
      const m = /^blk\.(\d+)\.(.+)$/.exec(t.name);
      if (!m) {
        order.push(t);
        continue;
      }
      let g = groups.get(m[2]);
      if (!g) {
        groups.set(m[2], (g = { layers: [], tensors: [] }));
        order.push(m[2]);
      }
      g.layers.push(Number(m[1]));
      g.tensors.push(t);
    }
    for (const item of order) {
      if (typeof item !== 'string') {
        rows.push(row(item));
        continue;
      }
      const g = groups.get(item)!;
      const first = g.tensors[0];
      const uniform = g.tensors.every((t) => t.type === first.type && t.dims.join() === first.dims.join());
      if (uniform) rows.push(row(first, `blk.{${layerRange(g.layers)}}.${item}`, g.tensors.length));
      else for (const t of g.tensors) rows.push(row(t));
    }
  } else {
    for (const t of tensors) rows.push(row(t));
  }
  const nameWidth = Math.max(4, ...rows.map((r) => r.name.length));
  const dimsWidth = Math.max(4, ...rows.map((r) => r.dims.length));
  const out = [`tensors (${tensors.length}${compact ? ', per-layer tensors grouped; --all-tensors lists each' : ''})`];
  out.push(`  ${'name'.padEnd(nameWidth)}  ${'type'.padEnd(7)} ${'dims'.padEnd(dimsWidth)}  ${(compact ? 'total bytes' : 'bytes').padStart(12)}${compact ? '  count' : ''}`);
  for (const r of rows) {
    out.push(`  ${r.name.padEnd(nameWidth)}  ${r.type.padEnd(7)} ${r.dims.padEnd(dimsWidth)}  ${String(r.bytes).padStart(12)}${compact ? `  ${r.count > 1 ? `× ${r.count}` : ''}` : ''}`);
  }
  return out;
}

/** [0,1,2,3,5] → "0-3,5" */
function layerRange(layers: number[]): string {
  const s = [...layers].sort((a, b) => a - b);
  const parts: string[] = [];
  for (let i = 0; i < s.length; ) {
    let j = i;
    while (j + 1 < s.length && s[j + 1] === s[j] + 1) j++;
    parts.push(j > i ? `${s[i]}-${s[j]}` : `${s[i]}`);
    i = j + 1;
  }
  return parts.join(',');
}

function formatCount(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}K`;
  return String(n);
}

// ───────────────────────────── cache ─────────────────────────────

/** --cache-dir wins over EDGELLM_CACHE, and reaches every cache this process opens (the loader's default one too). */
function useCacheDir(p: Parsed): void {
  const dir = p.flags.get('cache-dir') as string | undefined;
  if (dir !== undefined) process.env.EDGELLM_CACHE = dir;
}

const CACHE_FLAGS: FlagSpec[] = [
  { name: 'cache-dir', kind: 'string' },
  { name: 'json', kind: 'bool' },
];

async function cacheCommand(p: Parsed): Promise<void> {
  const [action, ...rest] = p.positionals;
  const args = (names: string[]) => positionals({ ...p, positionals: rest }, names, 'cache');
  useCacheDir(p);
  const cache = await openModelCache();
  const { where } = cache;
  if (action === 'ls' || action === 'list') {
    args([]);
    const entries = await cache.list();
    if (p.flags.get('json')) process.stdout.write(JSON.stringify(entries) + '\n');
    else if (entries.length) process.stdout.write(cacheTable(entries) + '\n');
    const total = entries.reduce((n, e) => n + e.downloaded, 0);
    stderr(`${entries.length} cached model${entries.length === 1 ? '' : 's'}, ${formatBytes(total)} in ${where}`);
  } else if (action === 'rm' || action === 'remove') {
    const [name] = args(['NAME or URL']);
    const n = await cache.remove(name);
    if (n === 0) throw new EdgeLLMError('BAD_ARGUMENT', `no cached model is named ${JSON.stringify(name)} in ${where} (see \`edgellm cache ls\`)`);
    stderr(`removed ${n} cached model${n === 1 ? '' : 's'} from ${where}`);
  } else if (action === 'clear') {
    args([]);
    const n = await cache.clear();
    stderr(`removed ${n} cached model${n === 1 ? '' : 's'} from ${where}`);
  } else {
    throw new UsageError(action === undefined ? 'missing ls, rm or clear' : `unknown cache command ${JSON.stringify(action)}`, 'cache');
  }
}

function cacheTable(entries: CacheEntry[]): string {
  const rows = entries.map((e) => [
    e.key,
    e.size ? formatBytes(e.size) : '?',
    e.complete ? 'yes' : `no, ${e.size ? `${Math.floor((100 * e.downloaded) / e.size)}%` : formatBytes(e.downloaded)}`,
    e.url || '(unreadable record)',
  ]);
  const head = ['NAME', 'SIZE', 'COMPLETE', 'URL'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  return [head, ...rows].map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('  ')).join('\n');
}

// ───────────────────────────── main ─────────────────────────────

/** `interrupts`: the command handles Ctrl-C itself (chat stops a reply, not the program). */
const COMMANDS: Record<string, { flags: FlagSpec[]; run: (p: Parsed, c: AbortController) => Promise<void>; interrupts?: boolean }> = {
  run: { flags: RUN_FLAGS, run },
  chat: { flags: CHAT_FLAGS, run: chat, interrupts: true },
  tokenize: { flags: TOKENIZE_FLAGS, run: tokenize },
  perplexity: { flags: PPL_FLAGS, run: perplexity },
  info: { flags: INFO_FLAGS, run: info },
  cache: { flags: CACHE_FLAGS, run: cacheCommand },
};

async function main(argv: string[]): Promise<number> {
  const [first, ...rest] = argv;
  if (first === undefined || first === '-h' || first === '--help') {
    process.stdout.write(USAGE + '\n');
    return first === undefined ? 2 : 0;
  }
  if (first === '--version' || first === '-v') {
    process.stdout.write(version() + '\n');
    return 0;
  }
  if (first === 'help') {
    const topic = rest[0];
    if (topic !== undefined && !HELP[topic]) throw new UsageError(`unknown command ${JSON.stringify(topic)}`);
    process.stdout.write((topic ? HELP[topic] : USAGE) + '\n');
    return 0;
  }
  const command = COMMANDS[first];
  if (!command) throw new UsageError(first.startsWith('-') ? `unknown option ${first}` : `unknown command ${JSON.stringify(first)}`);
  const parsed = parseArgs(rest, command.flags, first);
  if (parsed.flags.get('help')) {
    process.stdout.write(HELP[first] + '\n');
    return 0;
  }
  const controller = command.interrupts ? new AbortController() : interruptible();
  try {
    await command.run(parsed, controller);
  } catch (err) {
    if (controller.signal.aborted) {
      stderr('edgellm: interrupted');
      return 130;
    }
    throw err;
  }
  return 0;
}

function report(err: unknown): number {
  const debug = process.env.EDGELLM_DEBUG === '1';
  if (err instanceof UsageError) {
    const help = err.command ? `edgellm ${err.command} --help` : 'edgellm --help';
    stderr(`edgellm: error [USAGE]: ${err.message} (see \`${help}\`)`);
    return 2;
  }
  const code = err instanceof EdgeLLMError ? err.code : 'INTERNAL';
  const message = err instanceof Error ? err.message : String(err);
  stderr(`edgellm: error [${code}]: ${oneLine(message)}`);
  if (debug && err instanceof Error && err.stack) stderr(err.stack);
  return 1;
}

function oneLine(s: string): string {
  return s.replace(/\s*\n\s*/g, ' ');
}

// `edgellm … | head` closes stdout early: that is the reader's choice, not an error.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(0);
  throw err;
});

main(process.argv.slice(2)).then(
  (code) => {
    // exitCode, not exit(): let buffered stdout drain first.
    process.exitCode = code;
  },
  (err) => {
    process.exitCode = report(err);
  },
);
