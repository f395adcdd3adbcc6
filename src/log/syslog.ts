// Syslog sink: one datagram per line on a connected UNIX datagram socket
// (/dev/log by default), framed as glibc's syslog() frames it. Nothing
// blocks. When the socket is missing, refuses lines or is full, the line
// goes to stderr in the maillog format instead and is counted, and one
// warning on stderr reports the outage. A later line connects the socket
// again, at most once per retry delay.
import { getSystemErrorName } from "node:util";
import { createSocket, type UnixDgramSocket } from "unix-dgram";
import { formatSyslogMessage } from "./syslog-format.js";
import { StreamLogger, type DaemonLogger, type LogLevel } from "./logger.js";

/** First delay before connecting again after a failure. */
const MIN_RETRY_MS = 1000;
/** The delay doubles after each failed attempt up to this. */
const MAX_RETRY_MS = 60_000;
/** Outage warnings after the first are written at most this often. */
const WARNING_INTERVAL_MS = 60_000;
/** unix-dgram's code for a send that found the socket full. */
const CONGESTION = 1;

export interface SyslogOptions {
  /** Path of the syslog daemon's datagram socket, such as /dev/log. */
  socketPath: string;
  /** Facility code, such as 2 for mail. */
  facility: number;
  /** Program name in each line, such as postfix/postwarden. */
  program: string;
  /** Logger for the lines the socket cannot take; stderr by default. */
  fallback?: StreamLogger;
  /** Clock, for tests of the retry interval. */
  now?: () => number;
}

function describeCode(code: number | undefined): string {
  if (code === undefined) return "unknown error";
  try {
    return getSystemErrorName(code);
  } catch {
    return `error ${code}`;
  }
}

export class SyslogLogger implements DaemonLogger {
  /** Lines written to stderr because the socket did not take them. */
  droppedLines = 0;
  private socket: UnixDgramSocket | undefined;
  private congested = false;
  private retryAt = 0;
  private retryDelayMs = MIN_RETRY_MS;
  /** Lines diverted since the socket last took one. */
  private outageLines = 0;
  private outageWarned = false;
  private lastWarningAt = -Infinity;
  private readonly fallback: StreamLogger;
  private readonly now: () => number;
  private closed = false;

  constructor(private readonly options: SyslogOptions) {
    this.fallback = options.fallback ?? new StreamLogger(options.program);
    this.now = options.now ?? Date.now;
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

  /** Closes the socket; later lines go to stderr. */
  close(): void {
    this.closed = true;
    this.disconnect();
  }

  private write(level: LogLevel, message: string): void {
    const date = new Date();
    if (this.closed) {
      this.fallback.write(level, message, date);
      return;
    }
    if (this.congested) {
      this.divert(level, message, date, "the socket is full");
      return;
    }
    if (this.socket === undefined && this.now() >= this.retryAt) {
      const problem = this.connect();
      if (problem !== undefined) {
        this.failed(level, message, date, problem);
        return;
      }
    }
    if (this.socket === undefined) {
      this.divert(level, message, date, "not connected");
      return;
    }

    const text = formatSyslogMessage(
      this.options.facility,
      level,
      this.options.program,
      process.pid,
      message,
      date,
    );
    let problem = this.send(text);
    if (problem !== undefined && !this.congested) {
      // The reader went away (a restarted syslog daemon leaves this socket
      // connected to nothing): connect to the path again once, as glibc
      // does, before giving up on this line.
      this.disconnect();
      problem = this.connect() ?? this.send(text);
    }
    if (problem === undefined) {
      this.recovered();
      return;
    }
    if (this.congested) {
      this.divert(level, message, date, problem);
    } else {
      this.failed(level, message, date, problem);
    }
  }

  /** Connects a new socket; returns the problem, or undefined. */
  private connect(): string | undefined {
    let problem: string | undefined;
    let socket: UnixDgramSocket;
    try {
      socket = createSocket("unix_dgram");
    } catch (error) {
      return `socket failed: ${(error as Error).message}`;
    }
    // Without an "error" listener, unix-dgram's errors would end the
    // process; connect() reports its error through it synchronously.
    socket.on("error", (error: { code?: number }) => {
      problem = `connect failed: ${describeCode(error.code)}`;
    });
    socket.on("writable", () => {
      if (this.socket !== socket || !this.congested) return;
      this.congested = false;
      this.recovered();
    });
    socket.connect(this.options.socketPath);
    if (problem !== undefined) {
      socket.close();
      return problem;
    }
    this.socket = socket;
    return undefined;
  }

  /** Sends one datagram; returns the problem, or undefined when sent. */
  private send(text: string): string | undefined {
    const socket = this.socket;
    if (socket === undefined) return "not connected";
    let problem: string | undefined;
    socket.send(Buffer.from(text, "utf8"), (error) => {
      if (error === undefined) return;
      if (error.code === CONGESTION) {
        this.congested = true;
        problem = "the socket is full (the syslog daemon reads too slowly)";
      } else {
        problem = `send failed: ${describeCode(error.code)}`;
      }
    });
    return problem;
  }

  private disconnect(): void {
    const socket = this.socket;
    this.socket = undefined;
    this.congested = false;
    try {
      socket?.close();
    } catch {
      // A socket that fails to close is dropped all the same.
    }
  }

  /** Diverts a line after a failed connect or send, and waits to retry. */
  private failed(
    level: LogLevel,
    message: string,
    date: Date,
    problem: string,
  ): void {
    this.disconnect();
    this.retryAt = this.now() + this.retryDelayMs;
    this.retryDelayMs = Math.min(this.retryDelayMs * 2, MAX_RETRY_MS);
    this.divert(level, message, date, problem);
  }

  private divert(
    level: LogLevel,
    message: string,
    date: Date,
    problem: string,
  ): void {
    this.droppedLines++;
    this.outageLines++;
    const now = this.now();
    if (!this.outageWarned && now - this.lastWarningAt >= WARNING_INTERVAL_MS) {
      this.outageWarned = true;
      this.lastWarningAt = now;
      this.fallback.write(
        "warning",
        `syslog socket ${this.options.socketPath}: ${problem}; writing log ` +
          "lines to stderr until it takes them again",
        date,
      );
    }
    this.fallback.write(level, message, date);
  }

  /** Ends an outage once the socket takes a line again. */
  private recovered(): void {
    this.retryDelayMs = MIN_RETRY_MS;
    if (this.outageLines === 0) return;
    const count = this.outageLines;
    const warned = this.outageWarned;
    this.outageLines = 0;
    this.outageWarned = false;
    if (warned) {
      this.info(
        `syslog socket ${this.options.socketPath} takes log lines again; ` +
          `${count} lines were written to stderr meanwhile`,
      );
    }
  }
}
