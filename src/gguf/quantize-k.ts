/** Row formats (see quantize.ts) of Q4_K, Q5_K and Q6_K. */
import type { RowFormat } from './quantize.js';

export const K_FORMATS: RowFormat[] = [];
