export { Tokenizer, TokenTextStream, LlamaTokenType, TokenAttr, SUPPORTED_MODELS, cleanUpSpaces } from './tokenizer.js';
export type { VocabData, EncodeOptions, DecodeOptions, TokenizerOptions } from './tokenizer.js';
export { SUPPORTED_PRE } from './pretokenize.js';
export { Utf8StreamDecoder, decodeUtf8 } from './utf8.js';
