// The verdict cache end to end: persistence across restarts, TTLs, the
// ignore rule, cleanup, the CLI against a running daemon, a corrupt
// store, and sharing between two daemons through a real redis-server.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import {
  chownSync,
  mkdtempSync,
  readdirSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { PostfixInstance } from "../support/postfix.js";
import { PostwardenProcess } from "../support/postwarden.js";
import { SmtpClient } from "../support/smtp-client.js";
import { requireRootAndPostfix } from "../support/requirements.js";
import { RedisServer } from "../support/redis.js";
import { packageRoot } from "../../src/native.js";

requireRootAndPostfix();
const run = promisify(execFile);

let postfix: PostfixInstance;

before(async () => {
  postfix = PostfixInstance.create();
  await postfix.start();
});

after(async () => {
  await postfix?.destroy();
});

function baseArgs(): string[] {
  return [
    "--config",
    "/dev/null",
    "--listen",
    "127.0.0.1:0",
    "--queue-directory",
    postfix.queueDirectory,
    "--postfix-config-directory",
    postfix.configDirectory,
    "--greet-wait",
    "1s",
    "-o",
    "myhostname=warden.example.com",
    "-o",
    "access_list=",
  ];
}

function start(dataDirectory: string, ...extra: string[]): PostwardenProcess {
  return PostwardenProcess.start({
    dataDirectory,
    args: [...baseArgs(), ...extra],
  });
}

/** Connects from `source`; returns the greeting lines and the client. */
async function connect(
  port: number,
  source: string,
): Promise<{ client: SmtpClient; greeting: string[] }> {
  const client = await SmtpClient.open(port, "127.0.0.1", source);
  const greeting = await client.readReply(10_000);
  return { client, greeting };
}

const TEASER = "220-warden.example.com ESMTP Postfix";
const SMTPD = "220 pass-test.localdomain ESMTP Postfix";

async function passes(
  warden: PostwardenProcess,
  port: number,
  source: string,
  age: "NEW" | "OLD",
): Promise<string[]> {
  const { client, greeting } = await connect(port, source);
  assert.match((await client.command("QUIT"))[0] ?? "", /^221 /);
  client.destroy();
  const escaped = source.replace(/\./g, "\\.");
  await warden.waitForLog(
    new RegExp(`PASS ${age} \\[${escaped}\\]:${client.localPort}$`),
  );
  // The session counts as in progress until smtpd has taken the socket,
  // and only a client's first concurrent connection reads the cache. Once
  // smtpd logs the disconnect, the hand-off is long over.
  await postfix.waitForLog(
    new RegExp(`disconnect from unknown\\[${escaped}\\]:${client.localPort} `),
  );
  return greeting;
}

async function cacheCli(
  dataDirectory: string,
  extra: string[],
  ...args: string[]
): Promise<{ stdout: string; code: number }> {
  const cli = join(packageRoot(), "dist", "src", "cli.js");
  try {
    const { stdout } = await run(
      "node",
      [
        cli,
        "cache",
        ...args,
        "--config",
        "/dev/null",
        "-o",
        `data_directory=${dataDirectory}`,
        ...extra,
      ],
      {
        timeout: 20_000,
      },
    );
    return { stdout, code: 0 };
  } catch (error) {
    const failure = error as {
      stdout?: string;
      stderr?: string;
      code?: number;
    };
    return {
      stdout: (failure.stdout ?? "") + (failure.stderr ?? ""),
      code: failure.code ?? -1,
    };
  }
}

function dataDirectory(): string {
  return mkdtempSync(join(tmpdir(), "postwarden-cache-test-"));
}

