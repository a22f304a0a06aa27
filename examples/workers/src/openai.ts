/**
 * OpenAI's Chat Completions API on the worker's one model, so that OpenAI's own client libraries (and the tools built
 * on them) work pointed at `baseURL: "https://<worker>/v1"`:
 *
 *   POST /v1/chat/completions  messages → the chat template → the model. A `chat.completion` object, or with
 *                              "stream": true server-sent events: `data: {chat.completion.chunk}` (the role, then the
 *                              text as it is generated, then finish_reason, then the usage if
 *                              stream_options.include_usage), then `data: [DONE]`.
 *   GET  /v1/models[/{id}]     the one model, named MODEL_ID (clients list models to check a key or fill a menu).
 *
 * The chat template is the CHAT_TEMPLATE var when set (a Jinja string, as transformers' tokenizer_config.json has it;
 * build.mjs --chat-template FILE embeds one), else the GGUF's own `tokenizer.chat_template`.
 *
 * Request fields:
 *   model          any string: accepted and echoed, since the worker serves one model whatever it is called.
 *   messages       roles system, developer (rendered as system: chat templates know no "developer" role, and OpenAI's
 *                  clients send it for instructions), user, assistant, tool. content is a string, or an array of
 *                  {"type": "text", "text"} parts joined with "\n" (as vLLM and llama.cpp's server join them); any other
 *                  part (image_url, input_audio, file) is a 400, as the model reads text only. name, tool_calls and
 *                  tool_call_id go to the template as given.
 *   stream, stream_options.include_usage
 *   max_completion_tokens or max_tokens (the first wins): at most MAX_TOKENS; unset, the reply may run to MAX_TOKENS
 *                  or the end of the context, which is what OpenAI's API does (finish_reason "length" either way).
 *   temperature    0..2, default 1 as in OpenAI's API (edgellm's own default is greedy).
 *   top_p, seed, stop (a string or an array of strings)
 *   top_k, min_p, repeat_penalty   llama.cpp server's extensions. Unset, edgellm's defaults hold: top_k 40, top_p 0.95
 *                  and min_p 0.05 (as in llama.cpp's server), no repetition penalty.
 *   tools          passed to the template, which writes them into the prompt the way the model was trained to read
 *                  them. The reply comes back as text content: tool calls in it are not parsed into `tool_calls`.
 *                  tool_choice "auto" or "none" ("none" leaves the tools out of the prompt); "required" or a named
 *                  function is a 400, since nothing here can force a call.
 *   Rejected with 400 unless given their no-op value, because the reply would silently not be what was asked for:
 *     n (only 1); frequency_penalty and presence_penalty (only 0: OpenAI's penalties are additive, edgellm's is
 *     llama.cpp's multiplicative repeat_penalty, a different function offered under its own name rather than passed off
 *     as these); logprobs, top_logprobs, logit_bias; response_format other than text; audio output.
 *   Every other field (user, store, metadata, parallel_tool_calls, service_tier, ...) is ignored: clients send them
 *   freely, and none changes what this model can generate.
 *
 * Errors are OpenAI's {"error": {"message", "type", "param", "code"}}, which the clients raise as APIError:
 *   400 invalid_request_error  a bad field (param names it); a conversation the template refuses with
 *                              raise_exception (code template_error), or one longer than the context
 *                              (code context_length_exceeded)
 *   404, 405, 413              an unknown route or model id, a wrong method, a body over 256 KiB
 *   503 server_error           the queue is full (code queue_full), with Retry-After, which the clients honour
 *   500 server_error           the model failed to load, or it has no chat template and CHAT_TEMPLATE is unset (code
 *                              no_chat_template: a 500, since the worker's setup is at fault and no request can fix
 *                              it, with `x-should-retry: false` so that the clients do not retry it)
 * The status is sent with the first generated token (prefill errors still get theirs). A failure after that ends a
 * stream with an event `data: {"error": ...}` and no [DONE], which the clients raise; a non-streamed reply then ends
 * with the error object instead of the completion.
 */
import type { ChatMessage, GenerateOptions, GenerationStats, Model } from 'edgellm';
import { EdgeLLMError } from 'edgellm';
import { HttpError } from './http.js';

export interface ChatRequest {
  /** the name the client asked for, echoed back */
  model: string | undefined;
  messages: ChatMessage[];
  stream: boolean;
  includeUsage: boolean;
  tools: Record<string, unknown>[] | undefined;
  options: GenerateOptions;
}

/** What every object of one reply shares. */
export interface ReplyMeta {
  id: string;
  created: number;
  model: string;
}

