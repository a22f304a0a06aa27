/**
 * `hf:` model names, resolved against the Hugging Face hub (or a mirror at HF_ENDPOINT):
 *
 *   hf:OWNER/REPO/FILE.gguf   a file of the repo (FILE may name subfolders)
 *   hf:OWNER/REPO:QUANT       the repo's .gguf whose name has the quant tag (Q4_K_M, q8_0…) as a whole word
 *
 * Both resolve to `{endpoint}/OWNER/REPO/resolve/main/FILE`; a split GGUF resolves to its first part (split.ts opens
 * the rest). The token goes only to the hub's own requests, never to other URLs.
 */
import { EdgeLLMError } from '../errors.js';
import { errorMessage, fetchOf, throwIfAborted, type OpenOptions } from './source.js';

export interface HubOptions {
  /** sent as `Authorization: Bearer …` (gated and private repos); default HF_TOKEN from the environment */
  token?: string;
  /** the hub's base URL, for a mirror; default HF_ENDPOINT from the environment, else https://huggingface.co */
  endpoint?: string;
}

const DEFAULT_HUB_ENDPOINT = 'https://huggingface.co';

const FORMS = 'expected hf:OWNER/REPO/FILE.gguf or hf:OWNER/REPO:QUANT (e.g. hf:bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M)';
/** The hub's repo names: letters, digits, '-', '_', '.', not starting or ending with '.' or '-'. */
const REPO_PART = /^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9_])?$/;
const QUANT = /^[A-Za-z0-9_]+$/;
/** The repo's file list answer is JSON of a few KB to a few MB; a server sending more is not a hub. */
const MAX_LISTING_BYTES = 32 << 20;
/** llama.cpp's gguf-split names: NAME-00001-of-00003.gguf */
export const SPLIT_PART = /-(\d{5})-of-(\d{5})\.gguf$/i;

export interface HubName {
  owner: string;
  repo: string;
  /** the file in the repo (hf:OWNER/REPO/FILE), or undefined for the QUANT form */
  file?: string;
  quant?: string;
}

export function isHubName(source: unknown): source is string {
  return typeof source === 'string' && /^hf:/i.test(source);
}

export function parseHubName(name: string): HubName {
  const bad = (why: string) => new EdgeLLMError('BAD_ARGUMENT', `model name ${JSON.stringify(name)}: ${why}; ${FORMS}`);
  if (!isHubName(name)) throw bad('not an hf: name');
  const rest = name.slice(3);
  const colon = rest.indexOf(':');
  const path = colon < 0 ? rest : rest.slice(0, colon);
  const [owner, repo, ...file] = path.split('/');
  if (owner === undefined || repo === undefined || !REPO_PART.test(owner) || !REPO_PART.test(repo)) {
    throw bad('OWNER and REPO must be hub names (letters, digits, ".", "-", "_")');
  }
  if (colon >= 0) {
    const quant = rest.slice(colon + 1);
    if (file.length > 0) throw bad('give a FILE or a :QUANT, not both');
    if (!QUANT.test(quant)) throw bad(`the quant tag ${JSON.stringify(quant)} must be letters, digits and "_"`);
    return { owner, repo, quant };
  }
  if (file.length === 0) throw bad('no FILE or :QUANT after OWNER/REPO');
  if (file.some((part) => part === '' || part === '.' || part === '..')) throw bad('FILE has an empty, "." or ".." path segment');
  const joined = file.join('/');
  if (!/\.gguf$/i.test(joined)) throw bad('FILE must be a .gguf file');
  return { owner, repo, file: joined };
}

/** HF_TOKEN and HF_ENDPOINT where the runtime has an environment (Node, Bun: process.env; Deno: Deno.env). */
function fromEnvironment(key: string): string | undefined {
  const g = globalThis as { process?: { env?: Record<string, string | undefined> }; Deno?: { env?: { get(k: string): string | undefined } } };
  try {
    const v = g.process?.env?.[key] ?? g.Deno?.env?.get(key);
    return v === undefined || v === '' ? undefined : v;
  } catch {
    return undefined; // Deno without --allow-env throws
  }
}

function hubSettings(opts: HubOptions = {}): { endpoint: string; token: string | undefined } {
  const raw = opts.endpoint ?? fromEnvironment('HF_ENDPOINT') ?? DEFAULT_HUB_ENDPOINT;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new EdgeLLMError('BAD_ARGUMENT', `hub endpoint ${JSON.stringify(raw)} (HF_ENDPOINT) is not a URL`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new EdgeLLMError('BAD_ARGUMENT', `hub endpoint ${JSON.stringify(raw)} (HF_ENDPOINT) must be http: or https:`);
  }
  return { endpoint: url.href.replace(/\/+$/, ''), token: opts.token ?? fromEnvironment('HF_TOKEN') };
}

const encodePath = (path: string) => path.split('/').map(encodeURIComponent).join('/');

/** The quant tags in a repo's file names (Q4_K_M, IQ4_XS, F16, BF16…), for an error that says which exist. */
function quantTags(files: string[]): string[] {
  const tags = new Set<string>();
  for (const f of files) {
    const base = f.split('/').pop()!.replace(SPLIT_PART, '.gguf').replace(/\.gguf$/i, '');
    for (const word of base.split(/[-.]/)) {
      if (/^(?:I?Q\d(?:_[A-Z0-9]+)*|TQ\d_\d|B?F(?:16|32)|MXFP4)$/i.test(word)) tags.add(word.toUpperCase());
    }
  }
  return [...tags].sort();
}

