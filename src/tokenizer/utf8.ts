/**
 * Incremental UTF-8 decoder for token streams. A token can end in the middle of a character (byte-fallback tokens
 * carry one byte each), so text is released only once each character is complete.
 *
 * It follows the WHATWG Encoding "UTF-8 decoder" step by step, so its output (replacement characters included) is
 * exactly what a non-fatal `TextDecoder` gives for the same bytes, however they are split across pushes.
 */
export class Utf8StreamDecoder {
  private codePoint = 0;
  private bytesSeen = 0;
  private bytesNeeded = 0;
  private lower = 0x80;
  private upper = 0xbf;

  /** True while a character has begun but is not yet complete. */
  get pending(): boolean {
    return this.bytesNeeded !== 0;
  }

  /** Decodes `bytes`, returning every character completed so far; a partial trailing character is kept. */
  push(bytes: ArrayLike<number>): string {
    const out: number[] = [];
    for (let i = 0; i < bytes.length; i++) {
      const byte = bytes[i] & 0xff;
      if (this.bytesNeeded === 0) {
        if (byte <= 0x7f) {
          out.push(byte);
        } else if (byte >= 0xc2 && byte <= 0xdf) {
          this.bytesNeeded = 1;
          this.codePoint = byte & 0x1f;
        } else if (byte >= 0xe0 && byte <= 0xef) {
          // E0 and ED have narrower second-byte ranges: no overlong forms, no surrogates.
          if (byte === 0xe0) this.lower = 0xa0;
          if (byte === 0xed) this.upper = 0x9f;
          this.bytesNeeded = 2;
          this.codePoint = byte & 0x0f;
        } else if (byte >= 0xf0 && byte <= 0xf4) {
          // F0 and F4 likewise: no overlong forms, nothing above U+10FFFF.
          if (byte === 0xf0) this.lower = 0x90;
          if (byte === 0xf4) this.upper = 0x8f;
          this.bytesNeeded = 3;
          this.codePoint = byte & 0x07;
        } else {
          out.push(0xfffd);
        }
        continue;
      }
      if (byte < this.lower || byte > this.upper) {
        // The sequence so far is invalid: one U+FFFD for it, then this byte starts afresh.
        this.reset();
        out.push(0xfffd);
        i--;
        continue;
      }
      this.lower = 0x80;
      this.upper = 0xbf;
      this.codePoint = (this.codePoint << 6) | (byte & 0x3f);
      if (++this.bytesSeen === this.bytesNeeded) {
        out.push(this.codePoint);
        this.reset();
      }
    }
    return fromCodePoints(out);
  }

  /** Ends the stream: an unfinished character becomes U+FFFD. */
  flush(): string {
    if (this.bytesNeeded === 0) return '';
    this.reset();
    return '\ufffd';
  }

  private reset(): void {
    this.codePoint = 0;
    this.bytesSeen = 0;
    this.bytesNeeded = 0;
    this.lower = 0x80;
    this.upper = 0xbf;
  }
}

/** Decodes a complete byte sequence the same way as the stream decoder (non-fatal, U+FFFD for bad bytes). */
export function decodeUtf8(bytes: ArrayLike<number>): string {
  const decoder = new Utf8StreamDecoder();
  return decoder.push(bytes) + decoder.flush();
}

// String.fromCodePoint takes its input as arguments, so long texts go in slices to stay under engine argument limits.
function fromCodePoints(codePoints: number[]): string {
  const SLICE = 8192;
  if (codePoints.length <= SLICE) return String.fromCodePoint(...codePoints);
  let text = '';
  for (let i = 0; i < codePoints.length; i += SLICE) {
    text += String.fromCodePoint(...codePoints.slice(i, i + SLICE));
  }
  return text;
}
