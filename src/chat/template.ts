/**
 * Chat templates: renders a model's `tokenizer.chat_template` (Jinja) the way Hugging Face transformers'
 * `apply_chat_template` does, with `@huggingface/jinja` as the engine.
 *
 * transformers renders with jinja2's ImmutableSandboxedEnvironment(trim_blocks, lstrip_blocks, loopcontrols, its
 * `{% generation %}` tag), a `tojson` of its own (json.dumps, ensure_ascii=False) and the globals `raise_exception` and
 * `strftime_now`. The library already lexes with trim_blocks + lstrip_blocks, supports break/continue and drops the
 * `{% generation %}` tags, so the template source is used as it is. The library has no way to add filters or tests,
 * so where it departs from jinja2 on what real templates do, this module overrides its one public evaluation hook,
 * `Interpreter.evaluate`, for those node kinds and hands everything else to the library unchanged (operands already
 * evaluated go back to it as VALUE nodes, so nothing is evaluated twice):
 * - `{{ x }}` writes Python's str(x): "None", "True", `{'a': 1}` (the library writes nothing for none, JSON for dicts);
 * - filters: `tojson` as json.dumps (indent, separators, sort_keys; undefined and generators are not serializable);
 *   `string`/`upper`/`lower`/`capitalize`/`trim` of str(x); `select`/`reject`/`selectattr`/`rejectattr`/`map` as
 *   jinja2 has them (none gives nothing, any test, `map('upper')`, a generator as the result: always true, no
 *   length, not JSON); `list`, `length` (code points), `min`, `max`, `safe`/`escape` (Markup: `"x"|safe + s`
 *   HTML-escapes s, as markupsafe does);
 * - the str methods `format`, `strip`, `lstrip`, `rstrip` (the library ignores the characters argument), and a dict's
 *   `items`/`keys`/`values`/`get` even when the dict has a key of that name (JSON schemas have "items");
 * - operators: `==` and `in` compare as Python (lists, no JS coercion), `~` joins str() of each side, `str * int`,
 *   `str + int` raises as in Python;
 * - an attribute or item of undefined raises as jinja2 does; a for loop over a string or undefined; `iterable`;
 * - tuple literals that a for loop can unpack, and dict literals with integer keys (`{0: 0, 512: 128}`).
 *
 * No Node built-ins: this module runs in browsers and Workers too.
 */
import { Environment, Interpreter, Template } from '@huggingface/jinja';
import { EdgeLLMError } from '../errors.js';

export interface ChatMessage {
  role: string;
  /** a string, or null (an assistant turn with only tool calls), or the parts of a multimodal message */
  content: string | null | unknown;
  /** anything else (tool_calls, name, tool_call_id, reasoning_content, ...) is passed to the template as is */
  [key: string]: unknown;
}

export interface ChatTemplateOptions {
  /** End with the header of an assistant turn, so the model writes the reply (default true). */
  addGenerationPrompt?: boolean;
  bosToken?: string;
  eosToken?: string;
  /** JSON-schema tool definitions. Absent: the template sees `tools` as none, as transformers passes it. */
  tools?: unknown[] | null;
  /** The time `strftime_now` formats (default: the current time), so that renders are reproducible. */
  now?: Date;
  /** Extra template variables, e.g. `{ enable_thinking: false }`. */
  variables?: Record<string, unknown>;
}

/** The template itself, or a NO_TEMPLATE error when a model has none (an absent or empty `tokenizer.chat_template`). */
export function requireChatTemplate(template: string | null | undefined, source = 'this model'): string {
  if (typeof template !== 'string' || template.length === 0) {
    throw new EdgeLLMError('NO_TEMPLATE', `${source} has no chat template (tokenizer.chat_template); pass one`);
  }
  return template;
}

/**
 * Renders `messages` with a Jinja chat template, as transformers' `apply_chat_template(messages, tools=...,
 * add_generation_prompt=..., tokenize=False)` does: the exact template output, no stripping, no BOS de-duplication.
 * Throws EdgeLLMError TEMPLATE when the template raises (raise_exception) or fails to parse or render, and
 * BAD_ARGUMENT for messages or options that are not plain JSON-like data.
 */
