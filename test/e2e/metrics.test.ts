// Metrics end to end: scripted clients run against a private Postfix, with
// rbldnsd for the DNS list and redis-server for the shared cache. A scrape
// of /metrics over HTTP must then count exactly the events sent.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PostfixInstance } from "../support/postfix.js";
import { PostwardenProcess } from "../support/postwarden.js";
import { SmtpClient } from "../support/smtp-client.js";
import { requireRootAndPostfix } from "../support/requirements.js";
import { Rbldnsd } from "../support/rbldnsd.js";
import { RedisServer } from "../support/redis.js";
import {
  metricsUrl,
  nonzero,
  scrape,
  startPostwarden,
} from "../support/metrics.js";

requireRootAndPostfix();

const SOA = "$SOA 300 ns.test. admin.test. 1 600 300 86400 120";
const TEASER = "220-warden.example.com ESMTP Postfix";
const SMTPD = "220 pass-test.localdomain ESMTP Postfix";

let postfix: PostfixInstance;
let rbldnsd: Rbldnsd;
let accessTable: string;

before(async () => {
  postfix = PostfixInstance.create();
  await postfix.start();
  rbldnsd = await Rbldnsd.start([
    {
      name: "bl.test",
      type: "ip4set",
      lines: [SOA, ":127.0.0.2:listed", "127.0.0.2", "127.0.4.30"],
    },
  ]);
  accessTable = join(
    mkdtempSync(join(tmpdir(), "postwarden-metrics-")),
    "access.cidr",
  );
  writeFileSync(
    accessTable,
    "127.0.4.1 permit\n127.0.4.2 permit\n127.0.4.9 reject\n",
  );
});

after(async () => {
  await rbldnsd?.stop();
  await postfix?.destroy();
});

function escape(text: string): string {
  return text.replace(/[[\].*+?^$()|{}\\]/g, "\\$&");
}

/** Waits until smtpd logs the client's disconnect: the hand-off is over. */
async function smtpdDone(client: SmtpClient, source: string): Promise<void> {
  await postfix.waitForLog(
    new RegExp(
      `disconnect from unknown\\[${escape(source)}\\]:${client.localPort} `,
    ),
  );
}

/** Connects a client that must reach smtpd, after `greeting`, and quits. */
async function handedOff(
  port: number,
  source: string,
  greeting: string[],
): Promise<void> {
  const client = await SmtpClient.open(port, "127.0.0.1", source);
  assert.deepEqual(await client.readReply(5000), greeting);
  assert.match((await client.command("QUIT"))[0] ?? "", /^221 /);
  await client.waitForEnd();
  await smtpdDone(client, source);
}

/** Connects a client that must get `lines` and be disconnected. */
async function rejected(
  warden: PostwardenProcess,
  port: number,
  source: string,
  lines: string[],
  pregreet = false,
): Promise<void> {
  const client = await SmtpClient.open(port, "127.0.0.1", source);
  if (pregreet) client.send("EHLO impatient.example\r\n");
  for (const line of lines) assert.equal(await client.readLine(10_000), line);
  await client.waitForEnd(10_000);
  await warden.waitForLog(
    new RegExp(`DISCONNECT \\[${escape(source)}\\]:${client.localPort}$`),
  );
}

/** Scrapes until `ready` returns true or 10 s pass, for late events. */
async function scrapeWhen(
  url: string,
  ready: (samples: Map<string, number>) => boolean,
): Promise<Map<string, number>> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const samples = await scrape(url);
    if (ready(samples) || Date.now() > deadline) return samples;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

