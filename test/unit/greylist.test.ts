import { test } from "node:test";
import assert from "node:assert/strict";
import { judgeTriplet } from "../../src/greylist/timing.js";
import { greylistKey } from "../../src/greylist/key.js";
import { suspicionReasons } from "../../src/greylist/gate.js";
import {
  parsePatterns,
  parsePolicyListen,
  TrapList,
} from "../../src/greylist/settings.js";
import {
  decodeGreylistRecord,
  encodeGreylistRecord,
  type TripletRecord,
} from "../../src/greylist/records.js";
import { PARAMETERS } from "../../src/config/parameters.js";
import { expandValue } from "../../src/config/syntax.js";
import { buildConfig, ConfigError } from "../../src/config/load.js";

const TIMING = { minDelayMs: 300_000, expireMs: 4 * 3600_000 };
const TRIPLET = { client: "192.0.2.1", sender: "a@x", recipient: "b@y" };

function seen(firstSeen: number): TripletRecord {
  return {
    kind: "triplet",
    ...TRIPLET,
    firstSeen,
    lastSeen: firstSeen,
    attempts: 1,
    expires: firstSeen + TIMING.expireMs,
  };
}

test("triplet timing follows spamd", () => {
  const first = judgeTriplet(undefined, TRIPLET, 1000, TIMING);
  assert.equal(first.kind, "new");

  const early = judgeTriplet(seen(0), TRIPLET, 240_000, TIMING);
  assert.equal(early.kind, "early");
  assert.equal(early.kind === "early" && early.missingMs, 60_000);
  assert.equal(early.kind === "early" && early.record.firstSeen, 0);
  assert.equal(early.kind === "early" && early.record.attempts, 2);

  assert.equal(judgeTriplet(seen(0), TRIPLET, 300_000, TIMING).kind, "pass");
  assert.equal(judgeTriplet(seen(0), TRIPLET, 10_800_000, TIMING).kind, "pass");
  const expired = judgeTriplet(seen(0), TRIPLET, 4 * 3600_000, TIMING);
  assert.equal(expired.kind, "new");
  assert.equal(
    expired.kind === "new" && expired.record.firstSeen,
    4 * 3600_000,
  );
});

test("greylist key groups addresses", () => {
  assert.equal(greylistKey("198.51.100.84", 32, 64), "198.51.100.84");
  assert.equal(greylistKey("198.51.100.84", 24, 64), "198.51.100.0/24");
  assert.equal(greylistKey("198.51.100.21", 24, 64), "198.51.100.0/24");
  assert.equal(greylistKey("203.0.113.9", 19, 64), "203.0.96.0/19");
  assert.equal(greylistKey("2001:db8:5::9", 24, 64), "2001:db8:5::/64");
  assert.equal(greylistKey("255.255.255.255", 1, 64), "128.0.0.0/1");
});

test("suspicion reasons per criterion", () => {
  const config = {
    criteria: ["dnsbl", "pregreet", "fcrdns", "dynamic_name"] as const,
    dynamicNamePatterns: parsePatterns(defaultPatterns()),
  };
  const clean = { dnsblScore: 0, pregreeted: false, dnsAllowlisted: false };
  const named = { name: "mail.example.org", reverseName: "mail.example.org" };
  assert.deepEqual(
    suspicionReasons(clean, named, {
      ...config,
      criteria: [...config.criteria],
    }),
    [],
  );
  const all = suspicionReasons(
    { dnsblScore: 2, pregreeted: true, dnsAllowlisted: false },
    { name: "unknown", reverseName: "dyn-1-2-3-4.pool.example.net" },
    { ...config, criteria: [...config.criteria] },
  );
  assert.deepEqual(all, [
    "DNS list score 2",
    "pregreet",
    "no forward-confirmed reverse DNS",
    "dynamic reverse name dyn-1-2-3-4.pool.example.net",
  ]);
  // Unknown facts are no reason; criteria not listed are not applied.
  assert.deepEqual(
    suspicionReasons(
      undefined,
      { name: "unknown", reverseName: "unknown" },
      {
        criteria: ["dnsbl", "pregreet"],
        dynamicNamePatterns: [],
      },
    ),
    [],
  );
});

function defaultPatterns(): string {
  const spec = PARAMETERS.find(
    (p) => p.name === "greylist_dynamic_name_patterns",
  );
  const value = typeof spec?.default === "string" ? spec.default : "";
  return expandValue(value, () => undefined);
}

