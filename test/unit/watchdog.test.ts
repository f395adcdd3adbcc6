import { test } from "node:test";
import assert from "node:assert/strict";
import { Watchdog } from "../../src/intake/watchdog.js";
import type { Logger } from "../../src/log/logger.js";

test("watchdog reports a stalled loop", async () => {
  const lines: string[] = [];
  const logger: Logger = {
    info: (message) => lines.push(message),
    warning: (message) => lines.push("warning: " + message),
    error: (message) => lines.push("error: " + message),
  };
  const watchdog = new Watchdog(logger, 200, 50);
  watchdog.start();
  try {
    await new Promise((resolve) => setTimeout(resolve, 120));
    assert.deepEqual(lines, []);
    const until = Date.now() + 400;
    while (Date.now() < until) {
      // Hold the event loop, as a blocking call would.
    }
    await new Promise((resolve) => setTimeout(resolve, 120));
    assert.equal(lines.length, 1);
    assert.match(lines[0] ?? "", /^warning: event loop stalled for \d+ ms$/);
  } finally {
    watchdog.stop();
  }
});
