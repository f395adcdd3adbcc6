// SIGHUP reload end to end through a private Postfix. Clients in the
// greeting wait and in the dummy engine finish across a reload, and edits
// reach new clients. Invalid edits leave the running configuration in
// force, and restart-only settings are reported. Many reloads leave no
// descriptors or health-check timers behind.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PostfixInstance } from "../support/postfix.js";
import { PostwardenProcess } from "../support/postwarden.js";
import { SmtpClient } from "../support/smtp-client.js";
import { DnsResponder } from "../support/dns-responder.js";
import { requireRootAndPostfix } from "../support/requirements.js";
import { queryName } from "../../src/dnsbl/resolver.js";

requireRootAndPostfix();

const TEASER = "220-warden.example.com ESMTP Postfix";
const ENGINE_GREETING = "220 warden.example.com ESMTP Postfix";
const SMTPD_GREETING = "220 pass-test.localdomain ESMTP Postfix";
const RELOADED = /configuration reloaded: /;
const RELOAD_FAILED = /reload failed; the running configuration stays/;

let postfix: PostfixInstance;
let directory: string;

before(async () => {
  postfix = PostfixInstance.create();
  await postfix.start();
  directory = mkdtempSync(join(tmpdir(), "postwarden-reload-"));
});

after(async () => {
  await postfix?.destroy();
  if (directory !== undefined) rmSync(directory, { recursive: true });
});

function writeFile(name: string, lines: string[]): string {
  const path = join(directory, name);
  writeFileSync(path, lines.join("\n") + "\n");
  return path;
}

function startPostwarden(config: string, ...extra: string[]) {
  return PostwardenProcess.start({
    args: [
      "--config",
      config,
      "--queue-directory",
      postfix.queueDirectory,
      "--postfix-config-directory",
      postfix.configDirectory,
      "-o",
      "myhostname=warden.example.com",
      ...extra,
    ],
  });
}

/** Sends SIGHUP and waits for the next line matching `outcome`. */
async function reload(
  warden: PostwardenProcess,
  outcome: RegExp = RELOADED,
): Promise<string> {
  const count = warden.grep(outcome).length + 1;
  warden.child.kill("SIGHUP");
  return warden.waitForLogCount(outcome, count);
}

function label(source: string, port: number): string {
  return `\\[${source.replace(/\./g, "\\.")}\\]:${port}`;
}

/** Sends one message to `recipient` after smtpd's greeting, and QUIT. */
async function sendMail(client: SmtpClient, recipient: string): Promise<void> {
  assert.match(
    (await client.command("EHLO mail.example.net"))[0] ?? "",
    /^250-pass-test/,
  );
  assert.match(
    (await client.command("MAIL FROM:<a@example.net>"))[0] ?? "",
    /^250 /,
  );
  assert.match(
    (await client.command(`RCPT TO:<${recipient}>`))[0] ?? "",
    /^250 /,
  );
  assert.match((await client.command("DATA"))[0] ?? "", /^354 /);
  assert.match(
    (await client.command("Subject: reload\r\n\r\nhello\r\n."))[0] ?? "",
    /^250 2\.0\.0 Ok: queued/,
  );
  assert.match((await client.command("QUIT"))[0] ?? "", /^221 /);
}

function delivered(recipient: string): RegExp {
  return new RegExp(
    `discard\\[\\d+\\]: [0-9A-F]+: to=<${recipient.replace(/\./g, "\\.")}>.*status=sent`,
  );
}