export function applyChatTemplate(template: string, messages: ChatMessage[], options: ChatTemplateOptions = {}): string {
  if (typeof template !== 'string') throw new EdgeLLMError('BAD_ARGUMENT', 'the chat template must be a string');
  const vars = templateVariables(messages, options);
  const now = options.now ?? new Date();
  let program: Program;
  try {
    program = compile(template);
  } catch (e) {
    throw templateError(e);
  }
  // Three scopes: the library's globals (true, none, range, namespace, ...), transformers' globals over them, and the
  // variables, which may shadow either, as render() arguments do in jinja2.
  const root = new Environment();
  setupGlobals(root);
  const globals = new Environment(root);
  globals.set('raise_exception', (message: unknown) => {
    throw new TemplateRaised(String(message));
  });
  globals.set('strftime_now', (format: unknown) => strftime(now, String(format)));
  const env = new Environment(globals);
  for (const [k, v] of Object.entries(vars)) env.set(k, v);
  try {
    return (new PyInterpreter(env).run(program as never) as unknown as RV).value as string;
  } catch (e) {
    throw templateError(e);
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// Arguments

const RESERVED = ['messages', 'tools', 'add_generation_prompt', 'bos_token', 'eos_token'];

function templateVariables(messages: ChatMessage[], o: ChatTemplateOptions): Record<string, unknown> {
  if (!Array.isArray(messages)) throw new EdgeLLMError('BAD_ARGUMENT', 'messages must be an array');
  const msgs = messages.map((m, i) => {
    if (!isPlainObject(m) || typeof m.role !== 'string' || m.role.length === 0) {
      throw new EdgeLLMError('BAD_ARGUMENT', `messages[${i}] must be an object with a string role`);
    }
    return plain(m, `messages[${i}]`, 0);
  });
  if (o.tools != null && !Array.isArray(o.tools)) throw new EdgeLLMError('BAD_ARGUMENT', 'tools must be an array');
  if (o.now !== undefined && !(o.now instanceof Date && !Number.isNaN(o.now.getTime()))) {
    throw new EdgeLLMError('BAD_ARGUMENT', 'now must be a valid Date');
  }
  for (const [k, v] of [['bosToken', o.bosToken], ['eosToken', o.eosToken]] as const) {
    if (v !== undefined && typeof v !== 'string') throw new EdgeLLMError('BAD_ARGUMENT', `${k} must be a string`);
  }
  const extra = o.variables ?? {};
  if (!isPlainObject(extra)) throw new EdgeLLMError('BAD_ARGUMENT', 'variables must be an object');
  const clash = RESERVED.find((k) => k in extra);
  if (clash) throw new EdgeLLMError('BAD_ARGUMENT', `variables.${clash} is set by the options; use those`);
  const vars: Record<string, unknown> = {
    ...(plain(extra, 'variables', 0) as object),
    messages: msgs,
    // transformers passes tools=None when there are none: `tools is defined` holds and `tools is none` too.
    tools: o.tools == null ? null : plain(o.tools, 'tools', 0),
    add_generation_prompt: o.addGenerationPrompt ?? true,
  };
  if (o.bosToken !== undefined) vars.bos_token = o.bosToken;
  if (o.eosToken !== undefined) vars.eos_token = o.eosToken;
  return vars;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/** A copy of JSON-like data (what Python's json gives a template); undefined members are dropped, as JSON drops them. */
function plain(v: unknown, where: string, depth: number): unknown {
  if (depth > 100) throw new EdgeLLMError('BAD_ARGUMENT', `${where} is nested too deeply (a cycle?)`);
  if (v === null || typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') return v;
  if (Array.isArray(v)) return v.map((x, i) => (x === undefined ? null : plain(x, `${where}[${i}]`, depth + 1)));
  if (isPlainObject(v)) {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) if (x !== undefined) out[k] = plain(x, `${where}.${k}`, depth + 1);
    return out;
  }
  throw new EdgeLLMError('BAD_ARGUMENT', `${where} is a ${v === undefined ? 'undefined' : typeof v === 'object' ? 'non-plain object' : typeof v}; only JSON-like data can be passed to a chat template`);
}

// ---------------------------------------------------------------------------------------------------------------------
// Errors

/** What raise_exception throws; it ends the render with the template's own message. */
class TemplateRaised extends Error {}

function templateError(e: unknown): EdgeLLMError {
  if (e instanceof EdgeLLMError) return e;
  if (e instanceof TemplateRaised) return new EdgeLLMError('TEMPLATE', e.message, { cause: e });
  const message = e instanceof Error ? e.message : String(e);
  return new EdgeLLMError('TEMPLATE', `chat template error: ${message}`, { cause: e });
}

// ---------------------------------------------------------------------------------------------------------------------
// Compiling: parse each template once

type Program = Template['parsed'];
const CACHE_SIZE = 16;
const cache = new Map<string, Program>();

function compile(source: string): Program {
  let program = cache.get(source);
  if (program) {
    cache.delete(source); // refresh its place: the cache drops the least recently used
  } else {
    // The library's Template lexes with trim_blocks and lstrip_blocks on, as transformers configures jinja2.
    program = new Template(source).parsed;
    markNodes(program);
    if (cache.size >= CACHE_SIZE) cache.delete(cache.keys().next().value as string);
  }
  cache.set(source, program);
  return program;
}

// ---------------------------------------------------------------------------------------------------------------------
// The library's runtime values. Its entry point exports Environment and Interpreter but not the value classes, so they
// are taken from what Environment.set makes of plain values.

/** The shape of the library's runtime values (StringValue, ArrayValue, ...), as far as this module uses them. */
interface RV {
  type: string;
  value: any;
  __bool__(): { value: boolean };
  toString(): string;
  readonly builtins: ReadonlyMap<string, RV>;
}
type RVClass = new (value?: any) => RV;
/** The library's classes, typed loosely: all runtime values share one shape, so `instanceof` must not narrow. */
type AnyClass = new (value?: any) => any;
/** An AST node; the library's node classes are plain data with a `type`. */
type Node = { type: string; [key: string]: any };

const probe = new Environment();
let probes = 0;
const classOf = (v: unknown): AnyClass => (probe.set(`v${probes++}`, v) as unknown as RV).constructor as AnyClass;
const StringValue = classOf('');
const IntegerValue = classOf(1);
const FloatValue = classOf(0.5);
const BooleanValue = classOf(true);
const NullValue = classOf(null);
const UndefinedValue = classOf(undefined);
const ArrayValue = classOf([]);
const ObjectValue = classOf({});
const FunctionValue = classOf(() => null);

/** setupGlobals is not exported either: the globals it declares, declared the same way. */
function setupGlobals(env: Environment): void {
  for (const [k, v] of [['true', true], ['false', false], ['none', null], ['True', true], ['False', false], ['None', null]] as const) {
    env.set(k, v);
  }
  env.set('range', (start: number, stop?: number, step = 1) => {
    if (stop === undefined) [start, stop] = [0, start];
    const out: number[] = [];
    if (step > 0) for (let i = start; i < stop; i += step) out.push(i);
    else if (step < 0) for (let i = start; i > stop; i += step) out.push(i);
    else throw new Error('range() arg 3 must not be zero');
    return out;
  });
}

const str = (s: string): RV => new StringValue(s);
const bool = (b: boolean): RV => new BooleanValue(b);
const undef = (): RV => new UndefinedValue();
const fn = (f: (args: RV[]) => RV): RV => new FunctionValue(f);
const isStr = (v: RV): boolean => v instanceof StringValue;
const isNum = (v: RV): boolean => v instanceof IntegerValue || v instanceof FloatValue;
const truthy = (v: RV): boolean => v.__bool__().value;

/** A tuple. The library's own TupleValue has type "TupleValue", which its for loop refuses to unpack and its tojson
 * refuses to serialize; this one is an ordinary array to the library, and a tuple to str() here. */
class TupleValue extends (ArrayValue as RVClass) {}
/** A Python generator: what jinja2's select/reject/selectattr/rejectattr/map return. Iterable like a list, but always
 * true, with no length and not JSON serializable; `list` turns it into a list. */
class GeneratorValue extends (ArrayValue as RVClass) {
  override __bool__() {
    return bool(true);
  }
}
/** markupsafe's Markup, from `safe` and `escape`: adding a str to it HTML-escapes the str. */
class MarkupValue extends (StringValue as RVClass) {}

/** A dict whose keys are not all strings (`{0: 0, 512: 128}`): the library's dicts have string keys only. Its map is
 * keyed by the JSON form of each key (what json.dumps writes), and remembers the keys themselves. */
class PyDict extends (ObjectValue as RVClass) {
  constructor(
    entries: Map<string, RV>,
    readonly keyValues: Map<string, RV>,
  ) {
    super(entries);
  }
  keys(): RV {
    return new ArrayValue([...this.value.keys()].map((k) => this.keyValues.get(k)!));
  }
  override get builtins(): ReadonlyMap<string, RV> {
    return new Map([
      ...super.builtins,
      ['keys', fn(() => this.keys())],
      ['get', fn(([k, d]) => this.value.get(dictKey(k)) ?? d ?? new NullValue())],
    ]);
  }
}

/** A dict's (key, value) pairs, as tuples (the library makes lists, which str() would show as lists). */
function dictItems(d: RV): RV {
  const key = (k: string) => (d instanceof PyDict ? d.keyValues.get(k)! : str(k));
  return new ArrayValue([...d.value].map(([k, v]: [string, RV]) => new TupleValue([key(k), v])));
}

function dictKey(k: RV): string {
  if (isStr(k)) return k.value;
  if (k instanceof IntegerValue) return String(k.value);
  if (k instanceof FloatValue) return pyFloat(k.value);
  if (k instanceof BooleanValue) return k.value ? 'true' : 'false';
  if (k instanceof NullValue) return 'null';
  throw new TypeError(`unhashable or unsupported dict key: ${k.type}`);
}

/** jinja2's dictsort(case_sensitive=False, by='key', reverse=False). */
function dictsort(d: RV, pos: RV[], kw: Map<string, RV>): RV {
  const caseSensitive = truthy(pos[0] ?? kw.get('case_sensitive') ?? bool(false));
  const by = (pos[1] ?? kw.get('by'))?.value === 'value' ? 1 : 0;
  const reverse = truthy(pos[2] ?? kw.get('reverse') ?? bool(false));
  const items = (dictItems(d).value as RV[]).slice();
  items.sort((a, b) => compare(a.value[by], b.value[by], caseSensitive) * (reverse ? -1 : 1));
  return new ArrayValue(items);
}

function compare(a: RV, b: RV, caseSensitive = false): number {
  let x = a.value;
  let y = b.value;
  if (isStr(a) && isStr(b)) {
    if (!caseSensitive) [x, y] = [x.toLowerCase(), y.toLowerCase()];
  } else if (!((isNum(a) || a instanceof BooleanValue) && (isNum(b) || b instanceof BooleanValue))) {
    throw new TypeError(`'<' not supported between ${a.type} and ${b.type}`);
  }
  return x < y ? -1 : x > y ? 1 : 0;
}

/** Python's ==, for the tests of select/reject (the library's compare `.value` only, so never two lists). */
function pyEq(a: RV, b: RV): boolean {
  if ((isNum(a) || a instanceof BooleanValue) && (isNum(b) || b instanceof BooleanValue)) return Number(a.value) === Number(b.value);
  if (a instanceof ArrayValue && b instanceof ArrayValue) {
    return a.value.length === b.value.length && a.value.every((x: RV, i: number) => pyEq(x, b.value[i]));
  }
  if (a.type === 'ObjectValue' && b.type === 'ObjectValue') {
    return a.value.size === b.value.size && [...a.value].every(([k, v]) => b.value.has(k) && pyEq(v, b.value.get(k)));
  }
  return a.type === b.type && a.value === b.value;
}

/** Tests that differ from the library's: jinja2's `iterable` holds for dicts and undefined too (it tries iter()). */
const TESTS: Record<string, (v: RV) => boolean> = {
  iterable: (v) => v instanceof ArrayValue || isStr(v) || isDict(v) || v instanceof UndefinedValue,
};

/** The tests that select/reject/selectattr/rejectattr may name beyond the library's own (`defined`, `none`, ...). */
const EXTRA_TESTS: Record<string, (a: RV, b: RV) => boolean> = {
  ...TESTS,
  '==': pyEq,
  eq: pyEq,
  equalto: pyEq,
  '!=': (a, b) => !pyEq(a, b),
  ne: (a, b) => !pyEq(a, b),
  '<': (a, b) => compare(a, b, true) < 0,
  lt: (a, b) => compare(a, b, true) < 0,
  '<=': (a, b) => compare(a, b, true) <= 0,
  le: (a, b) => compare(a, b, true) <= 0,
  '>': (a, b) => compare(a, b, true) > 0,
  gt: (a, b) => compare(a, b, true) > 0,
  '>=': (a, b) => compare(a, b, true) >= 0,
  ge: (a, b) => compare(a, b, true) >= 0,
  in: (a, b) => iterate(b).some((x) => pyEq(a, x)) || (isStr(a) && isStr(b) && b.value.includes(a.value)),
};

/** What `for x in v` visits in jinja2: list items, a string's characters, a dict's keys; undefined is empty. */
function iterate(v: RV): RV[] {
  if (v instanceof ArrayValue) return v.value;
  if (isStr(v)) return Array.from(v.value as string, str);
  if (v instanceof PyDict) return v.keys().value;
  if (v.type === 'ObjectValue') return [...v.value.keys()].map(str);
  if (v instanceof UndefinedValue) return [];
  throw new TypeError(`'${v.type}' object is not iterable`);
}

/** jinja2's attribute lookup for selectattr/map: a dotted path of keys or list indices; undefined where absent. */
function getAttr(v: RV, path: string): RV {
  for (const part of path.split('.')) {
    if (v.type === 'ObjectValue' || v instanceof PyDict) v = v.value.get(part) ?? undef();
    else if (v instanceof ArrayValue && /^-?\d+$/.test(part)) v = v.value.at(Number(part)) ?? undef();
    else return undef();
  }
  return v;
}

// ---------------------------------------------------------------------------------------------------------------------
// Python's str(), repr() and json.dumps()

function pyFloat(x: number): string {
  if (Number.isNaN(x)) return 'NaN';
  if (!Number.isFinite(x)) return x > 0 ? 'Infinity' : '-Infinity';
  const a = Math.abs(x);
  if (a !== 0 && (a < 1e-4 || a >= 1e16)) {
    // repr switches to exponent form at these bounds and writes at least two exponent digits: 1e-05, 1e+16
    return x.toExponential().replace(/e([+-])(\d)$/, 'e$10$2');
  }
  const s = String(x);
  return Number.isInteger(x) ? `${Object.is(x, -0) ? '-0' : s}.0` : s;
}

/** What Python's str.isprintable() refuses, and repr() therefore escapes: controls, format characters, separators
 * other than the space, surrogates, private use, unassigned. */
const NOT_PRINTABLE = /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Z}]/u;
const hex = (c: number, width: number) => c.toString(16).padStart(width, '0');

/** Python's repr() of a str: single quotes unless the text has ' and no ". */
function pyReprString(s: string): string {
  const q = s.includes("'") && !s.includes('"') ? '"' : "'";
  let out = q;
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (ch === q || ch === '\\') out += '\\' + ch;
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t') out += '\\t';
    else if (ch !== ' ' && NOT_PRINTABLE.test(ch)) {
      out += c < 0x100 ? '\\x' + hex(c, 2) : c < 0x10000 ? '\\u' + hex(c, 4) : '\\U' + hex(c, 8);
    } else out += ch;
  }
  return out + q;
}