test("default dynamic name patterns", () => {
  const patterns = parsePatterns(defaultPatterns());
  const dynamic = [
    "host-198-51-100-7.example.net",
    "198.51.100.7.static.example.net",
    "dsl-7.example.net",
    "ppp12.example.net",
    "cpe-1-2.example.com",
    "dhcp.example.org",
  ];
  const fixed = ["mail.example.org", "mx1.example.com", "smtp-out.example.net"];
  for (const name of dynamic) {
    assert.ok(
      patterns.some((p) => p.test(name)),
      `${name} not matched`,
    );
  }
  for (const name of fixed) {
    assert.ok(!patterns.some((p) => p.test(name)), `${name} matched`);
  }
});

test("trap list matches addresses and domains", () => {
  const traps = TrapList.parse([
    "trap@example.org",
    "@traps.test",
    "bait.test",
  ]);
  assert.ok(traps.matches("TRAP@Example.org"));
  assert.ok(traps.matches("anyone@traps.test"));
  assert.ok(traps.matches("x@bait.test"));
  assert.ok(!traps.matches("other@example.org"));
  assert.ok(!traps.matches("x@sub.bait.test"));
  assert.ok(!traps.matches(""));
  assert.ok(TrapList.parse([]).empty);
  assert.throws(() => TrapList.parse(["a@"]), /invalid trap recipient "a@"/);
  assert.throws(() => TrapList.parse(["no spaces.."]), /invalid trap/);
});

test("policy_listen accepts loopback only", () => {
  assert.equal(parsePolicyListen(""), undefined);
  assert.deepEqual(parsePolicyListen("unix:/run/pw/policy"), {
    kind: "unix",
    path: "/run/pw/policy",
  });
  assert.deepEqual(parsePolicyListen("127.0.0.1:10023"), {
    kind: "tcp",
    host: "127.0.0.1",
    port: 10023,
  });
  assert.deepEqual(parsePolicyListen("[::1]:0"), {
    kind: "tcp",
    host: "::1",
    port: 0,
  });
  assert.throws(() => parsePolicyListen("0.0.0.0:10023"), /only loopback/);
  assert.throws(() => parsePolicyListen("unix:relative"), /must be absolute/);
  assert.throws(() => parsePolicyListen("localhost:1"), /invalid policy/);
  assert.throws(() => parsePolicyListen("127.0.0.1:70000"), /invalid policy/);
});

test("greylist records round-trip", () => {
  const record = seen(5);
  assert.deepEqual(decodeGreylistRecord(encodeGreylistRecord(record)), record);
  assert.equal(decodeGreylistRecord("{"), undefined);
  assert.equal(decodeGreylistRecord('{"v":2,"kind":"pass"}'), undefined);
  assert.equal(
    decodeGreylistRecord('{"v":1,"kind":"pass","client":"x","expires":-1}'),
    undefined,
  );
  assert.equal(
    decodeGreylistRecord('{"v":1,"kind":"other","client":"x","expires":1}'),
    undefined,
  );
});

test("greylist settings are validated", () => {
  const origin = { file: "test", line: 1 };
  const build = (settings: Record<string, string>): unknown =>
    buildConfig(
      Object.entries(settings).map(([name, value]) => ({
        name,
        value,
        origin,
      })),
      { requireListen: false },
    );

  const config = buildConfig([], { requireListen: false });
  assert.equal(config.greylist.mode, "off");
  assert.equal(config.greylist.minDelayMs, 300_000);
  assert.equal(config.greylist.expireMs, 4 * 3600_000);
  assert.equal(config.greylist.passTtlMs, 36 * 86400_000);
  assert.equal(config.greylist.trapTtlMs, 86400_000);
  assert.equal(config.greylist.ipv4PrefixLength, 32);
  assert.equal(config.greylist.policyListen, undefined);

  assert.throws(
    () => build({ greylist_min_delay: "4h" }),
    (error: unknown) =>
      error instanceof ConfigError &&
      /greylist_min_delay: must be shorter than greylist_expire/.test(
        error.message,
      ),
  );
  assert.throws(() => build({ greylist_mode: "some" }), /expected one of off/);
  assert.throws(
    () => build({ greylist_suspicious_criteria: "dnsbl rdns" }),
    /invalid criterion "rdns"/,
  );
  assert.throws(
    () => build({ greylist_dynamic_name_patterns: "(" }),
    /invalid regular expression "\("/,
  );
  assert.throws(
    () => build({ greylist_ipv4_prefix_length: "33" }),
    /must be at most 32/,
  );
});
