// Deno: stream a completion from a GGUF file or URL.
//   deno run --allow-read --allow-net examples/deno.ts MODEL.gguf|URL ["prompt"] [max tokens]
// In your own project: import { loadModel } from 'npm:edgellm';
// @ts-types="../dist/index.d.ts"
import { loadModel, EdgeLLMError, type GenerationStats } from '../dist/index.js';

const [source, prompt = 'Once upon a time', maxTokens = '64'] = Deno.args;
if (!source) {
  console.error('usage: deno run --allow-read --allow-net examples/deno.ts MODEL.gguf|URL ["prompt"] [max tokens]');
  Deno.exit(2);
}
try {
  const model = await loadModel(source, { contextLength: 512 });
  const ids: number[] = [];
  let stats: GenerationStats | undefined;
  const out = new TextEncoder();
  const opts = { maxTokens: Number(maxTokens), onToken: (id: number) => ids.push(id), onStats: (s: GenerationStats) => (stats = s) };
  for await (const text of model.generate(prompt, opts)) await Deno.stdout.write(out.encode(text));
  console.error(`\n${ids.length} tokens, ${stats!.decodeTokensPerSecond.toFixed(1)} tok/s decode (${model.info.build} build); ids ${JSON.stringify(ids)}`);
} catch (e) {
  console.error(e instanceof EdgeLLMError ? `error ${e.code}: ${e.message}` : e);
  Deno.exit(1);
}
