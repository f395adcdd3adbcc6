import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildConfig, ConfigError } from "../../src/config/load.js";
import type { Setting } from "../../src/config/syntax.js";
import { AccessList } from "../../src/access/access-list.js";
import { parseAddress } from "../../src/access/network.js";

function settings(entries: Record<string, string>): Setting[] {
  return Object.entries(entries).map(([name, value], index) => ({
    name,
    value,
    origin: { file: "test.cf", line: index + 1 },
  }));
}

test("infrastructure allowlist defaults", () => {
  const config = buildConfig(settings({ listen: "127.0.0.1:25" }));
  assert.deepEqual(config.infrastructureAllowlist, {
    domains: [],
    refreshIntervalMs: 3600_000,
    timeoutMs: 30_000,
  });
});

test("infrastructure allowlist domains", () => {
  const config = buildConfig(
    settings({
      listen: "127.0.0.1:25",
      infrastructure_allowlist_domains: "Example.COM., example.net example.com",
      infrastructure_allowlist_refresh: "10m",
    }),
  );
  assert.deepEqual(config.infrastructureAllowlist.domains, [
    "example.com",
    "example.net",
  ]);
  assert.equal(config.infrastructureAllowlist.refreshIntervalMs, 600_000);
});

test("infrastructure allowlist invalid domain", () => {
  for (const domain of ["localhost", "bad..example", "under score.example"]) {
    try {
      buildConfig(
        settings({
          listen: "127.0.0.1:25",
          infrastructure_allowlist_domains: domain,
        }),
      );
      assert.fail(`expected a ConfigError for ${domain}`);
    } catch (error) {
      assert.ok(error instanceof ConfigError, String(error));
      assert.match(
        error.problems.join("\n"),
        /test\.cf:2: infrastructure_allowlist_domains: invalid domain/,
      );
    }
  }
});

test("access list permits source first", () => {
  const directory = mkdtempSync(join(tmpdir(), "postwarden-unit-"));
  const table = join(directory, "access.cidr");
  writeFileSync(table, "192.0.2.0/24 reject\n");
  const list = AccessList.parse([`cidr:${table}`], []);
  assert.equal(list.evaluate("192.0.2.5"), "reject");

  const source = parseAddress("192.0.2.5");
  list.permitFirst({
    contains: (address) =>
      address.family === source.family && address.bits === source.bits,
  });
  assert.equal(list.evaluate("192.0.2.5"), "permit");
  assert.equal(list.evaluate("192.0.2.6"), "reject");
  assert.equal(list.evaluate("198.51.100.1"), undefined);
});
