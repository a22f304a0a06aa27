export * from './types.js';
export * from './source.js';
export * from './reader.js';
export * from './writer.js';
export * from './f16.js';
export * from './quantize.js';
