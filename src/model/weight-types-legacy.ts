/** Weight-type rows (see weight-types.ts) of the 32-blocks beyond Q8_0/Q4_0: Q4_1, Q5_0, Q5_1, IQ4_NL; and BF16. */
import type { WeightKernel } from './weight-types.js';

export const LEGACY_WEIGHT_TYPES: WeightKernel[] = [];
