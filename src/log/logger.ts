// Log sink: one line per event, in the format of Postfix's maillog_file
// ("Mmm dd hh:mm:ss host program[pid]: text"), written to stderr. The
// program name is postfix/postwarden, as postscreen's is postfix/postscreen,
// so tools that match any postfix/NAME program read these lines.
import { hostname } from "node:os";

export interface Logger {
  info(message: string): void;
  warning(message: string): void;
  error(message: string): void;
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

function syslogTimestamp(date: Date): string {
  const day = String(date.getDate()).padStart(2, " ");
  const time = [date.getHours(), date.getMinutes(), date.getSeconds()]
    .map((part) => String(part).padStart(2, "0"))
    .join(":");
  return `${MONTHS[date.getMonth()]} ${day} ${time}`;
}

/** A logger that writes lines to a stream, stderr by default. */
/** Bytes of log lines that may wait for a slow reader before lines drop. */
const MAX_PENDING_LOG_BYTES = 1 << 20;

/**
 * Writes log lines to stderr. A reader that stops reading makes lines
 * drop (and counts them) instead of filling memory; a reader that goes
 * away (EPIPE) stops the logging, never the daemon.
 */
function stderrWriter(): (line: string) => void {
  let broken = false;
  let dropped = 0;
  process.stderr.on("error", () => {
    broken = true;
  });
  return (line) => {
    if (broken) return;
    if (process.stderr.writableLength > MAX_PENDING_LOG_BYTES) {
      dropped++;
      return;
    }
    if (dropped > 0) {
      process.stderr.write(
        `${line.slice(0, line.indexOf(": ") + 2)}warning: ${dropped} log ` +
          "lines dropped: the log reader is too slow\n",
      );
      dropped = 0;
    }
    process.stderr.write(line);
  };
}

export class StreamLogger implements Logger {
  private readonly prefix: string;
  private readonly write: (line: string) => void;

  constructor(
    program = "postfix/postwarden",
    write: ((line: string) => void) | undefined = undefined,
  ) {
    const host = hostname().split(".")[0] ?? "localhost";
    this.prefix = ` ${host} ${program}[${process.pid}]: `;
    this.write = write ?? stderrWriter();
  }

  info(message: string): void {
    this.write(syslogTimestamp(new Date()) + this.prefix + message + "\n");
  }

  warning(message: string): void {
    this.info("warning: " + message);
  }

  error(message: string): void {
    this.info("error: " + message);
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
