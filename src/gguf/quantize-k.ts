/** Row formats (see quantize.ts) of the K-quants (Q2_K..Q6_K) and IQ4_XS. */
import type { RowFormat } from './quantize.js';

export const K_FORMATS: RowFormat[] = [];
