// IPv6 clients are queried by reversed nibbles. A loopback test can only
// connect from ::1, so this drives the DNS list checker directly with
// varied IPv6 addresses against rbldnsd's ip6trie dataset; the end-to-end
// path over ::1 is in dnsbl.test.ts.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { Rbldnsd } from "../support/rbldnsd.js";
import { parseSite } from "../../src/dnsbl/sites.js";
import { buildLists, parseErrorAnswers } from "../../src/dnsbl/lists.js";
import { DnsblChecker } from "../../src/dnsbl/checker.js";
import { DnsClient } from "../../src/dnsbl/resolver.js";
import { DnsblHealth } from "../../src/dnsbl/health.js";
import type { Logger } from "../../src/log/logger.js";

const SOA = "$SOA 300 ns.test. admin.test. 1 600 300 86400 120";
let rbldnsd: Rbldnsd;

before(async () => {
  rbldnsd = await Rbldnsd.start([
    {
      name: "v6.test",
      type: "ip6trie",
      lines: [
        SOA,
        ":127.0.0.2:",
        "::ffff:7f00:2",
        "2001:db8::5",
        "2001:db8:1::/48 :127.0.0.3:",
        "2001:db8:2:3:4:5:6:7",
      ],
    },
    {
      name: "v4only.test",
      type: "ip4set",
      lines: [SOA, ":127.0.0.2:", "127.0.0.2"],
    },
  ]);
});

after(async () => {
  await rbldnsd?.stop();
});

const lines: string[] = [];
const logger: Logger = {
  info: (message) => lines.push(message),
  warning: (message) => lines.push("warning: " + message),
  error: (message) => lines.push("error: " + message),
};

async function scoreOf(
  checker: DnsblChecker,
  address: string,
): Promise<number> {
  const query = checker.start(address);
  await new Promise<void>((resolve) => query.onComplete(resolve));
  return query.current().score;
}

test("IPv6 addresses scored by nibbles", async () => {
  const lists = buildLists(
    [parseSite("v6.test=127.0.0.2*2"), parseSite("v6.test=127.0.0.3*5")],
    new Map(),
    parseErrorAnswers([]),
  );
  const settings = {
    lists,
    minTtlSeconds: 60,
    maxTtlSeconds: 3600,
    timeoutMs: 2000,
  };
  const checker = new DnsblChecker(
    settings,
    new DnsClient([rbldnsd.server], 2000),
    logger,
    undefined,
  );
  const cases: [string, number][] = [
    ["2001:db8::5", 2],
    ["2001:0db8:0000:0000:0000:0000:0000:0005", 2],
    ["2001:db8::6", 0],
    ["2001:db8:1::1", 5],
    ["2001:db8:1:ffff:ffff:ffff:ffff:ffff", 5],
    ["2001:db8:2::1", 0],
    ["2001:db8:2:3:4:5:6:7", 2],
  ];
  for (const [address, expected] of cases) {
    assert.equal(await scoreOf(checker, address), expected, address);
  }
});

test("health check per address family", async () => {
  const lists = buildLists(
    [parseSite("v6.test"), parseSite("v4only.test")],
    new Map(),
    parseErrorAnswers([]),
  );
  const client = new DnsClient([rbldnsd.server], 2000);
  const health = new DnsblHealth(lists, client, logger, 60_000);
  await health.start();
  health.stop();
  assert.equal(health.isEnabled("v6.test", 6), true);
  assert.equal(health.isEnabled("v4only.test", 4), true);
  // rbldnsd's ip4set answers IPv4-mapped nibble names, so it passes the
  // IPv6 test point; the ip6trie list fails the IPv4 one.
  assert.equal(health.isEnabled("v4only.test", 6), true);
  assert.equal(health.isEnabled("v6.test", 4), false);
  assert.ok(
    lines.some((line) =>
      /DNS list v6\.test for IPv4 clients disabled: test point 127\.0\.0\.2 is not listed/.test(
        line,
      ),
    ),
  );
  assert.equal(lines.filter((line) => / disabled: /.test(line)).length, 1);
  // IPv4 clients skip the disabled list: only v4only.test is asked.
  const checker = new DnsblChecker(
    { lists, minTtlSeconds: 60, maxTtlSeconds: 3600, timeoutMs: 2000 },
    client,
    logger,
    health,
  );
  assert.equal(await scoreOf(checker, "127.0.0.2"), 1);
  assert.equal(await scoreOf(checker, "2001:db8::5"), 1);
});
