// The kernel module: pure compute on pointers into one host-planned memory. No allocation, no imports but the memory.
// Like ggml's type traits, each weight type has one file with the same operations: matmul and dequant_row.

export { matmul_f32, dequant_row_f32 } from './f32';
export { matmul_f16, dequant_row_f16 } from './f16';
export { quantize_q8_0, matmul_q8_0, dequant_row_q8_0 } from './q8_0';
export { matmul_q4_0, dequant_row_q4_0 } from './q4_0';
export { rmsnorm, rope, silu_mul, add } from './ops';
export { attention_f32, attention_f16 } from './attention';
export { kv_store_f32, kv_store_f16 } from './kv';

/** End of the module's static data (Mathf's tables); the host's arena starts above it. */
export function heap_base(): usize {
  return __heap_base;
}

/** Which build this is, so a module handed in by the host (e.g. a Workers import) describes itself. */
export function kernel_build(): i32 {
  return ASC_FEATURE_RELAXED_SIMD ? 1 : 0;
}
