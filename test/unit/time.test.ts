import { test } from "node:test";
import assert from "node:assert/strict";
import { parseTime } from "../../src/config/time.js";

test("time with each unit", () => {
  assert.equal(parseTime("6s", "s"), 6000);
  assert.equal(parseTime("2m", "s"), 120_000);
  assert.equal(parseTime("1h", "s"), 3_600_000);
  assert.equal(parseTime("1d", "s"), 86_400_000);
  assert.equal(parseTime("1w", "s"), 604_800_000);
});

test("time without unit uses default unit", () => {
  assert.equal(parseTime("6", "s"), 6000);
  assert.equal(parseTime("7", "d"), 7 * 86_400_000);
});

test("time rejects invalid values", () => {
  for (const text of ["", "s", "1.5s", "-1s", "6x", "6S", "1h30m", "six"]) {
    assert.throws(() => parseTime(text, "s"), /invalid time/, text);
  }
});
