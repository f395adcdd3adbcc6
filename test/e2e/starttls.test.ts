// STARTTLS in the dummy engine, with a certificate the test makes: swaks
// completes a TLS dialogue up to the 450, and plaintext sent after the
// STARTTLS command is discarded instead of run inside TLS.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { connect as connectTcp } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as connectTls } from "node:tls";
import { promisify } from "node:util";
import { PostfixInstance } from "../support/postfix.js";
import { PostwardenProcess } from "../support/postwarden.js";
import { requireRootAndPostfix } from "../support/requirements.js";

requireRootAndPostfix();
const run = promisify(execFile);

let postfix: PostfixInstance;
let cert = "";
let key = "";

before(async () => {
  postfix = PostfixInstance.create();
  await postfix.start();
  const directory = mkdtempSync(join(tmpdir(), "postwarden-tls-"));
  cert = join(directory, "cert.pem");
  key = join(directory, "key.pem");
  await run(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-keyout",
      key,
      "-out",
      cert,
      "-subj",
      "/CN=warden.example.com",
      "-days",
      "1",
    ],
    {
      timeout: 30_000,
    },
  );
});

after(async () => {
  await postfix?.destroy();
});

function startPostwarden(): PostwardenProcess {
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
      "-o",
      "bare_newline_enable=yes",
      "-o",
      `tls_cert_file=${cert}`,
      "-o",
      `postscreen_tls_key_file=${key}`,
    ],
  });
}

test("swaks completes TLS dialogue", async () => {
  const warden = startPostwarden();
  try {
    const port = await warden.listeningPort();
    let output = "";
    try {
      const result = await run(
        "swaks",
        [
          "--server",
          `127.0.0.1:${port}`,
          "--tls",
          "--from",
          "a@example.org",
          "--to",
          "b@example.net",
          "--helo",
          "c.example.org",
          "--timeout",
          "20",
        ],
        {
          timeout: 30_000,
        },
      );
      output = result.stdout;
    } catch (error) {
      // swaks exits non-zero on the 450 it is meant to get.
      output = (error as { stdout?: string }).stdout ?? "";
    }
    assert.match(output, /<- {2}250-STARTTLS/);
    assert.match(output, /<- {2}220 2\.0\.0 Ready to start TLS/);
    assert.match(output, /<~\* 450 4\.3\.2 Service currently unavailable/);
    await warden.waitForLog(
      /NOQUEUE: reject: RCPT from \[127\.0\.0\.1\]:\d+: 450 4\.3\.2 Service currently unavailable; from=<a@example\.org>, to=<b@example\.net>, proto=ESMTP, helo=<c\.example\.org>$/,
    );
  } finally {
    assert.equal(await warden.stop(), 0);
  }
});

test("plaintext after STARTTLS discarded", async () => {
  const warden = startPostwarden();
  try {
    const port = await warden.listeningPort();
    const plain = connectTcp({ port, host: "127.0.0.1" });
    plain.setEncoding("latin1");
    let received = "";
    const waitFor = async (pattern: RegExp): Promise<void> => {
      const deadline = Date.now() + 10_000;
      while (!pattern.test(received)) {
        assert.ok(
          Date.now() < deadline,
          `timed out waiting for ${String(pattern)}: ${JSON.stringify(received)}`,
        );
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    };
    const onPlain = (chunk: string): void => {
      received += chunk;
    };
    plain.on("data", onPlain);
    await waitFor(/220 warden\.example\.com ESMTP Postfix\r\n$/);
    plain.write("EHLO x.example\r\n");
    await waitFor(/250 CHUNKING\r\n$/);
    // The injected MAIL must not run after the handshake.
    plain.write("STARTTLS\r\nMAIL FROM:<injected@example.com>\r\n");
    await waitFor(/220 2\.0\.0 Ready to start TLS\r\n$/);
    plain.removeListener("data", onPlain);

    received = "";
    const secure = connectTls({ socket: plain, rejectUnauthorized: false });
    secure.setEncoding("latin1");
    secure.on("data", (chunk: string) => {
      received += chunk;
    });
    await new Promise<void>((resolve, reject) => {
      secure.once("secureConnect", resolve);
      secure.once("error", reject);
    });
    secure.write("EHLO y.example\r\n");
    await waitFor(/250 CHUNKING\r\n$/);
    assert.doesNotMatch(received, /STARTTLS/);
    received = "";
    secure.write("RCPT TO:<b@example.net>\r\n");
    await waitFor(/\r\n$/);
    assert.equal(received, "503 5.5.1 Error: need MAIL command\r\n");
    secure.destroy();
  } finally {
    assert.equal(await warden.stop(), 0);
  }
});
