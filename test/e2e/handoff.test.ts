// End to end against a real Postfix smtpd: postwarden listens on loopback,
// screens real clients and hands them to a private Postfix instance.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readlinkSync } from "node:fs";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { PostfixInstance } from "../support/postfix.js";
import { PostwardenProcess } from "../support/postwarden.js";
import { SmtpClient } from "../support/smtp-client.js";
import { requireRootAndPostfix } from "../support/requirements.js";

requireRootAndPostfix();
const run = promisify(execFile);

let postfix: PostfixInstance;

before(async () => {
  postfix = PostfixInstance.create();
  await postfix.start();
});

after(async () => {
  await postfix.destroy();
});

async function startPostwarden(
  ...extra: string[]
): Promise<{ warden: PostwardenProcess; port: number }> {
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
      "--greet-wait",
      "1s",
      "-o",
      "myhostname=warden.example.com",
      "-o",
      "access_list=",
      ...extra,
    ],
  });
  const port = await warden.listeningPort();
  return { warden, port };
}

/** Sends a whole message; returns the reply to the final dot. */
async function sendMessage(client: SmtpClient): Promise<string[]> {
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
  return client.command("Subject: test\r\n\r\nhello\r\n.");
}

function socketCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).filter((fd) => {
    try {
      return readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith("socket:");
    } catch {
      return false;
    }
  }).length;
}

