// JSON lines output end to end: every stdout line of a real run parses,
// events and connection summaries have their fixed keys, and the summaries
// of a passed and a rejected client say what happened.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { PostfixInstance } from "../support/postfix.js";
import { PostwardenProcess } from "../support/postwarden.js";
import { SmtpClient } from "../support/smtp-client.js";
import { requireRootAndPostfix } from "../support/requirements.js";
import { CONNECTION_KEYS, EVENT_KEYS } from "../support/log-keys.js";

requireRootAndPostfix();

let postfix: PostfixInstance;

before(async () => {
  postfix = PostfixInstance.create();
  await postfix.start();
});

after(async () => {
  await postfix.destroy();
});

type LogRecord = Record<string, unknown>;

function records(warden: PostwardenProcess): LogRecord[] {
  return warden.lines.map((line) => {
    try {
      return JSON.parse(line) as LogRecord;
    } catch {
      throw new Error(`not a JSON record: ${line}`);
    }
  });
}

function summaryFor(warden: PostwardenProcess, port: number): LogRecord {
  const found = records(warden).filter(
    (record) => record.type === "connection" && record.client_port === port,
  );
  assert.equal(found.length, 1, `summaries for port ${port}`);
  return found[0] ?? {};
}

test("JSON records for passed and rejected clients", async () => {
  const warden = PostwardenProcess.start({
    logDestination: "json",
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
      "--greet-action",
      "drop",
      "-o",
      "access_list=",
    ],
  });
  try {
    const port = await warden.listeningPort();

    // The bot comes first: after a pass, the verdict cache would hand the
    // next client from 127.0.0.1 off at once.
    const bot = await SmtpClient.open(port);
    bot.send("EHLO bot.example\r\n");
    const botOutput = await bot.waitForEnd();
    assert.match(botOutput, /521 5\.5\.1 Protocol error\r\n$/);
    await warden.waitForLog(
      new RegExp(`"type":"connection".*"client_port":${bot.localPort},`),
    );

    const client = await SmtpClient.open(port);
    const greeting = await client.readReply();
    assert.match(greeting.at(-1) ?? "", /^220 /);
    await client.command("QUIT");
    await client.waitForEnd();
    await warden.waitForLog(
      new RegExp(`"type":"connection".*"client_port":${client.localPort},`),
    );
    assert.equal(await warden.stop(), 0);

    const all = records(warden);
    for (const record of all) {
      const keys = record.type === "event" ? EVENT_KEYS : CONNECTION_KEYS;
      assert.deepEqual(Object.keys(record), keys, JSON.stringify(record));
      assert.equal(record.program, "postfix/postwarden");
      assert.equal(record.pid, warden.pid);
    }

    const connect = all.find(
      (record) =>
        record.type === "event" &&
        String(record.event).startsWith(
          `CONNECT from [127.0.0.1]:${client.localPort} `,
        ),
    );
    assert.equal(connect?.client_address, "127.0.0.1");
    assert.equal(connect?.client_port, client.localPort);
    assert.equal(connect?.level, "info");
    const listening = all.find((record) =>
      String(record.event).startsWith("listening on"),
    );
    assert.equal(listening?.client_address, null);

    const rejected = summaryFor(warden, bot.localPort);
    assert.equal(rejected.client_address, "127.0.0.1");
    assert.equal(rejected.listener_address, "127.0.0.1");
    assert.equal(rejected.listener_port, port);
    assert.equal(rejected.verdict, "fail");
    assert.equal(rejected.action, "reject");
    assert.equal(rejected.reply, "521 5.5.1 Protocol error");
    assert.equal(rejected.handoff, null);
    assert.deepEqual(rejected.tests, {
      pregreet: "fail",
      dnsbl: "off",
      pipelining: "off",
      non_smtp_command: "off",
      bare_newline: "off",
    });
    assert.equal(rejected.dnsbl_score, null);

    const passed = summaryFor(warden, client.localPort);
    assert.equal(passed.verdict, "pass");
    assert.equal(passed.action, "handoff");
    assert.equal(passed.handoff, "ok");
    assert.equal(passed.handoff_error, null);
    assert.equal(passed.reply, null);
    assert.equal((passed.tests as LogRecord).pregreet, "pass");
    const duration = Number(passed.duration_seconds);
    // The greeting wait alone is 1 s.
    assert.ok(duration >= 1, `duration ${duration}`);
    assert.equal(
      Date.parse(String(passed.end_time)) -
        Date.parse(String(passed.start_time)),
      Math.round(duration * 1000),
    );
  } finally {
    await warden.stop();
  }
});