function pyRepr(v: RV): string {
  if (isStr(v)) return pyReprString(v.value);
  if (v instanceof TupleValue) {
    const items = v.value.map(pyRepr);
    return items.length === 1 ? `(${items[0]},)` : `(${items.join(', ')})`;
  }
  if (v instanceof ArrayValue) return `[${v.value.map(pyRepr).join(', ')}]`;
  if (v instanceof PyDict) return `{${[...v.value].map(([k, x]) => `${pyRepr(v.keyValues.get(k)!)}: ${pyRepr(x)}`).join(', ')}}`;
  if (v.type === 'ObjectValue') return `{${[...v.value].map(([k, x]) => `${pyReprString(k)}: ${pyRepr(x)}`).join(', ')}}`;
  return pyStr(v);
}

/** Python's str() of a value, which jinja2's `string` filter gives. */
function pyStr(v: RV): string {
  if (isStr(v)) return v.value;
  if (v instanceof BooleanValue) return v.value ? 'True' : 'False';
  if (v instanceof NullValue) return 'None';
  if (v instanceof UndefinedValue) return '';
  if (v instanceof FloatValue) return pyFloat(v.value);
  if (v instanceof IntegerValue) return String(v.value);
  if (v instanceof GeneratorValue) return '<generator object>';
  if (v instanceof ArrayValue || v.type === 'ObjectValue') return pyRepr(v);
  return v.toString();
}

