// Syslog framing and facilities, and the syslog sink against real UNIX
// datagram sockets in a temporary directory (never the system's /dev/log).
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { createSocket, type UnixDgramSocket } from "unix-dgram";
import {
  facilityCode,
  formatSyslogMessage,
  syslogPriority,
} from "../../src/log/syslog-format.js";
import { SyslogLogger } from "../../src/log/syslog.js";
import { StreamLogger } from "../../src/log/logger.js";
import { LineWriter } from "../../src/log/writer.js";

const directory = mkdtempSync(join(tmpdir(), "postwarden-syslog-"));
after(() => rmSync(directory, { recursive: true, force: true }));
let socketCount = 0;

function socketPath(): string {
  return join(directory, `log${++socketCount}`);
}

/** Binds a datagram receiver at `path` that collects text messages. */
function receiver(path: string): {
  messages: string[];
  socket: UnixDgramSocket;
} {
  const messages: string[] = [];
  const socket = createSocket("unix_dgram", (data) => {
    messages.push(data.toString("utf8"));
  });
  socket.on("error", (error: Error) => {
    throw error;
  });
  socket.bind(path);
  return { messages, socket };
}

/** Returns a fallback logger that writes to `lines` in place of stderr. */
function capturedFallback(): { lines: string[]; fallback: StreamLogger } {
  const lines: string[] = [];
  const stream = new PassThrough();
  stream.setEncoding("utf8");
  stream.on("data", (chunk: string) => {
    lines.push(...chunk.split("\n").filter((line) => line !== ""));
  });
  const writer = new LineWriter(stream, () => "");
  return { lines, fallback: new StreamLogger("postfix/postwarden", writer) };
}

