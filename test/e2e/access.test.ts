// The permanent access list, the allowlist-interface veto and the
// stuttered greeting, end to end through a private Postfix.
import { after, before, describe, test } from "node:test";
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
let tableDirectory: string;

before(async () => {
  postfix = PostfixInstance.create();
  await postfix.start();
  tableDirectory = mkdtempSync(join(tmpdir(), "postwarden-access-"));
});

after(async () => {
  await postfix?.destroy();
});

function writeTable(name: string, lines: string[]): string {
  const path = join(tableDirectory, name);
  writeFileSync(path, lines.join("\n") + "\n");
  return path;
}

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
      "--greet-wait",
      "2s",
      "-o",
      "myhostname=warden.example.com",
      ...extra,
    ],
  });
}

describe("access list", () => {
  test("cidr table permits and rejects", async () => {
    const table = writeTable("access.cidr", [
      "# test table",
      "127.0.0.60/32   permit",
      "[::ffff:127.0.0.61]/128 permit",
      "127.0.0.50      REJECT",
      "127.0.0.0/24    dunno",
      "127.0.0.0/8     reject",
    ]);
    const warden = startPostwarden(
      "-o",
      `access_list=cidr:${table}`,
      "-o",
      "denylist_action=drop",
    );
    try {
      const port = await warden.listeningPort();

      const permitted = await SmtpClient.open(port, "127.0.0.1", "127.0.0.60");
      const started = Date.now();
      assert.deepEqual(await permitted.readReply(), [
        "220 pass-test.localdomain ESMTP Postfix",
      ]);
      assert.ok(
        Date.now() - started < 1500,
        "allowlisted client waited for the greet wait",
      );
      permitted.destroy();
      await warden.waitForLog(
        new RegExp(
          `ALLOWLISTED \\[127\\.0\\.0\\.60\\]:${permitted.localPort}$`,
        ),
      );

      const rejected = await SmtpClient.open(port, "127.0.0.1", "127.0.0.50");
      assert.deepEqual(await rejected.readReply(), [
        "521 5.3.2 Service currently unavailable",
      ]);
      await rejected.waitForEnd();
      await warden.waitForLog(
        new RegExp(`DENYLISTED \\[127\\.0\\.0\\.50\\]:${rejected.localPort}$`),
      );

      // dunno in the /24 ends nothing: the /8 reject is never reached.
      const unknown = await SmtpClient.open(port, "127.0.0.1", "127.0.0.70");
      const greeting = await unknown.readReply();
      assert.equal(greeting.at(-1), "220 pass-test.localdomain ESMTP Postfix");
      unknown.destroy();
      await warden.waitForLog(
        new RegExp(`PASS NEW \\[127\\.0\\.0\\.70\\]:${unknown.localPort}$`),
      );
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("denylist enforce rejects at RCPT", async () => {
    const table = writeTable("enforce.cidr", ["127.0.0.52 reject"]);
    const warden = startPostwarden(
      "-o",
      `access_list=cidr:${table}`,
      "-o",
      "denylist_action=enforce",
    );
    try {
      const port = await warden.listeningPort();
      const client = await SmtpClient.open(port, "127.0.0.1", "127.0.0.52");
      assert.deepEqual(await client.readReply(), [
        "220-warden.example.com ESMTP Postfix",
        "220 warden.example.com ESMTP Postfix",
      ]);
      await client.command("EHLO denied.example");
      await client.command("MAIL FROM:<a@example.org>");
      assert.deepEqual(await client.command("RCPT TO:<b@example.net>"), [
        "550 5.3.2 Service currently unavailable",
      ]);
      assert.deepEqual(await client.command("QUIT"), ["221 2.0.0 Bye"]);
      const label = `\\[127\\.0\\.0\\.52\\]:${client.localPort}`;
      await warden.waitForLog(
        new RegExp(
          `NOQUEUE: reject: RCPT from ${label}: 550 5\\.3\\.2 Service currently unavailable; from=<a@example\\.org>, to=<b@example\\.net>, proto=ESMTP, helo=<denied\\.example>$`,
        ),
      );
      assert.equal(warden.grep(/PASS /).length, 0);
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("denylist ignore keeps screening", async () => {
    const table = writeTable("deny.cidr", ["127.0.0.50 reject"]);
    const warden = startPostwarden(
      "-o",
      `access_list=cidr:${table}`,
      "-o",
      "respectful_logging=no",
    );
    try {
      const port = await warden.listeningPort();
      const client = await SmtpClient.open(port, "127.0.0.1", "127.0.0.50");
      assert.deepEqual(await client.readReply(), [
        "220-warden.example.com ESMTP Postfix",
        "220 pass-test.localdomain ESMTP Postfix",
      ]);
      client.destroy();
      await warden.waitForLog(
        new RegExp(`BLACKLISTED \\[127\\.0\\.0\\.50\\]:${client.localPort}$`),
      );
      // A denylisted client that is handed off is still no pass.
      assert.equal(warden.grep(/PASS NEW/).length, 0);
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("old words without respectful logging", async () => {
    const warden = startPostwarden(
      "-o",
      "access_list=permit_mynetworks",
      "-o",
      "respectful_logging=no",
    );
    try {
      const port = await warden.listeningPort();
      const client = await SmtpClient.open(port);
      assert.deepEqual(await client.readReply(), [
        "220 pass-test.localdomain ESMTP Postfix",
      ]);
      client.destroy();
      await warden.waitForLog(
        new RegExp(`WHITELISTED \\[127\\.0\\.0\\.1\\]:${client.localPort}$`),
      );
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("mynetworks decides permit_mynetworks", async () => {
    const warden = startPostwarden(
      "-o",
      "mynetworks=127.0.0.80/32 [2001:db8::]/32",
    );
    try {
      const port = await warden.listeningPort();
      const inside = await SmtpClient.open(port, "127.0.0.1", "127.0.0.80");
      assert.deepEqual(await inside.readReply(), [
        "220 pass-test.localdomain ESMTP Postfix",
      ]);
      inside.destroy();
      const outside = await SmtpClient.open(port, "127.0.0.1", "127.0.0.81");
      assert.equal(
        await outside.readLine(),
        "220-warden.example.com ESMTP Postfix",
      );
      outside.destroy();
      await warden.waitForLog(/HANGUP after/);
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("bad table line stops startup", async () => {
    const table = writeTable("bad.cidr", [
      "127.0.0.1 permit",
      "",
      "192.0.2.1/24 reject",
    ]);
    const warden = startPostwarden("-o", `access_list=cidr:${table}`);
    assert.equal(await warden.waitForExit(), 1);
    const output = warden.lines.join("\n");
    assert.match(
      output,
      new RegExp(
        `command line: access_list: ${table}:3: .*non-null host address bits`,
      ),
    );
  });

  test("backup interface vetoes hand-off", async () => {
    const warden = startPostwarden(
      "-o",
      "access_list=",
      "-o",
      "allowlist_interfaces=!127.0.0.1 static:all",
    );
    try {
      const port = await warden.listeningPort();
      const client = await SmtpClient.open(port);
      // The dummy engine talks to the client but never hands it off.
      assert.deepEqual(await client.readReply(5000), [
        "220-warden.example.com ESMTP Postfix",
        "220 warden.example.com ESMTP Postfix",
      ]);
      assert.equal(
        (await client.command("EHLO client.example.org"))[0],
        "250-warden.example.com",
      );
      assert.deepEqual(await client.command("MAIL FROM:<a@example.org>"), [
        "250 2.1.0 Ok",
      ]);
      assert.deepEqual(await client.command("RCPT TO:<b@example.net>"), [
        "450 4.3.2 Service currently unavailable",
      ]);
      assert.deepEqual(await client.command("QUIT"), ["221 2.0.0 Bye"]);
      await client.waitForEnd();
      const label = `\\[127\\.0\\.0\\.1\\]:${client.localPort}`;
      await warden.waitForLog(new RegExp(`ALLOWLIST VETO ${label}$`));
      await warden.waitForLog(new RegExp(`DISCONNECT ${label}$`));
      assert.equal(warden.grep(/PASS NEW/).length, 0);
      assert.doesNotMatch(postfix.log(), new RegExp(`${label}(?!\\d)`));
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });
});

describe("stuttered greeting", () => {
  test("client answering mid-line is caught", async () => {
    const warden = startPostwarden(
      "-o",
      "access_list=",
      "--greet-mode",
      "stutter",
      "-o",
      "greet_stutter_delay=1s",
      "--greet-action",
      "drop",
    );
    try {
      const port = await warden.listeningPort();
      const client = await SmtpClient.open(port);
      // The first word arrives alone; the line is not finished.
      await new Promise((resolve) => setTimeout(resolve, 200));
      client.send("EHLO impatient.example\r\n");
      assert.equal(await client.readLine(), "220-warden.example.com");
      assert.equal(await client.readLine(), "521 5.5.1 Protocol error");
      await client.waitForEnd();
      await warden.waitForLog(
        new RegExp(
          `PREGREET 24 after 0\\.\\d+ from \\[127\\.0\\.0\\.1\\]:${client.localPort}: EHLO impatient`,
        ),
      );
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("patient client completes a message", async () => {
    const warden = startPostwarden(
      "-o",
      "access_list=",
      "--greet-mode",
      "stutter",
      "-o",
      "greet_stutter_delay=1s",
    );
    try {
      const port = await warden.listeningPort();
      const client = await SmtpClient.open(port);
      const started = Date.now();
      assert.deepEqual(await client.readReply(), [
        "220-warden.example.com ESMTP Postfix",
        "220 pass-test.localdomain ESMTP Postfix",
      ]);
      // Four pieces in a 2 s wait: the line takes at least 1.5 s.
      assert.ok(Date.now() - started >= 1400, "the line was not stuttered");
      assert.match(
        (await client.command("EHLO client.example.org"))[0] ?? "",
        /^250-/,
      );
      assert.match(
        (await client.command("MAIL FROM:<alice@example.org>"))[0] ?? "",
        /^250 /,
      );
      assert.match(
        (await client.command("RCPT TO:<bob@example.net>"))[0] ?? "",
        /^250 /,
      );
      assert.match((await client.command("DATA"))[0] ?? "", /^354 /);
      assert.match(
        (await client.command("Subject: stutter\r\n\r\nhello\r\n."))[0] ?? "",
        /^250 2\.0\.0 Ok: queued/,
      );
      assert.match((await client.command("QUIT"))[0] ?? "", /^221 /);
      await warden.waitForLog(
        new RegExp(`PASS NEW \\[127\\.0\\.0\\.1\\]:${client.localPort}$`),
      );
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });
});
