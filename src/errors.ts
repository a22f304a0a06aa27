/**
 * Every failure edgellm reports is an EdgeLLMError with a stable `code`, so callers can branch on the code
 * and never on message text.
 */
export type ErrorCode =
  | 'BAD_MAGIC'
  | 'UNSUPPORTED_VERSION'
  | 'TRUNCATED'
  | 'BAD_METADATA'
  | 'BAD_TENSOR'
  | 'UNSUPPORTED_TYPE'
  | 'UNSUPPORTED_ARCH'
  | 'UNSUPPORTED_TOKENIZER'
  | 'MISSING_TENSOR'
  | 'BAD_SOURCE'
  | 'BAD_ARGUMENT'
  | 'BUDGET'
  | 'CONTEXT_FULL'
  | 'NO_TEMPLATE'
  | 'TEMPLATE'
  | 'BUSY'
  | 'DISPOSED'
  | 'ABORTED'
  | 'WASM';

export class EdgeLLMError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'EdgeLLMError';
    this.code = code;
  }
}
