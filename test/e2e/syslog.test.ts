// Syslog output end to end: postwarden logs to a datagram socket that the
// test binds in a temporary directory (never the machine's /dev/log),
// falls back to stderr when that socket is missing, and connects again
// when it appears.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createSocket, type UnixDgramSocket } from "unix-dgram";
import { PostfixInstance } from "../support/postfix.js";
import { PostwardenProcess } from "../support/postwarden.js";
import { SmtpClient } from "../support/smtp-client.js";
import { requireRootAndPostfix } from "../support/requirements.js";

requireRootAndPostfix();

let postfix: PostfixInstance;
let directory: string;

before(async () => {
  postfix = PostfixInstance.create();
  await postfix.start();
  directory = mkdtempSync(join(tmpdir(), "postwarden-syslog-e2e-"));
});

after(async () => {
  await postfix.destroy();
  rmSync(directory, { recursive: true, force: true });
});

/** A datagram socket bound at `path` that collects what it receives. */
class Receiver {
  readonly messages: string[] = [];
  private readonly socket: UnixDgramSocket;

  constructor(path: string) {
    this.socket = createSocket("unix_dgram", (data) => {
      this.messages.push(data.toString("utf8"));
    });
    this.socket.on("error", (error: Error) => {
      throw error;
    });
    this.socket.bind(path);
  }

