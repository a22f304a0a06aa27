// Chat sessions and KV prefix reuse on real models: a reused prefix (with the cache cut back inside the tail, inside
// sealed pages, or into warm pages) gives the same tokens as a fresh model; a 5-turn session on sotu-15m prefills only
// each turn's new tokens and replies exactly as a fresh render of the whole conversation does.
import { beforeAll, describe, expect, it } from 'vitest';
import { loadModel, EdgeLLMError, type ChatMessage, type GenerationStats, type LoadOptions, type Model } from '../src/index.js';
import { announceSkipIfNoModels, modelPath } from './util/shared.js';

const have = announceSkipIfNoModels('chat sessions and KV prefix reuse (test/session.test.ts)');
const TINY = modelPath('tiny-260k-q8_0.gguf');
const SOTU = modelPath('sotu-15m-q8_0.gguf');

/** sotu-15m is a base model with no template; a plain transcript format of our own. */
// The reply is rendered right after "Assistant:", as it was generated, so the conversation re-renders to the tokens the
// cache holds.
const TEMPLATE =
  "{% for m in messages %}{% if m.role == 'system' %}{{ m.content }}\n\n{% elif m.role == 'assistant' %}Assistant:{{ m.content }}\n" +
  "{% else %}{{ m.role | capitalize }}: {{ m.content }}\n{% endif %}{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}";

async function run(model: Model, prompt: number[] | string, maxTokens: number): Promise<{ ids: number[]; text: string; stats: GenerationStats }> {
  const ids: number[] = [];
  let text = '';
  let stats: GenerationStats | undefined;
  for await (const chunk of model.generate(prompt, { maxTokens, onToken: (id) => ids.push(id), onStats: (s) => (stats = s) })) text += chunk;
  return { ids, text, stats: stats! };
}

function commonPrefix(a: number[], b: number[]): number {
  let n = 0;
  while (n < a.length && n < b.length && a[n] === b[n]) n++;
  return n;
}

describe.skipIf(!have)('KV prefix reuse gives the tokens of a fresh model', () => {
  // Pages of 4 tokens, so the cuts below land in the tail, in sealed pages and on page starts.
  const configs: [string, LoadOptions][] = [
    ['f32', { kv: { pageTokens: 4 } }],
    ['int8', { kv: { type: 'int8', pageTokens: 4 } }],
    ['int4', { kv: { type: 'int4', pageTokens: 4 } }],
    ['int8 tiered (hot pages few, the rest warm)', { kv: { type: 'int8', pageTokens: 4, hotBytes: '112KB', warmBytes: '1MB' } }],
    ['f16 sparse', { kv: { type: 'f16', pageTokens: 4 }, attention: { mode: 'sparse', topKPages: 2, windowTokens: 8, sinkTokens: 4 } }],
  ];
  for (const [name, options] of configs) {
    it(name, async () => {
      const reused = await loadModel(TINY, { ...options, batchSize: 8 });
      const fresh = await loadModel(TINY, { ...options, batchSize: 8 });
      const base = reused.tokenize('Once upon a time, there was a little girl named Lily. She loved to play');
      const first = await run(reused, base, 24);
      if (options.kv?.warmBytes) expect(reused.memory().kv.warmPagesInUse, 'pages went warm').toBeGreaterThan(0);
      // Cut at every kind of place: the last token, inside the last page, page starts, sealed pages, the start.
      const history = [...base, ...first.ids];
      for (const keep of [history.length - 1, history.length - 3, 24, 17, 12, 5, 1, 0]) {
        const prompt = [...history.slice(0, keep), ...reused.tokenize(' and the dog', { bos: false })];
        const a = await run(reused, prompt, 12);
        const b = await run(fresh, prompt, 12);
        expect(a.ids, `keep ${keep}`).toEqual(b.ids);
        expect(a.stats.cachedTokens, `keep ${keep}`).toBeLessThanOrEqual(keep);
        expect(a.stats.cachedTokens + a.stats.prefilledTokens).toBe(prompt.length);
        // Never more than a page (4 tokens) short of what is shared.
        expect(a.stats.cachedTokens, `keep ${keep}`).toBeGreaterThanOrEqual(Math.min(keep, history.length) - 4);
        history.splice(0, history.length, ...prompt, ...a.ids);
      }
      // evaluate() starts from scratch and leaves its own ids cached.
      await reused.evaluate(base);
      const again = await run(reused, [...base, ...first.ids.slice(0, 3)], 5);
      expect(again.stats.cachedTokens).toBe(base.length);
      expect(reused.memory().kv.hotPagesInUse).toBeLessThanOrEqual(reused.memory().kv.hotPageSlots);
    });
  }
});

