import { EdgeLLMError } from '../errors.js';

/** The exports of build/edgellm.wasm (assembly/index.ts). Pointers are byte offsets into the shared memory. */
export interface Kernels {
  matmul_f32(w: number, x: number, y: number, rows: number, cols: number, ntok: number): void;
  matmul_f16(w: number, x: number, y: number, rows: number, cols: number, ntok: number): void;
  matmul_q8_0(wq: number, wd: number, xq: number, xd: number, y: number, rows: number, cols: number, ntok: number): void;
  matmul_q4_0(wq: number, wd: number, xq: number, xd: number, y: number, rows: number, cols: number, ntok: number): void;
  quantize_q8_0(x: number, n: number, ntok: number, xq: number, xd: number): void;
  dequant_row_f32(w: number, row: number, cols: number, out: number): void;
  dequant_row_f16(w: number, row: number, cols: number, out: number): void;
  dequant_row_q8_0(wq: number, wd: number, row: number, cols: number, out: number): void;
  dequant_row_q4_0(wq: number, wd: number, row: number, cols: number, out: number): void;
  rmsnorm(out: number, x: number, w: number, n: number, ntok: number, eps: number): void;
  rope(x: number, nHeads: number, headDim: number, nRot: number, ntok: number, cs: number, pos0: number): void;
  silu_mul(gate: number, up: number, n: number): void;
  add(a: number, b: number, n: number): void;
  attention_f32(out: number, q: number, k: number, v: number, scores: number, nHeads: number, nKvHeads: number, headDim: number, ctx: number, nPos: number, scale: number): void;
  attention_f16(out: number, q: number, k: number, v: number, scores: number, nHeads: number, nKvHeads: number, headDim: number, ctx: number, nPos: number, scale: number): void;
  kv_store_f32(dst: number, src: number, nKvHeads: number, headDim: number, ctx: number, pos: number, ntok: number): void;
  kv_store_f16(dst: number, src: number, nKvHeads: number, headDim: number, ctx: number, pos: number, ntok: number): void;
  heap_base(): number;
}

// Where the compiled kernels sit relative to this module: build/ beside src/ when running from source, and beside
// dist/ in the package (the bundler defines __EDGELLM_WASM__ for that layout).
declare const __EDGELLM_WASM__: string | undefined;
const WASM_PATH = typeof __EDGELLM_WASM__ === 'string' ? __EDGELLM_WASM__ : '../../build/edgellm.wasm';

export type WasmInput = BufferSource | WebAssembly.Module | URL | string;

let cached: Promise<WebAssembly.Module> | undefined;

/** Compiles the kernel module once per process (or takes the caller's bytes/module, e.g. a Workers import). */
export function compileKernels(wasm?: WasmInput): Promise<WebAssembly.Module> {
  if (wasm instanceof WebAssembly.Module) return Promise.resolve(wasm);
  if (wasm !== undefined && !(typeof wasm === 'string' || wasm instanceof URL)) return WebAssembly.compile(wasm);
  if (wasm === undefined && cached) return cached;
  const url = wasm === undefined ? new URL(WASM_PATH, import.meta.url) : new URL(String(wasm), import.meta.url);
  const p = fetchBytes(url).then((bytes) => WebAssembly.compile(bytes));
  if (wasm === undefined) cached = p.catch((e) => { cached = undefined; throw e; });
  return p;
}

async function fetchBytes(url: URL): Promise<Uint8Array<ArrayBuffer>> {
  try {
    if (url.protocol === 'file:') {
      const fs = await import('node:fs/promises');
      return new Uint8Array(await fs.readFile(url));
    }
    const res = await fetch(url);
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    return new Uint8Array(await res.arrayBuffer());
  } catch (e) {
    throw new EdgeLLMError('WASM', `cannot load the kernel module from ${url.href}: ${(e as Error).message}`, { cause: e });
  }
}

/** One instance over the host's memory. The module imports nothing but that memory. */
export async function instantiateKernels(module: WebAssembly.Module, memory: WebAssembly.Memory): Promise<Kernels> {
  const instance = await WebAssembly.instantiate(module, { env: { memory } });
  return instance.exports as unknown as Kernels;
}

/** The bytes below this are the module's own static data; the arena starts above. */
export const STATIC_RESERVE = 64 * 1024;
