/**
 * The kernels alone: one build instantiated over a memory of its own, a bump allocator above its static data, and
 * matrices repacked through their weight-type rows as the loader repacks them. Shared by the kernel tests.
 */
import { readFileSync } from 'node:fs';
import type { Kernels } from '../../src/runtime/kernels.js';
import { WEIGHT_TYPES, type Matrix } from '../../src/model/weight-types.js';

export type Build = 'simd' | 'relaxed';

export class KernelInstance {
  private top = 0;
  private constructor(readonly build: Build, readonly k: Kernels, readonly memory: WebAssembly.Memory) {
    this.reset();
  }

  /** `pages` of memory to start with (64 KiB each): enough that views taken early are not detached by a later grow. */
  static async create(build: Build, pages = 64): Promise<KernelInstance> {
    const memory = new WebAssembly.Memory({ initial: pages });
    const bytes = readFileSync(new URL(`../../build/edgellm-${build}.wasm`, import.meta.url));
    const { instance } = await WebAssembly.instantiate(bytes, { env: { memory } });
    return new KernelInstance(build, instance.exports as unknown as Kernels, memory);
  }

  /** Both builds, each over its own memory. */
  static both(pages = 64): Promise<KernelInstance[]> {
    return Promise.all([KernelInstance.create('simd', pages), KernelInstance.create('relaxed', pages)]);
  }

  /** Frees everything allocated (the next test starts from the static data's end again). */
  reset(): void {
    this.top = (this.k.heap_base() + 63) & ~63;
  }

  /**
   * `bytes` of memory, 64-byte aligned, filled with `fill` (0: fresh memory, as repack expects; 0xa5 to show what a
   * kernel leaves unwritten), with room after it for the kernels' lookahead loads; the memory grows as needed.
   */
  alloc(bytes: number, fill = 0): number {
    const p = this.top;
    this.top = (this.top + bytes + 4096 + 63) & ~63;
    if (this.top > this.memory.buffer.byteLength) this.memory.grow(Math.ceil((this.top - this.memory.buffer.byteLength) / 65536));
    new Uint8Array(this.memory.buffer, p, bytes).fill(fill);
    return p;
  }

  get heap(): Uint8Array {
    return new Uint8Array(this.memory.buffer);
  }

  f32(at: number, n: number): Float32Array {
    return new Float32Array(this.memory.buffer, at, n);
  }

  /** A rows × cols matrix of `type` from its GGUF bytes, repacked as the loader does, in two chunks split at row `split`. */
  matrix(type: number, rows: number, cols: number, gguf: Uint8Array, split = Math.min(rows, 5), fill = 0): Matrix {
    const kernel = WEIGHT_TYPES.get(type)!;
    const layout = kernel.layout(rows, cols);
    const m: Matrix = { name: 'w', type, kernel, rows, cols, data: this.alloc(layout.data, fill), scales: layout.scales ? this.alloc(layout.scales, fill) : 0 };
    const rowBytes = gguf.length / rows;
    kernel.repack(m, this.heap, gguf.subarray(0, split * rowBytes), 0, split);
    if (split < rows) kernel.repack(m, this.heap, gguf.subarray(split * rowBytes), split, rows - split);
    return m;
  }
}
