import { test } from "node:test";
import assert from "node:assert/strict";
import {
  isSpfRecord,
  parseDirective,
  parseSpfRecord,
  type SpfMechanism,
} from "../../src/access/spf-record.js";
import { formatNetwork } from "../../src/access/network.js";

/** Formats a mechanism's network, or returns the mechanism unchanged. */
function describe(mechanism: SpfMechanism): unknown {
  if (mechanism.kind === "ip4" || mechanism.kind === "ip6") {
    return { kind: mechanism.kind, network: formatNetwork(mechanism.network) };
  }
  return mechanism;
}

test("spf version tag", () => {
  assert.equal(isSpfRecord("v=spf1 -all"), true);
  assert.equal(isSpfRecord("V=SPF1"), true);
  assert.equal(isSpfRecord("v=spf10 -all"), false);
  assert.equal(isSpfRecord("google-site-verification=abc"), false);
  assert.throws(() => parseSpfRecord("spf1 -all"), /must start with "v=spf1"/);
});

test("spf mechanisms and qualifiers", () => {
  const cases: [string, string, unknown][] = [
    ["all", "+", { kind: "all" }],
    ["-all", "-", { kind: "all" }],
    ["~ALL", "~", { kind: "all" }],
    [
      "?include:_spf.Example.COM.",
      "?",
      {
        kind: "include",
        domain: "_spf.example.com",
      },
    ],
    [
      "a",
      "+",
      {
        kind: "a",
        domain: undefined,
        ipv4PrefixLength: 32,
        ipv6PrefixLength: 128,
      },
    ],
    [
      "a/24",
      "+",
      {
        kind: "a",
        domain: undefined,
        ipv4PrefixLength: 24,
        ipv6PrefixLength: 128,
      },
    ],
    [
      "a//64",
      "+",
      {
        kind: "a",
        domain: undefined,
        ipv4PrefixLength: 32,
        ipv6PrefixLength: 64,
      },
    ],
    [
      "a:mail.example.org/28//48",
      "+",
      {
        kind: "a",
        domain: "mail.example.org",
        ipv4PrefixLength: 28,
        ipv6PrefixLength: 48,
      },
    ],
    [
      "mx",
      "+",
      {
        kind: "mx",
        domain: undefined,
        ipv4PrefixLength: 32,
        ipv6PrefixLength: 128,
      },
    ],
    [
      "+mx:example.net/30",
      "+",
      {
        kind: "mx",
        domain: "example.net",
        ipv4PrefixLength: 30,
        ipv6PrefixLength: 128,
      },
    ],
    ["ip4:192.0.2.1", "+", { kind: "ip4", network: "192.0.2.1/32" }],
    ["ip4:192.0.2.77/24", "+", { kind: "ip4", network: "192.0.2.0/24" }],
    ["ip6:2001:DB8::1/32", "+", { kind: "ip6", network: "2001:db8::/32" }],
    [
      "ip6:::ffff:192.0.2.1",
      "+",
      {
        kind: "ip6",
        network: "::ffff:c000:201/128",
      },
    ],
    ["ptr", "+", { kind: "ptr", domain: undefined }],
    ["ptr:example.com", "+", { kind: "ptr", domain: "example.com" }],
    [
      "exists:%{i}._spf.example.com",
      "+",
      {
        kind: "exists",
        domain: "%{i}._spf.example.com",
      },
    ],
  ];
  for (const [term, qualifier, expected] of cases) {
    const directive = parseDirective(term);
    assert.equal(directive.qualifier, qualifier, term);
    assert.deepEqual(describe(directive.mechanism), expected, term);
    assert.equal(directive.text, term);
  }
});

test("spf invalid terms", () => {
  const cases: [string, RegExp][] = [
    ["ip4:192.0.2.1/33", /prefix length 33 is out of range 0 to 32/],
    ["ip4:192.0.2.1/08", /prefix length 08/],
    ["ip6:2001:db8::/129", /prefix length 129 is out of range 0 to 128/],
    ["ip4:2001:db8::", /is not an IPv4 address/],
    ["ip6:192.0.2.1", /is not an IPv6 address/],
    ["ip4:192.0.2.256", /invalid IPv4 address "192.0.2.256"/],
    ["ip4:[192.0.2.1]", /invalid IPv4 address/],
    ["ip4", /missing ":address"/],
    ["include", /missing ":domain"/],
    ["include:", /missing domain/],
    ["include:localhost", /invalid domain "localhost"/],
    ["include:bad..example", /invalid domain/],
    ["a:example.com/24/64", /invalid SPF term/],
    ["a/-1", /invalid SPF term/],
    ["allx", /unknown mechanism/],
    ["all/24", /invalid SPF term "all\/24"/],
    ["mx:", /missing domain/],
    ["*all", /unknown mechanism/],
  ];
  for (const [term, message] of cases) {
    assert.throws(() => parseDirective(term), message, term);
  }
});

test("spf record with modifiers", () => {
  const record = parseSpfRecord(
    "v=spf1  ip4:198.51.100.0/24 include:_spf.example.net " +
      "redirect=_spf.example.org exp=explain.example.org " +
      "unknown-mod=%{d}text -all",
  );
  assert.deepEqual(
    record.directives.map((directive) => directive.text),
    ["ip4:198.51.100.0/24", "include:_spf.example.net", "-all"],
  );
  assert.equal(record.redirect, "_spf.example.org");
  assert.equal(record.explanation, "explain.example.org");
});

test("spf record rejects duplicates", () => {
  assert.throws(
    () => parseSpfRecord("v=spf1 redirect=a.example redirect=b.example"),
    /a second redirect/,
  );
  assert.throws(
    () => parseSpfRecord("v=spf1 exp=a.example exp=b.example"),
    /a second exp/,
  );
  assert.throws(
    () => parseSpfRecord("v=spf1 +redirect=a.example"),
    /invalid SPF term "\+redirect=a.example"/,
  );
});

test("spf empty record", () => {
  const record = parseSpfRecord("v=spf1");
  assert.deepEqual(record.directives, []);
  assert.equal(record.redirect, undefined);
});