async function until(
  condition: () => boolean,
  what: string,
  timeoutMs = 5000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

test("frame matches glibc syslog()", () => {
  const date = new Date(2026, 11, 4, 5, 6, 7);
  assert.equal(
    formatSyslogMessage(
      2,
      "info",
      "postfix/postwarden",
      4242,
      "CONNECT from [192.0.2.10]:51234 to [198.51.100.25]:25",
      date,
    ),
    "<22>Dec  4 05:06:07 postfix/postwarden[4242]: " +
      "CONNECT from [192.0.2.10]:51234 to [198.51.100.25]:25",
  );
});

test("frame pads two-digit days", () => {
  const date = new Date(2026, 0, 17, 23, 59, 9);
  assert.equal(
    formatSyslogMessage(2, "info", "p", 1, "x", date),
    "<22>Jan 17 23:59:09 p[1]: x",
  );
});

test("frame prefixes warning and error", () => {
  const date = new Date(2026, 5, 1, 0, 0, 0);
  assert.equal(
    formatSyslogMessage(2, "warning", "p", 7, "slow", date),
    "<20>Jun  1 00:00:00 p[7]: warning: slow",
  );
  assert.equal(
    formatSyslogMessage(2, "error", "p", 7, "bad", date),
    "<19>Jun  1 00:00:00 p[7]: error: bad",
  );
});

test("facility names map to syslog.h codes", () => {
  assert.equal(facilityCode("mail"), 2);
  assert.equal(facilityCode("daemon"), 3);
  assert.equal(facilityCode("authpriv"), 10);
  assert.equal(facilityCode("local0"), 16);
  assert.equal(facilityCode("LOCAL7"), 23);
});

test("facility rejects unknown name", () => {
  assert.throws(
    () => facilityCode("mial"),
    /invalid syslog facility "mial": expected one of kern, user, mail/,
  );
});

test("priority combines facility and level", () => {
  assert.equal(syslogPriority(facilityCode("local0"), "info"), 134);
  assert.equal(syslogPriority(facilityCode("mail"), "warning"), 20);
  assert.equal(syslogPriority(facilityCode("kern"), "error"), 3);
});

test("syslog sink sends one datagram per line", async () => {
  const path = socketPath();
  const { messages, socket } = receiver(path);
  const { lines, fallback } = capturedFallback();
  const logger = new SyslogLogger({
    socketPath: path,
    facility: facilityCode("local3"),
    program: "postfix/postscreen",
    fallback,
  });
  try {
    logger.info("PASS NEW [192.0.2.10]:51234");
    logger.warning("dnsblog reply timeout");
    await until(() => messages.length === 2, "two datagrams");
    const pattern = (priority: number, text: string): RegExp =>
      new RegExp(
        `^<${priority}>[A-Z][a-z]{2} [ 1-3][0-9] \\d\\d:\\d\\d:\\d\\d ` +
          `postfix/postscreen\\[${process.pid}\\]: ${text}$`,
      );
    assert.match(
      messages[0] ?? "",
      pattern(158, "PASS NEW \\[192\\.0\\.2\\.10\\]:51234"),
    );
    assert.match(
      messages[1] ?? "",
      pattern(156, "warning: dnsblog reply timeout"),
    );
    assert.deepEqual(lines, []);
    assert.equal(logger.droppedLines, 0);
  } finally {
    logger.close();
    socket.close();
  }
});

test("missing socket falls back with one warning", async () => {
  const path = socketPath();
  const { lines, fallback } = capturedFallback();
  let now = 1_000_000;
  const logger = new SyslogLogger({
    socketPath: path,
    facility: 2,
    program: "postfix/postwarden",
    fallback,
    now: () => now,
  });
  try {
    logger.info("CONNECT from [192.0.2.1]:1 to [192.0.2.2]:25");
    logger.info("PASS NEW [192.0.2.1]:1");
    logger.error("something failed");
    await until(() => lines.length === 4, "four stderr lines");
    assert.match(
      lines[0] ?? "",
      new RegExp(
        `postfix/postwarden\\[${process.pid}\\]: warning: syslog socket ` +
          `${path}: connect failed: ENOENT; writing log lines to stderr`,
      ),
    );
    assert.match(lines[1] ?? "", /postfix\/postwarden\[\d+\]: CONNECT from /);
    assert.match(lines[2] ?? "", /: PASS NEW \[192\.0\.2\.1\]:1$/);
    assert.match(lines[3] ?? "", /: error: something failed$/);
    assert.equal(lines.filter((line) => /syslog socket/.test(line)).length, 1);
    assert.equal(logger.droppedLines, 3);

    // The socket appears; after the retry delay the next line reaches it,
    // followed by a line that reports the outage.
    const { messages, socket } = receiver(path);
    try {
      now += 60_000;
      logger.info("DISCONNECT [192.0.2.1]:1");
      await until(() => messages.length === 2, "two datagrams");
      assert.match(messages[0] ?? "", /: DISCONNECT \[192\.0\.2\.1\]:1$/);
      assert.match(
        messages[1] ?? "",
        /: syslog socket .* takes log lines again; 3 lines were written to stderr meanwhile$/,
      );
      assert.equal(logger.droppedLines, 3);
      assert.equal(lines.length, 4);
    } finally {
      socket.close();
    }
  } finally {
    logger.close();
  }
});

test("retry waits for the retry delay", async () => {
  const path = socketPath();
  const { lines, fallback } = capturedFallback();
  let now = 5_000_000;
  const logger = new SyslogLogger({
    socketPath: path,
    facility: 2,
    program: "p",
    fallback,
    now: () => now,
  });
  try {
    logger.info("first");
    // The socket now exists, but the retry delay (1 s) has not passed.
    const late = receiver(path);
    try {
      now += 500;
      logger.info("second");
      await until(() => lines.length === 3, "three stderr lines");
      assert.deepEqual(late.messages, []);
      now += 1000;
      logger.info("third");
      await until(() => late.messages.length >= 1, "a datagram");
      assert.match(late.messages[0] ?? "", /: third$/);
      assert.equal(logger.droppedLines, 2);
    } finally {
      late.socket.close();
    }
  } finally {
    logger.close();
  }
});

test("syslog sink reconnects after the reader restarts", async () => {
  const path = socketPath();
  const first = receiver(path);
  const { lines, fallback } = capturedFallback();
  const logger = new SyslogLogger({
    socketPath: path,
    facility: 2,
    program: "p",
    fallback,
  });
  try {
    logger.info("before");
    await until(() => first.messages.length === 1, "first datagram");
    first.socket.close();
    rmSync(path);
    const second = receiver(path);
    try {
      logger.info("after");
      await until(() => second.messages.length === 1, "second datagram");
      assert.match(second.messages[0] ?? "", /: after$/);
      assert.deepEqual(lines, []);
      assert.equal(logger.droppedLines, 0);
    } finally {
      second.socket.close();
    }
  } finally {
    logger.close();
  }
});

test("full socket diverts lines until writable", async (t) => {
  const path = socketPath();
  // The reader binds and reads nothing until a line arrives on its input,
  // so the socket's queue fills up. Then it drains the queue for two
  // seconds and stays bound until its input ends.
  const script = [
    "import socket, sys, time",
    "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)",
    "s.bind(sys.argv[1])",
    "print('ready', flush=True)",
    "sys.stdin.readline()",
    "s.settimeout(0.2)",
    "end = time.time() + 2",
    "count = 0",
    "while time.time() < end:",
    "    try:",
    "        s.recv(65536)",
    "        count += 1",
    "    except socket.timeout:",
    "        pass",
    "print(count, flush=True)",
    "sys.stdin.readline()",
  ].join("\n");
  const reader = spawn("python3", ["-c", script, path], {
    stdio: ["pipe", "pipe", "inherit"],
  });
  let output = "";
  reader.stdout.setEncoding("utf8");
  reader.stdout.on("data", (chunk: string) => (output += chunk));
  const { lines, fallback } = capturedFallback();
  const logger = new SyslogLogger({
    socketPath: path,
    facility: 2,
    program: "p",
    fallback,
  });
  try {
    await until(() => output.includes("ready"), "reader ready");
    // Bounded: the queue of an unread datagram socket takes far fewer.
    let sent = 0;
    while (logger.droppedLines === 0 && sent < 100_000) {
      logger.info(`line ${sent++}`);
    }
    assert.ok(logger.droppedLines > 0, `no congestion after ${sent} lines`);
    t.diagnostic(`the socket was full after ${sent - 1} datagrams`);
    logger.info("while full");
    assert.equal(logger.droppedLines, 2);
    await until(() => lines.length === 3, "warning and two lines");
    assert.match(
      lines[0] ?? "",
      /warning: syslog socket .*: the socket is full/,
    );
    assert.match(lines[2] ?? "", /: while full$/);

    reader.stdin.write("drain\n");
    await until(() => output.trim().split("\n").length === 2, "reader count");
    const received = Number(output.trim().split("\n")[1]);
    // The lines queued before the congestion, and the line that reports
    // the outage, sent when the socket became writable again.
    assert.equal(received, sent);
    // The outage is over; this line goes to the socket.
    logger.info("after drain");
    assert.equal(logger.droppedLines, 2);
    assert.equal(lines.length, 3);
  } finally {
    logger.close();
    reader.stdin.end();
  }
});
