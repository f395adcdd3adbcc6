// Non-blocking line output to stderr or stdout for the log sinks.
import type { Writable } from "node:stream";

/** Bytes of log lines that may wait for a slow reader before lines drop. */
const MAX_PENDING_LOG_BYTES = 1 << 20;

/**
 * Writes log lines to a stream. A reader that stops reading makes lines
 * drop (and counts them) instead of filling memory; a reader that goes
 * away (EPIPE) stops the output, never the daemon.
 */
export class LineWriter {
  /** Lines not written since the start: a slow or vanished reader. */
  droppedLines = 0;
  private broken = false;
  /** Lines dropped since the last line that was written. */
  private droppedSinceWrite = 0;

  constructor(
    private readonly stream: Writable,
    /** Formats the note about dropped lines that precedes the next line. */
    private readonly dropNote: (count: number) => string,
  ) {
    stream.on("error", () => {
      this.broken = true;
    });
  }

  /** Writes `line` (with its newline); returns false when it was dropped. */
  write(line: string): boolean {
    if (this.broken || this.stream.writableLength > MAX_PENDING_LOG_BYTES) {
      this.droppedLines++;
      this.droppedSinceWrite++;
      return false;
    }
    if (this.droppedSinceWrite > 0) {
      this.stream.write(this.dropNote(this.droppedSinceWrite));
      this.droppedSinceWrite = 0;
    }
    this.stream.write(line);
    return true;
  }
}
