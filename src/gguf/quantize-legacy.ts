/** Row formats (see quantize.ts) of Q4_1, Q5_0, Q5_1, IQ4_NL and BF16. */
import type { RowFormat } from './quantize.js';

export const LEGACY_FORMATS: RowFormat[] = [];
