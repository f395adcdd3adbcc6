// The logging parameters: defaults, accepted values and error messages.
import { test } from "node:test";
import assert from "node:assert/strict";
import { buildConfig, ConfigError } from "../../src/config/load.js";
import type { Setting } from "../../src/config/syntax.js";

function build(
  entries: Record<string, string>,
): ReturnType<typeof buildConfig> {
  const settings: Setting[] = Object.entries({
    listen: "127.0.0.1:25",
    ...entries,
  }).map(([name, value], index) => ({
    name,
    value,
    origin: { file: "test.cf", line: index + 1 },
  }));
  return buildConfig(settings);
}

function problemsOf(entries: Record<string, string>): string[] {
  try {
    build(entries);
  } catch (error) {
    assert.ok(error instanceof ConfigError);
    return error.problems;
  }
  assert.fail("expected a ConfigError");
}

test("log defaults are syslog on /dev/log", () => {
  const { log } = build({});
  assert.equal(log.destination, "syslog");
  assert.equal(log.syslogSocket, "/dev/log");
  assert.equal(log.syslogFacility, 2);
  assert.equal(log.syslogName, "postfix/postwarden");
});

test("log settings are read", () => {
  const { log } = build({
    log_destination: "json",
    syslog_socket: "/run/systemd/journal/dev-log",
    syslog_facility: "local5",
    syslog_name: "postfix-in/postscreen",
  });
  assert.equal(log.destination, "json");
  assert.equal(log.syslogSocket, "/run/systemd/journal/dev-log");
  assert.equal(log.syslogFacility, 21);
  assert.equal(log.syslogName, "postfix-in/postscreen");
});

test("invalid log destination", () => {
  assert.match(
    problemsOf({ log_destination: "file" }).join("\n"),
    /log_destination: .*"file"/,
  );
});

test("invalid syslog facility", () => {
  assert.match(
    problemsOf({ syslog_facility: "mial" }).join("\n"),
    /test\.cf:2: syslog_facility: invalid syslog facility "mial": expected one of kern, user, mail/,
  );
});

test("relative syslog socket", () => {
  assert.match(
    problemsOf({ syslog_socket: "dev/log" }).join("\n"),
    /syslog_socket: invalid path "dev\/log": must be absolute/,
  );
});

test("invalid syslog name", () => {
  for (const name of ["", "postfix postscreen", "postfix[1]", "a:b"]) {
    assert.match(
      problemsOf({ syslog_name: name }).join("\n"),
      /syslog_name: invalid program name/,
      name,
    );
  }
});
