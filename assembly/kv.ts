// Appending to the KV cache. Layout per layer: [nKvHeads][ctx][headDim], one contiguous run per KV head;
// the source is a matmul output [ntok][nKvHeads·headDim].

import { f32_to_f16_bits } from './common';

export function kv_store_f32(dst: usize, src: usize, nKvHeads: i32, headDim: i32, ctx: i32, pos: i32, ntok: i32): void {
  const headBytes = <usize>headDim << 2;
  for (let t = 0; t < ntok; t++) {
    for (let g = 0; g < nKvHeads; g++) {
      const from = src + (<usize>(t * nKvHeads + g)) * headBytes;
      const to = dst + (<usize>g * ctx + pos + t) * headBytes;
      memory.copy(to, from, headBytes);
    }
  }
}

/** f16 entries, rounded to nearest even (llama.cpp's default cache type). */
export function kv_store_f16(dst: usize, src: usize, nKvHeads: i32, headDim: i32, ctx: i32, pos: i32, ntok: i32): void {
  for (let t = 0; t < ntok; t++) {
    for (let g = 0; g < nKvHeads; g++) {
      const from = src + ((<usize>(t * nKvHeads + g) * headDim) << 2);
      const to = dst + (((<usize>g * ctx + pos + t) * headDim) << 1);
      for (let i = 0; i < headDim; i++) store<u16>(to + (<usize>i << 1), <u16>f32_to_f16_bits(load<f32>(from + (<usize>i << 2))));
    }
  }
}
