import { test } from "node:test";
import assert from "node:assert/strict";
import {
  escapeBytes,
  escapeForLog,
  formatDelay,
  formatEndpoint,
} from "../../src/log/format.js";

test("escape keeps printable ASCII", () => {
  assert.equal(escapeBytes(Buffer.from("EHLO a.example")), "EHLO a.example");
});

test("escape writes C escapes for controls", () => {
  assert.equal(
    escapeBytes(Buffer.from("a\r\n\t\x07\b\f\v")),
    "a\\r\\n\\t\\a\\b\\f\\v",
  );
});

test("escape doubles backslash", () => {
  assert.equal(escapeBytes(Buffer.from("a\\b")), "a\\\\b");
});

test("escape writes octal for other bytes", () => {
  assert.equal(
    escapeBytes(Buffer.from([0, 0x7f, 0xff, 0x1b])),
    "\\000\\177\\377\\033",
  );
});

test("escape for log clips at 100 characters", () => {
  const escaped = escapeForLog(Buffer.from("\r\n".repeat(80)));
  assert.equal(escaped.length, 100);
  assert.ok(escaped.startsWith("\\r\\n"));
});

test("delay formats like postscreen", () => {
  const cases: [number, string][] = [
    [0, "0"],
    [0.001, "0"],
    [0.12, "0.12"],
    [0.31, "0.31"],
    [0.049, "0.05"],
    [1.2, "1.2"],
    [1.26, "1.3"],
    [2.4, "2.4"],
    [10, "10"],
    [16.2, "16"],
    [123.4, "123"],
    [0.995, "1"],
  ];
  for (const [seconds, expected] of cases) {
    assert.equal(formatDelay(seconds), expected, `formatDelay(${seconds})`);
  }
});

test("endpoint uses brackets and port", () => {
  assert.equal(formatEndpoint("192.0.2.10", 51234), "[192.0.2.10]:51234");
  assert.equal(formatEndpoint("2001:db8::25", 25), "[2001:db8::25]:25");
});
