import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  decodeRecord,
  encodeRecord,
  hasPassed,
  latestExpiry,
  RecordFormatError,
  withPasses,
} from "../../src/cache/record.js";
import { clientKey, formatIPv6 } from "../../src/cache/key.js";
import { parseCacheMap } from "../../src/config/load.js";

test("record round trip", () => {
  const record = { tests: { pregreet: 2000, dnsbl: 1500 }, updated: 1000 };
  assert.deepEqual(decodeRecord(encodeRecord(record)), record);
  assert.equal(latestExpiry(record), 2000);
});

test("record rejects malformed values", () => {
  const bad = [
    "",
    "{",
    "null",
    "[]",
    JSON.stringify({ v: 2, tests: {}, updated: 1 }),
    JSON.stringify({ v: 1, tests: {}, updated: "x" }),
    JSON.stringify({ v: 1, updated: 1 }),
    JSON.stringify({ v: 1, tests: { pregreet: -5 }, updated: 1 }),
    JSON.stringify({ v: 1, tests: { dnsbl: "soon" }, updated: 1 }),
  ];
  for (const text of bad) {
    assert.throws(() => decodeRecord(text), RecordFormatError, text);
  }
});

test("record decoding never crashes", () => {
  fc.assert(
    fc.property(fc.oneof(fc.string(), fc.json()), (text) => {
      try {
        const record = decodeRecord(text);
        assert.equal(typeof record.updated, "number");
      } catch (error) {
        assert.ok(error instanceof RecordFormatError);
      }
    }),
    { numRuns: 2000 },
  );
});

test("passes expire and merge", () => {
  const record = withPasses(undefined, { pregreet: 5000 }, 1000);
  assert.equal(hasPassed(record, "pregreet", 4999), true);
  assert.equal(hasPassed(record, "pregreet", 5000), false);
  assert.equal(hasPassed(record, "dnsbl", 1000), false);
  const merged = withPasses(record, { dnsbl: 9000 }, 2000);
  assert.deepEqual(merged, {
    tests: { pregreet: 5000, dnsbl: 9000 },
    updated: 2000,
  });
});

test("IPv4 key is the address", () => {
  assert.equal(clientKey("192.0.2.10", 64), "192.0.2.10");
});

test("IPv6 key is the prefix", () => {
  assert.equal(clientKey("2001:db8:1:2:3:4:5:6", 64), "2001:db8:1:2::/64");
  assert.equal(clientKey("2001:db8:1:2:3:4:5:6", 48), "2001:db8:1::/48");
  assert.equal(
    clientKey("2001:db8:1:2:3:4:5:6", 128),
    "2001:db8:1:2:3:4:5:6/128",
  );
  assert.equal(clientKey("::1", 64), "::/64");
  assert.throws(() => clientKey("bogus", 64), /invalid client address/);
});

test("IPv6 formatting is compressed", () => {
  assert.equal(formatIPv6(0n), "::");
  assert.equal(formatIPv6(1n), "::1");
  assert.equal(formatIPv6(0x20010db8000000000000000000000001n), "2001:db8::1");
  assert.equal(
    formatIPv6(0x20010db8000100000001000000000001n),
    "2001:db8:1:0:1::1",
  );
});

test("addresses in one prefix share a key", () => {
  fc.assert(
    fc.property(
      fc.ipV6(),
      fc.integer({ min: 1, max: 128 }),
      (address, length) => {
        const key = clientKey(address, length);
        const [network, prefix] = key.split("/");
        assert.equal(prefix, String(length));
        assert.equal(clientKey(network ?? "", length), key);
      },
    ),
  );
});

test("cache map forms", () => {
  assert.equal(parseCacheMap("", "/d"), undefined);
  assert.deepEqual(parseCacheMap("lmdb:/var/lib/x/cache", "/d"), {
    localPath: "/var/lib/x/cache.lmdb",
    mapName: "lmdb:/var/lib/x/cache",
    redisUrl: undefined,
    note: undefined,
  });
  const btree = parseCacheMap(
    "proxy:btree:/var/lib/postfix/postscreen_cache",
    "/d",
  );
  assert.equal(btree?.localPath, "/var/lib/postfix/postscreen_cache.lmdb");
  assert.match(btree?.note ?? "", /kept in LMDB format/);
  const shared = parseCacheMap("redis://:secret@127.0.0.1:6379/2", "/d");
  assert.equal(shared?.redisUrl, "redis://:secret@127.0.0.1:6379/2");
  assert.equal(shared?.localPath, "/d/verdict_cache.lmdb");
  assert.equal(shared?.mapName.includes("secret"), false);
  assert.throws(
    () => parseCacheMap("memcache:127.0.0.1:11211", "/d"),
    /unsupported cache map/,
  );
});
