// How the chat page writes a conversation for a model whose file has no chat template (a base model, such as the test
// models). Its own module so that test/browser.test.ts can hold Node's session to exactly what the page uses.
//
// A plain transcript, the shape base models have seen most often:
//
//   <system text>
//
//   User: <text>
//   Assistant: <text>
//   User: <text>
//   Assistant:
//
// Contents are trimmed: a reply streams with the leading space of its first token (after "Assistant:") and may end on
// a newline before the stop string, and trimming keeps every later render of that turn identical to the first.

/** A Jinja chat template (rendered by edgellm as transformers would: trim_blocks and lstrip_blocks). */
export const PLAIN_TEMPLATE =
  "{%- for m in messages -%}" +
  "{%- if m.role == 'system' -%}{{ (m.content | trim) + '\\n\\n' }}" +
  "{%- elif m.role == 'user' -%}{{ 'User: ' + (m.content | trim) + '\\n' }}" +
  "{%- else -%}{{ 'Assistant: ' + (m.content | trim) + '\\n' }}" +
  "{%- endif -%}" +
  "{%- endfor -%}" +
  "{%- if add_generation_prompt -%}{{ 'Assistant:' }}{%- endif -%}";

/**
 * A base model does not know that its turn is over: it goes on to write the user's next line itself. These stop the
 * reply where the transcript would hand the turn back (the stop string is not part of the reply).
 */
export const PLAIN_STOP = ['\nUser:', '\nAssistant:'];
