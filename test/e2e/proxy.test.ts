// PROXY protocol listeners end to end: headers written by hand (v1, v2,
// LOCAL, malformed, late) and by a real haproxy when it is installed. The
// real client address from the header is what postwarden screens, logs
// and passes to smtpd.
import { after, before, describe, test } from "node:test";
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
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
const SMTPD = "220 pass-test.localdomain ESMTP Postfix";
const SIGNATURE = Buffer.from("0d0a0d0a000d0a515549540a", "hex");

function startPostwarden(...extra: string[]): PostwardenProcess {
  return PostwardenProcess.start({
    args: [
      "--config",
      "/dev/null",
      "--listen",
      "127.0.0.1:0/haproxy",
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
      "-o",
      "upstream_proxy_timeout=2s",
      ...extra,
    ],
  });
}

function v2Ipv6(source: string, sourcePort: number): Buffer {
  const body = Buffer.alloc(36);
  Buffer.from(source, "hex").copy(body, 0);
  Buffer.from("00000000000000000000000000000001", "hex").copy(body, 16);
  body.writeUInt16BE(sourcePort, 32);
  body.writeUInt16BE(25, 34);
  const header = Buffer.alloc(16);
  SIGNATURE.copy(header);
  header[12] = 0x21;
  header[13] = 0x21;
  header.writeUInt16BE(body.length, 14);
  return Buffer.concat([header, body]);
}

