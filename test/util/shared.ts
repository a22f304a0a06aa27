import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

/** The shared fixtures live beside the checkout: ../shared/models relative to the project root. */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const SHARED = process.env.EDGELLM_SHARED ?? path.resolve(ROOT, '../shared');
export const MODELS = path.join(SHARED, 'models');
export const HAVE_MODELS = existsSync(path.join(MODELS, 'sotu-15m-f16.gguf'));

export function modelPath(name: string): string {
  return path.join(MODELS, name);
}

/** Loud, never silent: a suite that needs ../shared/models says so when it is skipped. */
export function announceSkipIfNoModels(suite: string): boolean {
  if (!HAVE_MODELS) {
    const line = '!'.repeat(100);
    console.warn(`\n${line}\n!!! SKIPPED: ${suite}: ${MODELS} is absent, so the real-model tests did not run.\n${line}\n`);
  }
  return HAVE_MODELS;
}

/** llama.cpp's tokenizer conformance kit: vocab-only GGUFs with test strings and expected ids. */
export const CONFORMANCE_VOCAB = path.join(SHARED, 'conformance/vocab');

/** Loud, never silent, like announceSkipIfNoModels: true when `dir` exists, else a notice that `suite` did not run. */
export function announceSkipIfMissing(suite: string, dir: string): boolean {
  if (existsSync(dir)) return true;
  const line = '!'.repeat(100);
  console.warn(`\n${line}\n!!! SKIPPED: ${suite}: ${dir} is absent, so these tests did not run.\n${line}\n`);
  return false;
}
