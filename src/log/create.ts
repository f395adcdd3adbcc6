// Builds the daemon's logger for the configured log_destination.
import type { LogConfig } from "../config/load.js";
import { JsonLogger } from "./json.js";
import { StreamLogger, type DaemonLogger } from "./logger.js";
import { SyslogLogger } from "./syslog.js";

export function createLogger(config: LogConfig): DaemonLogger {
  switch (config.destination) {
    case "syslog":
      return new SyslogLogger({
        socketPath: config.syslogSocket,
        facility: config.syslogFacility,
        program: config.syslogName,
      });
    case "json":
      return new JsonLogger(config.syslogName);
    case "stderr":
      return new StreamLogger(config.syslogName);
  }
}