const ROLES = ['system', 'developer', 'user', 'assistant', 'tool'];

/** Reads a request body (parsed JSON) into messages and generate() options; throws a 400 HttpError naming the field. */
export function parseChatRequest(body: unknown, maxTokensLimit: number): ChatRequest {
  if (!isObject(body)) throw bad(null, 'the body must be a JSON object such as {"model": "...", "messages": [...]}', 'invalid_type');
  // null means "not given" for every optional field, as in OpenAI's API (its clients send explicit nulls).
  const b = (key: string): unknown => body[key] ?? undefined;

  const model = b('model');
  if (model !== undefined && typeof model !== 'string') throw bad('model', `model must be a string, got ${show(model)}`, 'invalid_type');
  const messages = parseMessages(b('messages'));

  const stream = optional(b, 'stream', 'boolean') ?? false;
  const streamOptions = b('stream_options');
  let includeUsage = false;
  if (streamOptions !== undefined) {
    if (!stream) throw bad('stream_options', 'stream_options is only allowed when stream is true', 'invalid_value');
    if (!isObject(streamOptions)) throw bad('stream_options', `stream_options must be an object, got ${show(streamOptions)}`, 'invalid_type');
    includeUsage = optional((k) => streamOptions[k] ?? undefined, 'include_usage', 'boolean', 'stream_options.include_usage') ?? false;
  }

  for (const [key, noop, why] of [
    ['n', 1, 'one model generates one choice per request'],
    ['frequency_penalty', 0, "edgellm's penalty is llama.cpp's multiplicative repeat_penalty (e.g. 1.1), a different function; pass that instead"],
    ['presence_penalty', 0, "edgellm's penalty is llama.cpp's multiplicative repeat_penalty (e.g. 1.1), a different function; pass that instead"],
    ['top_logprobs', 0, 'log probabilities are not returned'],
  ] as const) {
    const v = b(key);
    if (v === undefined || v === noop) continue;
    if (typeof v !== 'number') throw bad(key, `${key} must be a number, got ${show(v)}`, 'invalid_type');
    throw bad(key, `${key} must be ${noop} here, got ${v}: ${why}`, 'unsupported_value');
  }
  if (b('logprobs') === true) throw bad('logprobs', 'logprobs must be false here: log probabilities are not returned', 'unsupported_value');
  const bias = b('logit_bias');
  if (bias !== undefined && !(isObject(bias) && Object.keys(bias).length === 0)) throw bad('logit_bias', 'logit_bias is not supported', 'unsupported_parameter');
  const format = b('response_format');
  if (format !== undefined && !(isObject(format) && format.type === 'text')) {
    throw bad('response_format', 'response_format must be {"type": "text"} here: replies are not constrained to JSON', 'unsupported_value');
  }
  const modalities = b('modalities');
  if (b('audio') !== undefined || (Array.isArray(modalities) && modalities.some((m) => m !== 'text'))) {
    throw bad(b('audio') !== undefined ? 'audio' : 'modalities', 'only text output is supported', 'unsupported_value');
  }

  let tools = parseTools(b('tools'));
  const toolChoice = b('tool_choice');
  if (toolChoice === 'none') tools = undefined;
  else if (toolChoice !== undefined && toolChoice !== 'auto') {
    throw bad('tool_choice', `tool_choice must be "auto" or "none" here, got ${show(toolChoice)}: tool calls cannot be forced`, 'unsupported_value');
  }

  const options: GenerateOptions = {};
  const asked = int(b, 'max_completion_tokens', 1) ?? int(b, 'max_tokens', 1);
  const askedKey = b('max_completion_tokens') !== undefined ? 'max_completion_tokens' : 'max_tokens';
  if (asked !== undefined && asked > maxTokensLimit) throw bad(askedKey, `${askedKey} is at most ${maxTokensLimit} here, got ${asked}`, 'invalid_value');
  options.maxTokens = asked ?? maxTokensLimit;
  options.temperature = num(b, 'temperature', (v) => v >= 0 && v <= 2, 'a number from 0 to 2') ?? 1;
  const topP = num(b, 'top_p', (v) => v >= 0 && v <= 1, 'a number from 0 to 1');
  // top_p 0 (OpenAI's way of asking for the single most likely token) is outside edgellm's (0, 1]; the smallest
  // positive number keeps exactly the most likely token.
  if (topP !== undefined) options.topP = topP === 0 ? Number.MIN_VALUE : topP;
  const seed = num(b, 'seed', Number.isSafeInteger, 'an integer');
  if (seed !== undefined) options.seed = seed;
  const topK = int(b, 'top_k', 0);
  if (topK !== undefined) options.topK = topK;
  const minP = num(b, 'min_p', (v) => v >= 0 && v <= 1, 'a number from 0 to 1');
  if (minP !== undefined) options.minP = minP;
  const repeatPenalty = num(b, 'repeat_penalty', (v) => v > 0, 'a number > 0 (1 = off)');
  if (repeatPenalty !== undefined) options.repeatPenalty = repeatPenalty;
  const stop = b('stop');
  if (typeof stop === 'string') options.stop = [stop];
  else if (Array.isArray(stop) && stop.every((s) => typeof s === 'string')) options.stop = stop;
  else if (stop !== undefined) throw bad('stop', `stop must be a string or an array of strings, got ${show(stop)}`, 'invalid_type');

  return { model, messages, stream, includeUsage, tools, options };
}