interface JsonOptions {
  ensureAscii: boolean;
  indent: string | null;
  itemSep: string;
  keySep: string;
  sortKeys: boolean;
}

function jsonString(s: string, ensureAscii: boolean): string {
  // JSON.stringify escapes exactly what json.dumps(ensure_ascii=False) does: " \ and control characters.
  const j = JSON.stringify(s);
  return ensureAscii ? j.replace(/[^\x20-\x7e]/g, (c) => '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0')) : j;
}

/** Python's json.dumps of a runtime value. */
function pyJson(v: RV, o: JsonOptions, depth: number): string {
  if (isStr(v)) return jsonString(v.value, o.ensureAscii);
  if (v instanceof BooleanValue) return v.value ? 'true' : 'false';
  if (v instanceof NullValue) return 'null';
  if (v instanceof IntegerValue) return String(v.value);
  if (v instanceof FloatValue) return pyFloat(v.value);
  let entries: string[];
  let open: string;
  let close: string;
  if (v instanceof GeneratorValue) {
    throw new TypeError('Object of type generator is not JSON serializable');
  } else if (v instanceof ArrayValue) {
    entries = v.value.map((x: RV) => pyJson(x, o, depth + 1));
    [open, close] = ['[', ']'];
  } else if (v.type === 'ObjectValue') {
    let pairs: [string, RV][] = [...v.value];
    if (o.sortKeys) pairs = pairs.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    entries = pairs.map(([k, x]) => jsonString(k, o.ensureAscii) + o.keySep + pyJson(x, o, depth + 1));
    [open, close] = ['{', '}'];
  } else {
    const name = v instanceof UndefinedValue ? 'Undefined' : v.type === 'NamespaceValue' ? 'Namespace' : v.type;
    throw new TypeError(`Object of type ${name} is not JSON serializable`);
  }
  if (entries.length === 0) return open + close;
  if (o.indent === null) return open + entries.join(o.itemSep) + close;
  const inner = '\n' + o.indent.repeat(depth + 1);
  return open + inner + entries.join(o.itemSep + inner) + '\n' + o.indent.repeat(depth) + close;
}

