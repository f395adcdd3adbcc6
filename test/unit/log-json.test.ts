// JSON log records: fixed keys for events and connection summaries, and
// the verdicts a session summary derives.
import { test } from "node:test";
import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import { JsonLogger } from "../../src/log/json.js";
import { LineWriter } from "../../src/log/writer.js";
import {
  SessionSummary,
  testResult,
  type SessionOutcome,
  type TestResult,
} from "../../src/log/summary.js";
import { CONNECTION_KEYS, EVENT_KEYS } from "../support/log-keys.js";

function capturedJson(): { records: () => unknown[]; logger: JsonLogger } {
  let text = "";
  const stream = new PassThrough();
  stream.setEncoding("utf8");
  stream.on("data", (chunk: string) => (text += chunk));
  const logger = new JsonLogger(
    "postfix/postwarden",
    new LineWriter(stream, () => ""),
  );
  const records = (): unknown[] =>
    text
      .split("\n")
      .filter((line) => line !== "")
      .map((line) => JSON.parse(line) as unknown);
  return { records, logger };
}

const ALL_OFF: Record<string, TestResult> = {
  pregreet: "off",
  dnsbl: "off",
  pipelining: "off",
  non_smtp_command: "off",
  bare_newline: "off",
};

function outcome(changes: Partial<SessionOutcome>): SessionOutcome {
  return {
    client: { address: "192.0.2.10", port: 51234 },
    listener: { address: "198.51.100.25", port: 25 },
    tests: { ...ALL_OFF, pregreet: "pass" } as SessionOutcome["tests"],
    dnsblScore: null,
    allPassed: true,
    failed: false,
    allowlistedByDns: false,
    vetoed: false,
    ...changes,
  };
}

test("event record has fixed keys", async () => {
  const { records, logger } = capturedJson();
  logger.info("listening on [127.0.0.1]:25");
  logger.warning("slow");
  await new Promise((resolve) => setImmediate(resolve));
  const [first, second] = records() as Record<string, unknown>[];
  assert.deepEqual(Object.keys(first ?? {}), EVENT_KEYS);
  assert.equal(first?.type, "event");
  assert.equal(first?.level, "info");
  assert.equal(first?.program, "postfix/postwarden");
  assert.equal(first?.pid, process.pid);
  assert.equal(first?.event, "listening on [127.0.0.1]:25");
  assert.equal(first?.client_address, null);
  assert.equal(first?.client_port, null);
  assert.match(String(first?.time), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  assert.equal(second?.level, "warning");
  assert.equal(second?.event, "warning: slow");
});

test("client logger tags events", async () => {
  const { records, logger } = capturedJson();
  let client = { address: "10.0.0.1", port: 1 };
  const clientLogger = logger.forClient(() => client);
  clientLogger.info("CONNECT from [10.0.0.1]:1 to [10.0.0.2]:25");
  // A PROXY header replaces the client: later lines carry the new one.
  client = { address: "2001:db8::7", port: 4000 };
  clientLogger.error("failed");
  await new Promise((resolve) => setImmediate(resolve));
  const [first, second] = records() as Record<string, unknown>[];
  assert.equal(first?.client_address, "10.0.0.1");
  assert.equal(first?.client_port, 1);
  assert.equal(second?.client_address, "2001:db8::7");
  assert.equal(second?.client_port, 4000);
  assert.equal(second?.event, "error: failed");
});

test("connection record has fixed keys", async () => {
  const { records, logger } = capturedJson();
  const summary = new SessionSummary();
  summary.act("handoff");
  summary.handedOff("ok");
  logger.summary(summary.finish(outcome({})));
  await new Promise((resolve) => setImmediate(resolve));
  const [record] = records() as Record<string, unknown>[];
  assert.deepEqual(Object.keys(record ?? {}), CONNECTION_KEYS);
  assert.equal(record?.type, "connection");
  assert.equal(record?.time, record?.end_time);
  assert.equal(record?.client_address, "192.0.2.10");
  assert.equal(record?.listener_port, 25);
  assert.equal(record?.verdict, "pass");
  assert.equal(record?.action, "handoff");
  assert.equal(record?.handoff, "ok");
  assert.equal(record?.handoff_error, null);
  assert.equal(record?.reply, null);
  assert.deepEqual(Object.keys(record?.tests ?? {}), Object.keys(ALL_OFF));
  assert.ok(typeof record?.duration_seconds === "number");
});

test("summary keeps the first action", () => {
  const summary = new SessionSummary();
  summary.act("handoff");
  summary.handedOff("failed", "connect: No such file or directory");
  summary.act("engine");
  summary.replied("421 4.3.2 No system resources\r\n");
  const record = summary.finish(outcome({}));
  assert.equal(record.action, "handoff");
  assert.equal(record.handoff, "failed");
  assert.equal(record.handoff_error, "connect: No such file or directory");
  assert.equal(record.reply, "421 4.3.2 No system resources");
});

test("summary verdicts", () => {
  const verdict = (
    prepare: (summary: SessionSummary) => void,
    changes: Partial<SessionOutcome>,
  ): string => {
    const summary = new SessionSummary();
    prepare(summary);
    return summary.finish(outcome(changes)).verdict;
  };
  const handoff = (summary: SessionSummary): void => summary.act("handoff");

  assert.equal(verdict(handoff, {}), "pass");
  assert.equal(
    verdict((summary) => {
      summary.allowlisted = true;
      summary.act("handoff");
    }, {}),
    "allowlisted",
  );
  assert.equal(verdict(handoff, { allowlistedByDns: true }), "allowlisted");

  assert.equal(verdict(handoff, { failed: true, allPassed: false }), "fail");
  assert.equal(
    verdict(
      (summary) => summary.closed("521 5.5.1 Protocol error\r\n", false),
      { tests: { ...ALL_OFF, pregreet: "fail" } as SessionOutcome["tests"] },
    ),
    "fail",
  );
  assert.equal(
    verdict(
      (summary) => summary.closed("521 5.3.2 Service unavailable\r\n", true),
      {},
    ),
    "fail",
  );

  assert.equal(
    verdict((summary) => summary.act("engine"), {
      vetoed: true,
      allPassed: false,
    }),
    "veto",
  );
  // A client rejected by a limit before any test reached no verdict.
  assert.equal(
    verdict((summary) => summary.closed("421 4.7.0 Error\r\n", false), {}),
    "none",
  );
  assert.equal(
    verdict((summary) => summary.act("hangup"), { allPassed: false }),
    "none",
  );
});

test("test result order", () => {
  const base = { enabled: true, cached: false, passed: false, failed: false };
  assert.equal(testResult({ ...base, enabled: false, failed: true }), "off");
  assert.equal(testResult({ ...base, failed: true, passed: true }), "fail");
  assert.equal(testResult({ ...base, passed: true, cached: true }), "pass");
  assert.equal(testResult({ ...base, cached: true }), "cached");
  assert.equal(testResult(base), "incomplete");
});