function parseMessages(value: unknown): ChatMessage[] {
  if (value === undefined) throw bad('messages', "missing required parameter: 'messages'", 'missing_required_parameter');
  if (!Array.isArray(value) || value.length === 0) throw bad('messages', 'messages must be a non-empty array of {role, content}', 'invalid_type');
  return value.map((m, i) => {
    const at = `messages[${i}]`;
    if (!isObject(m)) throw bad(at, `${at} must be an object {role, content}, got ${show(m)}`, 'invalid_type');
    const { role, content, ...rest } = m;
    if (typeof role !== 'string' || !ROLES.includes(role)) throw bad(`${at}.role`, `${at}.role must be one of ${ROLES.join(', ')}; got ${show(role)}`, 'invalid_value');
    return { ...rest, role: role === 'developer' ? 'system' : role, content: parseContent(content, `${at}.content`, role) } as ChatMessage;
  });
}

function parseContent(content: unknown, at: string, role: string): string | null {
  if (typeof content === 'string') return content;
  // An assistant turn that only called tools has no content; templates test for that (`message.content is none`).
  if (content === null || content === undefined) {
    if (role === 'assistant') return null;
    throw bad(at, `${at} is required in a ${role} message`, 'missing_required_parameter');
  }
  if (!Array.isArray(content)) throw bad(at, `${at} must be a string or an array of content parts, got ${show(content)}`, 'invalid_type');
  return content
    .map((part: unknown, j) => {
      if (!isObject(part) || typeof part.type !== 'string') throw bad(`${at}[${j}]`, `${at}[${j}] must be a content part {"type": "text", "text": ...}`, 'invalid_type');
      if (part.type !== 'text') throw bad(`${at}[${j}].type`, `${at}[${j}] is an ${JSON.stringify(part.type)} part, but this model reads text only`, 'unsupported_value');
      if (typeof part.text !== 'string') throw bad(`${at}[${j}].text`, `${at}[${j}].text must be a string`, 'invalid_type');
      return part.text;
    })
    .join('\n');
}

function parseTools(value: unknown): Record<string, unknown>[] | undefined {
  if (value === undefined) return undefined;
  if (!Array.isArray(value)) throw bad('tools', `tools must be an array, got ${show(value)}`, 'invalid_type');
  value.forEach((t, i) => {
    if (!isObject(t) || t.type !== 'function' || !isObject(t.function) || typeof t.function.name !== 'string') {
      throw bad(`tools[${i}]`, `tools[${i}] must be {"type": "function", "function": {"name", "description", "parameters"}}`, 'invalid_type');
    }
  });
  return value.length ? value : undefined;
}

/**
 * The body of a streamed reply, as server-sent events. The role chunk waits for the first text, so that the caller's
 * first next() runs prefill and the first token: an error there still gets its own HTTP status.
 */
export async function* streamReply(model: Model, ids: number[], options: GenerateOptions, meta: ReplyMeta, includeUsage: boolean): AsyncGenerator<string> {
  let stats: GenerationStats | undefined;
  const text = model.generate(ids, { ...options, onStats: (s) => (stats = s) });
  // OpenAI's stream carries "usage": null on every chunk but the last when usage was asked for.
  const chunk = (delta: Record<string, string>, finish: string | null) =>
    event({ ...base(meta, 'chat.completion.chunk'), choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }], ...(includeUsage ? { usage: null } : {}) });
  let opened = false;
  const open = () => (opened ? '' : ((opened = true), chunk({ role: 'assistant', content: '' }, null)));
  for await (const piece of text) yield open() + chunk({ content: piece }, null);
  yield open() + chunk({}, finishReason(stats!));
  if (includeUsage) yield event({ ...base(meta, 'chat.completion.chunk'), choices: [], usage: usage(stats!) });
  yield 'data: [DONE]\n\n';
}

