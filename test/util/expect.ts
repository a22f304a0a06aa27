import { expect } from 'vitest';
import { EdgeLLMError } from '../../src/errors.js';

/** fn throws an EdgeLLMError with this code, whose message contains every one of `mentions`. */
export function expectCode(fn: () => unknown, code: string, ...mentions: string[]): EdgeLLMError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught, `expected EdgeLLMError ${code}`).toBeInstanceOf(EdgeLLMError);
  const e = caught as EdgeLLMError;
  expect(e.code, e.message).toBe(code);
  for (const m of mentions) expect(e.message).toContain(m);
  return e;
}
