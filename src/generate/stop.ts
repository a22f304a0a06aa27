import { EdgeLLMError } from '../errors.js';

/**
 * Streaming stop-string matcher. Generated text arrives a token at a time, and a stop string can straddle tokens,
 * so text that might be the start of a stop string is held back until the next push settles it.
 *
 * Matching is on UTF-16 code units. A stop string that is valid Unicode can only match, or partly match, at a
 * character boundary, so held-back and emitted text never split a surrogate pair.
 */
export class StopMatcher {
  private readonly stops: string[];
  private held = '';
  private stopped = false;

  constructor(stops: string[]) {
    if (!Array.isArray(stops)) {
      throw new EdgeLLMError('BAD_ARGUMENT', `stop must be an array of strings, got ${String(stops)}`);
    }
    for (let i = 0; i < stops.length; i++) {
      if (typeof stops[i] !== 'string') {
        throw new EdgeLLMError('BAD_ARGUMENT', `stop[${i}] must be a string, got ${String(stops[i])}`);
      }
    }
    // An empty stop string would match everywhere; ignoring it is the only useful reading.
    this.stops = [...new Set(stops.filter((s) => s.length > 0))];
  }

  /** Feed newly decoded text; returns { emit: text safe to emit now, stopped: boolean }. Holds back any suffix that could be the start of a stop string; when a stop string appears, emits only the text before it and reports stopped. After that, every push reports stopped and emits nothing. */
  push(text: string): { emit: string; stopped: boolean } {
    if (this.stopped) return { emit: '', stopped: true };
    const buf = this.held + text;

    // The match that ends first wins (on a tie, the longer one), as if the text had arrived one character at a
    // time: so where the tokenizer splits the text never changes the result. Nothing already emitted can be part of
    // a match: text is emitted only once no stop string can start in it.
    let at = -1;
    let end = Infinity;
    for (const s of this.stops) {
      const i = buf.indexOf(s);
      if (i >= 0 && (i + s.length < end || (i + s.length === end && i < at))) {
        at = i;
        end = i + s.length;
      }
    }
    if (at >= 0) {
      this.stopped = true;
      this.held = '';
      return { emit: buf.slice(0, at), stopped: true };
    }

    let keep = 0;
    for (const s of this.stops) keep = Math.max(keep, partialMatchAtEnd(buf, s));
    this.held = buf.slice(buf.length - keep);
    return { emit: buf.slice(0, buf.length - keep), stopped: false };
  }

  /** End of generation: returns the held-back text (no stop occurred). */
  flush(): string {
    const rest = this.held;
    this.held = '';
    return rest;
  }
}

/** Length of the longest proper prefix of `stop` that `text` ends with. */
function partialMatchAtEnd(text: string, stop: string): number {
  for (let len = Math.min(stop.length - 1, text.length); len > 0; len--) {
    if (text.endsWith(stop.slice(0, len))) return len;
  }
  return 0;
}