describe("local cache", () => {
  test("restart keeps verdicts", async () => {
    const data = dataDirectory();
    const first = start(data);
    try {
      const port = await first.listeningPort();
      assert.deepEqual(await passes(first, port, "127.0.1.1", "NEW"), [
        TEASER,
        SMTPD,
      ]);
    } finally {
      assert.equal(await first.stop(), 0);
    }
    const second = start(data);
    try {
      const port = await second.listeningPort();
      // PASS OLD: handed off at once, with no teaser.
      assert.deepEqual(await passes(second, port, "127.0.1.1", "OLD"), [SMTPD]);
      // Another client is still new.
      assert.deepEqual(await passes(second, port, "127.0.1.2", "NEW"), [
        TEASER,
        SMTPD,
      ]);
    } finally {
      assert.equal(await second.stop(), 0);
    }
  });

  test("greet TTL expires", async () => {
    const warden = start(dataDirectory(), "-o", "greet_ttl=2s");
    try {
      const port = await warden.listeningPort();
      await passes(warden, port, "127.0.1.3", "NEW");
      assert.deepEqual(await passes(warden, port, "127.0.1.3", "OLD"), [SMTPD]);
      await new Promise((resolve) => setTimeout(resolve, 2200));
      // Expired: tested again (a teaser), and PASS OLD since it is known.
      assert.deepEqual(await passes(warden, port, "127.0.1.3", "OLD"), [
        TEASER,
        SMTPD,
      ]);
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("ignored failure records nothing", async () => {
    const warden = start(dataDirectory());
    try {
      const port = await warden.listeningPort();
      const client = await SmtpClient.open(port, "127.0.0.1", "127.0.1.4");
      client.send("EHLO early.example\r\n");
      assert.deepEqual(await client.readReply(), [TEASER, SMTPD]);
      client.destroy();
      await warden.waitForLog(/PREGREET 20 after/);
      // Tested again on the next connection, which then passes.
      assert.deepEqual(await passes(warden, port, "127.0.1.4", "NEW"), [
        TEASER,
        SMTPD,
      ]);
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("cleanup drops expired entries", async () => {
    const warden = start(
      dataDirectory(),
      "-o",
      "greet_ttl=1s",
      "-o",
      "cache_retention_time=1s",
      "-o",
      "cache_cleanup_interval=3s",
    );
    try {
      const port = await warden.listeningPort();
      await passes(warden, port, "127.0.1.5", "NEW");
      // The first cleanup may come before the entry has expired.
      await warden.waitForLog(
        /full cleanup: retained=\d+ dropped=\d+ entries$/,
        8000,
      );
      await warden.waitForLog(
        /cache lmdb:.*verdict_cache full cleanup: retained=0 dropped=1 entries$/,
        8000,
      );
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("CLI works beside running daemon", async () => {
    const data = dataDirectory();
    const warden = start(data);
    try {
      const port = await warden.listeningPort();
      await passes(warden, port, "127.0.1.6", "NEW");
      await passes(warden, port, "127.0.1.7", "NEW");

      const shown = await cacheCli(data, [], "show", "127.0.1.6", "--json");
      assert.equal(shown.code, 0, shown.stdout);
      const record = JSON.parse(shown.stdout) as {
        key: string;
        passed: string[];
      };
      assert.equal(record.key, "127.0.1.6");
      assert.deepEqual(record.passed, ["pregreet"]);

      const listed = await cacheCli(data, [], "list", "--json");
      const keys = (JSON.parse(listed.stdout) as { key: string }[])
        .map((row) => row.key)
        .sort();
      assert.deepEqual(keys, ["127.0.1.6", "127.0.1.7"]);

      const table = await cacheCli(data, [], "list");
      assert.match(table.stdout, /^client +pregreet +dnsbl +updated\n/);
      assert.match(table.stdout, /127\.0\.1\.6 +\d+s +- /);

      const stats = await cacheCli(data, [], "stats");
      assert.match(stats.stdout, /entries +2 \(0 malformed\)/);

      const deleted = await cacheCli(data, [], "delete", "127.0.1.6");
      assert.equal(deleted.stdout, "deleted 1 entry\n");
      // The running daemon sees the delete: the client is new again.
      assert.deepEqual(await passes(warden, port, "127.0.1.6", "NEW"), [
        TEASER,
        SMTPD,
      ]);
      assert.deepEqual(await passes(warden, port, "127.0.1.7", "OLD"), [SMTPD]);

      const network = await cacheCli(data, [], "delete", "127.0.1.0/24");
      assert.equal(network.stdout, "deleted 2 entries\n");
      const missing = await cacheCli(data, [], "show", "127.0.1.7");
      assert.equal(missing.code, 1);
      assert.match(missing.stdout, /127\.0\.1\.7: not in the cache/);

      const bad = await cacheCli(data, [], "delete", "not-an-address");
      assert.equal(bad.code, 1);
      assert.match(bad.stdout, /invalid address "not-an-address"/);
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("CLI as root keeps owner", async () => {
    const data = dataDirectory();
    const nobody = 65534;
    chownSync(data, nobody, nobody);
    const stats = await cacheCli(data, [], "stats");
    assert.equal(stats.code, 0, stats.stdout);
    const files = readdirSync(data);
    assert.ok(files.includes("verdict_cache.lmdb"), files.join(" "));
    for (const name of files) {
      assert.equal(
        statSync(join(data, name)).uid,
        nobody,
        `${name} owned by root`,
      );
    }
  });

  test("corrupt store keeps screening", async () => {
    const data = dataDirectory();
    writeFileSync(
      join(data, "verdict_cache.lmdb"),
      "this is not an LMDB file ".repeat(500),
    );
    const warden = start(data);
    try {
      const port = await warden.listeningPort();
      await warden.waitForLog(
        /error: cannot open verdict cache .*verdict_cache\.lmdb: .*screening continues without the local cache/,
      );
      assert.deepEqual(await passes(warden, port, "127.0.1.8", "NEW"), [
        TEASER,
        SMTPD,
      ]);
      const stats = await cacheCli(data, [], "stats");
      assert.equal(stats.code, 1);
      assert.match(
        stats.stdout,
        /cannot open verdict cache .*verdict_cache\.lmdb/,
      );
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("postscreen btree map selects path", async () => {
    const data = dataDirectory();
    const warden = start(
      data,
      "-o",
      `postscreen_cache_map=btree:${data}/postscreen_cache`,
    );
    try {
      const port = await warden.listeningPort();
      await warden.waitForLog(
        new RegExp(
          `note: cache_map btree:${data}/postscreen_cache is kept in LMDB format in ${data}/postscreen_cache\\.lmdb`,
        ),
      );
      await passes(warden, port, "127.0.1.9", "NEW");
      const shown = await cacheCli(
        data,
        ["-o", `cache_map=lmdb:${data}/postscreen_cache`],
        "show",
        "127.0.1.9",
      );
      assert.equal(shown.code, 0, shown.stdout);
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });
});

describe("shared cache through Redis", () => {
  let redis: RedisServer;

  before(async () => {
    redis = await RedisServer.start();
  });

  after(async () => {
    await redis?.stop();
  });

  async function shared(): Promise<{
    warden: PostwardenProcess;
    data: string;
    port: number;
  }> {
    const data = dataDirectory();
    const warden = start(
      data,
      "-o",
      `cache_map=${redis.url}`,
      "-o",
      "cache_local_ttl=1s",
      "-o",
      "cache_redis_timeout=100ms",
    );
    const port = await warden.listeningPort();
    await warden.waitForLog(
      /shared cache redis:\/\/127\.0\.0\.1:\d+\/0 connected$/,
    );
    return { warden, data, port };
  }

  test("verdict shared and deletes seen", async () => {
    const a = await shared();
    const b = await shared();
    const portA = a.port;
    const portB = b.port;
    try {
      await passes(a.warden, portA, "127.0.2.1", "NEW");
      assert.deepEqual(await passes(b.warden, portB, "127.0.2.1", "OLD"), [
        SMTPD,
      ]);

      const deleted = await cacheCli(
        a.data,
        ["-o", `cache_map=${redis.url}`],
        "delete",
        "127.0.2.1",
      );
      assert.equal(deleted.stdout, "deleted 1 entry\n");
      // B trusts its local copy for cache_local_ttl (1 s), then asks Redis.
      await new Promise((resolve) => setTimeout(resolve, 1200));
      assert.deepEqual(await passes(b.warden, portB, "127.0.2.1", "NEW"), [
        TEASER,
        SMTPD,
      ]);
    } finally {
      assert.equal(await a.warden.stop(), 0);
      assert.equal(await b.warden.stop(), 0);
    }
  });

  test("Redis outage and recovery", async () => {
    const a = await shared();
    const b = await shared();
    const portA = a.port;
    const portB = b.port;
    try {
      await redis.kill();
      // Screening goes on from the local store; no client waits on Redis.
      const started = Date.now();
      await passes(a.warden, portA, "127.0.2.2", "NEW");
      assert.deepEqual(await passes(a.warden, portA, "127.0.2.2", "OLD"), [
        SMTPD,
      ]);
      assert.ok(
        Date.now() - started < 5000,
        "clients waited on the dead Redis",
      );
      await a.warden.waitForLog(
        /warning: shared cache redis:\/\/127\.0\.0\.1:\d+\/0/,
      );
      assert.ok(
        a.warden.grep(/warning: shared cache/).length <= 4,
        "Redis warnings are not rate-limited",
      );

      const connectedBefore = a.warden.grep(/ connected$/).length;
      await redis.resume();
      // Both daemons reconnect (ioredis retries once a second).
      await a.warden.waitForLog(/ connected$/);
      const deadline = Date.now() + 5000;
      while (
        a.warden.grep(/ connected$/).length === connectedBefore ||
        b.warden.grep(/ connected$/).length < 2
      ) {
        assert.ok(Date.now() < deadline, "daemons did not reconnect to Redis");
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      await passes(a.warden, portA, "127.0.2.3", "NEW");
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.deepEqual(await passes(b.warden, portB, "127.0.2.3", "OLD"), [
        SMTPD,
      ]);
    } finally {
      assert.equal(await a.warden.stop(), 0);
      assert.equal(await b.warden.stop(), 0);
    }
  });

  test("garbage in Redis is a miss", async () => {
    const a = await shared();
    const client = redis.client();
    const port = a.port;
    try {
      await client.set("postwarden:127.0.2.4", "{not json");
      await client.set(
        "postwarden:127.0.2.5",
        JSON.stringify({ v: 99, tests: {}, updated: 1 }),
      );
      assert.deepEqual(await passes(a.warden, port, "127.0.2.4", "NEW"), [
        TEASER,
        SMTPD,
      ]);
      await a.warden.waitForLog(
        /warning: shared cache: malformed record for 127\.0\.2\.4 \(not JSON\); treated as a miss/,
      );
      assert.deepEqual(await passes(a.warden, port, "127.0.2.5", "NEW"), [
        TEASER,
        SMTPD,
      ]);
      // The pass replaced the garbage with a valid record.
      const stored = JSON.parse(
        (await client.get("postwarden:127.0.2.4")) ?? "{}",
      ) as { v: number };
      assert.equal(stored.v, 1);
    } finally {
      client.disconnect();
      assert.equal(await a.warden.stop(), 0);
    }
  });
});
