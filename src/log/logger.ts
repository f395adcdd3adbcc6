// Logger interface and the stderr sink: one line per event, in the format
// of Postfix's maillog_file ("Mmm dd hh:mm:ss host program[pid]: text").
// The program name (syslog_name) is postfix/postwarden by default, as
// postscreen's is postfix/postscreen, so tools that match any postfix/NAME
// program read these lines.
import { hostname } from "node:os";
import type { ConnectionSummary } from "./summary.js";
import { LineWriter } from "./writer.js";

export type LogLevel = "info" | "warning" | "error";

/** A client address and port, as the JSON records carry them. */
export interface ClientEndpoint {
  address: string;
  port: number;
}

export interface Logger {
  info(message: string): void;
  warning(message: string): void;
  error(message: string): void;
  /** Writes a connection's summary record; only the JSON sink has them. */
  summary?(record: ConnectionSummary): void;
  /**
   * Returns a logger whose records carry the client that `client` returns
   * at the time of each line; only the JSON sink has such a field.
   */
  forClient?(client: () => ClientEndpoint): Logger;
}

/** The daemon's logger, with the count that the metrics export. */
export interface DaemonLogger extends Logger {
  /**
   * Lines the configured destination did not receive: with syslog, those
   * written to stderr instead; with every destination, those lost to a
   * slow or vanished reader.
   */
  readonly droppedLines: number;
}

const MONTHS = [
  "Jan",
  "Feb",
  "Mar",
  "Apr",
  "May",
  "Jun",
  "Jul",
  "Aug",
  "Sep",
  "Oct",
  "Nov",
  "Dec",
];

/** The last second syslogTimestamp() formatted, and its text. */
let lastStamp = { second: NaN, text: "" };

/**
 * Formats a local time as syslog and glibc's syslog() do (strftime
 * "%h %e %T" in the C locale): "Dec  4 15:10:01".
 */
export function syslogTimestamp(date: Date): string {
  // Many lines share a second: format each second once.
  const second = Math.floor(date.getTime() / 1000);
  if (second === lastStamp.second) return lastStamp.text;
  const day = String(date.getDate()).padStart(2, " ");
  const time = [date.getHours(), date.getMinutes(), date.getSeconds()]
    .map((part) => String(part).padStart(2, "0"))
    .join(":");
  const text = `${MONTHS[date.getMonth()]} ${day} ${time}`;
  lastStamp = { second, text };
  return text;
}

/** Prefixes a message as Postfix's msg_warn() and msg_error() do. */
export function levelText(level: LogLevel, message: string): string {
  return level === "info" ? message : `${level}: ${message}`;
}

/** Returns a writer for stderr that notes dropped lines in this format. */
export function stderrWriter(program: string): LineWriter {
  const host = shortHostname();
  return new LineWriter(
    process.stderr,
    (count) =>
      `${syslogTimestamp(new Date())} ${host} ${program}[${process.pid}]: ` +
      `warning: ${count} log lines dropped: the log reader is too slow\n`,
  );
}

function shortHostname(): string {
  return hostname().split(".")[0] ?? "localhost";
}

/** Writes log lines in the maillog_file format, to stderr by default. */
export class StreamLogger implements DaemonLogger {
  private readonly prefix: string;
  private readonly writer: LineWriter;

  constructor(
    program = "postfix/postwarden",
    writer: LineWriter | undefined = undefined,
  ) {
    this.prefix = ` ${shortHostname()} ${program}[${process.pid}]: `;
    this.writer = writer ?? stderrWriter(program);
  }

  get droppedLines(): number {
    return this.writer.droppedLines;
  }

  /** Writes one line; returns false when the writer dropped it. */
  write(level: LogLevel, message: string, date = new Date()): boolean {
    return this.writer.write(
      syslogTimestamp(date) + this.prefix + levelText(level, message) + "\n",
    );
  }

  info(message: string): void {
    this.write("info", message);
  }

  warning(message: string): void {
    this.write("warning", message);
  }

  error(message: string): void {
    this.write("error", message);
  }
}

/**
 * Logs a repeated condition at most once per interval, with the number of
 * occurrences since the last line.
 */
export class RateLimitedWarning {
  private lastLogged = -Infinity;
  private suppressed = 0;

  constructor(
    private readonly logger: Logger,
    private readonly intervalMs: number,
  ) {}

  report(message: string, now = Date.now()): void {
    if (now - this.lastLogged < this.intervalMs) {
      this.suppressed++;
      return;
    }
    const repeats =
      this.suppressed > 0 ? ` (${this.suppressed} more since last report)` : "";
    this.logger.warning(message + repeats);
    this.lastLogged = now;
    this.suppressed = 0;
  }
}