/**
 * The body of a reply that is not streamed: the chat.completion object, after a space per piece of generated text.
 * JSON may start with whitespace, and writing something while generating is what lets the runtime notice a client
 * that went away (a body that writes nothing is never cancelled), so its generation stops as a streamed one does.
 */
export async function* completeReply(model: Model, ids: number[], options: GenerateOptions, meta: ReplyMeta): AsyncGenerator<string> {
  let stats: GenerationStats | undefined;
  let content = '';
  for await (const piece of model.generate(ids, { ...options, onStats: (s) => (stats = s) })) {
    content += piece;
    yield ' ';
  }
  yield JSON.stringify({
    ...base(meta, 'chat.completion'),
    choices: [{ index: 0, message: { role: 'assistant', content, refusal: null }, logprobs: null, finish_reason: finishReason(stats!) }],
    usage: usage(stats!),
  });
}

/** A failure after the status line was sent: an event the clients raise as an APIError (the stream gets no [DONE]). */
export function errorEvent(err: unknown): string {
  return event(openaiError(err).body);
}

/** An error as OpenAI's API answers it. */
export function openaiError(err: unknown): { status: number; headers: Record<string, string>; body: { error: { message: string; type: string; param: string | null; code: string | null } } } {
  let status = 500;
  let headers: Record<string, string> = {};
  let param: string | null = null;
  let code: string | null = 'internal_error';
  const message = err instanceof Error ? err.message : String(err);
  if (err instanceof HttpError) {
    ({ status, headers, param } = err);
    code = err.code.toLowerCase();
  } else if (err instanceof EdgeLLMError) {
    code = err.code.toLowerCase();
    if (err.code === 'BAD_ARGUMENT') status = 400;
    else if (err.code === 'CONTEXT_FULL') [status, param, code] = [400, 'messages', 'context_length_exceeded'];
    else if (err.code === 'TEMPLATE') [status, param, code] = [400, 'messages', 'template_error'];
  }
  const type = status < 500 ? 'invalid_request_error' : 'server_error';
  return { status, headers, body: { error: { message, type, param, code } } };
}

export function openaiErrorResponse(err: unknown): Response {
  const { status, headers, body } = openaiError(err);
  if (status >= 500 && !(err instanceof HttpError)) console.error(err);
  return Response.json(body, { status, headers });
}

export function modelObject(id: string, created: number) {
  return { id, object: 'model', created, owned_by: 'edgellm' };
}

export function newReplyId(): string {
  return `chatcmpl-${crypto.randomUUID().replaceAll('-', '')}`;
}

function base(meta: ReplyMeta, object: string) {
  return { id: meta.id, object, created: meta.created, model: meta.model };
}

function finishReason(stats: GenerationStats): 'stop' | 'length' {
  return stats.stopReason === 'eos' || stats.stopReason === 'stop' ? 'stop' : 'length';
}

function usage(stats: GenerationStats) {
  return {
    prompt_tokens: stats.promptTokens,
    completion_tokens: stats.generatedTokens,
    total_tokens: stats.promptTokens + stats.generatedTokens,
    // OpenAI's name for the prompt tokens served from cache: here, the KV prefix shared with the previous request.
    prompt_tokens_details: { cached_tokens: stats.cachedTokens },
  };
}

function event(data: unknown): string {
  return `data: ${JSON.stringify(data)}\n\n`;
}

function bad(param: string | null, message: string, code: string): HttpError {
  return new HttpError(400, code, message, {}, param);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function show(v: unknown): string {
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

type Getter = (key: string) => unknown;

function optional(b: Getter, key: string, type: 'boolean', name = key): boolean | undefined {
  const v = b(key);
  if (v !== undefined && typeof v !== type) throw bad(name, `${name} must be a ${type}, got ${show(v)}`, 'invalid_type');
  return v as boolean | undefined;
}

function num(b: Getter, key: string, ok: (v: number) => boolean, rule: string): number | undefined {
  const v = b(key);
  if (v === undefined) return undefined;
  if (typeof v !== 'number') throw bad(key, `${key} must be ${rule}, got ${show(v)}`, 'invalid_type');
  if (!Number.isFinite(v) || !ok(v)) throw bad(key, `${key} must be ${rule}, got ${v}`, 'invalid_value');
  return v;
}

function int(b: Getter, key: string, min: number): number | undefined {
  return num(b, key, (v) => Number.isSafeInteger(v) && v >= min, `an integer >= ${min}`);
}