/**
 * The file for a quant tag: the .gguf names with the tag as a whole word (case-insensitive). A split set counts as one
 * candidate (its first part); a single file wins over split sets; mmproj files (vision projectors) are not models.
 */
export function pickQuantFile(files: string[], quant: string, repoLabel: string): string {
  const word = new RegExp(`(?<![A-Za-z0-9_])${quant}(?![A-Za-z0-9_])`, 'i');
  const ggufs = files.filter((f) => /\.gguf$/i.test(f) && !/^mmproj/i.test(f.split('/').pop()!));
  const matching = ggufs.filter((f) => word.test(f));
  const singles = matching.filter((f) => !SPLIT_PART.test(f));
  const firstParts = matching.filter((f) => /-00001-of-\d{5}\.gguf$/i.test(f));
  const candidates = singles.length > 0 ? singles : firstParts;
  if (candidates.length === 1) return candidates[0];
  if (candidates.length > 1) {
    throw new EdgeLLMError(
      'BAD_ARGUMENT',
      `${repoLabel}: quant tag ${quant} matches ${candidates.length} files: ${candidates.join(', ')}; name one as hf:${repoLabel}/FILE`,
    );
  }
  const tags = quantTags(ggufs);
  const have = ggufs.length === 0 ? 'it has no .gguf files' : tags.length ? `its files have ${tags.join(', ')}` : `its .gguf files are ${ggufs.join(', ')}`;
  throw new EdgeLLMError('BAD_SOURCE', `${repoLabel}: no .gguf file has the quant tag ${quant}; ${have}`);
}

/** The hub's model info, `GET {endpoint}/api/models/OWNER/REPO`: `siblings[].rfilename` lists the repo's files. */
async function listFiles(endpoint: string, owner: string, repo: string, headers: Record<string, string>, opts: OpenOptions): Promise<string[]> {
  const url = `${endpoint}/api/models/${owner}/${repo}`;
  const doFetch = fetchOf(opts, url);
  throwIfAborted(opts.signal, `listing ${owner}/${repo}`);
  let res: Response;
  try {
    res = await doFetch(url, { headers, signal: opts.signal });
  } catch (err) {
    if (opts.signal?.aborted) throw new EdgeLLMError('ABORTED', `listing ${owner}/${repo}: aborted`, { cause: err });
    throw new EdgeLLMError('BAD_SOURCE', `${url}: fetch failed: ${errorMessage(err)}`, { cause: err });
  }
  if (!res.ok) {
    await res.body?.cancel().catch(() => {});
    const hint =
      res.status === 401 || res.status === 403
        ? headers.authorization
          ? ': the token (HF_TOKEN) was refused'
          : ': the repo may be gated or private; set HF_TOKEN'
        : res.status === 404
          ? ': no such repo'
          : '';
    throw new EdgeLLMError('BAD_SOURCE', `${url}: HTTP status ${res.status}${hint}`);
  }
  const text = await boundedText(res, url, opts);
  let info: unknown;
  try {
    info = JSON.parse(text);
  } catch (err) {
    throw new EdgeLLMError('BAD_SOURCE', `${url}: the answer is not JSON`, { cause: err });
  }
  const siblings = (info as { siblings?: unknown })?.siblings;
  if (!Array.isArray(siblings)) throw new EdgeLLMError('BAD_SOURCE', `${url}: the answer has no siblings list`);
  return siblings.map((s) => (s as { rfilename?: unknown })?.rfilename).filter((f): f is string => typeof f === 'string');
}

async function boundedText(res: Response, url: string, opts: OpenOptions): Promise<string> {
  if (!res.body) return res.text();
  const reader = res.body.getReader();
  const parts: Uint8Array[] = [];
  let bytes = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      bytes += value.length;
      if (bytes > MAX_LISTING_BYTES) {
        void reader.cancel().catch(() => {});
        throw new EdgeLLMError('BAD_SOURCE', `${url}: the file list is over ${MAX_LISTING_BYTES} bytes`);
      }
      parts.push(value);
    }
  } catch (err) {
    if (err instanceof EdgeLLMError) throw err;
    if (opts.signal?.aborted) throw new EdgeLLMError('ABORTED', `${url}: aborted`, { cause: err });
    throw new EdgeLLMError('BAD_SOURCE', `${url}: reading the answer failed: ${errorMessage(err)}`, { cause: err });
  }
  const all = new Uint8Array(bytes);
  let at = 0;
  for (const p of parts) {
    all.set(p, at);
    at += p.length;
  }
  return new TextDecoder().decode(all);
}

export interface ResolvedHubName {
  /** the file's URL (the first part of a split set) */
  url: string;
  /** the headers every request for it needs (the token) */
  headers: Record<string, string>;
}

/** Resolves an hf: name to a URL (listing the repo for the QUANT form). Errors: BAD_ARGUMENT, BAD_SOURCE, ABORTED. */
export async function resolveHubName(name: string, opts: OpenOptions & { hf?: HubOptions } = {}): Promise<ResolvedHubName> {
  const parsed = parseHubName(name);
  const { endpoint, token } = hubSettings(opts.hf);
  const headers: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};
  const file = parsed.file ?? pickQuantFile(await listFiles(endpoint, parsed.owner, parsed.repo, headers, opts), parsed.quant!, `${parsed.owner}/${parsed.repo}`);
  return { url: `${endpoint}/${parsed.owner}/${parsed.repo}/resolve/main/${encodePath(file)}`, headers };
}