describe.skipIf(!have)('chat sessions on sotu-15m', () => {
  let model: Model, fresh: Model;
  beforeAll(async () => {
    model = await loadModel(SOTU, { contextLength: 1024, kv: { type: 'int8' } });
    fresh = await loadModel(SOTU, { contextLength: 1024, kv: { type: 'int8' } });
  });

  it('5 turns: each prefills only its new tokens, and replies as a fresh render of the whole conversation', async () => {
    const session = model.session({ system: 'The President addresses the Congress.', template: TEMPLATE });
    const questions = [
      'What is the state of the Union?',
      'How are the finances of the government?',
      'What of the army and the navy?',
      'And the Indian tribes?',
      'What do you recommend to Congress?',
    ];
    let previous: number[] = [];
    const report: string[] = [];
    for (const [turn, question] of questions.entries()) {
      const before = session.messages;
      const replyIds: number[] = [];
      let reply = '';
      for await (const chunk of session.send(question, { maxTokens: 16, onToken: (id) => replyIds.push(id) })) reply += chunk;
      const stats = session.stats!;

      // The same conversation rendered fresh, on a model that has cached nothing of it.
      const messages: ChatMessage[] = [...before, { role: 'user', content: question }];
      const freshIds: number[] = [];
      let freshReply = '';
      for await (const chunk of fresh.chat(messages, { template: TEMPLATE, maxTokens: 16, onToken: (id) => freshIds.push(id) })) freshReply += chunk;
      // fresh.chat may itself reuse its previous turn's prefix: what matters is that the tokens agree.
      expect(replyIds, `turn ${turn + 1}`).toEqual(freshIds);
      expect(reply).toBe(freshReply);

      // What the model saw this turn, and what its cache held from the last: only the difference is prefilled.
      const ids = model.text.chatIds(messages, { template: TEMPLATE });
      expect(stats.promptTokens).toBe(ids.length);
      // The whole cache is reused: the conversation re-renders to the tokens it holds, and only the rest is prefilled.
      expect(commonPrefix(previous, ids), `turn ${turn + 1}`).toBe(previous.length);
      expect(stats.cachedTokens).toBe(previous.length);
      expect(stats.prefilledTokens, `turn ${turn + 1}`).toBe(ids.length - previous.length);
      if (turn > 0) expect(stats.cachedTokens).toBeGreaterThan(stats.prefilledTokens);
      previous = [...ids, ...replyIds];
      // The last token was never run through the model unless an end-of-generation token followed it.
      if (stats.stopReason !== 'eos') previous.pop();
      report.push(`turn ${turn + 1}: prompt ${stats.promptTokens}, cached ${stats.cachedTokens}, prefilled ${stats.prefilledTokens}`);

      const history = session.messages;
      expect(history.at(-2)).toEqual({ role: 'user', content: question });
      expect(history.at(-1)).toEqual({ role: 'assistant', content: reply });
    }
    console.log(`session on sotu-15m: ${report.join('; ')}`);
  });

  it('a full context is CONTEXT_FULL and leaves the conversation as it was; drop-oldest drops turns instead', async () => {
    const small = await loadModel(SOTU, { contextLength: 96 });
    const long = 'The revenues of the Treasury have exceeded the estimates of the last year. '.repeat(2);
    const strict = small.session({ template: TEMPLATE });
    for await (const _ of strict.send(long, { maxTokens: 8 }));
    let err: unknown;
    try {
      for await (const _ of strict.send(long + long, { maxTokens: 8 }));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(EdgeLLMError);
    expect((err as EdgeLLMError).code).toBe('CONTEXT_FULL');
    expect(strict.messages).toHaveLength(2);

    const rolling = small.session({ system: 'Congress.', template: TEMPLATE, overflow: 'drop-oldest' });
    for (let turn = 0; turn < 4; turn++) {
      for await (const _ of rolling.send(long, { maxTokens: 8 }));
      expect(rolling.stats!.promptTokens + 8).toBeLessThanOrEqual(96);
    }
    expect(rolling.stats!.droppedMessages).toBeGreaterThan(0);
    expect(rolling.messages[0]).toEqual({ role: 'system', content: 'Congress.' });
    expect(rolling.messages.at(-2)).toEqual({ role: 'user', content: long });
  });

  it('a stopped reply stays in the conversation as far as it got', async () => {
    const session = model.session({ template: TEMPLATE });
    const controller = new AbortController();
    let got = '';
    let err: unknown;
    try {
      for await (const chunk of session.send('Speak of the harvest.', { maxTokens: 40, signal: controller.signal })) {
        got += chunk;
        if (got.length > 5) controller.abort();
      }
    } catch (e) {
      err = e;
    }
    expect((err as EdgeLLMError).code).toBe('ABORTED');
    expect(session.messages.at(-1)).toEqual({ role: 'assistant', content: got });
  });

  it('a model without a template: NO_TEMPLATE, unless one is passed', async () => {
    let err: unknown;
    try {
      model.session();
    } catch (e) {
      err = e;
    }
    expect((err as EdgeLLMError).code).toBe('NO_TEMPLATE');
    expect(() => model.applyChatTemplate([{ role: 'user', content: 'hi' }])).toThrow(/no chat template/);
    expect(model.applyChatTemplate([{ role: 'user', content: 'hi' }], { template: TEMPLATE })).toBe('User: hi\nAssistant:');
  });
});
