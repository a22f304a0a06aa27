/** Weight-type rows (see weight-types.ts) of the K-quants and IQ4_XS: 256-value super-blocks, Q8_K activations. */
import type { WeightKernel } from './weight-types.js';

export const K_WEIGHT_TYPES: WeightKernel[] = [];