/** transformers' tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False). */
function tojson(v: RV, pos: RV[], kw: Map<string, RV>): RV {
  const arg = (i: number, name: string): RV | undefined => {
    const a = pos[i] ?? kw.get(name);
    return a === undefined || a instanceof NullValue ? undefined : a;
  };
  const indentArg = arg(1, 'indent');
  const indent = indentArg === undefined ? null : isStr(indentArg) ? indentArg.value : ' '.repeat(Math.max(0, indentArg.value));
  const seps = arg(2, 'separators');
  const [itemSep, keySep] = seps ? seps.value.map((s: RV) => s.value) : [indent === null ? ', ' : ',', ': '];
  return str(pyJson(v, { ensureAscii: truthy(arg(0, 'ensure_ascii') ?? bool(false)), indent, itemSep, keySep, sortKeys: truthy(arg(3, 'sort_keys') ?? bool(false)) }, 0));
}

function htmlEscape(v: RV): string {
  if (v instanceof MarkupValue) return v.value;
  return pyStr(v).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&#34;', "'": '&#39;' })[c]!);
}

// ---------------------------------------------------------------------------------------------------------------------
// str methods

function pyStrip(s: string, chars: RV | undefined, left: boolean, right: boolean): string {
  if (chars === undefined || chars instanceof NullValue) return left && right ? s.trim() : left ? s.trimStart() : s.trimEnd();
  const set = new Set(Array.from(chars.value as string));
  const cps = Array.from(s);
  let i = 0;
  let j = cps.length;
  if (left) while (i < j && set.has(cps[i])) i++;
  if (right) while (j > i && set.has(cps[j - 1])) j--;
  return cps.slice(i, j).join('');
}

/** str.format: {} {0} {name}, {{ and }}, the conversions !s !r; format specs are not supported. */
function pyFormat(s: string, pos: RV[], kw: Map<string, RV>): string {
  let auto = 0;
  return s.replace(/\{\{|\}\}|\{([^{}]*)\}/g, (m, field: string | undefined) => {
    if (m === '{{') return '{';
    if (m === '}}') return '}';
    const [, name, conv, spec] = /^([^!:]*)(?:!([rs]))?(?::(.*))?$/.exec(field!) ?? [];
    if (spec) throw new Error(`str.format: the format spec ':${spec}' is not supported`);
    const v = name === '' ? pos[auto++] : /^\d+$/.test(name!) ? pos[Number(name)] : kw.get(name!);
    if (v === undefined) throw new Error(`str.format: no argument for {${field}}`);
    return conv === 'r' ? pyRepr(v) : pyStr(v);
  });
}

const STR_METHODS: Record<string, (s: string, pos: RV[], kw: Map<string, RV>) => RV> = {
  format: (s, pos, kw) => str(pyFormat(s, pos, kw)),
  strip: (s, [chars]) => str(pyStrip(s, chars, true, true)),
  lstrip: (s, [chars]) => str(pyStrip(s, chars, true, false)),
  rstrip: (s, [chars]) => str(pyStrip(s, chars, false, true)),
};

// ---------------------------------------------------------------------------------------------------------------------
// The interpreter

const isDict = (v: RV): boolean => v.type === 'ObjectValue';

/** A short name of an expression for errors: `message.content`, `messages[...]`. */
function describe(node: Node): string {
  if (node.type === 'Identifier') return node.value;
  if (node.type === 'MemberExpression') {
    const p: Node = node.property;
    return describe(node.object) + (node.computed ? `[${p.type === 'StringLiteral' ? pyReprString(p.value) : p.type === 'IntegerLiteral' ? p.value : '...'}]` : `.${p.value}`);
  }
  return 'a value';
}
const DICT_METHODS = new Set(['items', 'keys', 'values', 'get']);
const BINARY_OPS = new Set(['+', '*', '~', '==', '!=', 'in', 'not in']);

/** The binary operators where the library departs from Python; undefined leaves the operation to the library. */
function binary(op: string, l: RV, r: RV): RV | undefined {
  switch (op) {
    case '+':
      if (isStr(l) !== isStr(r) && !(l instanceof UndefinedValue || r instanceof UndefinedValue)) {
        // the library concatenates str + anything; Python raises
        throw new TypeError(`can only concatenate str (not "${pyType(isStr(l) ? r : l)}") to str`);
      }
      // markupsafe: Markup + str escapes the str
      if ((l instanceof MarkupValue || r instanceof MarkupValue) && isStr(l) && isStr(r)) return new MarkupValue(htmlEscape(l) + htmlEscape(r));
      return undefined;
    case '~': // str() of both sides: "None", "True", Python reprs (the library refuses none)
      return str(pyStr(l) + pyStr(r));
    case '==':
    case '!=': // the library compares with JS `==`: 1 == "1", and never two equal lists
      return bool(pyEq(l, r) === (op === '=='));
    case '*': {
      // str * int and list * int repeat, as in Python
      const [seq, n] = l instanceof IntegerValue ? [r, l.value as number] : [l, r instanceof IntegerValue ? (r.value as number) : NaN];
      if (Number.isNaN(n)) return undefined;
      if (isStr(seq)) return str((seq.value as string).repeat(Math.max(0, n)));
      if (seq instanceof ArrayValue) return new ArrayValue(Array.from({ length: Math.max(0, n) }, () => seq.value).flat());
      return undefined;
    }
    default: {
      // in, not in: == membership in lists (the library only compares strings and numbers), keys of any dict
      let has: boolean;
      if (r instanceof ArrayValue) has = r.value.some((x: RV) => pyEq(l, x));
      else if (r instanceof PyDict) has = r.value.has(dictKey(l));
      else if (isDict(r)) has = isStr(l) && r.value.has(l.value);
      else return undefined;
      return bool(has === (op === 'in'));
    }
  }
}

