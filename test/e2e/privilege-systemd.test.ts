// The systemd unit in contrib/ must pass `systemd-analyze verify` without
// any output: unknown or misspelt settings are only warned about, and the
// exit status stays 0.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { packageRoot } from "../../src/native.js";

const UNIT = join(packageRoot(), "contrib", "postwarden.service");

test("systemd unit verifies cleanly", (context) => {
  const result = spawnSync("systemd-analyze", ["verify", UNIT], {
    encoding: "utf8",
    timeout: 60_000,
  });
  const error: NodeJS.ErrnoException | undefined = result.error;
  if (error?.code === "ENOENT") {
    context.skip("systemd-analyze not installed (Debian package systemd)");
    return;
  }
  assert.equal(error, undefined);
  assert.equal(result.stderr, "");
  assert.equal(result.stdout, "");
  assert.equal(result.status, 0);
});

test("systemd unit starts as root", () => {
  // postwarden binds port 25 as root and switches user by itself.
  const text = readFileSync(UNIT, "utf8");
  assert.doesNotMatch(text, /^User=/m);
  assert.doesNotMatch(text, /^AmbientCapabilities=/m);
  assert.match(text, /^CapabilityBoundingSet=.*CAP_SETUID/m);
});
