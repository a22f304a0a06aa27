import { EdgeLLMError } from '../errors.js';
import { formatBytes } from '../plan/arena.js';
import type { SpillFile } from '../plan/spill.js';

/**
 * A tier below wasm memory that holds whole KV pages by slot: the warm tier (host ArrayBuffers) and the cold tier (a
 * file: Node fs, an OPFS sync access handle), which fit one shape because both read and write synchronously at an
 * offset. The KV cache owns slot allocation; a store only moves bytes and reports what it
 * holds. A store never grows past the capacity it was planned with.
 */
export interface PageStore {
  readonly name: string;
  readonly pageBytes: number;
  readonly capacityPages: number;
  /** Copies one page (pageBytes) into slot. */
  write(slot: number, page: Uint8Array): void;
  /** Copies slot's page into `into` (pageBytes long). */
  read(slot: number, into: Uint8Array): void;
  /** Bytes the store has actually taken from its medium so far (≤ capacityPages·pageBytes). */
  bytesAllocated(): number;
}

/** Pages per host buffer: buffers of a few MiB are allocated as slots are first used, never all up front. */
const CHUNK_BYTES = 4 << 20;

/** The warm tier: pages in host ArrayBuffers outside wasm memory, allocated in chunks as slots are first written. */
export class HostPageStore implements PageStore {
  readonly name = 'warm';
  private readonly chunkPages: number;
  private readonly chunks: Uint8Array[] = [];

  constructor(readonly pageBytes: number, readonly capacityPages: number) {
    this.chunkPages = Math.max(1, Math.floor(CHUNK_BYTES / pageBytes));
  }

  write(slot: number, page: Uint8Array): void {
    this.chunk(slot, true).set(page.subarray(0, this.pageBytes), (slot % this.chunkPages) * this.pageBytes);
  }

  read(slot: number, into: Uint8Array): void {
    const at = (slot % this.chunkPages) * this.pageBytes;
    into.set(this.chunk(slot, false).subarray(at, at + this.pageBytes));
  }

  bytesAllocated(): number {
    return this.chunks.reduce((n, c) => n + (c ? c.byteLength : 0), 0);
  }

  private chunk(slot: number, create: boolean): Uint8Array {
    if (!Number.isInteger(slot) || slot < 0 || slot >= this.capacityPages) throw new EdgeLLMError('BAD_ARGUMENT', `warm page slot ${slot} is outside 0..${this.capacityPages - 1}`);
    const i = Math.floor(slot / this.chunkPages);
    let c = this.chunks[i];
    if (!c) {
      if (!create) throw new EdgeLLMError('BAD_ARGUMENT', `warm page slot ${slot} was never written`);
      const pages = Math.min(this.chunkPages, this.capacityPages - i * this.chunkPages);
      try {
        c = this.chunks[i] = new Uint8Array(pages * this.pageBytes);
      } catch (err) {
        throw new EdgeLLMError('BUDGET', `the host refused ${formatBytes(pages * this.pageBytes)} for the warm KV tier`, { cause: err });
      }
    }
    return c;
  }
}

/**
 * The cold tier: pages in a file of the model's spill directory (plan/spill.ts), slot s at s·pageBytes. The file grows
 * as slots are first written, up to the planned capacity; reads and writes are synchronous, so a page is staged in
 * the middle of attention like a warm one.
 */
export class FilePageStore implements PageStore {
  readonly name = 'cold';

  constructor(private readonly file: SpillFile, readonly pageBytes: number, readonly capacityPages: number) {}

  write(slot: number, page: Uint8Array): void {
    this.file.write(this.offset(slot), page.subarray(0, this.pageBytes));
  }

  read(slot: number, into: Uint8Array): void {
    this.file.read(this.offset(slot), into.subarray(0, this.pageBytes));
  }

  bytesAllocated(): number {
    return this.file.size();
  }

  private offset(slot: number): number {
    if (!Number.isInteger(slot) || slot < 0 || slot >= this.capacityPages) throw new EdgeLLMError('BAD_ARGUMENT', `cold page slot ${slot} is outside 0..${this.capacityPages - 1}`);
    return slot * this.pageBytes;
  }
}
