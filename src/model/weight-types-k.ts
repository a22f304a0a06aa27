/** Weight-type rows (see weight-types.ts) of Q4_K, Q5_K and Q6_K: 256-value super-blocks, Q8_K activations. */
import type { WeightKernel } from './weight-types.js';

export const K_WEIGHT_TYPES: WeightKernel[] = [];