describe("PROXY protocol", () => {
  test("v1 header names the client", async () => {
    const warden = startPostwarden();
    try {
      const port = await warden.listeningPort();
      const client = await SmtpClient.open(port);
      // Header and a pregreet in one write: only the header is consumed.
      client.socket.write("PROXY TCP4 192.0.2.90 203.0.113.25 40090 25\r\n");
      assert.deepEqual(await client.readReply(), [TEASER, SMTPD]);
      assert.match(
        (await client.command("EHLO client.example.org"))[0] ?? "",
        /^250-/,
      );
      assert.match((await client.command("QUIT"))[0] ?? "", /^221 /);
      await warden.waitForLog(
        /CONNECT from \[192\.0\.2\.90\]:40090 to \[203\.0\.113\.25\]:25$/,
      );
      await warden.waitForLog(/PASS NEW \[192\.0\.2\.90\]:40090$/);
      await postfix.waitForLog(/connect from unknown\[192\.0\.2\.90\]:40090$/);
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("early bytes after header stay", async () => {
    const warden = startPostwarden("--greet-action", "ignore");
    try {
      const port = await warden.listeningPort();
      const client = await SmtpClient.open(port);
      client.socket.write(
        "PROXY TCP4 192.0.2.91 203.0.113.25 40091 25\r\nEHLO early.example\r\n",
      );
      assert.deepEqual(await client.readReply(), [TEASER, SMTPD]);
      // smtpd answers the EHLO that came right after the header.
      assert.equal((await client.readReply())[0], "250-pass-test.localdomain");
      await warden.waitForLog(
        /PREGREET 20 after [0-9.]+ from \[192\.0\.2\.91\]:40091: EHLO early\.example\\r\\n$/,
      );
      client.destroy();
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("v2 IPv6 header reaches smtpd", async () => {
    const warden = startPostwarden();
    try {
      const port = await warden.listeningPort();
      const client = await SmtpClient.open(port);
      client.socket.write(v2Ipv6("20010db8000500000000000000000009", 41000));
      assert.deepEqual(await client.readReply(), [TEASER, SMTPD]);
      assert.match((await client.command("QUIT"))[0] ?? "", /^221 /);
      await warden.waitForLog(
        /CONNECT from \[2001:db8:5::9\]:41000 to \[::1\]:25$/,
      );
      await postfix.waitForLog(/connect from unknown\[2001:db8:5::9\]:41000$/);
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("bad headers close without reply", async () => {
    const warden = startPostwarden();
    try {
      const port = await warden.listeningPort();
      const cases: [string | undefined, RegExp][] = [
        [
          "EHLO healthcheck\r\n",
          /warning: haproxy read: unrecognized protocol header: EHLO healthcheck\\r\\n \(from \[127\.0\.0\.1\]:\d+\)$/,
        ],
        [
          "PROXY TCP4 2001:db8::1 192.0.2.2 1 2\r\n",
          /warning: haproxy read: bad or mismatched address family in v1 header/,
        ],
        ["", /warning: haproxy read: EOF \(from/],
        [undefined, /warning: haproxy read: time limit exceeded \(from/],
      ];
      for (const [text, pattern] of cases) {
        const client = await SmtpClient.open(port);
        if (text !== undefined && text !== "") client.socket.write(text);
        if (text === "") client.socket.end();
        // Nothing is sent before a valid header.
        const received = await client.waitForEnd(5000);
        assert.equal(received, "", JSON.stringify(text));
        await warden.waitForLog(pattern);
      }
      assert.equal(warden.grep(/CONNECT from/).length, 0);
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("v2 LOCAL uses the connection", async () => {
    const warden = startPostwarden();
    try {
      const port = await warden.listeningPort();
      const client = await SmtpClient.open(port);
      const local = Buffer.alloc(16);
      SIGNATURE.copy(local);
      local[12] = 0x20;
      client.socket.write(local);
      assert.deepEqual(await client.readReply(), [TEASER, SMTPD]);
      client.destroy();
      await warden.waitForLog(
        /CONNECT from \[127\.0\.0\.1\]:\d+ to \[127\.0\.0\.1\]:\d+$/,
      );
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });
});

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port =
        typeof address === "object" && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

describe("behind a real haproxy", () => {
  for (const version of ["send-proxy", "send-proxy-v2"]) {
    test(`haproxy ${version}`, async () => {
      const warden = startPostwarden();
      const directory = mkdtempSync(join(tmpdir(), "postwarden-haproxy-"));
      try {
        const wardenPort = await warden.listeningPort();
        const frontPort = await freePort();
        const config = join(directory, "haproxy.cfg");
        writeFileSync(
          config,
          [
            "defaults",
            "  mode tcp",
            "  timeout connect 5s",
            "  timeout client 30s",
            "  timeout server 30s",
            "frontend smtp",
            `  bind 127.0.0.1:${frontPort}`,
            "  default_backend postwarden",
            "backend postwarden",
            `  server warden 127.0.0.1:${wardenPort} ${version}`,
            "",
          ].join("\n"),
        );
        const haproxy = spawn("haproxy", ["-f", config, "-db"], {
          stdio: "ignore",
        });
        try {
          // Wait until haproxy listens.
          let client: SmtpClient | undefined;
          const deadline = Date.now() + 10_000;
          while (client === undefined) {
            try {
              client = await SmtpClient.open(
                frontPort,
                "127.0.0.1",
                "127.0.7.7",
              );
            } catch (error) {
              if (Date.now() > deadline) throw error;
              await new Promise((resolve) => setTimeout(resolve, 100));
            }
          }
          assert.deepEqual(await client.readReply(), [TEASER, SMTPD]);
          assert.match((await client.command("QUIT"))[0] ?? "", /^221 /);
          const line = await warden.waitForLog(
            /CONNECT from \[127\.0\.7\.7\]:\d+ to /,
          );
          assert.match(
            line,
            new RegExp(`to \\[127\\.0\\.0\\.1\\]:${frontPort}$`),
          );
          await postfix.waitForLog(
            new RegExp(
              `connect from unknown\\[127\\.0\\.7\\.7\\]:${client.localPort}$`,
            ),
          );
        } finally {
          haproxy.kill("SIGTERM");
        }
      } finally {
        assert.equal(await warden.stop(), 0);
      }
    });
  }
});
