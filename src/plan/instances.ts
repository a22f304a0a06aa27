/**
 * Models larger than one wasm memory: the layers split over several kernel instances, each a memory of its own.
 * Contiguous runs of whole layers, so the residual stream moves between memories once per instance in a forward pass
 * (B × dim floats), never inside a layer.
 */
import type { LlamaConfig } from '../model/config.js';

/**
 * Which of `count` instances holds each layer: contiguous runs, every instance at least one layer, balanced by bytes
 * with instance 0 also carrying `head` (the embeddings, output and norms it holds). A layer goes to the next instance
 * once its middle would pass the current instance's share of the total.
 */
export function splitLayers(layerBytes: readonly number[], head: number, count: number): number[] {
  const n = layerBytes.length;
  if (!Number.isSafeInteger(count) || count < 1 || count > Math.max(1, n)) throw new RangeError(`${count} instances for ${n} layers`);
  const total = head + layerBytes.reduce((x, y) => x + y, 0);
  const instanceOf: number[] = [];
  let at = 0, filled = head, held = 0;
  for (let l = 0; l < n; l++) {
    const mustMove = n - l <= count - 1 - at; // as many layers left as instances after this one
    if (held > 0 && at < count - 1 && (mustMove || filled + layerBytes[l] / 2 > (total * (at + 1)) / count)) {
      at++;
      held = 0;
    }
    instanceOf.push(at);
    filled += layerBytes[l];
    held++;
  }
  return instanceOf;
}

/** The config as one instance's KV cache and attention see it: its layers only, numbered from 0. */
export function instanceConfig(c: LlamaConfig, first: number, end: number): LlamaConfig {
  if (first === 0 && end === c.nLayers) return c;
  return { ...c, nLayers: end - first, window: c.window.slice(first, end) };
}