function pyType(v: RV): string {
  if (v instanceof NullValue) return 'NoneType';
  if (v instanceof BooleanValue) return 'bool';
  if (v instanceof IntegerValue) return 'int';
  if (v instanceof FloatValue) return 'float';
  if (v instanceof TupleValue) return 'tuple';
  if (v instanceof ArrayValue) return 'list';
  if (isDict(v)) return 'dict';
  return v.type;
}

/**
 * What `{{ x }}` writes: jinja2 writes str(x), so none is "None", booleans "True"/"False", lists and dicts their
 * Python repr. The library writes nothing for none and JSON-like text for the others. Undefined writes nothing in both.
 */
function pyOutput(v: RV): RV {
  if (isStr(v) || v instanceof IntegerValue || v instanceof UndefinedValue) return v;
  if (v instanceof NullValue || v instanceof BooleanValue || v instanceof FloatValue || v instanceof ArrayValue || isDict(v)) {
    return str(pyStr(v));
  }
  return v;
}

/** Nodes marked once per parse: the expression statements, what `{{ ... }}` writes (see pyOutput), and what for
 * loops loop over. */
const OUTPUT = new WeakSet<object>();
const LOOPED = new WeakSet<object>();
const NOT_OUTPUT = new Set(['If', 'For', 'Set', 'Macro', 'CallStatement', 'FilterStatement', 'Comment', 'Break', 'Continue', 'StringLiteral']);

function markNodes(node: unknown): void {
  if (Array.isArray(node)) {
    for (const x of node) markNodes(x);
  } else if (typeof node === 'object' && node !== null && typeof (node as Node).type === 'string') {
    const { type, iterable } = node as Node;
    if (type === 'For') LOOPED.add(iterable.type === 'SelectExpression' ? iterable.lhs : iterable);
    for (const key of ['body', 'alternate', 'defaultBlock']) {
      const block = (node as Node)[key];
      if (!Array.isArray(block)) continue;
      for (const s of block) {
        if (NOT_OUTPUT.has(s.type)) markNodes(s);
        else OUTPUT.add(s);
      }
    }
  }
}

/** A node that evaluates to a value already computed: how an override hands evaluated operands back to the library. */
const VALUE = 'EdgeLLMValue';
const V = (value: RV): Node => ({ type: VALUE, value });

/** `value | name(args)` of values already evaluated: for map('upper'), and to hand a filter back to the library. */
function filterNode(value: RV, name: string, pos: RV[], kw: Map<string, RV>): Node {
  const callee = { type: 'Identifier', value: name };
  const keywords = [...kw].map(([k, v]) => ({ type: 'KeywordArgumentExpression', key: { type: 'Identifier', value: k }, value: V(v) }));
  const args = [...pos.map(V), ...keywords];
  return { type: 'FilterExpression', operand: V(value), filter: args.length ? { type: 'CallExpression', callee, args } : callee };
}

class PyInterpreter extends Interpreter {
  override evaluate(node: any, env: Environment): any {
    const v = this.evaluateNode(node, env);
    if (OUTPUT.has(node)) return pyOutput(v);
    // jinja2 loops over a string's characters and over undefined (no items), where the library refuses both
    if (LOOPED.has(node) && (isStr(v) || v instanceof UndefinedValue)) return new ArrayValue(iterate(v));
    return v;
  }

  evaluateNode(node: Node, env: Environment): RV {
    switch (node?.type) {
      case VALUE:
        return node.value;
      case 'TupleLiteral':
        return new TupleValue(node.value.map((x: Node) => this.evaluate(x, env)));
      case 'ObjectLiteral':
        return this.dictLiteral(node, env);
      case 'FilterExpression': {
        const filter: Node = node.filter;
        const name: string = filter.type === 'Identifier' ? filter.value : filter.callee?.value;
        if (!Object.hasOwn(FILTERS, name)) break;
        const operand = this.evaluate(node.operand, env);
        const { pos, kw } = this.callArgs(filter.args ?? [], env);
        return FILTERS[name].call(this, operand, pos, kw, env) ?? super.evaluate(filterNode(operand, name, pos, kw) as never, env);
      }
      case 'BinaryExpression': {
        const op: string = node.operator.value;
        if (!BINARY_OPS.has(op)) break;
        const l = this.evaluate(node.left, env);
        const r = this.evaluate(node.right, env);
        return binary(op, l, r) ?? super.evaluate({ ...node, left: V(l), right: V(r) } as never, env);
      }
      case 'CallExpression': {
        // A method call: str methods done here, and a dict's own methods, which jinja2 finds before its keys (a JSON
        // schema with a key "items" still has .items()), where the library looks at the keys first.
        const callee: Node = node.callee;
        if (callee.type !== 'MemberExpression' || callee.computed) break;
        const name: string = callee.property.value;
        const object = this.evaluate(callee.object, env);
        if (isStr(object) && Object.hasOwn(STR_METHODS, name)) {
          const { pos, kw } = this.callArgs(node.args, env);
          return STR_METHODS[name](object.value, pos, kw);
        }
        if (isDict(object) && DICT_METHODS.has(name)) {
          const { pos, kw } = this.callArgs(node.args, env);
          if (name === 'items') return dictItems(object);
          if (kw.size === 0) return object.builtins.get(name)!.value(pos, env);
        }
        return super.evaluate({ ...node, callee: { ...callee, object: V(object) } } as never, env);
      }
      case 'TestExpression': {
        const test = TESTS[node.test.value];
        if (!test) break;
        return bool(test(this.evaluate(node.operand, env)) !== node.negate);
      }
      case 'MemberExpression': {
        const object = this.evaluate(node.object, env);
        if (object instanceof UndefinedValue) {
          // jinja2's Undefined is lenient once (`x is defined`, `{{ x }}`), but an attribute or item of it is an error
          throw new Error(`${describe(node.object)} is undefined`);
        }
        // d[key]: a PyDict's keys, and jinja2's Undefined (not an error) for a key that is not a string
        if (!node.computed || node.property.type === 'SliceExpression' || node.property.type === 'StringLiteral') {
          return super.evaluate({ ...node, object: V(object) } as never, env);
        }
        if (isDict(object)) {
          const key = this.evaluate(node.property, env);
          if (object instanceof PyDict) return object.value.get(dictKey(key)) ?? undef();
          if (!isStr(key)) return undef();
          return super.evaluate({ ...node, object: V(object), property: V(key) } as never, env);
        }
        return super.evaluate({ ...node, object: V(object) } as never, env);
      }
    }
    return super.evaluate(node as never, env) as unknown as RV;
  }

