// A matmul split into parts computes the same bytes as in one call, for every weight type and both builds: by row
// groups for one token (rowSlice), by tokens for a batch (tokenSlice). This is what lets threads share a matmul with
// results that do not depend on the thread count (issue 13, docs/threads.md).
import { beforeAll, describe, expect, it } from 'vitest';
import { GGMLType, typeName } from '../src/gguf/types.js';
import { ROW_FORMATS } from '../src/gguf/quantize.js';
import { rowSlice, tokenSlice, WEIGHT_TYPES, type Activations } from '../src/model/weight-types.js';
import { KernelInstance } from './util/kernels.js';
import { gaussian } from './util/compare.js';

const ROWS = 13, COLS = 512, NTOK = 11; // a padded last row group; 4-token tiles and a remainder
let builds: KernelInstance[];
beforeAll(async () => {
  builds = await KernelInstance.both();
});

/** GGUF bytes of ROWS random rows of `type`, through the host's quantizer (or random f32 for F32). */
function weights(type: number): Uint8Array {
  const f = ROW_FORMATS.get(type)!;
  const rowBytes = (COLS / f.blockSize) * f.blockBytes;
  const out = new Uint8Array(ROWS * rowBytes);
  const g = gaussian(type + 1);
  const x = new Float32Array(COLS);
  for (let r = 0; r < ROWS; r++) {
    for (let c = 0; c < COLS; c++) x[c] = 0.1 * g();
    f.quantize!(x, out.subarray(r * rowBytes, (r + 1) * rowBytes));
  }
  return out;
}

/** NTOK random inputs prepared in every format (the forward pass prepares only the one its matrices read). */
function activations(inst: KernelInstance): Activations {
  const g = gaussian(99);
  const x = inst.alloc(NTOK * COLS * 4);
  inst.f32(x, NTOK * COLS).set(Float32Array.from({ length: NTOK * COLS }, () => g()));
  const a: Activations = {
    x,
    q8_0: { q: inst.alloc(NTOK * COLS), d: inst.alloc(NTOK * (COLS / 32) * 4), s: inst.alloc(NTOK * (COLS / 32) * 4) },
    q8_k: { q: inst.alloc(NTOK * COLS), d: inst.alloc(NTOK * (COLS / 256) * 4), s: inst.alloc(NTOK * (COLS / 16) * 2) },
  };
  inst.k.quantize_q8_0(x, COLS, NTOK, a.q8_0.q, a.q8_0.d, a.q8_0.s);
  inst.k.quantize_q8_k(x, COLS, NTOK, a.q8_k.q, a.q8_k.d, a.q8_k.s);
  return a;
}

describe('a matmul in parts = the matmul in one call, bit for bit', () => {
  for (const type of WEIGHT_TYPES.keys()) {
    it(`${typeName(type)}: one token by row groups, a batch by tokens, both builds`, () => {
      expect(ROW_FORMATS.get(type)?.quantize, `the test quantizer writes ${typeName(type)}`).toBeDefined();
      const gguf = weights(type);
      for (const inst of builds) {
        const m = inst.matrix(type, ROWS, COLS, gguf);
        const a = activations(inst);
        const k = m.kernel;
        const bytes = (y: number, n: number) => new Uint8Array(inst.memory.buffer.slice(y, y + n * 4));

        // one token: the whole matrix, then row groups [0, 4), [4, 12), [12, 13)
        const one = inst.alloc(ROWS * 4), parts = inst.alloc(ROWS * 4, 0xa5);
        k.matmul(inst.k, m, a, one, 1);
        for (const [r0, r1] of [[0, 4], [4, 12], [12, 13]]) k.matmul(inst.k, rowSlice(m, r0, r1), a, parts + r0 * 4, 1);
        expect(bytes(parts, ROWS), `${inst.build}: decode by rows`).toEqual(bytes(one, ROWS));

        // a batch: the whole batch, then tokens [0, 5), [5, 6), [6, 11)
        const all = inst.alloc(NTOK * ROWS * 4), byTokens = inst.alloc(NTOK * ROWS * 4, 0xa5);
        k.matmul(inst.k, m, a, all, NTOK);
        for (const [t0, t1] of [[0, 5], [5, 6], [6, NTOK]]) k.matmul(inst.k, m, tokenSlice(a, COLS, t0), byTokens + t0 * ROWS * 4, t1 - t0);
        expect(bytes(byTokens, NTOK * ROWS), `${inst.build}: prefill by tokens`).toEqual(bytes(all, NTOK * ROWS));
        // and the batch's rows are the one-token products (decode and prefill paths agree)
        expect(bytes(all, ROWS), `${inst.build}: the batch's first token = one token alone`).toEqual(bytes(one, ROWS));
      }
    });
  }

  it('rowSlice refuses a slice that does not start at a row group', () => {
    const m = builds[0].matrix(GGMLType.F32, 8, 32, new Uint8Array(8 * 32 * 4));
    expect(() => rowSlice(m, 2, 8)).toThrow(RangeError);
    expect(() => rowSlice(m, 4, 9)).toThrow(RangeError);
  });
});

