/** Row formats (see quantize.ts) of Q2_K, Q3_K and IQ4_XS. */
import type { RowFormat } from './quantize.js';

export const K_LOW_FORMATS: RowFormat[] = [];
