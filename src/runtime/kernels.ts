import { EdgeLLMError } from '../errors.js';

/** The exports of build/edgellm-{simd,relaxed}.wasm (assembly/index.ts). Pointers are byte offsets into the shared memory. */
export interface Kernels {
  matmul_f32(w: number, x: number, y: number, rows: number, cols: number, ntok: number): void;
  matmul_f16(w: number, x: number, y: number, rows: number, cols: number, ntok: number): void;
  matmul_q8_0(wq: number, wd: number, xq: number, xd: number, xs: number, y: number, rows: number, cols: number, ntok: number): void;
  matmul_q4_0(wq: number, wd: number, xq: number, xd: number, xs: number, y: number, rows: number, cols: number, ntok: number): void;
  matmul_q4_1(wq: number, wd: number, xq: number, xd: number, xs: number, y: number, rows: number, cols: number, ntok: number): void;
  matmul_q5_0(wq: number, wd: number, xq: number, xd: number, xs: number, y: number, rows: number, cols: number, ntok: number): void;
  matmul_q5_1(wq: number, wd: number, xq: number, xd: number, xs: number, y: number, rows: number, cols: number, ntok: number): void;
  matmul_iq4_nl(wq: number, wd: number, xq: number, xd: number, xs: number, y: number, rows: number, cols: number, ntok: number): void;
  matmul_bf16(w: number, x: number, y: number, rows: number, cols: number, ntok: number): void;
  quantize_q8_0(x: number, n: number, ntok: number, xq: number, xd: number, xs: number): void;
  /** Q8_K activations (assembly/q8_k.ts): int8 codes kq [ntok][n], f32 scales kd [ntok][n/256], i16 sums ks [ntok][n/16]. */
  quantize_q8_k(x: number, n: number, ntok: number, kq: number, kd: number, ks: number): void;
  /** Q2_K/Q3_K/IQ4_XS (assembly/q2_k.ts, q3_k.ts, iq4_xs.ts): repacked codes wq and scales ws, Q8_K activations. */
  matmul_q2_k(wq: number, ws: number, kq: number, kd: number, ks: number, y: number, rows: number, cols: number, ntok: number): void;
  matmul_q3_k(wq: number, ws: number, kq: number, kd: number, ks: number, y: number, rows: number, cols: number, ntok: number): void;
  matmul_iq4_xs(wq: number, ws: number, kq: number, kd: number, y: number, rows: number, cols: number, ntok: number): void;
  dequant_row_q2_k(wq: number, ws: number, row: number, cols: number, out: number): void;
  dequant_row_q3_k(wq: number, ws: number, row: number, cols: number, out: number): void;
  dequant_row_iq4_xs(wq: number, ws: number, row: number, cols: number, out: number): void;
  /** K-quants (assembly/q4_k.ts, q5_k.ts, q6_k.ts): codes wq and scales ws in their repacked layouts, Q8_K activations. */
  matmul_q4_k(wq: number, ws: number, kq: number, kd: number, ks: number, y: number, rows: number, cols: number, ntok: number): void;
  matmul_q5_k(wq: number, ws: number, kq: number, kd: number, ks: number, y: number, rows: number, cols: number, ntok: number): void;
  matmul_q6_k(wq: number, ws: number, kq: number, kd: number, ks: number, y: number, rows: number, cols: number, ntok: number): void;
  dequant_row_q4_k(wq: number, ws: number, row: number, cols: number, out: number): void;
  dequant_row_q5_k(wq: number, ws: number, row: number, cols: number, out: number): void;
  dequant_row_q6_k(wq: number, ws: number, row: number, cols: number, out: number): void;
  dequant_row_f32(w: number, row: number, cols: number, out: number): void;
  dequant_row_f16(w: number, row: number, cols: number, out: number): void;
  dequant_row_q8_0(wq: number, wd: number, row: number, cols: number, out: number): void;
  dequant_row_q4_0(wq: number, wd: number, row: number, cols: number, out: number): void;
  dequant_row_q4_1(wq: number, wd: number, row: number, cols: number, out: number): void;
  dequant_row_q5_0(wq: number, wd: number, row: number, cols: number, out: number): void;
  dequant_row_q5_1(wq: number, wd: number, row: number, cols: number, out: number): void;
  dequant_row_iq4_nl(wq: number, wd: number, row: number, cols: number, out: number): void;
  dequant_row_bf16(w: number, row: number, cols: number, out: number): void;
  rmsnorm(out: number, x: number, w: number, n: number, ntok: number, eps: number): void;
  /** neox: 0 rotates pairs (2i, 2i+1), 1 rotates (i, i + nRot/2); cs: (cos, sin) per position and pair [ctx][nRot] */
  rope(x: number, nHeads: number, headDim: number, nRot: number, ntok: number, cs: number, pos0: number, neox: number): void;
  silu_mul(gate: number, up: number, n: number): void;
  /** gate = gelu(gate)·up through ggml's f16-indexed gelu table (65536 f32 at table) */
  gelu_mul(gate: number, up: number, n: number, table: number): void;
  add(a: number, b: number, n: number): void;
  add_bias(x: number, b: number, n: number, ntok: number): void;
  scale(x: number, s: number, n: number): void;
  softcap(x: number, c: number, n: number): void;
  /**
   * Paged KV cache (assembly/kv_*.ts). type: 0 f32, 1 f16, 2 int8, 3 int4. Seals one page (P tokens, one layer and KV head)
   * from f32 [P][D] k and v: writes summary (kmin[D], kmax[D] f32) and data (f32: 8·P·D bytes, f16: 4·P·D,
   * int8: 2·P·D + 8·P, int4: P·D + 8·P).
   */
  kv_seal_page(type: number, k: number, v: number, P: number, D: number, data: number, summary: number): void;
  /** Empty online-softmax states for nq heads, (4 + D)·4 bytes each: [M, L, B, pad, acc[D]]. */
  attend_begin(state: number, nq: number, D: number): void;
  /**
   * Adds pages to the states. q: f32 [nq][D]; descs: i32 [ndesc][4] = {data, summary, ntok (1..P), type}, types mixed
   * freely; scratch: 4·P + 4·D + 64 bytes. May be called several times between attend_begin and attend_end. skip: leading
   * tokens of the first descriptor masked out (weight exactly 0: a sliding window that starts inside that page);
   * softcap c > 0: scores s = scale·q·k become c·tanh(s/c) (Gemma 2), 0 for none.
   */
  attend_pages(
    state: number, q: number, nq: number, D: number, P: number, descs: number, ndesc: number, scale: number, scratch: number,
    skip: number, softcap: number,
  ): void;
  /** out: f32 [nq][D] = (acc + B) / L per head. */
  attend_end(state: number, out: number, nq: number, D: number): void;
  /** attend_begin, attend_pages and attend_end in one call (a KV head on one thread), out: f32 [nq][D]. */
  attend_head(
    state: number, q: number, nq: number, D: number, P: number, descs: number, ndesc: number, scale: number, scratch: number,
    skip: number, softcap: number, out: number,
  ): void;
  /** out[p] (f32) = Σ_j Σ_c max(q_jc·kmin_c, q_jc·kmax_c) over npages summaries back to back (8·D bytes each); scratch 8·D bytes. */
  quest_scores(q: number, nq: number, D: number, summaries: number, npages: number, out: number, scratch: number): void;
  /** out[i] = e^x[i] by the softmax's exp (a test hook). */
  exp_f32(x: number, out: number, n: number): void;
  heap_base(): number;
  /** 1 for the relaxed-SIMD build, 0 for the SIMD128 one */
  kernel_build(): number;
}