  /** Waits for a message matching `pattern`; returns it. */
  async waitFor(pattern: RegExp, timeoutMs = 10_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.messages.find((message) => pattern.test(message));
      if (found !== undefined) return found;
      if (Date.now() > deadline) {
        throw new Error(
          `timed out waiting for ${String(pattern)}; received:\n` +
            this.messages.join("\n"),
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  close(): void {
    this.socket.close();
  }
}

function startPostwarden(socketPath: string, ...extra: string[]) {
  return PostwardenProcess.start({
    logDestination: "syslog",
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
      "-o",
      `syslog_socket=${socketPath}`,
      ...extra,
    ],
  });
}

/** Connects, reads the whole greeting and quits. */
async function patientClient(port: number): Promise<number> {
  const client = await SmtpClient.open(port);
  const greeting = await client.readReply();
  assert.match(greeting.at(-1) ?? "", /^220 /);
  await client.command("QUIT");
  await client.waitForEnd();
  return client.localPort;
}

/** Returns a pattern for the RFC 3164 header that glibc's syslog() writes. */
function header(priority: number, program: string, pid: number): string {
  const escaped = program.replace(/[/]/g, "\\/");
  return (
    `^<${priority}>[A-Z][a-z]{2} [ 1-3][0-9] \\d\\d:\\d\\d:\\d\\d ` +
    `${escaped}\\[${pid}\\]: `
  );
}

describe("syslog output", () => {
  test("socket receives framed lines", async () => {
    const path = join(directory, "log-framed");
    const receiver = new Receiver(path);
    const warden = startPostwarden(
      path,
      "-o",
      "syslog_name=postfix/postscreen",
      "-o",
      "greet_action=drop",
    );
    try {
      const prefix = header(22, "postfix/postscreen", warden.pid);
      const listening = await receiver.waitFor(/listening on /);
      assert.match(
        listening,
        new RegExp(`${prefix}listening on \\[127\\.0\\.0\\.1\\]:\\d+$`),
      );
      const port = Number(/:(\d+)$/.exec(listening)?.[1]);

      // The bot comes first: after a pass, the verdict cache would hand
      // the next client from 127.0.0.1 off at once.
      const bot = await SmtpClient.open(port);
      bot.send("EHLO bot.example\r\n");
      await bot.waitForEnd();
      await receiver.waitFor(
        new RegExp(
          `${prefix}PREGREET 18 after [0-9.]+ from ` +
            `\\[127\\.0\\.0\\.1\\]:${bot.localPort}: EHLO bot\\.example\\\\r\\\\n$`,
        ),
      );
      await receiver.waitFor(
        new RegExp(
          `${prefix}DISCONNECT \\[127\\.0\\.0\\.1\\]:${bot.localPort}$`,
        ),
      );

      const clientPort = await patientClient(port);
      const client = `\\[127\\.0\\.0\\.1\\]:${clientPort}`;
      await receiver.waitFor(
        new RegExp(
          `${prefix}CONNECT from ${client} to \\[127\\.0\\.0\\.1\\]:${port}$`,
        ),
      );
      await receiver.waitFor(new RegExp(`${prefix}PASS NEW ${client}$`));

      // Nothing went to stderr: the socket took every line.
      assert.deepEqual(warden.lines, []);
      assert.equal(await warden.stop(), 0);
      await receiver.waitFor(new RegExp(`${prefix}stopped$`));
      // Info lines, and warnings such as the one for running as root.
      const warning = header(20, "postfix/postscreen", warden.pid);
      for (const message of receiver.messages) {
        assert.match(message, new RegExp(`${prefix}|${warning}`), message);
        assert.ok(!message.endsWith("\n"), message);
      }
    } finally {
      await warden.stop();
      receiver.close();
    }
  });

  test("facility sets the priority", async () => {
    const path = join(directory, "log-facility");
    const receiver = new Receiver(path);
    const warden = startPostwarden(path, "-o", "syslog_facility=local2");
    try {
      // local2 is 18; info is 6, warning 4: 18 * 8 + 6 = 150.
      const prefix = header(150, "postfix/postwarden", warden.pid);
      await receiver.waitFor(new RegExp(`${prefix}listening on `));
      assert.equal(await warden.stop(), 0);
    } finally {
      await warden.stop();
      receiver.close();
    }
  });

  test("missing socket falls back to stderr", async () => {
    const path = join(directory, "log-missing");
    const warden = startPostwarden(path);
    try {
      const port = await warden.listeningPort();
      const clientPort = await patientClient(port);
      const label = `\\[127\\.0\\.0\\.1\\]:${clientPort}`;
      await warden.waitForLog(
        new RegExp(
          `^[A-Z][a-z]{2} [ 1-3][0-9] \\d\\d:\\d\\d:\\d\\d \\S+ ` +
            `postfix/postwarden\\[${warden.pid}\\]: PASS NEW ${label}$`,
        ),
      );
      assert.equal(await warden.stop(), 0);

      const warnings = warden.grep(/warning: syslog socket/);
      assert.equal(warnings.length, 1, warden.lines.join("\n"));
      assert.match(
        warnings[0] ?? "",
        new RegExp(
          `warning: syslog socket ${path}: connect failed: ENOENT; ` +
            "writing log lines to stderr until it takes them again$",
        ),
      );
      // Every log line but the warning itself counts as not delivered.
      const logged = warden.lines.filter(
        (line) => !/warning: (syslog socket|\d+ log lines did not)/.test(line),
      );
      const dropped = warden.grep(
        /warning: \d+ log lines did not reach the syslog socket and were written to stderr$/,
      );
      assert.equal(dropped.length, 1, warden.lines.join("\n"));
      const count = Number(
        /warning: (\d+) log lines/.exec(dropped[0] ?? "")?.[1],
      );
      // "stopped" is written after the count.
      assert.equal(count, logged.length - 1);
    } finally {
      await warden.stop();
    }
  });

  test("socket that appears later is used", async () => {
    const path = join(directory, "log-late");
    const warden = startPostwarden(path);
    let receiver: Receiver | undefined;
    try {
      const port = await warden.listeningPort();
      receiver = new Receiver(path);
      // The first retry comes at least 1 s after the failed connect.
      await new Promise((resolve) => setTimeout(resolve, 1500));
      const clientPort = await patientClient(port);
      const prefix = header(22, "postfix/postwarden", warden.pid);
      await receiver.waitFor(
        new RegExp(
          `${prefix}CONNECT from \\[127\\.0\\.0\\.1\\]:${clientPort} `,
        ),
      );
      const back = await receiver.waitFor(/takes log lines again/);
      assert.match(
        back,
        new RegExp(
          `${prefix}syslog socket ${path} takes log lines again; \\d+ lines ` +
            "were written to stderr meanwhile$",
        ),
      );
      assert.equal(warden.grep(/CONNECT from /).length, 0);
      assert.equal(await warden.stop(), 0);
    } finally {
      await warden.stop();
      receiver?.close();
    }
  });
});
