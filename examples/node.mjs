// Node: stream a completion from a GGUF file or URL.
//   node examples/node.mjs MODEL.gguf|URL ["prompt"] [max tokens]
// In your own project: import { loadModel } from 'edgellm';
import { loadModel, EdgeLLMError } from '../dist/index.js';

const [source, prompt = 'Once upon a time', maxTokens = '64'] = process.argv.slice(2);
if (!source) {
  console.error('usage: node examples/node.mjs MODEL.gguf|URL ["prompt"] [max tokens]');
  process.exit(2);
}
try {
  const model = await loadModel(source, { contextLength: 512 });
  const ids = [];
  let stats;
  const opts = { maxTokens: Number(maxTokens), onToken: (id) => ids.push(id), onStats: (s) => (stats = s) };
  for await (const text of model.generate(prompt, opts)) process.stdout.write(text);
  console.error(`\n${ids.length} tokens, ${stats.decodeTokensPerSecond.toFixed(1)} tok/s decode (${model.info.build} build); ids ${JSON.stringify(ids)}`);
} catch (e) {
  console.error(e instanceof EdgeLLMError ? `error ${e.code}: ${e.message}` : e);
  process.exit(1);
}
