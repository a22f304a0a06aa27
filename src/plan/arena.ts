import { EdgeLLMError } from '../errors.js';

export interface Region {
  name: string;
  offset: number;
  bytes: number;
}

const PAGE = 65536;
/** wasm32 addresses 4 GiB; engines commonly cap a Memory at 65536 pages. */
export const WASM32_BYTES = 4 * 1024 * 1024 * 1024 - PAGE;

/**
 * A plan past one memory's limit (wasm32's 4 GiB, or LoadOptions.memoryPerInstance): the planner answers it with more
 * kernel instances, each with a memory of its own, where it can.
 */
export class MemoryFull extends EdgeLLMError {}

/**
 * The host's plan of linear memory: named, aligned regions handed out before any memory exists, so the total can be
 * checked against the budget first. Nothing else ever claims wasm memory.
 */
export class Arena {
  readonly regions: Region[] = [];
  private top: number;

  constructor(readonly base: number, readonly limit = WASM32_BYTES) {
    this.top = base;
  }

  reserve(name: string, bytes: number, align = 64): number {
    if (!Number.isSafeInteger(bytes) || bytes < 0) throw new EdgeLLMError('BUDGET', `region ${name}: invalid size ${bytes}`);
    const offset = Math.ceil(this.top / align) * align;
    if (offset + bytes > this.limit) {
      const what = this.limit === WASM32_BYTES ? "wasm32's 4 GiB" : `the ${formatBytes(this.limit)} of memoryPerInstance`;
      throw new MemoryFull(
        'BUDGET',
        `the plan needs more than ${what} of linear memory at region ${name} (${formatBytes(offset + bytes)}); use a smaller context or a smaller model`,
      );
    }
    this.regions.push({ name, offset, bytes });
    this.top = offset + bytes;
    return offset;
  }

  /** Bytes of linear memory the plan needs, rounded up to whole wasm pages. */
  get totalBytes(): number {
    return Math.ceil(this.top / PAGE) * PAGE;
  }

  /** The memory of the plan, at its final size; `shared` for threads (a SharedArrayBuffer every worker maps). */
  createMemory(shared = false): WebAssembly.Memory {
    const pages = this.totalBytes / PAGE;
    try {
      return new WebAssembly.Memory({ initial: pages, maximum: pages, shared });
    } catch (e) {
      throw new EdgeLLMError('BUDGET', `the engine refused ${formatBytes(this.totalBytes)} of wasm memory: ${(e as Error).message}`, { cause: e });
    }
  }
}

export function formatBytes(n: number): string {
  if (n >= 1 << 30) return `${(n / (1 << 30)).toFixed(2)} GiB`;
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)} MiB`;
  if (n >= 1 << 10) return `${(n / (1 << 10)).toFixed(1)} KiB`;
  return `${n} B`;
}

/** '512MB', '1.5GiB', 1e9 → bytes. */
export function parseBytes(v: string | number, what: string): number {
  if (typeof v === 'number') {
    if (Number.isFinite(v) && v > 0) return Math.floor(v);
  } else {
    const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$/i.exec(v);
    if (m) {
      const mult = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[m[2].toLowerCase() as '' | 'k' | 'm' | 'g' | 't'];
      const n = Math.floor(parseFloat(m[1]) * mult);
      if (n > 0) return n;
    }
  }
  throw new EdgeLLMError('BAD_ARGUMENT', `${what} must be a positive byte count like 512MB or 2GiB, got ${JSON.stringify(v)}`);
}
