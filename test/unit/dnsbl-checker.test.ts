// Scoring rules of the DNS list checker, with a fake resolver. Real DNS
// answers are tested end to end against rbldnsd.
import { test } from "node:test";
import assert from "node:assert/strict";
import { parseSite } from "../../src/dnsbl/sites.js";
import { buildLists, parseErrorAnswers } from "../../src/dnsbl/lists.js";
import { DnsblChecker, type DnsblScore } from "../../src/dnsbl/checker.js";
import type { DnsClient, LookupResult } from "../../src/dnsbl/resolver.js";
import type { Logger } from "../../src/log/logger.js";

function fakeClient(
  answers: Record<string, LookupResult>,
  negativeTtl = 900,
): DnsClient {
  return {
    queryA: (name: string) =>
      Promise.resolve(
        answers[name] ?? { kind: "clean", ttlSeconds: undefined },
      ),
    negativeTtl: () => Promise.resolve(negativeTtl),
  } as unknown as DnsClient;
}

function collectingLogger(lines: string[]): Logger {
  return {
    info: (message) => lines.push(message),
    warning: (message) => lines.push("warning: " + message),
    error: (message) => lines.push("error: " + message),
  };
}

async function score(
  entries: string[],
  answers: Record<string, LookupResult>,
  lines: string[] = [],
): Promise<DnsblScore> {
  const lists = buildLists(
    entries.map(parseSite),
    new Map([["secret.dq.example", "public.example"]]),
    parseErrorAnswers(["127.255.255.0/24"]),
  );
  const checker = new DnsblChecker(
    { lists, minTtlSeconds: 60, maxTtlSeconds: 3600, timeoutMs: 1000 },
    fakeClient(answers),
    collectingLogger(lines),
    undefined,
  );
  const query = checker.start("192.0.2.10");
  await new Promise<void>((resolve) => query.onComplete(resolve));
  return query.current();
}

const listed = (answers: string[], ttlSeconds = 300): LookupResult => ({
  kind: "listed",
  answers,
  ttlSeconds,
});

test("weights add across lists", async () => {
  const result = await score(
    ["a.example*2", "b.example=127.0.0.4*3", "c.example"],
    {
      "10.2.0.192.a.example": listed(["127.0.0.2"]),
      "10.2.0.192.b.example": listed(["127.0.0.4"]),
    },
  );
  assert.equal(result.score, 5);
  assert.equal(result.listName, "b.example");
  assert.equal(result.complete, true);
});

test("filters select answers", async () => {
  const result = await score(
    ["a.example=127.0.0.[2..3]*2", "a.example=127.0.0.10*4"],
    {
      "10.2.0.192.a.example": listed(["127.0.0.3", "127.0.0.9"]),
    },
  );
  assert.equal(result.score, 2);
});

test("negative weights allowlist", async () => {
  const result = await score(["bl.example", "wl.example*-5"], {
    "10.2.0.192.bl.example": listed(["127.0.0.2"]),
    "10.2.0.192.wl.example": listed(["127.0.10.1"], 120),
  });
  assert.equal(result.score, -4);
  assert.equal(result.ttlSeconds, 120);
});

test("listing TTL clamped", async () => {
  const short = await score(["a.example"], {
    "10.2.0.192.a.example": listed(["127.0.0.2"], 5),
  });
  assert.equal(short.ttlSeconds, 60);
  const long = await score(["a.example"], {
    "10.2.0.192.a.example": listed(["127.0.0.2"], 86400),
  });
  assert.equal(long.ttlSeconds, 3600);
});

test("clean result uses SOA TTL", async () => {
  const result = await score(["a.example"], {});
  assert.equal(result.score, 0);
  assert.equal(result.ttlSeconds, 900);
  assert.equal(result.complete, true);
});

test("reply map hides secret domain", async () => {
  const lines: string[] = [];
  const result = await score(
    ["secret.dq.example"],
    { "10.2.0.192.secret.dq.example": listed(["127.255.255.254"]) },
    lines,
  );
  assert.equal(result.score, 0);
  assert.equal(result.complete, false);
  assert.equal(lines.length, 1);
  assert.match(
    lines[0] ?? "",
    /DNS list public\.example answered 127\.255\.255\.254, an error code/,
  );
  assert.equal(lines.join("").includes("secret"), false);
});

test("answers outside loopback ignored", async () => {
  const lines: string[] = [];
  const result = await score(
    ["a.example"],
    { "10.2.0.192.a.example": listed(["192.0.2.1"]) },
    lines,
  );
  assert.equal(result.score, 0);
  assert.match(lines[0] ?? "", /outside 127\.0\.0\.0\/8/);
});

test("lookup errors contribute nothing", async () => {
  const lines: string[] = [];
  const result = await score(
    ["a.example", "b.example*2"],
    {
      "10.2.0.192.a.example": { kind: "error", code: "ESERVFAIL" },
      "10.2.0.192.b.example": { kind: "error", code: "ETIMEOUT" },
    },
    lines,
  );
  assert.equal(result.score, 0);
  assert.equal(result.complete, false);
  assert.ok(
    lines.some((line) =>
      /lookup error for DNS list a\.example: ESERVFAIL/.test(line),
    ),
  );
  assert.ok(
    lines.some((line) => /dnsblog reply timeout 1s for b\.example/.test(line)),
  );
});
