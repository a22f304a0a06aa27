// The kernel module: pure compute on pointers into one host-planned memory. No allocation, no imports but the memory.
// Like ggml's type traits, each weight type has one file with the same operations: matmul and dequant_row.

export { matmul_f32, dequant_row_f32 } from './f32';
export { matmul_f16, dequant_row_f16 } from './f16';
export { quantize_q8_0, matmul_q8_0, dequant_row_q8_0 } from './q8_0';
export { matmul_q4_0, dequant_row_q4_0 } from './q4_0';
export { matmul_q4_1, dequant_row_q4_1 } from './q4_1';
export { matmul_q5_0, dequant_row_q5_0 } from './q5_0';
export { matmul_q5_1, dequant_row_q5_1 } from './q5_1';
export { matmul_iq4_nl, dequant_row_iq4_nl } from './iq4_nl';
export { matmul_bf16, dequant_row_bf16 } from './bf16';
export { quantize_q8_k } from './q8_k';
export { matmul_q4_k, dequant_row_q4_k } from './q4_k';
export { matmul_q5_k, dequant_row_q5_k } from './q5_k';
export { matmul_q6_k, dequant_row_q6_k } from './q6_k';
export { matmul_q2_k, dequant_row_q2_k } from './q2_k';
export { matmul_q3_k, dequant_row_q3_k } from './q3_k';
export { matmul_iq4_xs, dequant_row_iq4_xs } from './iq4_xs';
export { rmsnorm, rope, silu_mul, gelu_mul, add, add_bias, scale, softcap } from './ops';
// The paged KV cache: like the weight types, one file per KV type (kv_f32/f16/int8/int4.ts) with the same ops (seal a
// page, score its keys, accumulate its values), driven by attend_pages over a mixed list of pages.
export { kv_seal_page } from './kv';
export { attend_begin, attend_pages, attend_end, attend_head, quest_scores, exp_f32 } from './attention';

/** End of the module's static data (Mathf's tables); the host's arena starts above it. */
export function heap_base(): usize {
  return __heap_base;
}

/** Which build this is, so a module handed in by the host (e.g. a Workers import) describes itself. */
export function kernel_build(): i32 {
  return ASC_FEATURE_RELAXED_SIMD ? 1 : 0;
}
