import { test } from "node:test";
import assert from "node:assert/strict";
import { syslogTimestamp } from "../../src/log/logger.js";

test("timestamp follows the second", () => {
  const first = new Date(2026, 11, 4, 5, 6, 7, 100);
  assert.equal(syslogTimestamp(first), "Dec  4 05:06:07");
  assert.equal(
    syslogTimestamp(new Date(first.getTime() + 800)),
    "Dec  4 05:06:07",
  );
  assert.equal(
    syslogTimestamp(new Date(first.getTime() + 900)),
    "Dec  4 05:06:08",
  );
});
