// The tarpit: a denylisted client's drop reply is sent a byte at a time,
// and the number of tarpitted connections is capped.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PostfixInstance } from "../support/postfix.js";
import { PostwardenProcess } from "../support/postwarden.js";
import { SmtpClient } from "../support/smtp-client.js";
import { requireRootAndPostfix } from "../support/requirements.js";

requireRootAndPostfix();

let postfix: PostfixInstance;
let table = "";

before(async () => {
  postfix = PostfixInstance.create();
  await postfix.start();
  table = join(mkdtempSync(join(tmpdir(), "postwarden-tarpit-")), "deny.cidr");
  writeFileSync(table, "127.0.8.0/24 reject\n");
});

after(async () => {
  await postfix?.destroy();
});

const REPLY = "521 5.3.2 Service currently unavailable";

test("tarpit slows reply and caps connections", async () => {
  const warden = PostwardenProcess.start({
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
      `access_list=cidr:${table}`,
      "-o",
      "denylist_action=drop",
      "-o",
      "tarpit_outcomes=denylist_drop",
      "-o",
      "tarpit_delay=60ms",
      "-o",
      "tarpit_connection_limit=1",
    ],
  });
  try {
    const port = await warden.listeningPort();
    const started = Date.now();
    const slow = await SmtpClient.open(port, "127.0.0.1", "127.0.8.1");
    // The limit is taken: the second client gets its reply at once.
    await new Promise((resolve) => setTimeout(resolve, 100));
    const fast = await SmtpClient.open(port, "127.0.0.1", "127.0.8.2");
    assert.equal(await fast.readLine(2000), REPLY);
    const fastTime = Date.now() - started;

    assert.equal(await slow.readLine(10_000), REPLY);
    const slowTime = Date.now() - started;
    await slow.waitForEnd();
    // 42 bytes at 60 ms each: well over 2 s, against well under 1 s.
    assert.ok(slowTime >= 2000, `tarpitted reply took ${slowTime} ms`);
    assert.ok(fastTime < 1500, `capped reply took ${fastTime} ms`);
    await warden.waitForLog(/DISCONNECT \[127\.0\.8\.1\]/);
    assert.equal(warden.grep(/DENYLISTED/).length, 2);
  } finally {
    assert.equal(await warden.stop(), 0);
  }
});