function openDescriptors(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

describe("reload", () => {
  test("clients in progress finish", async () => {
    const config = writeFile("progress.cf", [
      "listen = 127.0.0.1:0",
      "access_list =",
      "greet_wait = 4s",
    ]);
    const warden = startPostwarden(config);
    try {
      const port = await warden.listeningPort();

      // A client in the greeting wait when SIGHUP arrives.
      const waiting = await SmtpClient.open(port, "127.0.0.1", "127.0.6.1");
      const connectedAt = Date.now();
      assert.equal(await waiting.readLine(), TEASER);
      writeFile("progress.cf", [
        "listen = 127.0.0.1:0",
        "access_list =",
        "greet_wait = 1s",
        "pipelining_enable = yes",
      ]);
      const line = await reload(warden);
      assert.match(line, /changed greet_wait, pipelining_enable;/);
      assert.match(line, /; 1 connections in progress finish under/);
      assert.deepEqual(
        warden.grep(/PASS NEW \[127\.0\.6\.1\]/),
        [],
        "the greeting wait ended before the reload; the test proves nothing",
      );
      assert.equal(await waiting.readLine(), SMTPD_GREETING);
      assert.ok(
        Date.now() - connectedAt >= 3500,
        "the client in progress did not keep greet_wait = 4s",
      );
      await sendMail(waiting, "waiting@example.net");
      await waiting.waitForEnd();
      await warden.waitForLog(
        new RegExp(`PASS NEW ${label("127.0.6.1", waiting.localPort)}$`),
      );
      await postfix.waitForLog(delivered("waiting@example.net"));

      // A new client gets the new configuration: the dummy engine.
      const engine = await SmtpClient.open(port, "127.0.0.1", "127.0.6.2");
      assert.deepEqual(await engine.readReply(), [TEASER, ENGINE_GREETING]);
      assert.match(
        (await engine.command("EHLO mail.example.net"))[0] ?? "",
        /^250-warden\.example\.com/,
      );
      assert.deepEqual(await engine.command("MAIL FROM:<a@example.net>"), [
        "250 2.1.0 Ok",
      ]);

      // SIGHUP while that client talks to the engine.
      writeFile("progress.cf", [
        "listen = 127.0.0.1:0",
        "access_list =",
        "greet_wait = 1s",
        "pipelining_enable = yes",
        "greet_action = drop",
      ]);
      assert.match(await reload(warden), /changed greet_action;/);
      assert.deepEqual(await engine.command("RCPT TO:<b@example.com>"), [
        "450 4.3.2 Service currently unavailable",
      ]);
      engine.destroy();
      await warden.waitForLog(
        new RegExp(`PASS NEW ${label("127.0.6.2", engine.localPort)}$`),
      );

      // Its pass was stored: the next connection goes straight to smtpd.
      const again = await SmtpClient.open(port, "127.0.0.1", "127.0.6.2");
      assert.equal(await again.readLine(), SMTPD_GREETING);
      await sendMail(again, "engine@example.net");
      await again.waitForEnd();
      await warden.waitForLog(
        new RegExp(`PASS OLD ${label("127.0.6.2", again.localPort)}$`),
      );
      await postfix.waitForLog(delivered("engine@example.net"));
      assert.deepEqual(warden.grep(/ error: | fatal: /), []);
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("edited table and greet_action apply", async () => {
    const table = writeFile("edited.cidr", ["127.0.7.9 reject"]);
    const lines = (greetAction: string): string[] => [
      "listen = 127.0.0.1:0",
      `access_list = cidr:${table}`,
      "denylist_action = drop",
      "greet_wait = 1s",
      `greet_action = ${greetAction}`,
    ];
    const config = writeFile("edited.cf", lines("ignore"));
    const warden = startPostwarden(config);
    try {
      const port = await warden.listeningPort();
      const denied = await SmtpClient.open(port, "127.0.0.1", "127.0.7.9");
      assert.deepEqual(await denied.readReply(), [
        "521 5.3.2 Service currently unavailable",
      ]);
      await denied.waitForEnd();

      const early = await SmtpClient.open(port, "127.0.0.1", "127.0.7.8");
      early.send("EHLO early.example\r\n");
      assert.equal(await early.readLine(), TEASER);
      assert.equal(await early.readLine(), SMTPD_GREETING);
      early.destroy();

      writeFile("edited.cidr", ["127.0.7.9 permit"]);
      writeFile("edited.cf", lines("drop"));
      assert.match(await reload(warden), /changed greet_action;/);

      const permitted = await SmtpClient.open(port, "127.0.0.1", "127.0.7.9");
      assert.deepEqual(await permitted.readReply(), [SMTPD_GREETING]);
      permitted.destroy();
      await warden.waitForLog(
        new RegExp(`ALLOWLISTED ${label("127.0.7.9", permitted.localPort)}$`),
      );

      const dropped = await SmtpClient.open(port, "127.0.0.1", "127.0.7.8");
      dropped.send("EHLO early.example\r\n");
      assert.deepEqual(await dropped.readReply(), [
        TEASER,
        "521 5.5.1 Protocol error",
      ]);
      await dropped.waitForEnd();
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("invalid configuration is rejected", async () => {
    const table = writeFile("kept.cidr", ["127.0.8.9 reject"]);
    const valid = [
      "listen = 127.0.0.1:0",
      `access_list = cidr:${table}`,
      "denylist_action = drop",
      "greet_wait = 1s",
    ];
    const config = writeFile("kept.cf", valid);
    const missing = join(directory, "missing.cidr");
    const cases: {
      name: string;
      config: string[];
      table?: string[];
      error: RegExp;
    }[] = [
      {
        name: "syntax error",
        config: [...valid, "greet_action drop"],
        error: new RegExp(`${config}:5: missing '=' after "greet_action drop"`),
      },
      {
        name: "invalid value",
        config: [...valid, "greet_action = bogus"],
        error: new RegExp(`${config}:5: greet_action: invalid value "bogus"`),
      },
      {
        name: "missing table file",
        config: [...valid.slice(0, 1), `access_list = cidr:${missing}`],
        error: new RegExp(`${missing}`),
      },
      {
        name: "bad table line",
        config: valid,
        table: ["127.0.8.9 reject", "127.0.8.300 permit"],
        error: new RegExp(`${table}:2: `),
      },
    ];
    const warden = startPostwarden(config);
    try {
      const port = await warden.listeningPort();
      for (const item of cases) {
        writeFile("kept.cf", item.config);
        writeFile("kept.cidr", item.table ?? ["127.0.8.9 reject"]);
        await reload(warden, RELOAD_FAILED);
        assert.ok(
          warden
            .grep(/ error: reload: invalid configuration: /)
            .some((line) => item.error.test(line)),
          `${item.name}: no error matching ${String(item.error)}`,
        );
        assert.equal(warden.grep(RELOADED).length, 0, item.name);
        const denied = await SmtpClient.open(port, "127.0.0.1", "127.0.8.9");
        assert.deepEqual(
          await denied.readReply(),
          ["521 5.3.2 Service currently unavailable"],
          `${item.name}: the old access list is not in force`,
        );
        await denied.waitForEnd();
      }

      // Fixed again, the file reloads.
      writeFile("kept.cf", valid);
      writeFile("kept.cidr", ["127.0.8.9 reject"]);
      assert.match(await reload(warden), /no parameter changed/);
      assert.equal(warden.exited, false);
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("restart-only changes are reported", async () => {
    const config = writeFile("restart.cf", [
      "listen = 127.0.0.1:0",
      "access_list =",
      "greet_wait = 1s",
    ]);
    const warden = startPostwarden(config);
    try {
      const port = await warden.listeningPort();
      writeFile("restart.cf", [
        "listen = 127.0.0.3:0",
        "access_list =",
        "greet_wait = 1s",
        "cache_redis_timeout = 2s",
      ]);
      for (let round = 1; round <= 2; round++) {
        assert.match(await reload(warden), /no parameter changed/);
        const warnings = warden.grep(/takes effect only after a restart/);
        assert.equal(warnings.length, 2 * round);
        assert.ok(
          warnings.some((line) =>
            line.endsWith(
              'warning: reload: listen changed to "127.0.0.3:0", which ' +
                'takes effect only after a restart; still using "127.0.0.1:0"',
            ),
          ),
        );
        assert.ok(
          warnings.some((line) =>
            /reload: cache_redis_timeout changed to "2s", .* still using "50ms"$/.test(
              line,
            ),
          ),
        );
      }
      assert.equal(warden.grep(/listening on /).length, 1);
      const client = await SmtpClient.open(port, "127.0.0.1", "127.0.0.1");
      assert.equal(await client.readLine(), TEASER);
      client.destroy();
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("repeated reloads leak nothing", async () => {
    const listedPoints = new Set([
      queryName("127.0.0.2", "bl.test"),
      queryName("::ffff:7f00:2", "bl.test"),
    ]);
    const responder = await DnsResponder.start((name, type) =>
      type === "A" && listedPoints.has(name)
        ? { kind: "answer", addresses: ["127.0.0.2"], ttl: 60 }
        : { kind: "nxdomain", soaMinimum: 60 },
    );
    const lines = (greetWait: string): string[] => [
      "listen = 127.0.0.1:0",
      "access_list =",
      `greet_wait = ${greetWait}`,
      "dnsbl_sites = bl.test",
      `dns_servers = ${responder.server}`,
      "dnsbl_health_check_interval = 1s",
    ];
    const config = writeFile("leak.cf", lines("1s"));
    const warden = startPostwarden(config);
    try {
      const port = await warden.listeningPort();
      await reload(warden);
      const warmup = await SmtpClient.open(port, "127.0.0.1", "127.0.9.1");
      assert.equal(await warmup.readLine(), TEASER);
      assert.equal(await warmup.readLine(), SMTPD_GREETING);
      warmup.destroy();
      writeFile("leak.cf", lines("4s"));
      await reload(warden);
      await sleep(500);
      const before = openDescriptors(warden.pid);

      // A client in its greeting wait during the first reloads.
      const across = await SmtpClient.open(port, "127.0.0.1", "127.0.9.2");
      assert.equal(await across.readLine(), TEASER);
      for (let round = 0; round < 20; round++) {
        writeFile("leak.cf", lines(round % 2 === 0 ? "2s" : "3s"));
        await reload(warden);
      }
      assert.equal(await across.readLine(), SMTPD_GREETING);
      across.destroy();

      await sleep(500);
      const afterReloads = openDescriptors(warden.pid);
      assert.ok(
        afterReloads <= before + 2,
        `open descriptors grew from ${before} to ${afterReloads}`,
      );

      // Only the last Runtime's health checks still run: one check of
      // the IPv4 test point a second, not one per reload.
      const checked = (): number =>
        responder.queries.filter(
          (query) => query.name === queryName("127.0.0.2", "bl.test"),
        ).length;
      const start = checked();
      await sleep(3000);
      const checks = checked() - start;
      assert.ok(checks >= 1, "no health check ran after the reloads");
      assert.ok(checks <= 5, `${checks} health checks in 3 seconds`);
      assert.deepEqual(warden.grep(/ error: /), []);
    } finally {
      assert.equal(await warden.stop(), 0);
      await responder.stop();
    }
  });
});
