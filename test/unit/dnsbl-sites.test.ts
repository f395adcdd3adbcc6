import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { parseReplyFilter, parseSite } from "../../src/dnsbl/sites.js";
import { expandIPv6, queryName } from "../../src/dnsbl/resolver.js";
import { loadReplyMap } from "../../src/dnsbl/reply-map.js";
import { buildLists, parseErrorAnswers } from "../../src/dnsbl/lists.js";

test("site with domain only", () => {
  const site = parseSite("zen.example.org");
  assert.equal(site.domain, "zen.example.org");
  assert.equal(site.weight, 1);
  assert.equal(site.filter, undefined);
  assert.equal(site.matches("127.0.0.2"), true);
});

test("site with filter and weight", () => {
  const site = parseSite("Zen.Example.ORG=127.0.0.[2..11;15]*3");
  assert.equal(site.domain, "zen.example.org");
  assert.equal(site.weight, 3);
  assert.equal(site.filter, "127.0.0.[2..11;15]");
  for (const listed of ["127.0.0.2", "127.0.0.11", "127.0.0.15"]) {
    assert.equal(site.matches(listed), true, listed);
  }
  for (const unlisted of [
    "127.0.0.1",
    "127.0.0.12",
    "127.0.0.16",
    "127.0.1.2",
  ]) {
    assert.equal(site.matches(unlisted), false, unlisted);
  }
});

test("site with negative weight", () => {
  const site = parseSite("list.dnswl.example=127.0.[0..255].[1..3]*-5");
  assert.equal(site.weight, -5);
  assert.equal(site.matches("127.0.15.2"), true);
  assert.equal(site.matches("127.0.15.0"), false);
});

test("site rejects invalid entries", () => {
  const bad = [
    "",
    "nodot",
    "zen.example.org*",
    "zen.example.org*0",
    "zen.example.org*x",
    "zen.example.org=127.0.0",
    "zen.example.org=127.0.0.256",
    "zen.example.org=127.0.0.[5..2]",
    "zen.example.org=127.0.[0.1]",
    "zen.example.org=127.0.0.3[6..9]",
    "bad_domain-.example..org",
    "-bad.example.org",
  ];
  for (const entry of bad) {
    assert.throws(() => parseSite(entry), Error, JSON.stringify(entry));
  }
});

test("filter matches reference check", () => {
  const octet = fc.integer({ min: 0, max: 255 });
  const range = fc
    .tuple(octet, octet)
    .map(([a, b]) => [Math.min(a, b), Math.max(a, b)] as const);
  const field = fc.oneof(
    octet.map((value) => ({
      text: String(value),
      ranges: [[value, value] as const],
    })),
    fc.array(range, { minLength: 1, maxLength: 4 }).map((ranges) => ({
      text:
        "[" +
        ranges
          .map(([low, high]) =>
            low === high ? String(low) : `${low}..${high}`,
          )
          .join(";") +
        "]",
      ranges,
    })),
  );
  fc.assert(
    fc.property(
      fc.array(field, { minLength: 4, maxLength: 4 }),
      fc.array(octet, { minLength: 4, maxLength: 4 }),
      (fields, answer) => {
        const matches = parseReplyFilter(
          fields.map((item) => item.text).join("."),
        );
        const expected = fields.every((item, index) =>
          item.ranges.some(
            ([low, high]) =>
              (answer[index] ?? -1) >= low && (answer[index] ?? -1) <= high,
          ),
        );
        assert.equal(matches(answer.join(".")), expected);
      },
    ),
  );
});

test("site parser never crashes", () => {
  fc.assert(
    fc.property(fc.string({ maxLength: 60 }), (entry) => {
      try {
        const site = parseSite(entry);
        assert.ok(site.domain.includes("."));
        assert.ok(Number.isInteger(site.weight) && site.weight !== 0);
      } catch (error) {
        assert.ok(error instanceof Error);
      }
    }),
    { numRuns: 3000 },
  );
});

test("query names for IPv4 and IPv6", () => {
  assert.equal(
    queryName("192.0.2.99", "zen.example.org"),
    "99.2.0.192.zen.example.org",
  );
  assert.equal(
    queryName("2001:db8::5", "zen.example.org"),
    "5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.zen.example.org",
  );
  assert.equal(
    expandIPv6("::ffff:127.0.0.2"),
    "00000000000000000000ffff7f000002",
  );
  assert.equal(expandIPv6("::"), "0".repeat(32));
  assert.equal(expandIPv6("1::"), "0001" + "0".repeat(28));
});

test("IPv6 expansion round trip", () => {
  fc.assert(
    fc.property(fc.ipV6(), (address) => {
      const hex = expandIPv6(address);
      assert.match(hex, /^[0-9a-f]{32}$/);
      const groups = hex.match(/.{4}/g)?.join(":") ?? "";
      assert.equal(expandIPv6(groups), hex);
    }),
  );
});

test("reply map inline and texthash", () => {
  const inline = loadReplyMap(
    "inline:{ key123.zen.dq.example=zen.example.org, other.example=o.example }",
  );
  assert.equal(inline.get("key123.zen.dq.example"), "zen.example.org");
  assert.equal(inline.get("other.example"), "o.example");
  assert.equal(loadReplyMap("").size, 0);
  assert.throws(() => loadReplyMap("hash:/etc/x"), /unsupported table/);
  assert.throws(() => loadReplyMap("inline:{ novalue }"), /expected key=value/);
  assert.throws(() => loadReplyMap("texthash:/nonexistent/map"), /cannot read/);
});

test("lists group sites and hide secrets", () => {
  const sites = [
    parseSite("secret.dq.example=127.0.0.2*3"),
    parseSite("secret.dq.example=127.0.0.4"),
    parseSite("bl.example"),
  ];
  const lists = buildLists(
    sites,
    loadReplyMap("inline:{ secret.dq.example=zen.example.org }"),
    parseErrorAnswers(["127.255.255.0/24", "bl.example=127.0.0.9"]),
  );
  assert.equal(lists.length, 2);
  assert.equal(lists[0]?.publicName, "zen.example.org");
  assert.equal(lists[0]?.sites.length, 2);
  assert.equal(lists[1]?.publicName, "bl.example");
  assert.equal(lists[0]?.isErrorAnswer("127.255.255.254"), true);
  assert.equal(lists[0]?.isErrorAnswer("127.0.0.9"), false);
  assert.equal(lists[1]?.isErrorAnswer("127.0.0.9"), true);
  assert.equal(lists[1]?.isErrorAnswer("127.0.0.2"), false);
});