/**
 * The kernels come in two builds from one source (assembly/), with bit-identical results:
 * - `simd`: SIMD128, which every current engine runs;
 * - `relaxed`: relaxed SIMD as well (i32x4.relaxed_dot_i8x16_i7x16_add_s for Q4_0), faster where the engine has it.
 */
export type KernelBuild = 'simd' | 'relaxed';
/** `auto` takes `relaxed` where this engine validates it, else `simd`; `baseline` forces `simd`. */
export type SimdOption = 'auto' | 'baseline' | 'relaxed';

// Where the packaged builds sit relative to this module: build/ beside src/ when running from source, and beside the
// bundle in dist/ (the bundler defines __EDGELLM_WASM_DIR__ for that layout).
declare const __EDGELLM_WASM_DIR__: string | undefined;
const WASM_DIR = typeof __EDGELLM_WASM_DIR__ === 'string' ? __EDGELLM_WASM_DIR__ : '../../build/';

/**
 * The file of a packaged build, next to the running module; `shared`: its shared-memory twin for threads (the same
 * code, a shared memory import of up to 65536 pages, docs/threads.md).
 */
export function packagedWasmUrl(build: KernelBuild, shared = false): URL {
  return new URL(`${WASM_DIR}edgellm-${build}${shared ? '-shared' : ''}.wasm`, import.meta.url);
}

// The smallest modules using each feature: (func (param v128 v128 v128) (result v128) ...) whose body is one
// i32x4.relaxed_dot_i8x16_i7x16_add_s (0xfd 0x113) or one i32x4.add (0xfd 0xae).
const probe = (body: number[]) => new Uint8Array([
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
  0x01, 0x08, 0x01, 0x60, 0x03, 0x7b, 0x7b, 0x7b, 0x01, 0x7b,
  0x03, 0x02, 0x01, 0x00,
  0x0a, body.length + 10, 0x01, body.length + 8, 0x00, 0x20, 0x00, 0x20, 0x01, 0x20, 0x02, ...body, 0x0b,
]);
const RELAXED_PROBE = probe([0xfd, 0x93, 0x02]);
const SIMD_PROBE = probe([0x1a, 0xfd, 0xae, 0x01]); // drop the third operand, add the first two

