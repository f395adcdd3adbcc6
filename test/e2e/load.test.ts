// Many clients at once, and descriptor exhaustion, against a real smtpd.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
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
  await postfix.destroy();
});

function startPostwarden(
  shellPrefix: string,
  ...extra: string[]
): PostwardenProcess {
  return PostwardenProcess.start({
    shellPrefix,
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
      "client_connection_count_limit=0",
      "-o",
      "pre_queue_limit=100000",
      "-o",
      "post_queue_limit=100000",
      "-o",
      "access_list=",
      ...extra,
    ],
  });
}

/** CPU time (user + system) of a process, in clock ticks. */
function cpuTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(fields[11]) + Number(fields[12]);
}

const DOCUMENTED_REPLIES = new Set([
  "421 4.3.2 All server ports are busy",
  "421 4.3.2 No system resources",
]);

// "smtpd", "documented reply", or a description of what went wrong.
type Outcome = string;

/** Connects, reads the greeting and quits; returns how it went. */
async function quitSession(port: number): Promise<Outcome> {
  const client = await SmtpClient.open(port);
  try {
    const greeting = await client.readReply(30_000);
    const last = greeting.at(-1) ?? "";
    if (DOCUMENTED_REPLIES.has(last)) return "documented reply";
    if (last !== "220 pass-test.localdomain ESMTP Postfix")
      return `unexpected greeting ${JSON.stringify(greeting)}`;
    const reply = await client.command("QUIT", 30_000);
    if (DOCUMENTED_REPLIES.has(reply[0] ?? "")) return "documented reply";
    if (!(reply[0] ?? "").startsWith("221 "))
      return `unexpected QUIT reply ${JSON.stringify(reply)}`;
    await client.waitForEnd(30_000);
    return "smtpd";
  } catch (error) {
    return `failed: ${(error as Error).message}`;
  } finally {
    client.destroy();
  }
}

describe("load", () => {
  test("300 concurrent clients all answered", async () => {
    const warden = startPostwarden("", "--greet-wait", "1s");
    try {
      const port = await warden.listeningPort();
      const outcomes = await Promise.all(
        Array.from({ length: 300 }, () => quitSession(port)),
      );
      const counts = new Map<string, number>();
      for (const outcome of outcomes)
        counts.set(outcome, (counts.get(outcome) ?? 0) + 1);
      const unexpected = outcomes.filter(
        (outcome) => outcome !== "smtpd" && outcome !== "documented reply",
      );
      assert.deepEqual(unexpected, [], JSON.stringify([...counts]));
      assert.ok((counts.get("smtpd") ?? 0) > 0, "no client reached smtpd");
      assert.equal(warden.grep(/ CONNECT from /).length, 300);
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("descriptor exhaustion without spinning", async () => {
    const limit = 64;
    const warden = startPostwarden(
      `ulimit -n ${limit};`,
      "--greet-wait",
      "30s",
    );
    const held: SmtpClient[] = [];
    try {
      const port = await warden.listeningPort();
      const openFds = readdirSync(`/proc/${warden.pid}/fd`).length;
      assert.ok(
        openFds < limit - 10,
        `postwarden already uses ${openFds} descriptors`,
      );

      // Hold more clients in the greet wait than descriptors remain.
      for (let i = 0; i < limit - openFds + 10; i++) {
        held.push(await SmtpClient.open(port));
      }
      await warden.waitForLog(/warning: accept: .*Too many open files/);
      const dropped = held.filter((client) => client.isEnded).length;

      // While descriptors stay exhausted, more clients keep arriving; a
      // level-triggered listener that cannot accept would spin a core.
      const before = cpuTicks(warden.pid);
      const extra: SmtpClient[] = [];
      for (let i = 0; i < 20; i++) extra.push(await SmtpClient.open(port));
      await new Promise((resolve) => setTimeout(resolve, 2000));
      const used = cpuTicks(warden.pid) - before;
      held.push(...extra);
      // 2 s of spinning would be about 200 ticks at 100 Hz.
      assert.ok(
        used < 60,
        `postwarden used ${used} CPU ticks in 2 s at EMFILE`,
      );
      assert.ok(
        held.filter((client) => client.isEnded).length > dropped,
        "extra clients were not dropped",
      );
      assert.ok(
        warden.grep(/warning: accept: /).length <= 3,
        "EMFILE warnings are not rate-limited",
      );

      // Free the descriptors: service resumes.
      for (const client of held) client.destroy();
      await warden.waitForLog(/HANGUP after /);
      await new Promise((resolve) => setTimeout(resolve, 500));
      const client = await SmtpClient.open(port);
      assert.equal(
        await client.readLine(5000),
        "220-warden.example.com ESMTP Postfix",
      );
      client.destroy();
    } finally {
      for (const client of held) client.destroy();
      assert.equal(await warden.stop(), 0);
    }
  });
});
