// Sealing a KV page: the host fills a full-precision tail page token by token; when it is full, it becomes a page of
// the cache's type (assembly/kv_*.ts) with its key summary.

import { KV_F16, KV_INT4, KV_INT8 } from './attention';
import { page_summary } from './kv_common';
import { seal_f32 } from './kv_f32';
import { seal_f16 } from './kv_f16';
import { seal_int8 } from './kv_int8';
import { seal_int4 } from './kv_int4';

/**
 * Seals one full page (P tokens of one layer and KV head) from f32 [P][D] keys and values: writes the page summary
 * (kmin[D], kmax[D], for every type) and the page data in `type` (0 f32, 1 f16, 2 int8, 3 int4; layouts in
 * kv_f32/f16/int8/int4.ts). Once per page, when the host's full-precision tail page fills.
 */
export function kv_seal_page(type: i32, k: usize, v: usize, P: i32, D: i32, data: usize, summary: usize): void {
  page_summary(k, P, D, summary);
  if (type == KV_INT8) seal_int8(k, v, P, D, data, summary);
  else if (type == KV_INT4) seal_int4(k, v, P, D, data, summary);
  else if (type == KV_F16) seal_f16(k, v, P, D, data);
  else seal_f32(k, v, P, D, data);
}
