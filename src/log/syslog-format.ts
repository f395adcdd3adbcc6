// RFC 3164 framing of syslog datagrams, in the form glibc's syslog() sends
// to /dev/log: "<PRI>Mmm dd hh:mm:ss program[pid]: text", local time, no
// host name, no trailing newline or NUL. Checked against glibc 2.36
// (Debian 12) with openlog(LOG_PID) and a datagram socket as /dev/log.
import { levelText, syslogTimestamp, type LogLevel } from "./logger.js";

/** Facility codes of syslog.h (RFC 3164 section 4.1.1). */
export const FACILITIES: Readonly<Record<string, number>> = {
  kern: 0,
  user: 1,
  mail: 2,
  daemon: 3,
  auth: 4,
  syslog: 5,
  lpr: 6,
  news: 7,
  uucp: 8,
  cron: 9,
  authpriv: 10,
  ftp: 11,
  local0: 16,
  local1: 17,
  local2: 18,
  local3: 19,
  local4: 20,
  local5: 21,
  local6: 22,
  local7: 23,
};

/**
 * Severities as Postfix maps its messages: msg_info() to LOG_INFO,
 * msg_warn() to LOG_WARNING, msg_error() to LOG_ERR.
 */
const SEVERITIES: Readonly<Record<LogLevel, number>> = {
  error: 3,
  warning: 4,
  info: 6,
};

/** Returns the facility code for a name such as "mail" or "local3". */
export function facilityCode(name: string): number {
  const code = FACILITIES[name.toLowerCase()];
  if (code === undefined) {
    throw new Error(
      `invalid syslog facility "${name}": expected one of ` +
        Object.keys(FACILITIES).join(", "),
    );
  }
  return code;
}

/** Formats the priority value: facility * 8 + severity. */
export function syslogPriority(facility: number, level: LogLevel): number {
  return facility * 8 + SEVERITIES[level];
}

/** Formats one syslog datagram's text. */
export function formatSyslogMessage(
  facility: number,
  level: LogLevel,
  program: string,
  pid: number,
  message: string,
  date: Date,
): string {
  return (
    `<${syslogPriority(facility, level)}>${syslogTimestamp(date)} ` +
    `${program}[${pid}]: ${levelText(level, message)}`
  );
}