describe("hand-off to real smtpd", () => {
  test("patient client delivers a message", async () => {
    const { warden, port } = await startPostwarden();
    try {
      const client = await SmtpClient.open(port);
      const greeting = await client.readReply();
      assert.deepEqual(greeting, [
        "220-warden.example.com ESMTP Postfix",
        "220 pass-test.localdomain ESMTP Postfix",
      ]);
      const reply = await sendMessage(client);
      assert.match(reply[0] ?? "", /^250 2\.0\.0 Ok: queued as [0-9A-F]+/);
      assert.match((await client.command("QUIT"))[0] ?? "", /^221 /);
      await client.waitForEnd();

      const label = `[127.0.0.1]:${client.localPort}`;
      await warden.waitForLog(
        new RegExp(`PASS NEW \\[127\\.0\\.0\\.1\\]:${client.localPort}$`),
      );
      assert.equal(warden.grep(/CONNECT from /).length, 1);
      assert.match(
        warden.grep(/CONNECT from /)[0] ?? "",
        new RegExp(
          `CONNECT from \\[127\\.0\\.0\\.1\\]:${client.localPort} to \\[127\\.0\\.0\\.1\\]:${port}$`,
        ),
      );
      // smtpd logs the real client address and port from the attributes.
      const connect = await postfix.waitForLog(
        new RegExp(
          `postfix/pass/smtpd\\[\\d+\\]: connect from unknown${label.replace(/[[\].]/g, "\\$&")}`,
        ),
      );
      assert.ok(connect.length > 0);
      await postfix.waitForLog(
        new RegExp(
          `disconnect from unknown\\[127\\.0\\.0\\.1\\]:${client.localPort} ehlo=1 mail=1 rcpt=1 data=1 quit=1`,
        ),
      );
      await postfix.waitForLog(
        /discard\[\d+\]: [0-9A-F]+: to=<bob@example\.net>.*status=sent/,
      );
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("session continues after copy closed", async () => {
    const { warden, port } = await startPostwarden();
    try {
      const baseline = socketCount(warden.pid);
      const client = await SmtpClient.open(port);
      await client.readReply();
      // smtpd closes the pass channel once it has the descriptor; then
      // postwarden closes its own copy of the client socket.
      const deadline = Date.now() + 5000;
      while (socketCount(warden.pid) > baseline && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      assert.equal(
        socketCount(warden.pid),
        baseline,
        "postwarden still holds the client socket",
      );
      assert.equal(client.isEnded, false, "client saw end of stream");

      const reply = await sendMessage(client);
      assert.match(reply[0] ?? "", /^250 /);
      assert.match((await client.command("QUIT"))[0] ?? "", /^221 /);
      // With no copy left in postwarden, smtpd's close ends the connection.
      await client.waitForEnd(3000);
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("pregreet with drop gets 521", async () => {
    const { warden, port } = await startPostwarden("--greet-action", "drop");
    try {
      const client = await SmtpClient.open(port);
      assert.equal(
        await client.readLine(),
        "220-warden.example.com ESMTP Postfix",
      );
      client.send("EHLO example.org\r\n");
      assert.equal(await client.readLine(), "521 5.5.1 Protocol error");
      await client.waitForEnd();

      const label = `\\[127\\.0\\.0\\.1\\]:${client.localPort}`;
      await warden.waitForLog(
        new RegExp(
          `PREGREET 18 after [0-9.]+ from ${label}: EHLO example\\.org\\\\r\\\\n$`,
        ),
      );
      await warden.waitForLog(new RegExp(`DISCONNECT ${label}$`));
      assert.equal(warden.grep(/PASS NEW/).length, 0);
      assert.doesNotMatch(
        postfix.log(),
        new RegExp(`\\]:${client.localPort}(?!\\d)`),
        "smtpd saw the client",
      );
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("pregreet with ignore reaches smtpd", async () => {
    const { warden, port } = await startPostwarden("--greet-action", "ignore");
    try {
      const client = await SmtpClient.open(port);
      client.send("EHLO early.example.org\r\n");
      // smtpd reads the early EHLO, which postwarden only peeked at.
      assert.deepEqual(await client.readReply(), [
        "220-warden.example.com ESMTP Postfix",
        "220 pass-test.localdomain ESMTP Postfix",
      ]);
      const ehlo = await client.readReply();
      assert.equal(ehlo[0], "250-pass-test.localdomain");
      assert.match((await client.command("QUIT"))[0] ?? "", /^221 /);
      await client.waitForEnd();

      await warden.waitForLog(
        new RegExp(
          `PREGREET 24 after [0-9.]+ from \\[127\\.0\\.0\\.1\\]:${client.localPort}: EHLO early`,
        ),
      );
      // A failed test is not a pass: no PASS NEW, so it is tested again.
      assert.equal(warden.grep(/PASS NEW/).length, 0);
      await postfix.waitForLog(
        new RegExp(
          `disconnect from unknown\\[127\\.0\\.0\\.1\\]:${client.localPort} ehlo=1 quit=1`,
        ),
      );
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("silent mode catches early talker", async () => {
    const { warden, port } = await startPostwarden(
      "--greet-mode",
      "silent",
      "--greet-action",
      "drop",
    );
    try {
      const client = await SmtpClient.open(port);
      client.send("HELO x\r\n");
      // No teaser in silent mode: the first line is the reply.
      assert.equal(await client.readLine(), "521 5.5.1 Protocol error");
      await client.waitForEnd();
      await warden.waitForLog(
        new RegExp(
          `PREGREET 8 after [0-9.]+ from \\[127\\.0\\.0\\.1\\]:${client.localPort}: HELO x\\\\r\\\\n$`,
        ),
      );

      const patient = await SmtpClient.open(port);
      assert.deepEqual(await patient.readReply(), [
        "220 pass-test.localdomain ESMTP Postfix",
      ]);
      assert.match((await patient.command("QUIT"))[0] ?? "", /^221 /);
      await warden.waitForLog(
        new RegExp(`PASS NEW \\[127\\.0\\.0\\.1\\]:${patient.localPort}$`),
      );
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("default access list permits loopback", async () => {
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
        "--greet-wait",
        "30s",
      ],
    });
    try {
      const port = await warden.listeningPort();
      const client = await SmtpClient.open(port);
      // Allowlisted: no teaser and no wait, smtpd greets at once.
      assert.deepEqual(await client.readReply(3000), [
        "220 pass-test.localdomain ESMTP Postfix",
      ]);
      assert.match((await client.command("QUIT"))[0] ?? "", /^221 /);
      await warden.waitForLog(
        new RegExp(`ALLOWLISTED \\[127\\.0\\.0\\.1\\]:${client.localPort}$`),
      );
      assert.equal(warden.grep(/PASS NEW/).length, 0);
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("smtp-source messages delivered", async () => {
    // Postfix's own load client, through the greeting wait: every session
    // waits, passes and reaches smtpd; the cache makes later ones PASS OLD.
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
        "--greet-wait",
        "1s",
        "-o",
        "access_list=",
      ],
    });
    try {
      const port = await warden.listeningPort();
      const before = postfix
        .log()
        .split("\n")
        .filter((line) =>
          /to=<source@example\.net>.*status=sent/.test(line),
        ).length;
      await run(
        "smtp-source",
        [
          "-c",
          "-m",
          "6",
          "-s",
          "3",
          "-f",
          "sender@example.org",
          "-t",
          "source@example.net",
          `127.0.0.1:${port}`,
        ],
        {
          timeout: 60_000,
        },
      );
      const deadline = Date.now() + 10_000;
      let delivered = 0;
      while (delivered - before < 6 && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 200));
        delivered = postfix
          .log()
          .split("\n")
          .filter((line) =>
            /to=<source@example\.net>.*status=sent/.test(line),
          ).length;
      }
      assert.equal(delivered - before, 6);
      assert.ok(warden.grep(/PASS (NEW|OLD) \[127\.0\.0\.1\]/).length >= 1);
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("client hangup during wait", async () => {
    const { warden, port } = await startPostwarden();
    try {
      const client = await SmtpClient.open(port);
      await client.readLine();
      const label = `\\[127\\.0\\.0\\.1\\]:${client.localPort}`;
      client.destroy();
      await warden.waitForLog(
        new RegExp(
          `HANGUP after [0-9.]+ from ${label} in tests before SMTP handshake$`,
        ),
      );
      await warden.waitForLog(new RegExp(`DISCONNECT ${label}$`));
      assert.equal(warden.grep(/PASS NEW|PREGREET/).length, 0);
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });
});

describe("smtpd pass socket missing", () => {
  const missing = ["--smtpd-pass-socket", "/nonexistent/private/smtpd"];

  test("without teaser replies ports busy", async () => {
    const { warden, port } = await startPostwarden(
      ...missing,
      "--greet-mode",
      "silent",
    );
    try {
      const client = await SmtpClient.open(port);
      assert.equal(
        await client.readLine(5000),
        "421 4.3.2 All server ports are busy",
      );
      await client.waitForEnd();
      await warden.waitForLog(
        /warning: cannot connect to service \/nonexistent\/private\/smtpd: No such file or directory$/,
      );
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("after teaser finishes greeting first", async () => {
    const { warden, port } = await startPostwarden(...missing);
    try {
      const client = await SmtpClient.open(port);
      assert.deepEqual(await client.readReply(5000), [
        "220-warden.example.com ESMTP Postfix",
        "220 warden.example.com ESMTP Postfix",
      ]);
      assert.deepEqual(await client.command("EHLO client.example.org"), [
        "421 4.3.2 No system resources",
      ]);
      await client.waitForEnd();
      await warden.waitForLog(/warning: cannot connect to service/);
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("stale socket refuses connection", async () => {
    const stale = PostfixInstance.create();
    try {
      await stale.start();
      await stale.stop();
      const { warden, port } = await startPostwarden(
        "--smtpd-pass-socket",
        stale.passSocket,
        "--greet-mode",
        "silent",
      );
      try {
        const client = await SmtpClient.open(port);
        assert.equal(
          await client.readLine(5000),
          "421 4.3.2 All server ports are busy",
        );
        await warden.waitForLog(
          /warning: cannot connect to service .*: Connection refused$/,
        );
      } finally {
        assert.equal(await warden.stop(), 0);
      }
    } finally {
      await stale.destroy();
    }
  });
});
