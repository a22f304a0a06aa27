export { LlamaTokenizer, LlamaTokenType, TokenTextStream } from './llama.js';
export type { VocabData, EncodeOptions, DecodeOptions } from './llama.js';
export { Utf8StreamDecoder, decodeUtf8 } from './utf8.js';
