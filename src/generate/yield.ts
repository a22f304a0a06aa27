/**
 * Lets the event loop run between tokens, so an AbortSignal fired from a timer or an event is seen within one token.
 * A macrotask is needed (a resolved promise would not let timers run); setImmediate (Node, Bun) and MessageChannel
 * (browsers, Deno, Workers) avoid setTimeout's 1–4 ms clamp.
 */
export function yieldToEventLoop(): Promise<void> {
  const g = globalThis as { setImmediate?: (f: () => void) => unknown };
  if (typeof g.setImmediate === 'function') return new Promise((r) => g.setImmediate!(r));
  if (typeof MessageChannel === 'function') {
    return new Promise((r) => {
      const ch = new MessageChannel();
      ch.port1.onmessage = () => {
        ch.port1.close();
        r();
      };
      ch.port2.postMessage(null);
    });
  }
  return new Promise((r) => setTimeout(r, 0));
}
