// JSON lines sink on stdout: one record per event and one summary record
// per connection, each a JSON object on one line with fixed keys, so that
// jq, Loki or Elasticsearch read them without a grok pattern. Event
// records: type "event", time (ISO 8601, UTC), level, program, pid, event
// (the same text as the syslog line), client_address and client_port (null
// when the line is about no client). Summary records: type "connection",
// the same first keys, then the keys of ConnectionSummary.
import {
  levelText,
  type ClientEndpoint,
  type DaemonLogger,
  type LogLevel,
  type Logger,
} from "./logger.js";
import type { ConnectionSummary } from "./summary.js";
import { LineWriter } from "./writer.js";

export interface EventRecord {
  type: "event";
  time: string;
  level: LogLevel;
  program: string;
  pid: number;
  event: string;
  client_address: string | null;
  client_port: number | null;
}

export type ConnectionRecord = {
  type: "connection";
  time: string;
  level: "info";
  program: string;
  pid: number;
} & ConnectionSummary;

export class JsonLogger implements DaemonLogger {
  private readonly writer: LineWriter;

  constructor(
    private readonly program: string,
    writer: LineWriter | undefined = undefined,
  ) {
    this.writer =
      writer ??
      new LineWriter(process.stdout, (count) =>
        this.formatEvent(
          "warning",
          `${count} log lines dropped: the log reader is too slow`,
          undefined,
        ),
      );
  }

  get droppedLines(): number {
    return this.writer.droppedLines;
  }

  info(message: string): void {
    this.event("info", message, undefined);
  }

  warning(message: string): void {
    this.event("warning", message, undefined);
  }

  error(message: string): void {
    this.event("error", message, undefined);
  }

  summary(summary: ConnectionSummary): void {
    const record: ConnectionRecord = {
      type: "connection",
      time: summary.end_time,
      level: "info",
      program: this.program,
      pid: process.pid,
      ...summary,
    };
    this.writer.write(JSON.stringify(record) + "\n");
  }

  forClient(client: () => ClientEndpoint): Logger {
    return {
      info: (message) => this.event("info", message, client()),
      warning: (message) => this.event("warning", message, client()),
      error: (message) => this.event("error", message, client()),
      summary: (record) => this.summary(record),
    };
  }

  /** Writes one event record. */
  event(
    level: LogLevel,
    message: string,
    client: ClientEndpoint | undefined,
  ): void {
    this.writer.write(this.formatEvent(level, message, client));
  }

  private formatEvent(
    level: LogLevel,
    message: string,
    client: ClientEndpoint | undefined,
  ): string {
    const record: EventRecord = {
      type: "event",
      time: new Date().toISOString(),
      level,
      program: this.program,
      pid: process.pid,
      event: levelText(level, message),
      client_address: client?.address ?? null,
      client_port: client?.port ?? null,
    };
    return JSON.stringify(record) + "\n";
  }
}
