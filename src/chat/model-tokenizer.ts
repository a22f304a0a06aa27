/**
 * The text side of a model, from its GGUF header alone: the tokenizer and the chat template. `loadTokenizer` returns
 * one (no weights read, so a vocab-only GGUF works), and every Model holds one.
 */
import { EdgeLLMError } from '../errors.js';
import type { GGUFFile } from '../gguf/reader.js';
import { Tokenizer } from '../tokenizer/index.js';
import { applyChatTemplate, requireChatTemplate, type ChatMessage, type ChatTemplateOptions } from './template.js';

export interface TokenizeOptions {
  /** Prepend BOS (default: as the vocabulary says, `tokenizer.ggml.add_bos_token`). */
  bos?: boolean;
  /** Append EOS (default: as the vocabulary says). */
  eos?: boolean;
  /**
   * Turn the text of control and user-defined tokens (`<|im_start|>`, `<|eot_id|>`, `<start_of_turn>`, ...) into
   * their ids. Off by default: text from a user must never become a control token.
   */
  special?: boolean;
}

export interface DetokenizeOptions {
  /** Render control tokens as their text (default: they add nothing, as in generated text). */
  special?: boolean;
}

/** Options of Model.applyChatTemplate and of the chat calls. */
export interface ChatFormatOptions extends Omit<ChatTemplateOptions, 'bosToken' | 'eosToken'> {
  /** A Jinja chat template to use instead of the file's `tokenizer.chat_template`. */
  template?: string;
}

export interface TokenizerInfo {
  /** `tokenizer.ggml.model`: 'llama' (SentencePiece), 'gpt2' (byte-level BPE), ... */
  model: string;
  /** `tokenizer.ggml.pre`, the pre-tokenizer of a BPE vocabulary */
  pre: string | undefined;
  vocabSize: number;
  bos: number;
  eos: number;
  addBos: boolean;
  /** every id that ends generation (eos, eot, eom, <|im_end|>, <end_of_turn>, ...) */
  eog: number[];
  /** whether the file carries `tokenizer.chat_template` */
  chatTemplate: boolean;
}

const CHAT_TEMPLATE = 'tokenizer.chat_template';

export class ModelTokenizer {
  readonly info: TokenizerInfo;

  constructor(
    readonly tokenizer: Tokenizer,
    /** the file's `tokenizer.chat_template`, if any */
    readonly chatTemplate: string | undefined,
  ) {
    this.info = {
      model: tokenizer.model,
      pre: tokenizer.pre,
      vocabSize: tokenizer.vocabSize,
      bos: tokenizer.bos,
      eos: tokenizer.eos,
      addBos: tokenizer.addBos,
      eog: [...tokenizer.eogIds],
      chatTemplate: chatTemplate !== undefined,
    };
  }

  static fromGGUF(gguf: GGUFFile): ModelTokenizer {
    let template: string | undefined;
    if (gguf.has(CHAT_TEMPLATE)) {
      const value = gguf.get(CHAT_TEMPLATE);
      if (typeof value !== 'string') throw new EdgeLLMError('BAD_METADATA', `${CHAT_TEMPLATE} is not a string`);
      template = value;
    }
    return new ModelTokenizer(Tokenizer.fromGGUF(gguf), template);
  }

  tokenize(text: string, opts: TokenizeOptions = {}): number[] {
    if (typeof text !== 'string') throw new EdgeLLMError('BAD_ARGUMENT', `tokenize needs a string, got ${typeof text}`);
    return this.tokenizer.encode(text, opts);
  }

  detokenize(ids: ArrayLike<number>, opts: DetokenizeOptions = {}): string {
    return this.tokenizer.decode(ids, { special: opts.special });
  }

  /**
   * Renders messages with the chat template (the file's, or `opts.template`), as transformers' apply_chat_template
   * does, with the vocabulary's own BOS and EOS texts. A generation prompt is added unless
   * `addGenerationPrompt: false`.
   */
  applyChatTemplate(messages: ChatMessage[], opts: ChatFormatOptions = {}): string {
    const { template, ...rest } = opts;
    const t = this.tokenizer;
    // A vocabulary without BOS or EOS (id −1) gives the template an empty string, as a missing special token does.
    const text = (id: number) => (id >= 0 ? t.tokenText(id) : '');
    return applyChatTemplate(requireChatTemplate(template ?? this.chatTemplate), messages, { ...rest, bosToken: text(t.bos), eosToken: text(t.eos) });
  }

  /**
   * The ids of a rendered conversation: special-token text in the render becomes control tokens (the template wrote
   * it, not a user), and BOS is added only where the vocabulary wants one and the template did not already write it,
   * so Llama 3's `{{ bos_token }}` does not give two.
   */
  chatIds(messages: ChatMessage[], opts: ChatFormatOptions = {}): number[] {
    const text = this.applyChatTemplate(messages, opts);
    const t = this.tokenizer;
    const ids = t.encode(text, { bos: false, eos: false, special: true });
    if (t.addBos && t.bos >= 0 && ids[0] !== t.bos) ids.unshift(t.bos);
    return ids;
  }
}

/**
 * Splits the options of a chat call into how to render the conversation (with a generation prompt; unset fields from
 * `defaults`) and the rest, which are generate's.
 */
export function splitChatOptions<T extends ChatFormatOptions>(opts: T, defaults: ChatFormatOptions = {}): { format: ChatFormatOptions; rest: Omit<T, keyof ChatFormatOptions> } {
  const { template = defaults.template, tools = defaults.tools, now = defaults.now, variables = defaults.variables, addGenerationPrompt: _, ...rest } = opts;
  return { format: { template, tools, now, variables, addGenerationPrompt: true }, rest };
}