  /** Evaluated call arguments: positional ones (with *spread) and keyword ones. */
  callArgs(nodes: Node[], env: Environment): { pos: RV[]; kw: Map<string, RV> } {
    const pos: RV[] = [];
    const kw = new Map<string, RV>();
    for (const a of nodes) {
      if (a.type === 'KeywordArgumentExpression') kw.set(a.key.value, this.evaluate(a.value, env));
      else if (a.type === 'SpreadExpression') pos.push(...iterate(this.evaluate(a.argument, env)));
      else if (a.type === 'KeywordSpreadExpression') for (const [k, v] of this.evaluate(a.argument, env).value) kw.set(k, v);
      else pos.push(this.evaluate(a, env));
    }
    return { pos, kw };
  }

  dictLiteral(node: Node, env: Environment): RV {
    const entries = new Map<string, RV>();
    const keyValues = new Map<string, RV>();
    for (const [k, v] of node.value as Map<Node, Node>) {
      const key = this.evaluate(k, env);
      entries.set(dictKey(key), this.evaluate(v, env));
      keyValues.set(dictKey(key), key);
    }
    return [...keyValues.values()].every(isStr) ? new ObjectValue(entries) : new PyDict(entries, keyValues);
  }

  /** jinja2's select/reject/selectattr/rejectattr: `if value:` first, so none and undefined give nothing. */
  selectOrReject(value: RV, pos: RV[], env: Environment, select: boolean, attr: boolean): RV {
    if (!truthy(value)) return new GeneratorValue([]);
    const path = attr ? (pos[0]?.value as string) : undefined;
    const [testName, ...testArgs] = attr ? pos.slice(1) : pos;
    let test: (x: RV) => boolean = truthy;
    if (testName) {
      const name = testName.value as string;
      const t = EXTRA_TESTS[name] ?? env.tests.get(name);
      if (!t) throw new Error(`No test named '${name}'`);
      test = (x) => (t as (...a: RV[]) => boolean)(x, ...testArgs);
    }
    return new GeneratorValue(iterate(value).filter((x) => test(path === undefined ? x : getAttr(x, path)) === select));
  }
}

type Filter = (this: PyInterpreter, v: RV, pos: RV[], kw: Map<string, RV>, env: Environment) => RV | undefined;

/** Filters done here; one that returns undefined leaves the value to the library's filter of the same name. */
const FILTERS: Record<string, Filter> = {
  tojson: (v, pos, kw) => tojson(v, pos, kw),
  string: (v) => (isStr(v) ? v : str(pyStr(v))),
  // str filters work on str(value), whatever the value: ['string', 'null'] | upper is "['STRING', 'NULL']"
  upper: (v) => str(pyStr(v).toUpperCase()),
  lower: (v) => str(pyStr(v).toLowerCase()),
  capitalize: (v) => str(pyStr(v).charAt(0).toUpperCase() + pyStr(v).slice(1).toLowerCase()),
  trim: (v, [chars], kw) => str(pyStrip(pyStr(v), chars ?? kw.get('chars'), true, true)), // str(v): undefined gives ''
  safe: (v) => new MarkupValue(pyStr(v)),
  e: (v) => new MarkupValue(htmlEscape(v)),
  escape: (v) => new MarkupValue(htmlEscape(v)),
  first: (v) => iterate(v)[0] ?? undef(), // the library's first of [] is not a value at all
  last: (v) => iterate(v).at(-1) ?? undef(),
  reverse: (v) => (isStr(v) ? str(Array.from(v.value as string).reverse().join('')) : undefined),
  list: (v) => (v instanceof NullValue ? undefined : new ArrayValue(iterate(v).slice())),
  length: (v) => length(v),
  count: (v) => length(v),
  items: (v) => (isDict(v) ? dictItems(v) : undefined),
  dictsort: (v, pos, kw) => (isDict(v) ? dictsort(v, pos, kw) : undefined),
  min: (v, pos, kw) => minMax(v, pos, kw, -1),
  max: (v, pos, kw) => minMax(v, pos, kw, 1),
  select(v, pos, _kw, env) {
    return this.selectOrReject(v, pos, env, true, false);
  },
  reject(v, pos, _kw, env) {
    return this.selectOrReject(v, pos, env, false, false);
  },
  selectattr(v, pos, _kw, env) {
    return this.selectOrReject(v, pos, env, true, true);
  },
  rejectattr(v, pos, _kw, env) {
    return this.selectOrReject(v, pos, env, false, true);
  },
  map(v, pos, kw, env) {
    if (!truthy(v)) return new GeneratorValue([]);
    const items = iterate(v);
    const attribute = kw.get('attribute');
    if (attribute !== undefined) {
      const dflt = kw.get('default');
      return new GeneratorValue(items.map((x) => {
        const a = getAttr(x, pyStr(attribute));
        return a instanceof UndefinedValue && dflt !== undefined ? dflt : a;
      }));
    }
    const [name, ...rest] = pos;
    if (!name || !isStr(name)) throw new Error('map() needs a filter name or attribute=');
    return new GeneratorValue(items.map((x) => this.evaluate(filterNode(x, name.value, rest, kw), env)));
  },
};

