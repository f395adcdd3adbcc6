// Startup checks and a clean stop.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "node:net";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { packageRoot } from "../../src/native.js";
import { PostfixInstance } from "../support/postfix.js";
import { PostwardenProcess, ROOT_OPTIONS } from "../support/postwarden.js";
import { SmtpClient } from "../support/smtp-client.js";
import { requireRootAndPostfix } from "../support/requirements.js";
import { buildConfig } from "../../src/config/load.js";
import { loadAddon } from "../../src/native.js";
import { Server } from "../../src/server.js";
import type { Logger } from "../../src/log/logger.js";

requireRootAndPostfix();
const run = promisify(execFile);

let postfix: PostfixInstance;

before(async () => {
  postfix = PostfixInstance.create({ inet_protocols: "ipv4" });
  await postfix.start();
});

after(async () => {
  await postfix.destroy();
});

function commonArgs(): string[] {
  return [
    "--queue-directory",
    postfix.queueDirectory,
    "--postfix-config-directory",
    postfix.configDirectory,
    "-o",
    "myhostname=warden.example.com",
    "-o",
    "access_list=",
  ];
}

describe("startup", () => {
  test("invalid config stops with location", async () => {
    const directory = mkdtempSync(join(tmpdir(), "postwarden-cf-"));
    const file = join(directory, "main.cf");
    writeFileSync(
      file,
      "listen = 127.0.0.1:0\n# comment\npostscreen_greet_wait = 5x\n",
    );
    const warden = PostwardenProcess.start({
      args: ["--config", file, ...commonArgs()],
    });
    assert.equal(await warden.waitForExit(), 1);
    const output = warden.lines.join("\n");
    assert.match(
      output,
      new RegExp(`${file}:3: postscreen_greet_wait: invalid time unit "x"`),
    );
  });

  test("missing listen stops startup", async () => {
    const warden = PostwardenProcess.start({
      args: ["--config", "/dev/null", ...commonArgs()],
    });
    assert.equal(await warden.waitForExit(), 1);
    assert.match(warden.lines.join("\n"), /listen: missing value/);
  });

  test("IPv6 listener rejected for ipv4 Postfix", async () => {
    const warden = PostwardenProcess.start({
      args: [
        "--config",
        "/dev/null",
        "--listen",
        "127.0.0.1:0",
        "[::1]:0",
        ...commonArgs(),
      ],
    });
    assert.equal(await warden.waitForExit(), 1);
    assert.match(
      warden.lines.join("\n"),
      /IPv6 address ::1 configured, but Postfix in .* has inet_protocols without ipv6/,
    );
  });

  test("postconf failure warns and continues", async () => {
    const warden = PostwardenProcess.start({
      args: [
        "--config",
        "/dev/null",
        "--listen",
        "127.0.0.1:0",
        "--queue-directory",
        postfix.queueDirectory,
        "--postfix-config-directory",
        "/nonexistent/postfix",
      ],
    });
    try {
      await warden.listeningPort();
      assert.equal(
        warden.grep(
          /warning: cannot run postconf -c \/nonexistent\/postfix: .*assuming smtpd accepts IPv4 and IPv6/,
        ).length,
        1,
      );
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("busy listen address stops startup", async () => {
    const first = PostwardenProcess.start({
      args: [
        "--config",
        "/dev/null",
        "--listen",
        "127.0.0.1:0",
        ...commonArgs(),
      ],
    });
    try {
      const port = await first.listeningPort();
      const second = PostwardenProcess.start({
        args: [
          "--config",
          "/dev/null",
          "--listen",
          `127.0.0.1:${port}`,
          ...commonArgs(),
        ],
      });
      assert.equal(await second.waitForExit(), 1);
      assert.match(
        second.lines.join("\n"),
        /fatal: bind EADDRINUSE: Address already in use \(127\.0\.0\.1 port \d+\)/,
      );
    } finally {
      assert.equal(await first.stop(), 0);
    }
  });
});

describe("check command", () => {
  test("check prints values in effect", async () => {
    const cli = join(packageRoot(), "dist", "src", "cli.js");
    const { stdout } = await run(
      "node",
      [
        cli,
        "check",
        "--config",
        "/dev/null",
        "-o",
        "listen=127.0.0.1:2525",
        "-o",
        "myhostname=mx.example.com",
        // check exits 1 unless the Postfix side is right too.
        "--queue-directory",
        postfix.queueDirectory,
        "--postfix-config-directory",
        postfix.configDirectory,
        ...ROOT_OPTIONS,
      ],
      {
        timeout: 20_000,
      },
    );
    const lines = stdout.split("\n");
    assert.ok(lines.includes("listen = 127.0.0.1:2525"), stdout);
    assert.ok(
      lines.includes("greet_banner = mx.example.com ESMTP Postfix"),
      stdout,
    );
    assert.ok(lines.includes("access_list = permit_mynetworks"), stdout);
  });

  test("check reads Postfix defaults", async () => {
    const cli = join(packageRoot(), "dist", "src", "cli.js");
    const { stdout } = await run(
      "node",
      [
        cli,
        "check",
        "--config",
        "/dev/null",
        "-o",
        "listen=127.0.0.1:2525",
        "--queue-directory",
        postfix.queueDirectory,
        "--postfix-config-directory",
        postfix.configDirectory,
        ...ROOT_OPTIONS,
      ],
      { timeout: 20_000 },
    );
    const lines = stdout.split("\n");
    assert.ok(lines.includes("myhostname = pass-test.localdomain"), stdout);
    assert.ok(
      lines.includes("greet_banner = pass-test.localdomain ESMTP Postfix"),
      stdout,
    );
    assert.ok(lines.includes("mynetworks = 127.0.0.0/8 [::1]/128"), stdout);
  });

  test("missing pass socket warns at start", async () => {
    const warden = PostwardenProcess.start({
      args: [
        "--config",
        "/dev/null",
        "--listen",
        "127.0.0.1:0",
        ...commonArgs(),
        "--smtpd-pass-socket",
        "/nonexistent/private/smtpd",
      ],
    });
    try {
      await warden.listeningPort();
      await warden.waitForLog(
        /warning: smtpd pass socket \/nonexistent\/private\/smtpd: not found \(is Postfix running/,
      );
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("SIGTERM right after start exits cleanly", async () => {
    for (let attempt = 0; attempt < 5; attempt++) {
      const warden = PostwardenProcess.start({
        args: [
          "--config",
          "/dev/null",
          "--listen",
          "127.0.0.1:0",
          ...commonArgs(),
        ],
      });
      await warden.listeningPort();
      assert.equal(await warden.stop(), 0, `attempt ${attempt}`);
    }
  });
});

describe("stop", () => {
  test("SIGTERM answers clients under test", async () => {
    const warden = PostwardenProcess.start({
      args: [
        "--config",
        "/dev/null",
        "--listen",
        "127.0.0.1:0",
        "--greet-wait",
        "30s",
        ...commonArgs(),
      ],
    });
    const port = await warden.listeningPort();
    const clients = await Promise.all([
      SmtpClient.open(port),
      SmtpClient.open(port),
    ]);
    for (const client of clients) {
      assert.equal(
        await client.readLine(),
        "220-warden.example.com ESMTP Postfix",
      );
    }
    const stoppedAt = Date.now();
    assert.equal(await warden.stop(), 0);
    assert.ok(Date.now() - stoppedAt < 5000, "stop took 5 s or more");
    for (const client of clients) {
      assert.equal(
        await client.readLine(),
        "421 4.3.2 Service currently unavailable",
      );
      await client.waitForEnd();
    }
    assert.equal(warden.grep(/DISCONNECT /).length, 2);
    // The listener is closed: new connections are refused.
    await assert.rejects(
      new Promise((resolve, reject) => {
        const socket = connect({ port, host: "127.0.0.1" });
        socket.once("connect", () => resolve(socket.destroy()));
        socket.once("error", reject);
      }),
      /ECONNREFUSED/,
    );
  });

  test("SIGTERM keeps handed-off sessions", async () => {
    const warden = PostwardenProcess.start({
      args: [
        "--config",
        "/dev/null",
        "--listen",
        "127.0.0.1:0",
        "--greet-wait",
        "1s",
        ...commonArgs(),
      ],
    });
    const port = await warden.listeningPort();
    const client = await SmtpClient.open(port);
    assert.equal(
      (await client.readReply()).at(-1),
      "220 pass-test.localdomain ESMTP Postfix",
    );
    assert.equal(await warden.stop(), 0);
    // smtpd owns the session; postwarden's exit does not end it.
    assert.match(
      (await client.command("EHLO client.example.org"))[0] ?? "",
      /^250-/,
    );
    assert.match((await client.command("QUIT"))[0] ?? "", /^221 /);
    await client.waitForEnd();
  });
});

describe("address families", () => {
  test("IPv6 client refused for ipv4 smtpd", async () => {
    const lines: string[] = [];
    const logger: Logger = {
      info: (message) => lines.push(message),
      warning: (message) => lines.push("warning: " + message),
      error: (message) => lines.push("error: " + message),
    };
    const config = buildConfig([
      { name: "listen", value: "[::1]:0", origin: { file: "test", line: 1 } },
      {
        name: "queue_directory",
        value: postfix.queueDirectory,
        origin: { file: "test", line: 2 },
      },
    ]);
    const server = new Server(config, loadAddon(), logger, {
      ipv4: true,
      ipv6: false,
    });
    server.start();
    try {
      const port = Number(/\]:(\d+)$/.exec(lines[0] ?? "")?.[1]);
      const client = await SmtpClient.open(port, "::1");
      assert.equal(
        await client.readLine(),
        "421 4.3.2 Service currently unavailable",
      );
      await client.waitForEnd();
      assert.ok(
        lines.some((line) =>
          /^warning: cannot hand off \[::1\]:\d+: Postfix inet_protocols .* does not include ipv6$/.test(
            line,
          ),
        ),
      );
      assert.equal(
        postfix.log().includes("[::1]"),
        false,
        "smtpd saw the IPv6 client",
      );
    } finally {
      await server.stop();
    }
  });
});
