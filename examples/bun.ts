// Bun: stream a completion from a GGUF file or URL.
//   bun examples/bun.ts MODEL.gguf|URL ["prompt"] [max tokens]
// In your own project: import { loadModel } from 'edgellm';
import { loadModel, EdgeLLMError, type GenerationStats } from '../dist/index.js';

const [source, prompt = 'Once upon a time', maxTokens = '64'] = Bun.argv.slice(2);
if (!source) {
  console.error('usage: bun examples/bun.ts MODEL.gguf|URL ["prompt"] [max tokens]');
  process.exit(2);
}
try {
  // A path is opened as a Bun.file() Blob, which edgellm reads slice by slice; a URL is downloaded.
  const model = await loadModel(/^https?:/.test(source) ? source : Bun.file(source), { contextLength: 512 });
  const ids: number[] = [];
  let stats: GenerationStats | undefined;
  const opts = { maxTokens: Number(maxTokens), onToken: (id: number) => ids.push(id), onStats: (s: GenerationStats) => (stats = s) };
  for await (const text of model.generate(prompt, opts)) process.stdout.write(text);
  console.error(`\n${ids.length} tokens, ${stats!.decodeTokensPerSecond.toFixed(1)} tok/s decode (${model.info.build} build); ids ${JSON.stringify(ids)}`);
} catch (e) {
  console.error(e instanceof EdgeLLMError ? `error ${e.code}: ${e.message}` : e);
  process.exit(1);
}