describe("metrics endpoint", () => {
  test("scrape counts scripted clients", async () => {
    const warden = startPostwarden(postfix, [
      "-o",
      `access_list=cidr:${accessTable}`,
      "-o",
      "denylist_action=drop",
      "-o",
      "greet_action=drop",
      "-o",
      "dnsbl_sites=bl.test",
      "-o",
      "dnsbl_action=drop",
      "-o",
      `dns_servers=${rbldnsd.server}`,
      "-o",
      "tarpit_outcomes=dnsbl_drop",
      "-o",
      "tarpit_delay=5ms",
    ]);
    try {
      const port = await warden.listeningPort();
      const url = await metricsUrl(warden);
      const listener = `listener="[127.0.0.1]:${port}"`;

      const idle = await scrape(url);
      assert.equal(idle.get(`postwarden_connections_total{${listener}}`), 0);
      assert.equal(idle.get("postwarden_handoff_duration_seconds_count"), 0);

      // Two allowlisted clients go straight to smtpd.
      await handedOff(port, "127.0.4.1", [SMTPD]);
      await handedOff(port, "127.0.4.2", [SMTPD]);
      // One denylisted client is dropped.
      await rejected(warden, port, "127.0.4.9", [
        "521 5.3.2 Service currently unavailable",
      ]);
      // Two new clients pass the pregreet test and the DNS list.
      await handedOff(port, "127.0.4.11", [TEASER, SMTPD]);
      await handedOff(port, "127.0.4.12", [TEASER, SMTPD]);
      // One of them comes back and is found in the cache.
      await handedOff(port, "127.0.4.11", [SMTPD]);
      // Three clients talk first and are dropped.
      for (const source of ["127.0.4.21", "127.0.4.22", "127.0.4.23"]) {
        await rejected(
          warden,
          port,
          source,
          [TEASER, "521 5.5.1 Protocol error"],
          true,
        );
      }
      // One client is on the DNS list: dropped through the tarpit.
      await rejected(warden, port, "127.0.4.30", [
        TEASER,
        "521 5.7.1 Service unavailable; client [127.0.4.30] blocked using bl.test",
      ]);

      // The pregreeters' DNS answers may arrive after their drop.
      const durationCount =
        'postwarden_dnsbl_query_duration_seconds_count{list="bl.test"}';
      const samples = await scrapeWhen(
        url,
        (current) => current.get(durationCount) === 6,
      );

      assert.deepEqual(nonzero(samples, "postwarden_connections_total"), {
        [listener]: 10,
      });
      assert.deepEqual(nonzero(samples, "postwarden_verdicts_total"), {
        'test="access",result="permit"': 2,
        'test="access",result="reject"': 1,
        'test="pregreet",result="pass"': 2,
        'test="pregreet",result="fail"': 3,
        'test="dnsbl",result="pass"': 2,
        'test="dnsbl",result="fail"': 1,
        'test="cache",result="pass"': 1,
      });
      assert.deepEqual(nonzero(samples, "postwarden_cache_lookups_total"), {
        'store="local",result="hit"': 1,
        'store="local",result="miss"': 6,
      });
      // Six clients queried bl.test: two clean, three pregreeters and the
      // listed one; the allowlisted, denylisted and cached clients did not.
      assert.equal(samples.get(durationCount), 6);
      assert.deepEqual(
        nonzero(samples, "postwarden_dnsbl_query_errors_total"),
        {},
      );
      assert.equal(
        samples.get('postwarden_dnsbl_healthy{list="bl.test",family="ipv4"}'),
        1,
      );
      assert.equal(samples.get("postwarden_handoff_duration_seconds_count"), 5);
      assert.deepEqual(
        nonzero(samples, "postwarden_handoff_failures_total"),
        {},
      );
      assert.equal(samples.get("postwarden_tarpitted_connections_total"), 1);
      assert.equal(samples.get("postwarden_tarpit_active_connections"), 0);
      assert.equal(samples.get("postwarden_active_connections"), 0);
      assert.deepEqual(nonzero(samples, "postwarden_queue_depth"), {});
      assert.equal(samples.get("postwarden_stress"), 0);
      assert.equal(samples.get("postwarden_log_dropped_lines_total"), 0);
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("gauges show clients in progress", async () => {
    const warden = startPostwarden(postfix, [
      "-o",
      "access_list=",
      "--greet-wait",
      "5s",
      "-o",
      "pipelining_enable=yes",
    ]);
    try {
      const port = await warden.listeningPort();
      const url = await metricsUrl(warden);

      const waiting = await SmtpClient.open(port, "127.0.0.1", "127.0.4.41");
      assert.equal(await waiting.readLine(), TEASER);
      let samples = await scrape(url);
      assert.deepEqual(nonzero(samples, "postwarden_queue_depth"), {
        'queue="greeting"': 1,
      });
      assert.equal(samples.get("postwarden_active_connections"), 1);

      // After greet_wait the deep test runs in the dummy engine.
      assert.equal(
        await waiting.readLine(10_000),
        "220 warden.example.com ESMTP Postfix",
      );
      samples = await scrape(url);
      assert.deepEqual(nonzero(samples, "postwarden_queue_depth"), {
        'queue="engine"': 1,
      });

      // Commands one at a time pass; a pipelined pair fails.
      assert.deepEqual(await waiting.command("HELO client.example"), [
        "250 warden.example.com",
      ]);
      assert.deepEqual(await waiting.command("MAIL FROM:<a@example.com>"), [
        "250 2.1.0 Ok",
      ]);
      assert.deepEqual(await waiting.command("RCPT TO:<b@example.net>"), [
        "450 4.3.2 Service currently unavailable",
      ]);
      assert.deepEqual(await waiting.command("QUIT"), ["221 2.0.0 Bye"]);
      await waiting.waitForEnd();

      const pipeliner = await SmtpClient.open(port, "127.0.0.1", "127.0.4.42");
      assert.deepEqual(await pipeliner.readReply(10_000), [
        TEASER,
        "220 warden.example.com ESMTP Postfix",
      ]);
      pipeliner.send("HELO bot.example\r\nMAIL FROM:<x@example.com>\r\n");
      assert.deepEqual(await pipeliner.readReply(), ["250 warden.example.com"]);
      assert.deepEqual(await pipeliner.readReply(), ["250 2.1.0 Ok"]);
      assert.deepEqual(await pipeliner.command("QUIT"), ["221 2.0.0 Bye"]);
      await pipeliner.waitForEnd();
      await warden.waitForLog(
        new RegExp(`DISCONNECT \\[127\\.0\\.4\\.42\\]:${pipeliner.localPort}$`),
      );

      samples = await scrapeWhen(
        url,
        (current) => current.get("postwarden_active_connections") === 0,
      );
      assert.deepEqual(nonzero(samples, "postwarden_verdicts_total"), {
        'test="pregreet",result="pass"': 2,
        'test="pipelining",result="pass"': 1,
        'test="pipelining",result="fail"': 1,
      });
      assert.deepEqual(nonzero(samples, "postwarden_queue_depth"), {});
      assert.equal(samples.get("postwarden_active_connections"), 0);
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("shared cache hit on second daemon", async () => {
    const redis = await RedisServer.start();
    const shared = ["-o", "access_list=", "-o", `cache_map=${redis.url}`];
    const first = startPostwarden(postfix, shared, {
      dataDirectory: mkdtempSync(join(tmpdir(), "postwarden-metrics-a-")),
    });
    const second = startPostwarden(postfix, shared, {
      dataDirectory: mkdtempSync(join(tmpdir(), "postwarden-metrics-b-")),
    });
    try {
      const firstPort = await first.listeningPort();
      const secondPort = await second.listeningPort();
      const firstUrl = await metricsUrl(first);
      const secondUrl = await metricsUrl(second);
      await first.waitForLog(/shared cache .* connected/);
      await second.waitForLog(/shared cache .* connected/);

      await handedOff(firstPort, "127.0.4.51", [TEASER, SMTPD]);
      await first.waitForLog(/PASS NEW \[127\.0\.4\.51\]/);
      await handedOff(secondPort, "127.0.4.51", [SMTPD]);
      await second.waitForLog(/PASS OLD \[127\.0\.4\.51\]/);

      assert.deepEqual(
        nonzero(await scrape(firstUrl), "postwarden_cache_lookups_total"),
        {
          'store="local",result="miss"': 1,
          'store="shared",result="miss"': 1,
        },
      );
      const samples = await scrape(secondUrl);
      assert.deepEqual(nonzero(samples, "postwarden_cache_lookups_total"), {
        'store="local",result="miss"': 1,
        'store="shared",result="hit"': 1,
      });
      assert.deepEqual(nonzero(samples, "postwarden_verdicts_total"), {
        'test="cache",result="pass"': 1,
      });
    } finally {
      assert.equal(await first.stop(), 0);
      assert.equal(await second.stop(), 0);
      await redis.stop();
    }
  });

  test("metrics off opens no endpoint", async () => {
    const warden = startPostwarden(postfix, [], { metrics: false });
    try {
      await warden.waitForLog(/postwarden started/);
      assert.deepEqual(warden.grep(/metrics/), []);
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });
});
