// Load limits and stress mode end to end: per-client connection count and
// rate limits, the pre-queue and post-queue limits, and stress mode with
// its shorter greeting wait.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createServer, type Socket } from "node:net";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PostfixInstance } from "../support/postfix.js";
import { PostwardenProcess } from "../support/postwarden.js";
import { SmtpClient } from "../support/smtp-client.js";
import { requireRootAndPostfix } from "../support/requirements.js";

requireRootAndPostfix();

let postfix: PostfixInstance;

before(async () => {
  postfix = PostfixInstance.create();
  await postfix.start();
});

after(async () => {
  await postfix?.destroy();
});

const TEASER = "220-warden.example.com ESMTP Postfix";

function startPostwarden(...extra: string[]): PostwardenProcess {
  return PostwardenProcess.start({
    args: [
      "--config",
      "/dev/null",
      "--listen",
      "127.0.0.1:0",
      "--queue-directory",
      postfix.queueDirectory,
      "--postfix-config-directory",
      postfix.configDirectory,
      "-o",
      "myhostname=warden.example.com",
      "-o",
      "access_list=",
      "-o",
      "cache_map=",
      ...extra,
    ],
  });
}

async function holdUnderTest(
  port: number,
  source: string,
  count: number,
): Promise<SmtpClient[]> {
  const clients: SmtpClient[] = [];
  for (let i = 0; i < count; i++) {
    const client = await SmtpClient.open(port, "127.0.0.1", source);
    assert.equal(await client.readLine(), TEASER);
    clients.push(client);
  }
  return clients;
}