/** Python's len(): code points of a string; a generator has none. */
function length(v: RV): RV | undefined {
  if (v instanceof GeneratorValue) throw new TypeError("object of type 'generator' has no len()");
  if (isStr(v)) return new IntegerValue(Array.from(v.value as string).length);
  if (v instanceof UndefinedValue) return new IntegerValue(0);
  return undefined;
}

/** jinja2's min/max(case_sensitive=False, attribute=None); undefined for an empty sequence. */
function minMax(v: RV, pos: RV[], kw: Map<string, RV>, sign: number): RV {
  const caseSensitive = truthy(pos[0] ?? kw.get('case_sensitive') ?? bool(false));
  const attribute = pos[1] ?? kw.get('attribute');
  const key = (x: RV) => (attribute === undefined || attribute instanceof NullValue ? x : getAttr(x, pyStr(attribute)));
  let best: RV | undefined;
  for (const x of iterate(v)) if (best === undefined || compare(key(x), key(best), caseSensitive) * sign > 0) best = x;
  return best ?? undef();
}

// ---------------------------------------------------------------------------------------------------------------------
// strftime_now

const DAYS = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday'];
const MONTHS = ['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September', 'October', 'November', 'December'];

/**
 * Python's datetime.strftime for a naive local time (transformers formats datetime.now()), in the C locale, with
 * glibc's flags `-` (no padding), `_` (pad with spaces), `0` and `^` (upper case). Unknown directives stay as written.
 */
export function strftime(d: Date, format: string): string {
  const Y = d.getFullYear();
  const m = d.getMonth();
  const day = d.getDate();
  const H = d.getHours();
  const w = d.getDay();
  const yday = Math.round((Date.UTC(Y, m, day) - Date.UTC(Y, 0, 1)) / 86_400_000); // 0-based day of the year
  const num = (n: number, width: number, pad: string) => ({ n, width, pad });
  return format.replace(/%([-_0^#]?)([a-zA-Z%])/g, (whole, flag: string, c: string) => {
    let v: string | { n: number; width: number; pad: string };
    switch (c) {
      case 'a': v = DAYS[w].slice(0, 3); break;
      case 'A': v = DAYS[w]; break;
      case 'b': case 'h': v = MONTHS[m].slice(0, 3); break;
      case 'B': v = MONTHS[m]; break;
      case 'c': v = strftime(d, '%a %b %e %H:%M:%S %Y'); break;
      case 'C': v = num(Math.floor(Y / 100), 2, '0'); break;
      case 'd': v = num(day, 2, '0'); break;
      case 'D': case 'x': v = strftime(d, '%m/%d/%y'); break;
      case 'e': v = num(day, 2, ' '); break;
      case 'f': v = num(d.getMilliseconds() * 1000, 6, '0'); break;
      case 'F': v = strftime(d, '%Y-%m-%d'); break;
      case 'H': v = num(H, 2, '0'); break;
      case 'I': v = num(H % 12 || 12, 2, '0'); break;
      case 'j': v = num(yday + 1, 3, '0'); break;
      case 'k': v = num(H, 2, ' '); break;
      case 'l': v = num(H % 12 || 12, 2, ' '); break;
      case 'm': v = num(m + 1, 2, '0'); break;
      case 'M': v = num(d.getMinutes(), 2, '0'); break;
      case 'n': v = '\n'; break;
      case 'p': v = H < 12 ? 'AM' : 'PM'; break;
      case 'P': v = H < 12 ? 'am' : 'pm'; break;
      case 'r': v = strftime(d, '%I:%M:%S %p'); break;
      case 'R': v = strftime(d, '%H:%M'); break;
      case 'S': v = num(d.getSeconds(), 2, '0'); break;
      case 't': v = '\t'; break;
      case 'T': case 'X': v = strftime(d, '%H:%M:%S'); break;
      case 'u': v = num(w || 7, 1, '0'); break;
      case 'U': v = num(Math.floor((yday + 7 - w) / 7), 2, '0'); break; // weeks starting on Sunday
      case 'w': v = num(w, 1, '0'); break;
      case 'W': v = num(Math.floor((yday + 7 - ((w + 6) % 7)) / 7), 2, '0'); break; // weeks starting on Monday
      case 'y': v = num(Y % 100, 2, '0'); break;
      case 'Y': v = num(Y, 1, '0'); break;
      case 'z': case 'Z': v = ''; break; // a naive datetime has no zone
      case '%': v = '%'; break;
      default: return whole;
    }
    if (typeof v !== 'string') {
      const pad = flag === '-' ? '' : flag === '_' ? ' ' : flag === '0' ? '0' : v.pad;
      v = pad ? String(v.n).padStart(v.width, pad) : String(v.n);
    }
    return flag === '^' ? v.toUpperCase() : v;
  });
}
