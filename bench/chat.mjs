// What a chat session's KV reuse saves: a conversation of --turns turns, each turn's prompt prefilled by a session
// (only the tokens its cache lacks) and by a model made to start over every turn (the whole rendered conversation), on
// the same file, greedy, the same replies. Prints per-turn prompt tokens, tokens prefilled and prefill ms, both ways.
//   npm run bench -- --chat MODEL.gguf [--turns 6] [--reply 32] [--ctx 2048]
// Uses the built package (dist/): run `npm run build` first. A model without a chat template gets a plain transcript.
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { loadModel } = await import(pathToFileURL(path.join(ROOT, 'dist/index.js')).href);

const TRANSCRIPT =
  "{% for m in messages %}{% if m.role == 'assistant' %}Assistant:{{ m.content }}\n{% else %}{{ m.role | capitalize }}: {{ m.content }}\n" +
  "{% endif %}{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}";
const QUESTIONS = [
  'What is the state of the Union?',
  'How are the finances of the government?',
  'What of the army and the navy?',
  'What of commerce with foreign nations?',
  'And the public lands?',
  'What do you recommend to the Congress?',
  'Is the Union at peace?',
  'Thank you, Mr. President.',
];

function parseArgs(argv) {
  const o = { model: undefined, turns: 6, reply: 32, ctx: 2048 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--turns') o.turns = Number(argv[++i]);
    else if (a === '--reply') o.reply = Number(argv[++i]);
    else if (a === '--ctx') o.ctx = Number(argv[++i]);
    else if (!a.startsWith('-') && o.model === undefined) o.model = a;
    else {
      console.error(`usage: npm run bench -- --chat MODEL.gguf [--turns N] [--reply N] [--ctx N] (unexpected ${a})`);
      process.exit(2);
    }
  }
  if (!o.model) o.model = path.resolve(ROOT, '../shared/models/sotu-15m-q8_0.gguf');
  return o;
}

const o = parseArgs(process.argv.slice(2));
const session = await loadModel(o.model, { contextLength: o.ctx });
const fresh = await loadModel(o.model, { contextLength: o.ctx });
const template = session.info.tokenizer.chatTemplate ? undefined : TRANSCRIPT;
const chat = session.session({ template, overflow: 'error' });
const rows = [];
for (let turn = 0; turn < o.turns; turn++) {
  const question = QUESTIONS[turn % QUESTIONS.length];
  const messages = [...chat.messages, { role: 'user', content: question }];
  let a = '';
  for await (const chunk of chat.send(question, { maxTokens: o.reply })) a += chunk;
  const s = chat.stats;
  // Start over: a one-token evaluate leaves nothing of the conversation cached (BOS at most).
  await fresh.evaluate([fresh.info.tokenizer.bos]);
  let f;
  let b = '';
  for await (const chunk of fresh.chat(messages, { template, maxTokens: o.reply, onStats: (x) => (f = x) })) b += chunk;
  if (a !== b) throw new Error(`turn ${turn + 1}: the session's reply differs from the fresh one`);
  rows.push({ turn: turn + 1, prompt: s.promptTokens, session: [s.prefilledTokens, s.prefillMs], fresh: [f.prefilledTokens, f.prefillMs] });
}
const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
console.log(`chat session vs starting over, ${path.basename(o.model)}, ${o.reply}-token replies, ${cpu}, Node ${process.versions.node}, ${session.info.build} build`);
console.log('turn  prompt  session: prefilled   ms  | fresh: prefilled   ms');
let sms = 0, fms = 0;
for (const r of rows) {
  sms += r.session[1];
  fms += r.fresh[1];
  console.log(`${String(r.turn).padStart(4)}  ${String(r.prompt).padStart(6)}  ${String(r.session[0]).padStart(17)} ${r.session[1].toFixed(1).padStart(6)}  | ${String(r.fresh[0]).padStart(15)} ${r.fresh[1].toFixed(1).padStart(6)}`);
}
console.log(`total prefill: session ${sms.toFixed(0)} ms, fresh ${fms.toFixed(0)} ms (${(fms / sms).toFixed(1)}x)`);
