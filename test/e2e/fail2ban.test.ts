// fail2ban compatibility: a real postwarden run writes a log file in the
// stderr format, which is Postfix's maillog_file format. Debian's own
// postfix filter, run with fail2ban-regex, finds the host in its PREGREET
// line in mode ddos, and in its DNS-list NOQUEUE reject in the default mode.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { PostfixInstance } from "../support/postfix.js";
import { PostwardenProcess } from "../support/postwarden.js";
import { SmtpClient } from "../support/smtp-client.js";
import { Rbldnsd } from "../support/rbldnsd.js";
import { requireRootAndPostfix } from "../support/requirements.js";

requireRootAndPostfix();
const run = promisify(execFile);

const FAIL2BAN_REGEX = "/usr/bin/fail2ban-regex";
const FILTER = "/etc/fail2ban/filter.d/postfix.conf";
const skip =
  existsSync(FAIL2BAN_REGEX) && existsSync(FILTER)
    ? false
    : `${FAIL2BAN_REGEX} or ${FILTER} not found: install Debian's fail2ban package`;

let postfix: PostfixInstance;
let rbldnsd: Rbldnsd;
let directory: string;

before(async () => {
  if (skip !== false) return;
  postfix = PostfixInstance.create();
  await postfix.start();
  rbldnsd = await Rbldnsd.start([
    {
      name: "bl.test",
      type: "ip4set",
      lines: [
        "$SOA 300 ns.test. admin.test. 1 600 300 86400 120",
        ":127.0.0.2:",
        "127.0.0.2",
        "127.0.0.20",
      ],
    },
  ]);
  directory = mkdtempSync(join(tmpdir(), "postwarden-fail2ban-"));
});

after(async () => {
  if (skip !== false) return;
  await rbldnsd?.stop();
  await postfix?.destroy();
  rmSync(directory, { recursive: true, force: true });
});

/** Runs fail2ban-regex; returns the requested field of each match. */
async function matches(
  log: string,
  filter: string,
  field: "msg" | "ip",
): Promise<string[]> {
  const { stdout } = await run(FAIL2BAN_REGEX, ["-o", field, log, filter], {
    timeout: 30_000,
  });
  return stdout.split("\n").filter((line) => line !== "");
}

test("fail2ban postfix filter matches", { skip }, async () => {
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
      "--greet-action",
      "drop",
      "-o",
      "access_list=",
      "-o",
      `dns_servers=${rbldnsd.server}`,
      "-o",
      "dnsbl_sites=bl.test",
      "-o",
      "dnsbl_action=enforce",
    ],
  });
  let pregreetPort: number;
  let listedPort: number;
  try {
    const port = await warden.listeningPort();

    // A bot that talks before the greeting.
    const bot = await SmtpClient.open(port);
    bot.send("EHLO bot.example\r\n");
    await bot.waitForEnd();
    pregreetPort = bot.localPort;

    // A listed client, rejected at RCPT with the NOQUEUE line.
    const listed = await SmtpClient.open(port, "127.0.0.1", "127.0.0.20");
    const greeting = await listed.readReply(15_000);
    assert.match(greeting.at(-1) ?? "", /^220 /);
    await listed.command("HELO listed.example");
    await listed.command("MAIL FROM:<a@example.org>");
    const reply = await listed.command("RCPT TO:<b@example.net>");
    assert.match(reply[0] ?? "", /^550 5\.7\.1 Service unavailable; client/);
    await listed.command("QUIT");
    await listed.waitForEnd();
    listedPort = listed.localPort;
    await warden.waitForLog(/NOQUEUE: reject: RCPT from \[127\.0\.0\.20\]/);
  } finally {
    assert.equal(await warden.stop(), 0);
  }

  const log = join(directory, "maillog");
  writeFileSync(log, warden.lines.join("\n") + "\n");

  const pregreetLines = warden.grep(/: PREGREET \d+ after /);
  assert.equal(pregreetLines.length, 1, warden.lines.join("\n"));
  assert.match(pregreetLines[0] ?? "", new RegExp(`:${pregreetPort}: `));
  const ddos = "postfix[mode=ddos]";
  assert.deepEqual(await matches(log, ddos, "msg"), pregreetLines);
  assert.deepEqual(await matches(log, ddos, "ip"), ["127.0.0.1"]);

  const rejectLines = warden.grep(/: NOQUEUE: reject: RCPT from /);
  assert.equal(rejectLines.length, 1, warden.lines.join("\n"));
  assert.match(
    rejectLines[0] ?? "",
    new RegExp(`\\[127\\.0\\.0\\.20\\]:${listedPort}: 550 5\\.7\\.1 `),
  );
  assert.deepEqual(await matches(log, "postfix", "msg"), rejectLines);
  assert.deepEqual(await matches(log, "postfix", "ip"), ["127.0.0.20"]);
});