describe("limits", () => {
  test("per-client connection count", async () => {
    const warden = startPostwarden(
      "--greet-wait",
      "20s",
      "-o",
      "client_connection_count_limit=3",
    );
    const held: SmtpClient[] = [];
    try {
      const port = await warden.listeningPort();
      held.push(...(await holdUnderTest(port, "127.0.6.1", 3)));
      const extra = await SmtpClient.open(port, "127.0.0.1", "127.0.6.1");
      assert.deepEqual(await extra.readReply(), [
        "421 4.7.0 Error: too many connections",
      ]);
      await extra.waitForEnd();
      await warden.waitForLog(
        new RegExp(
          `NOQUEUE: reject: CONNECT from \\[127\\.0\\.6\\.1\\]:${extra.localPort}: too many connections$`,
        ),
      );
      // Another client is not affected.
      held.push(...(await holdUnderTest(port, "127.0.6.2", 1)));
      // Back under the limit, the client is screened again.
      held.shift()?.destroy();
      await warden.waitForLog(/HANGUP after/);
      held.push(...(await holdUnderTest(port, "127.0.6.1", 1)));
    } finally {
      for (const client of held) client.destroy();
      assert.equal(await warden.stop(), 0);
    }
  });

  test("per-client connection rate", async () => {
    const warden = startPostwarden(
      "--greet-wait",
      "1s",
      "-o",
      "client_connection_rate_limit=2",
      "-o",
      "client_connection_rate_time_unit=60s",
    );
    try {
      const port = await warden.listeningPort();
      for (let i = 0; i < 2; i++) {
        const client = await SmtpClient.open(port, "127.0.0.1", "127.0.6.3");
        assert.equal(await client.readLine(), TEASER);
        client.destroy();
      }
      const third = await SmtpClient.open(port, "127.0.0.1", "127.0.6.3");
      assert.deepEqual(await third.readReply(), [
        "421 4.7.0 Error: too many connections",
      ]);
      await warden.waitForLog(
        /NOQUEUE: reject: CONNECT from \[127\.0\.6\.3\]:\d+: too many connections per 60s$/,
      );
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("pre-queue limit and stress mode", async () => {
    const warden = startPostwarden(
      "-o",
      "pre_queue_limit=10",
      "-o",
      "client_connection_count_limit=0",
    );
    const held: SmtpClient[] = [];
    try {
      const port = await warden.listeningPort();
      held.push(...(await holdUnderTest(port, "127.0.6.4", 9)));
      await warden.waitForLog(/entering STRESS mode with 9 connections$/);

      // Under stress the greeting wait is 2 s, not 6 s.
      const started = Date.now();
      const quick = await SmtpClient.open(port, "127.0.0.1", "127.0.6.5");
      assert.deepEqual(await quick.readReply(10_000), [
        TEASER,
        "220 pass-test.localdomain ESMTP Postfix",
      ]);
      const waited = Date.now() - started;
      assert.ok(
        waited >= 1900 && waited < 5000,
        `greet wait under stress took ${waited} ms`,
      );
      quick.destroy();

      held.push(...(await holdUnderTest(port, "127.0.6.4", 1)));
      const refused = await SmtpClient.open(port, "127.0.0.1", "127.0.6.6");
      assert.deepEqual(await refused.readReply(), [
        "421 4.3.2 All screening ports are busy",
      ]);
      await warden.waitForLog(
        new RegExp(
          `reject: connect from \\[127\\.0\\.6\\.6\\]:${refused.localPort}: all screening ports busy$`,
        ),
      );

      for (const client of held.splice(0)) client.destroy();
      await warden.waitForLog(/leaving STRESS mode with [0-7] connections$/);
    } finally {
      for (const client of held) client.destroy();
      assert.equal(await warden.stop(), 0);
    }
  });

  test("post-queue limit when smtpd is stuck", async () => {
    // A pass service that accepts and never reads: hand-offs wait for it.
    const directory = mkdtempSync(join(tmpdir(), "postwarden-stuck-"));
    const path = join(directory, "smtpd");
    const channels: Socket[] = [];
    const stuck = createServer({ pauseOnConnect: true }, (channel) =>
      channels.push(channel),
    );
    await new Promise<void>((resolve) => stuck.listen(path, resolve));
    const warden = startPostwarden(
      "--greet-wait",
      "1s",
      "--smtpd-pass-socket",
      path,
      "-o",
      "post_queue_limit=1",
    );
    try {
      const port = await warden.listeningPort();
      const first = await SmtpClient.open(port, "127.0.0.1", "127.0.6.7");
      assert.equal(await first.readLine(), TEASER);
      await warden.waitForLog(/PASS NEW \[127\.0\.6\.7\]/);
      const second = await SmtpClient.open(port, "127.0.0.1", "127.0.6.8");
      assert.deepEqual(await second.readReply(), [
        "421 4.3.2 All server ports are busy",
      ]);
      await warden.waitForLog(
        new RegExp(
          `NOQUEUE: reject: CONNECT from \\[127\\.0\\.6\\.8\\]:${second.localPort}: all server ports busy$`,
        ),
      );
      first.destroy();
    } finally {
      assert.equal(await warden.stop(), 0);
      for (const channel of channels) channel.destroy();
      stuck.close();
    }
  });

  test("slow smtpd is reported", async () => {
    // A pass service that takes 1.5 s before it reads and closes.
    const directory = mkdtempSync(join(tmpdir(), "postwarden-slow-"));
    const path = join(directory, "smtpd");
    const slow = createServer({ pauseOnConnect: true }, (channel) => {
      setTimeout(() => {
        channel.resume();
        channel.end();
      }, 1500);
    });
    await new Promise<void>((resolve) => slow.listen(path, resolve));
    const warden = startPostwarden(
      "--greet-wait",
      "1s",
      "--smtpd-pass-socket",
      path,
    );
    try {
      const port = await warden.listeningPort();
      const client = await SmtpClient.open(port, "127.0.0.1", "127.0.6.9");
      assert.equal(await client.readLine(), TEASER);
      await warden.waitForLog(
        /warning: smtpd took 1\.\ds to take a connection \(\d+ hand-offs waiting\); check its process_limit$/,
        10_000,
      );
      client.destroy();
    } finally {
      assert.equal(await warden.stop(), 0);
      slow.close();
    }
  });
});
