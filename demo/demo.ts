// The demo: a private Postfix instance on loopback, postwarden in front of
// it, one patient client (swaks) whose message is delivered, and one bot
// that talks before the greeting and is refused. Prints the log lines of
// both and stops everything. Exits non-zero if either outcome is wrong.
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { PostfixInstance } from "../test/support/postfix.js";
import { PostwardenProcess } from "../test/support/postwarden.js";
import { SmtpClient } from "../test/support/smtp-client.js";

const run = promisify(execFile);

function heading(text: string): void {
  process.stdout.write(`\n== ${text}\n`);
}

async function main(): Promise<boolean> {
  heading("starting a private Postfix instance (smtpd as a pass service)");
  const postfix = PostfixInstance.create();
  await postfix.start();
  process.stdout.write(`Postfix config: ${postfix.configDirectory}\n`);

  const dataDirectory = mkdtempSync(join(tmpdir(), "postwarden-demo-"));
  // postwarden starts as root, binds its port, then switches to the user
  // postfix, which may write to the private/ pass socket.
  const warden = PostwardenProcess.start({
    dataDirectory,
    asRoot: false,
    args: [
      "-o",
      "user=postfix",
      "--config",
      "/dev/null",
      "--listen",
      "127.0.0.1:0",
      "--queue-directory",
      postfix.queueDirectory,
      "--postfix-config-directory",
      postfix.configDirectory,
      "--greet-wait",
      "2s",
      "--greet-action",
      "drop",
      "-o",
      "myhostname=mx.demo.example",
      "-o",
      "access_list=",
    ],
  });
  const outcome = { delivered: false, refused: false };
  try {
    const port = await warden.listeningPort();
    process.stdout.write(`postwarden listens on 127.0.0.1:${port}\n`);

    heading("a patient client (swaks) sends a message");
    const swaks = await run(
      "swaks",
      [
        "--server",
        `127.0.0.1:${port}`,
        "--from",
        "alice@example.org",
        "--to",
        "bob@example.net",
        "--helo",
        "client.example.org",
        "--timeout",
        "20",
      ],
      { timeout: 30_000 },
    );
    const transcript = swaks.stdout
      .split("\n")
      .filter(
        (line) =>
          /^(<-|<~|\*\*\*)/.test(line) ||
          / -> (EHLO|MAIL|RCPT|DATA|QUIT)/.test(line),
      );
    process.stdout.write(transcript.join("\n") + "\n");

    heading("a bot talks before the greeting");
    // Another host: the patient client passed, and its address is now known.
    const bot = await SmtpClient.open(port, "127.0.0.1", "127.0.0.66");
    process.stdout.write(`<- ${await bot.readLine()}\n`);
    bot.send("EHLO bot.example.com\r\n");
    process.stdout.write(
      " -> EHLO bot.example.com   (sent before the final 220 line)\n",
    );
    const reply = await bot.readLine();
    process.stdout.write(`<- ${reply}\n`);
    await bot.waitForEnd();
    outcome.refused = reply === "521 5.5.1 Protocol error";

    const line = await postfix.waitForLog(
      /discard\[\d+\]: .*to=<bob@example\.net>.*status=sent/,
    );
    outcome.delivered = line !== "";
    await warden.waitForLog(/DISCONNECT /);
  } finally {
    await warden.stop();
    heading("postwarden log");
    process.stdout.write(warden.lines.join("\n") + "\n");
    heading("Postfix maillog");
    process.stdout.write(postfix.log());
    await postfix.destroy();
    rmSync(dataDirectory, { recursive: true, force: true });
  }

  heading("result");
  process.stdout.write(
    `message from the patient client delivered: ${outcome.delivered ? "yes" : "NO"}\n`,
  );
  process.stdout.write(
    `pregreeting bot refused with 521: ${outcome.refused ? "yes" : "NO"}\n`,
  );
  return outcome.delivered && outcome.refused;
}

main().then(
  (ok) => process.exit(ok ? 0 : 1),
  (error: unknown) => {
    process.stderr.write(
      `demo failed: ${error instanceof Error ? error.message : String(error)}\n`,
    );
    process.exit(1);
  },
);
