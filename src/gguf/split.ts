/**
 * Split GGUFs, as llama.cpp's gguf-split writes them: NAME-00001-of-00003.gguf … NAME-00003-of-00003.gguf, each part
 * a GGUF of its own with `split.no` (u16, from 0), `split.count` (u16) and `split.tensors.count` (i32, the whole
 * model's). The first part holds all the model's metadata and maybe some tensors; the others hold only tensors.
 *
 * Loaded as one model the way llama-model-loader.cpp does: the first part's metadata, every part's tensors merged
 * into one table with no name twice, and their total equal to split.tensors.count. The parts are laid end to end as
 * one ByteSource and each part's tensor offsets are shifted by where it starts, so the reader and the loader see one
 * file and read each tensor from its own part.
 */
import { EdgeLLMError } from '../errors.js';
import { GGUFFile, readGGUF, type TensorInfo } from './reader.js';
import { concatSource, fetchRelativePath, openSource, withHeaders, type ByteSource, type ModelSource, type OpenOptions, type PathOpener } from './source.js';
import { isHubName, resolveHubName, SPLIT_PART } from './hub.js';

const SPLIT_NO = 'split.no';
const SPLIT_COUNT = 'split.count';
const SPLIT_TENSORS_COUNT = 'split.tensors.count';

/** llama.cpp's llama_split_path: PREFIX-%05d-of-%05d.gguf, numbered from 1. */
export function splitPartName(prefix: string, index: number, count: number): string {
  return `${prefix}-${String(index + 1).padStart(5, '0')}-of-${String(count).padStart(5, '0')}.gguf`;
}

/** Part `index` of the set whose first part is at `first` (a path or URL; for a URL only its path changes). */
function partLocation(first: string, index: number, count: number): string | undefined {
  let url: URL | undefined;
  try {
    url = /^[a-z][a-z0-9+.-]*:\/\//i.test(first) ? new URL(first) : undefined;
  } catch {
    url = undefined;
  }
  const path = url ? url.pathname : first;
  const m = path.match(SPLIT_PART);
  if (!m || Number(m[1]) !== 1 || Number(m[2]) !== count) return undefined;
  const named = splitPartName(path.slice(0, m.index), index, count);
  if (!url) return named;
  url.pathname = named;
  return url.href;
}

function splitCount(gguf: GGUFFile): number {
  return gguf.has(SPLIT_COUNT) ? gguf.int(SPLIT_COUNT) : 1;
}

/**
 * The parts after the first: opened, their headers read and checked against the set, then merged with the first into
 * one GGUFFile over one source. Closes what it opened if anything fails.
 */
async function mergeParts(first: ByteSource, head: GGUFFile, location: string, opts: OpenOptions, openPath: PathOpener): Promise<{ source: ByteSource; gguf: GGUFFile }> {
  const count = splitCount(head);
  const bad = (why: string) => new EdgeLLMError('BAD_METADATA', `split GGUF ${location}: ${why}`);
  if (count < 1 || count > 65535) throw bad(`${SPLIT_COUNT} is ${count}, expected 1..65535`);
  const no = head.int(SPLIT_NO, 0);
  if (no !== 0) {
    const prefix = location.match(SPLIT_PART) ? location.replace(SPLIT_PART, '') : undefined;
    const firstName = prefix === undefined ? 'the first part' : splitPartName(prefix, 0, count);
    throw new EdgeLLMError('BAD_ARGUMENT', `split GGUF ${location} is part ${no + 1} of ${count}: load it by its first part, ${firstName}`);
  }
  const expected = head.int(SPLIT_TENSORS_COUNT);
  const parts: ByteSource[] = [first];
  const files: GGUFFile[] = [head];
  try {
    for (let i = 1; i < count; i++) {
      const where = partLocation(location, i, count);
      if (!where) {
        throw new EdgeLLMError(
          'BAD_SOURCE',
          `split GGUF ${location}: ${SPLIT_COUNT} is ${count}, but the name does not end in -00001-of-${String(count).padStart(5, '0')}.gguf, so the other parts cannot be found`,
        );
      }
      let part: ByteSource;
      try {
        part = await openSource(where, opts, openPath);
      } catch (err) {
        if (err instanceof EdgeLLMError && (err.code === 'ABORTED' || err.code === 'BAD_ARGUMENT')) throw err;
        throw new EdgeLLMError('BAD_SOURCE', `split GGUF ${location}: part ${i + 1} of ${count} (${where}) cannot be opened: ${(err as Error).message}`, { cause: err });
      }
      parts.push(part);
      const gguf = await readGGUF(part);
      files.push(gguf);
      if (!gguf.has(SPLIT_NO) || gguf.int(SPLIT_NO) !== i) {
        throw bad(`part ${where} has ${SPLIT_NO} ${gguf.has(SPLIT_NO) ? gguf.int(SPLIT_NO) : '(none)'}, expected ${i}`);
      }
      if (splitCount(gguf) !== count) throw bad(`part ${where} has ${SPLIT_COUNT} ${splitCount(gguf)}, the first part ${count}`);
    }
    const tensors: TensorInfo[] = [];
    const seen = new Map<string, number>();
    let base = 0;
    files.forEach((gguf, i) => {
      for (const t of gguf.tensors) {
        const other = seen.get(t.name);
        if (other !== undefined) throw bad(`tensor "${t.name}" is in part ${other + 1} and part ${i + 1}`);
        seen.set(t.name, i);
        tensors.push({ ...t, offset: t.offset + base });
      }
      base += gguf.fileSize;
    });
    if (tensors.length !== expected) throw bad(`${SPLIT_TENSORS_COUNT} is ${expected}, but the ${count} parts hold ${tensors.length} tensors`);
    const source = concatSource(parts, first.name);
    const gguf = new GGUFFile(
      { version: head.version, metadata: head.metadata, types: head.metadataTypes, tensors, alignment: head.alignment, dataOffset: head.dataOffset },
      source.size,
      first.name,
    );
    return { source, gguf };
  } catch (err) {
    await Promise.all(parts.slice(1).map((p) => p.close().catch(() => {})));
    throw err;
  }
}

/**
 * Opens a model and reads its header: a single GGUF, or a split one given by its first part (a path, URL or hf: name),
 * whose parts are found by their names and merged. The caller closes `source`.
 */
export async function openGGUF(src: ModelSource, opts: OpenOptions = {}, openPath: PathOpener = fetchRelativePath): Promise<{ source: ByteSource; gguf: GGUFFile }> {
  let location: string | undefined = typeof src === 'string' ? src : src instanceof URL ? src.href : undefined;
  if (isHubName(src)) {
    const hub = await resolveHubName(src, opts);
    location = hub.url;
    src = hub.url;
    opts = withHeaders(opts, hub.headers);
  }
  const first = await openSource(src, opts, openPath);
  try {
    const head = await readGGUF(first);
    if (splitCount(head) === 1) return { source: first, gguf: head };
    if (location === undefined) {
      throw new EdgeLLMError(
        'BAD_SOURCE',
        `${first.name} is part of a split GGUF (${SPLIT_COUNT} ${splitCount(head)}): pass the first part's path or URL so the others can be found, or merge the parts with llama-gguf-split --merge`,
      );
    }
    return await mergeParts(first, head, location, opts, openPath);
  } catch (err) {
    await first.close().catch(() => {});
    throw err;
  }
}
