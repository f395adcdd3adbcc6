// Non-blocking line output to stderr or stdout for the log sinks.
import { fstatSync, writeSync } from "node:fs";
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
  /**
   * The descriptor to write with writeSync() when the stream is a file or
   * a character device such as /dev/null. No reader can fall behind there,
   * so the stream's buffering and per-line work are skipped.
   */
  private readonly fileDescriptor: number | undefined;

  constructor(
    private readonly stream: Writable,
    /** Formats the note about dropped lines that precedes the next line. */
    private readonly dropNote: (count: number) => string,
  ) {
    stream.on("error", () => {
      this.broken = true;
    });
    this.fileDescriptor = fileDescriptorOf(stream);
  }

  /** Writes `line` (with its newline); returns false when it was dropped. */
  write(line: string): boolean {
    if (this.broken || this.stream.writableLength > MAX_PENDING_LOG_BYTES) {
      this.droppedLines++;
      this.droppedSinceWrite++;
      return false;
    }
    if (this.droppedSinceWrite > 0) {
      const note = this.dropNote(this.droppedSinceWrite);
      this.droppedSinceWrite = 0;
      this.send(note);
    }
    return this.send(line);
  }

  private send(text: string): boolean {
    if (this.fileDescriptor === undefined) {
      this.stream.write(text);
      return true;
    }
    try {
      writeSync(this.fileDescriptor, text);
      return true;
    } catch {
      // A full disk, for example: the line is lost, and counted.
      this.droppedLines++;
      this.droppedSinceWrite++;
      return false;
    }
  }
}

/** Returns the descriptor of a stream on a file or character device. */
function fileDescriptorOf(stream: Writable): number | undefined {
  const fd = (stream as { fd?: unknown }).fd;
  if (typeof fd !== "number") return undefined;
  try {
    const stats = fstatSync(fd);
    return stats.isFile() || stats.isCharacterDevice() ? fd : undefined;
  } catch {
    return undefined;
  }
}
