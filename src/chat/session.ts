/**
 * A conversation that keeps its KV cache between turns. Each turn renders the whole conversation with the chat
 * template and tokenizes it; the model reuses the KV of the longest prefix it already holds (Model's cached prefix),
 * so only the new tokens are prefilled, and the reply is the one a fresh render of the same conversation would get.
 * Re-rendering, rather than appending token ids, keeps what the template does to history (Qwen3 drops earlier turns'
 * reasoning, for example) exactly as the template says.
 */
import { EdgeLLMError } from '../errors.js';
import type { GenerateOptions, GenerationStats } from '../generate/generate.js';
import { splitChatOptions, type ChatFormatOptions, type ModelTokenizer } from './model-tokenizer.js';
import { requireChatTemplate, type ChatMessage } from './template.js';

export type ChatOptions = GenerateOptions & ChatFormatOptions;

export interface SessionOptions extends ChatFormatOptions {
  /** A system message to start the conversation with. */
  system?: string;
  /** Earlier messages to start from (after the system message, if both are given). */
  messages?: ChatMessage[];
  /**
   * When a turn does not fit the context: 'error' (default) fails with CONTEXT_FULL and leaves the conversation as it
   * was; 'drop-oldest' drops the oldest turns (never the system message or the new one) until the prompt and room
   * for the reply fit.
   */
  overflow?: 'error' | 'drop-oldest';
}

/** What a session needs of its model; Model provides it. */
export interface SessionHost {
  readonly text: ModelTokenizer;
  readonly contextLength: number;
  generate(prompt: number[], opts: GenerateOptions): AsyncIterable<string>;
}

export interface TurnStats extends GenerationStats {
  /** messages dropped from the start of the conversation (after the system message) to make this turn fit */
  droppedMessages: number;
}

/** Reply room kept when dropping old turns: maxTokens, at most half the context. */
const DEFAULT_REPLY_ROOM = 256;

export class ChatSession {
  private readonly history: ChatMessage[] = [];
  private readonly overflow: 'error' | 'drop-oldest';
  private readonly format: ChatFormatOptions;
  private last: TurnStats | undefined;

  constructor(
    private readonly model: SessionHost,
    opts: SessionOptions = {},
  ) {
    const { system, messages = [], overflow = 'error', ...format } = opts;
    if (overflow !== 'error' && overflow !== 'drop-oldest') {
      throw new EdgeLLMError('BAD_ARGUMENT', `overflow must be 'error' or 'drop-oldest', got ${JSON.stringify(overflow)}`);
    }
    this.overflow = overflow;
    this.format = format;
    if (system !== undefined) this.history.push({ role: 'system', content: system });
    this.history.push(...messages.map((m) => ({ ...m })));
    // Fail now, not at the first turn, if there is no template to render with.
    requireChatTemplate(format.template ?? model.text.chatTemplate);
  }

  /** The conversation so far (copies). */
  get messages(): ChatMessage[] {
    return this.history.map((m) => ({ ...m }));
  }

  /** Timings and token counts of the last turn: promptTokens, cachedTokens, prefilledTokens, generatedTokens, ... */
  get stats(): TurnStats | undefined {
    return this.last && { ...this.last };
  }

  /**
   * Sends a user message (or any message) and streams the assistant's reply, which joins the conversation once it
   * ends. A reply stopped by its signal joins it as far as it got; a turn that fails otherwise leaves no trace.
   */
  send(message: string | ChatMessage, opts: ChatOptions = {}): AsyncIterable<string> {
    const session = this;
    return {
      async *[Symbol.asyncIterator]() {
        yield* session.turn(typeof message === 'string' ? { role: 'user', content: message } : { ...message }, opts);
      },
    };
  }

  private async *turn(message: ChatMessage, opts: ChatOptions): AsyncGenerator<string> {
    const { format, rest: generateOptions } = splitChatOptions(opts, this.format);
    const conversation = [...this.history, message];
    const { ids, kept, dropped } = this.fit(conversation, format, generateOptions.maxTokens);
    let reply = '';
    let stats: GenerationStats | undefined;
    let aborted = false;
    try {
      for await (const chunk of this.model.generate(ids, { ...generateOptions, onStats: (s) => ((stats = s), generateOptions.onStats?.(s)) })) {
        reply += chunk;
        yield chunk;
      }
    } catch (err) {
      aborted = err instanceof EdgeLLMError && err.code === 'ABORTED';
      if (!aborted) throw err;
    } finally {
      // A consumer that stops iterating early also ends the turn with what it got.
      if (aborted || stats !== undefined || reply !== '') {
        this.history.length = 0;
        this.history.push(...kept, { role: 'assistant', content: reply });
        if (stats) this.last = { ...stats, droppedMessages: dropped };
      }
    }
    if (aborted) throw new EdgeLLMError('ABORTED', 'the reply was stopped by its AbortSignal; the conversation keeps the part generated');
  }

  /** The ids of the conversation, after dropping the oldest turns if allowed and needed. */
  private fit(conversation: ChatMessage[], format: ChatFormatOptions, maxTokens: number | undefined): { ids: number[]; kept: ChatMessage[]; dropped: number } {
    const ctx = this.model.contextLength;
    const room = Math.min(maxTokens ?? DEFAULT_REPLY_ROOM, Math.floor(ctx / 2));
    const nonSystem = conversation.findIndex((m) => m.role !== 'system');
    const first = nonSystem < 0 ? conversation.length - 1 : nonSystem;
    const last = conversation.length - 1; // the new message, never dropped
    let dropped = 0;
    for (;;) {
      const kept = [...conversation.slice(0, first), ...conversation.slice(first + dropped)];
      const ids = this.model.text.chatIds(kept, format);
      if (this.overflow === 'drop-oldest' && ids.length + room > ctx && first + dropped < last) {
        // One turn: the oldest message and what follows it up to the next user message.
        let next = first + dropped + 1;
        while (next < last && conversation[next].role !== 'user') next++;
        dropped = next - first;
        continue;
      }
      if (ids.length >= ctx) {
        throw new EdgeLLMError(
          'CONTEXT_FULL',
          `the conversation is ${ids.length} tokens; the context holds ${ctx}` +
            (this.overflow === 'error' ? " (start a new session, or create it with overflow: 'drop-oldest')" : ', even with every earlier turn dropped'),
        );
      }
      return { ids, kept, dropped };
    }
  }
}
