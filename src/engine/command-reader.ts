// Splits a client's byte stream into SMTP command lines for the dummy
// engine. A line normally ends with CRLF; a line that ends with a bare LF
// is reported as such (the bare newline test). Lines are bounded: a line
// longer than the limit is reported instead of buffered, so memory per
// client stays below about twice the limit whatever the client sends.

export type ReadResult =
  { kind: "line"; text: string; bareNewline: boolean } | { kind: "too long" };

export class CommandReader {
  private pending: Buffer = Buffer.alloc(0);

  constructor(private readonly maxLineLength: number) {}

  /** Adds received bytes. */
  push(chunk: Buffer): void {
    this.pending =
      this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
  }

  /** Drops everything buffered (plaintext sent before a TLS handshake). */
  discard(): void {
    this.pending = Buffer.alloc(0);
  }

  /** Bytes received but not yet returned as lines. */
  get buffered(): number {
    return this.pending.length;
  }

  /** The first bytes still buffered, for log lines. */
  peekBuffered(max: number): Buffer {
    return this.pending.subarray(0, max);
  }

  /** Returns the next complete line, "too long", or undefined for now. */
  next(): ReadResult | undefined {
    const end = this.pending.indexOf(0x0a);
    if (end < 0) {
      if (this.pending.length >= this.maxLineLength)
        return { kind: "too long" };
      return undefined;
    }
    if (end >= this.maxLineLength) return { kind: "too long" };
    const crlf = end > 0 && this.pending[end - 1] === 0x0d;
    const text = this.pending.toString("latin1", 0, crlf ? end - 1 : end);
    this.pending = this.pending.subarray(end + 1);
    return { kind: "line", text, bareNewline: !crlf };
  }
}
