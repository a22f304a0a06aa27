/** Weight-type rows (see weight-types.ts) of Q2_K, Q3_K and IQ4_XS: 256-value super-blocks, Q8_K activations. */
import type { WeightKernel } from './weight-types.js';

export const K_LOW_WEIGHT_TYPES: WeightKernel[] = [];
