// Shared by the real-model test files.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { Model } from '../../src/index.js';
import { MODELS } from './shared.js';

export const json = (name: string) => JSON.parse(readFileSync(path.join(MODELS, name), 'utf8'));

/** Greedy ids through the public API (temperature 0 is argmax; the repetition penalty is off by default). */
export async function greedyIds(model: Model, prompt: string | number[], n: number): Promise<number[]> {
  const ids: number[] = [];
  await model.complete(prompt, { maxTokens: n, temperature: 0, onToken: (id) => ids.push(id) });
  return ids;
}

