// The dummy SMTP engine end to end: deep tests, enforce actions, limits
// and soft_bounce, with scripted raw clients whose timing is exact, and a
// client that passes, comes back and is handed off to the private Postfix.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
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
const ENGINE_GREETING = "220 warden.example.com ESMTP Postfix";
const SMTPD_GREETING = "220 pass-test.localdomain ESMTP Postfix";
const DEEP_TESTS = [
  "-o",
  "pipelining_enable=yes",
  "-o",
  "non_smtp_command_enable=yes",
  "-o",
  "bare_newline_enable=yes",
];

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
      "1s",
      "-o",
      "myhostname=warden.example.com",
      "-o",
      "access_list=",
      ...extra,
    ],
  });
}

function label(source: string, port: number): string {
  return `\\[${source.replace(/\./g, "\\.")}\\]:${port}`;
}

async function open(port: number, source: string): Promise<SmtpClient> {
  return SmtpClient.open(port, "127.0.0.1", source);
}

describe("deep tests", () => {
  test("pass, come back, deliver", async () => {
    const warden = startPostwarden(...DEEP_TESTS);
    try {
      const port = await warden.listeningPort();
      const client = await open(port, "127.0.3.1");
      assert.deepEqual(await client.readReply(), [TEASER, ENGINE_GREETING]);
      const ehlo = await client.command("EHLO mail.example.net");
      assert.deepEqual(ehlo, [
        "250-warden.example.com",
        "250-SIZE 10240000",
        "250-VRFY",
        "250-ETRN",
        "250-ENHANCEDSTATUSCODES",
        "250-8BITMIME",
        "250-DSN",
        "250-SMTPUTF8",
        "250 CHUNKING",
      ]);
      assert.deepEqual(await client.command("MAIL FROM:<a@example.net>"), [
        "250 2.1.0 Ok",
      ]);
      assert.deepEqual(await client.command("RCPT TO:<b@example.com>"), [
        "450 4.3.2 Service currently unavailable",
      ]);
      // The client hangs up after the 450, as in the field report.
      client.destroy();
      const where = label("127.0.3.1", client.localPort);
      await warden.waitForLog(new RegExp(`DISCONNECT ${where}$`));
      const lines = warden.lines
        .filter((line) => line.includes(`[127.0.3.1]:${client.localPort}`))
        .map((line) => line.replace(/^.*postwarden\[\d+\]: /, ""));
      assert.deepEqual(lines.slice(1), [
        `NOQUEUE: reject: RCPT from [127.0.3.1]:${client.localPort}: 450 4.3.2 Service currently unavailable; from=<a@example.net>, to=<b@example.com>, proto=ESMTP, helo=<mail.example.net>`,
        lines[2] ?? "",
        `PASS NEW [127.0.3.1]:${client.localPort}`,
        `DISCONNECT [127.0.3.1]:${client.localPort}`,
      ]);
      assert.match(
        lines[2] ?? "",
        new RegExp(
          `^HANGUP after [0-9.]+ from ${where} in tests after SMTP handshake$`,
        ),
      );

      // Next connection: PASS OLD, handed off at once, delivered by smtpd.
      const again = await open(port, "127.0.3.1");
      assert.deepEqual(await again.readReply(), [SMTPD_GREETING]);
      assert.match(
        (await again.command("EHLO mail.example.net"))[0] ?? "",
        /^250-pass-test/,
      );
      assert.match(
        (await again.command("MAIL FROM:<a@example.net>"))[0] ?? "",
        /^250 /,
      );
      assert.match(
        (await again.command("RCPT TO:<b@example.com>"))[0] ?? "",
        /^250 /,
      );
      assert.match((await again.command("DATA"))[0] ?? "", /^354 /);
      assert.match(
        (await again.command("Subject: again\r\n\r\nhello\r\n."))[0] ?? "",
        /^250 2\.0\.0 Ok: queued/,
      );
      assert.match((await again.command("QUIT"))[0] ?? "", /^221 /);
      await warden.waitForLog(
        new RegExp(`PASS OLD ${label("127.0.3.1", again.localPort)}$`),
      );
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("pregreet pipelining probe logged", async () => {
    // A monitoring probe writes "ehlo ...\r\nquit\r\n" before the greeting.
    const warden = startPostwarden("--greet-action", "enforce", ...DEEP_TESTS);
    try {
      const port = await warden.listeningPort();
      const client = await open(port, "127.0.3.2");
      client.send("ehlo xymonnet\r\nquit\r\n");
      // No greeting after a pregreet: the engine answers EHLO, then QUIT.
      assert.equal(await client.readLine(), TEASER);
      const ehlo = await client.readReply();
      assert.equal(ehlo[0], "250-warden.example.com");
      assert.deepEqual(await client.readReply(), ["221 2.0.0 Bye"]);
      await client.waitForEnd();
      const where = label("127.0.3.2", client.localPort);
      await warden.waitForLog(
        new RegExp(
          `PREGREET 21 after [0-9.]+ from ${where}: ehlo xymonnet\\\\r\\\\nquit\\\\r\\\\n$`,
        ),
      );
      await warden.waitForLog(
        new RegExp(
          `COMMAND PIPELINING from ${where} after ehlo: quit\\\\r\\\\n$`,
        ),
      );
      await warden.waitForLog(new RegExp(`DISCONNECT ${where}$`));
      assert.equal(warden.grep(/PASS /).length, 0);
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("pipelining after greeting dropped", async () => {
    const warden = startPostwarden(
      "-o",
      "pipelining_enable=yes",
      "-o",
      "pipelining_action=drop",
    );
    try {
      const port = await warden.listeningPort();
      const client = await open(port, "127.0.3.3");
      assert.deepEqual(await client.readReply(), [TEASER, ENGINE_GREETING]);
      client.send("EHLO scanner.example.net\r\nSTARTTLS\r\n");
      assert.deepEqual(await client.readReply(), ["521 5.5.1 Protocol error"]);
      await client.waitForEnd();
      await warden.waitForLog(
        new RegExp(
          `COMMAND PIPELINING from ${label("127.0.3.3", client.localPort)} after EHLO: STARTTLS\\\\r\\\\n$`,
        ),
      );
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("pipelining enforced at RCPT", async () => {
    const warden = startPostwarden("-o", "pipelining_enable=yes");
    try {
      const port = await warden.listeningPort();
      const client = await open(port, "127.0.3.4");
      await client.readReply();
      client.send(
        "HELO bot.example\r\nMAIL FROM:<x@example.com>\r\nRCPT TO:<y@example.net>\r\n",
      );
      assert.deepEqual(await client.readReply(), ["250 warden.example.com"]);
      assert.deepEqual(await client.readReply(), ["250 2.1.0 Ok"]);
      assert.deepEqual(await client.readReply(), ["550 5.5.1 Protocol error"]);
      const where = label("127.0.3.4", client.localPort);
      await warden.waitForLog(
        new RegExp(
          `NOQUEUE: reject: RCPT from ${where}: 550 5\\.5\\.1 Protocol error; from=<x@example\\.com>, to=<y@example\\.net>, proto=SMTP, helo=<bot\\.example>$`,
        ),
      );
      assert.deepEqual(await client.command("QUIT"), ["221 2.0.0 Bye"]);
      await warden.waitForLog(new RegExp(`DISCONNECT ${where}$`));
      assert.equal(warden.grep(/PASS /).length, 0);
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("pipelining ignored counts as pass", async () => {
    const warden = startPostwarden(
      "-o",
      "pipelining_enable=yes",
      "-o",
      "pipelining_action=ignore",
    );
    try {
      const port = await warden.listeningPort();
      const client = await open(port, "127.0.3.11");
      await client.readReply();
      client.send("HELO bot.example\r\nMAIL FROM:<x@example.com>\r\n");
      assert.deepEqual(await client.readReply(), ["250 warden.example.com"]);
      assert.deepEqual(await client.readReply(), ["250 2.1.0 Ok"]);
      assert.deepEqual(await client.command("RCPT TO:<y@example.net>"), [
        "450 4.3.2 Service currently unavailable",
      ]);
      assert.deepEqual(await client.command("QUIT"), ["221 2.0.0 Bye"]);
      const where = label("127.0.3.11", client.localPort);
      await warden.waitForLog(
        new RegExp(
          `COMMAND PIPELINING from ${where} after HELO: MAIL FROM:<x@example\\.com>\\\\r\\\\n$`,
        ),
      );
      await warden.waitForLog(new RegExp(`PASS NEW ${where}$`));
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("HTTP request dropped", async () => {
    const warden = startPostwarden("-o", "non_smtp_command_enable=yes");
    try {
      const port = await warden.listeningPort();
      const client = await open(port, "127.0.3.5");
      await client.readReply();
      client.send("GET / HTTP/1.1\r\n");
      assert.deepEqual(await client.readReply(), [
        "521 5.7.0 Error: I can break rules, too. Goodbye.",
      ]);
      await client.waitForEnd();
      await warden.waitForLog(
        new RegExp(
          `NON-SMTP COMMAND from ${label("127.0.3.5", client.localPort)} after CONNECT: GET / HTTP/1\\.1$`,
        ),
      );
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("reject footer on replies", async () => {
    const warden = startPostwarden(
      "-o",
      "non_smtp_command_enable=yes",
      "-o",
      "reject_footer=Help: https://mx.example.com/",
    );
    try {
      const port = await warden.listeningPort();
      const client = await open(port, "127.0.3.10");
      await client.readReply();
      client.send("GET / HTTP/1.0\r\n");
      assert.deepEqual(await client.readReply(), [
        "521-5.7.0 Error: I can break rules, too. Goodbye.",
        "521 5.7.0 Help: https://mx.example.com/",
      ]);
      await client.waitForEnd();
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("header line is non-SMTP", async () => {
    const warden = startPostwarden(
      "-o",
      "non_smtp_command_enable=yes",
      "-o",
      "non_smtp_command_action=enforce",
    );
    try {
      const port = await warden.listeningPort();
      const client = await open(port, "127.0.3.6");
      await client.readReply();
      assert.deepEqual(await client.command("HELO x.example"), [
        "250 warden.example.com",
      ]);
      assert.deepEqual(await client.command("Subject: hello"), [
        "502 5.5.2 Error: command not recognized",
      ]);
      await client.command("MAIL FROM:<a@example.org>");
      assert.deepEqual(await client.command("RCPT TO:<b@example.net>"), [
        "550 5.5.1 Protocol error",
      ]);
      client.destroy();
      await warden.waitForLog(
        new RegExp(
          `NON-SMTP COMMAND from ${label("127.0.3.6", client.localPort)} after HELO: Subject: hello$`,
        ),
      );
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("bare newline ignored then enforced", async () => {
    const ignore = startPostwarden("-o", "bare_newline_enable=yes");
    try {
      const port = await ignore.listeningPort();
      const client = await open(port, "127.0.3.7");
      await client.readReply();
      client.send("EHLO client.example.net\n");
      assert.equal((await client.readReply())[0], "250-warden.example.com");
      await client.command("MAIL FROM:<a@example.net>");
      assert.deepEqual(await client.command("RCPT TO:<b@example.com>"), [
        "450 4.3.2 Service currently unavailable",
      ]);
      assert.deepEqual(await client.command("QUIT"), ["221 2.0.0 Bye"]);
      await ignore.waitForLog(
        new RegExp(
          `BARE NEWLINE from ${label("127.0.3.7", client.localPort)} after EHLO client\\.example\\.net$`,
        ),
      );
      // Ignore counts as passed (for the shortest TTL), so the client passes.
      await ignore.waitForLog(
        new RegExp(`PASS NEW ${label("127.0.3.7", client.localPort)}$`),
      );
    } finally {
      assert.equal(await ignore.stop(), 0);
    }

    const enforce = startPostwarden(
      "-o",
      "bare_newline_enable=yes",
      "-o",
      "bare_newline_action=enforce",
    );
    try {
      const port = await enforce.listeningPort();
      const client = await open(port, "127.0.3.8");
      await client.readReply();
      client.send("EHLO client.example.net\n");
      await client.readReply();
      await client.command("MAIL FROM:<a@example.net>");
      assert.deepEqual(await client.command("RCPT TO:<b@example.com>"), [
        "550 5.5.1 Protocol error",
      ]);
      client.destroy();
      await enforce.waitForLog(
        new RegExp(`DISCONNECT ${label("127.0.3.8", client.localPort)}$`),
      );
      assert.equal(enforce.grep(/PASS /).length, 0);
    } finally {
      assert.equal(await enforce.stop(), 0);
    }
  });

  test("DATA without recipients ends session", async () => {
    const warden = startPostwarden(...DEEP_TESTS);
    try {
      const port = await warden.listeningPort();
      const client = await open(port, "127.0.3.9");
      await client.readReply();
      await client.command("HELO x.example");
      await client.command("MAIL FROM:<a@example.org>");
      assert.deepEqual(await client.command("DATA"), [
        "554 5.5.1 Error: no valid recipients",
      ]);
      await client.waitForEnd();
      await warden.waitForLog(
        new RegExp(
          `DATA without valid RCPT from ${label("127.0.3.9", client.localPort)}$`,
        ),
      );
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });
});

describe("enforce and limits", () => {
  test("pregreet enforced with soft bounce", async () => {
    const warden = startPostwarden(
      "--greet-action",
      "enforce",
      "-o",
      "soft_bounce=yes",
    );
    try {
      const port = await warden.listeningPort();
      const client = await open(port, "127.0.4.1");
      client.send("HELO early.example\r\n");
      assert.equal(await client.readLine(), TEASER);
      assert.deepEqual(await client.readReply(), ["250 warden.example.com"]);
      await client.command("MAIL FROM:<a@example.org>");
      // 550 5.5.1 softened to 450 4.5.1.
      assert.deepEqual(await client.command("RCPT TO:<b@example.net>"), [
        "450 4.5.1 Protocol error",
      ]);
      client.destroy();
      await warden.waitForLog(
        new RegExp(
          `NOQUEUE: reject: RCPT from ${label("127.0.4.1", client.localPort)}: 450 4\\.5\\.1 Protocol error; from=<a@example\\.org>, to=<b@example\\.net>, proto=SMTP, helo=<early\\.example>$`,
        ),
      );
      assert.equal(warden.grep(/PASS /).length, 0);
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("command count limit", async () => {
    const warden = startPostwarden(
      ...DEEP_TESTS,
      "-o",
      "command_count_limit=3",
    );
    try {
      const port = await warden.listeningPort();
      const client = await open(port, "127.0.4.2");
      await client.readReply();
      for (let i = 0; i < 3; i++)
        assert.deepEqual(await client.command("NOOP"), ["250 2.0.0 Ok"]);
      assert.deepEqual(await client.command("NOOP"), [
        "421 warden.example.com Service unavailable - try again later",
      ]);
      await client.waitForEnd();
      await warden.waitForLog(
        new RegExp(
          `COMMAND COUNT LIMIT from ${label("127.0.4.2", client.localPort)} after NOOP$`,
        ),
      );
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("command time limit", async () => {
    const warden = startPostwarden(
      ...DEEP_TESTS,
      "-o",
      "command_time_limit=1s",
    );
    try {
      const port = await warden.listeningPort();
      const client = await open(port, "127.0.4.3");
      await client.readReply();
      assert.deepEqual(await client.readReply(5000), [
        "421 4.4.2 warden.example.com Error: timeout exceeded",
      ]);
      await client.waitForEnd();
      await warden.waitForLog(
        new RegExp(
          `COMMAND TIME LIMIT from ${label("127.0.4.3", client.localPort)} after CONNECT$`,
        ),
      );
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("command length limit", async () => {
    const warden = startPostwarden(
      ...DEEP_TESTS,
      "-o",
      "line_length_limit=100",
    );
    try {
      const port = await warden.listeningPort();
      const client = await open(port, "127.0.4.4");
      await client.readReply();
      client.send("HELO " + "x".repeat(300) + "\r\n");
      assert.deepEqual(await client.readReply(), [
        "421 warden.example.com Service unavailable - try again later",
      ]);
      await client.waitForEnd();
      await warden.waitForLog(
        new RegExp(
          `COMMAND LENGTH LIMIT from ${label("127.0.4.4", client.localPort)} after CONNECT$`,
        ),
      );
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("SIGTERM answers engine sessions", async () => {
    const warden = startPostwarden(...DEEP_TESTS);
    const port = await warden.listeningPort();
    const client = await open(port, "127.0.4.5");
    await client.readReply();
    await client.command("HELO x.example");
    assert.equal(await warden.stop(), 0);
    assert.deepEqual(await client.readReply(), [
      "421 4.3.2 Service currently unavailable",
    ]);
    await client.waitForEnd();
  });
});