/** Which builds this engine can run. */
export function supportedBuilds(): { simd: boolean; relaxed: boolean } {
  return { simd: WebAssembly.validate(SIMD_PROBE), relaxed: WebAssembly.validate(RELAXED_PROBE) };
}

/** The build to load for the `simd` option on this engine, or a WASM error saying why there is none. */
export function chooseBuild(option: SimdOption = 'auto'): KernelBuild {
  if (option !== 'auto' && option !== 'baseline' && option !== 'relaxed') {
    throw new EdgeLLMError('BAD_ARGUMENT', `simd must be 'auto', 'baseline' or 'relaxed', got ${JSON.stringify(option)}`);
  }
  const has = supportedBuilds();
  if (!has.simd) throw new EdgeLLMError('WASM', 'this JavaScript engine does not support WebAssembly SIMD128, which edgellm needs');
  if (option === 'relaxed' && !has.relaxed) {
    throw new EdgeLLMError('WASM', "this JavaScript engine does not support WebAssembly relaxed SIMD; use simd: 'auto' or 'baseline'");
  }
  return option === 'baseline' || !has.relaxed ? 'simd' : 'relaxed';
}

export type WasmInput = BufferSource | WebAssembly.Module | URL | string;

/** How an entry point gets wasm: Node reads files, browsers fetch, Workers import precompiled modules. */
export interface WasmLoader {
  /** The bytes at a URL (the `wasm` option given as a URL). */
  fetchBytes(url: URL): Promise<Uint8Array<ArrayBuffer>>;
  /** A packaged build (its shared-memory twin with `shared`), compiled. */
  packagedKernels(build: KernelBuild, shared?: boolean): Promise<WebAssembly.Module>;
}

/** The caller's own kernel module: bytes, a URL, or a precompiled module; it says itself which build it is (kernel_build()). */
export async function compileKernels(wasm: WasmInput, loader: WasmLoader): Promise<WebAssembly.Module> {
  if (wasm instanceof WebAssembly.Module) return wasm;
  if (typeof wasm === 'string' || wasm instanceof URL) {
    const url = new URL(String(wasm), import.meta.url);
    let bytes: Uint8Array<ArrayBuffer>;
    try {
      bytes = await loader.fetchBytes(url);
    } catch (e) {
      throw new EdgeLLMError('WASM', `cannot load the kernel module from ${url.href}: ${(e as Error).message}`, { cause: e });
    }
    return compile(bytes, url.href);
  }
  return compile(wasm, 'the given bytes');
}

/** Packaged builds fetched as bytes (by file read or fetch) and compiled once per process. */
export function compileOncePerBuild(fetchBytes: (url: URL) => Promise<Uint8Array<ArrayBuffer>>): (build: KernelBuild, shared?: boolean) => Promise<WebAssembly.Module> {
  const cached = new Map<string, Promise<WebAssembly.Module>>();
  return (build, shared = false) => {
    const key = `${build}${shared ? '-shared' : ''}`;
    let p = cached.get(key);
    if (!p) {
      const url = packagedWasmUrl(build, shared);
      p = fetchBytes(url).then(
        (bytes) => compile(bytes, url.href),
        (e) => {
          throw new EdgeLLMError('WASM', `cannot load the kernel module from ${url.href}: ${(e as Error).message}`, { cause: e });
        },
      );
      cached.set(key, p);
      p.catch(() => cached.delete(key));
    }
    return p;
  };
}

/** fetch() as bytes, with the HTTP status as the error. */
export async function fetchOk(url: URL): Promise<Uint8Array<ArrayBuffer>> {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`HTTP ${res.status}`);
  return new Uint8Array(await res.arrayBuffer());
}

async function compile(bytes: BufferSource, what: string): Promise<WebAssembly.Module> {
  try {
    return await WebAssembly.compile(bytes);
  } catch (e) {
    throw new EdgeLLMError('WASM', `cannot compile the kernel module (${what}): ${(e as Error).message}`, { cause: e });
  }
}

/** One instance over the host's memory. The module imports nothing but that memory. */
export async function instantiateKernels(module: WebAssembly.Module, memory: WebAssembly.Memory): Promise<Kernels> {
  const instance = await WebAssembly.instantiate(module, { env: { memory } });
  return instance.exports as unknown as Kernels;
}

/**
 * The matmuls read up to PREFETCH + 64 bytes (assembly/common.ts) past the codes they use, to pull weights in from DRAM
 * early; the plan ends with this much slack so those reads stay inside the memory.
 */
export const PREFETCH_SLACK = 4096;

/** The bytes below this are the module's own static data; the arena starts above. */
export const STATIC_RESERVE = 64 * 1024;
