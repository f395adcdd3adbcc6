// Non-blocking line output to stderr or stdout for the log sinks.
import type { Writable } from "node:stream";

/** Bytes of log lines that may wait for a slow reader before lines drop. */
const MAX_PENDING_LOG_BYTES = 1 << 20;

/**
 * Writes log lines to a stream. A reader that stops reading makes lines
 * drop (and counts them) instead of filling memory; a reader that goes
 * away (EPIPE) stops the output, never the daemon. With `batch`, the lines
 * of one turn of the event loop go out in one write, and any left are
 * written when the process exits.
 */
export class LineWriter {
  /** Lines not written since the start: a slow or vanished reader. */
  droppedLines = 0;
  private broken = false;
  /** Lines dropped since the last line that was written. */
  private droppedSinceWrite = 0;
  /** Lines of this turn of the event loop, not yet written. */
  private pending = "";
  private flushScheduled = false;

  constructor(
    private readonly stream: Writable,
    /** Formats the note about dropped lines that precedes the next line. */
    private readonly dropNote: (count: number) => string,
    private readonly batch = false,
  ) {
    stream.on("error", () => {
      this.broken = true;
    });
    if (batch) process.on("exit", () => this.flush());
  }

  /** Writes `line` (with its newline); returns false when it was dropped. */
  write(line: string): boolean {
    const waiting = this.stream.writableLength + this.pending.length;
    if (this.broken || waiting > MAX_PENDING_LOG_BYTES) {
      this.droppedLines++;
      this.droppedSinceWrite++;
      return false;
    }
    if (this.droppedSinceWrite > 0) {
      this.output(this.dropNote(this.droppedSinceWrite));
      this.droppedSinceWrite = 0;
    }
    this.output(line);
    return true;
  }

  /** Writes the lines that wait for the end of this event loop turn. */
  flush(): void {
    this.flushScheduled = false;
    if (this.pending === "") return;
    const text = this.pending;
    this.pending = "";
    if (!this.broken) this.stream.write(text);
  }

  private output(text: string): void {
    if (!this.batch) {
      this.stream.write(text);
      return;
    }
    this.pending += text;
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }
}
