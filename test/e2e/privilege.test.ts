// End to end: postwarden starts as root, binds its listener, switches to
// the existing user nobody with the supplementary group postdrop, and
// still hands clients to a private Postfix through a public/ pass service.
// No system user is created: nobody, nogroup and postdrop exist on Debian
// 12 once the postfix package is installed.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import {
  chmodSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PostfixInstance } from "../support/postfix.js";
import { PostwardenProcess } from "../support/postwarden.js";
import { statusIds } from "../../src/privilege.js";
import { SmtpClient } from "../support/smtp-client.js";
import { requireRootAndPostfix } from "../support/requirements.js";

requireRootAndPostfix();

/** The pass service that postwarden reaches through the public/ directory. */
const PUBLIC_SERVICE = "pwpublic";

/** Returns the fields of a getent entry, or undefined when there is none. */
function getent(database: string, key: string): string[] | undefined {
  try {
    return execFileSync("getent", [database, key], { encoding: "utf8" })
      .trim()
      .split(":");
  } catch {
    return undefined;
  }
}

function idOf(database: "passwd" | "group", name: string): number {
  const fields = getent(database, name);
  assert.ok(fields !== undefined, `${database} entry ${name} must exist`);
  return Number(fields[2]);
}

const nobodyUid = idOf("passwd", "nobody");
const nobodyGid = Number(getent("passwd", "nobody")?.[3]);
const postdropGid = idOf("group", "postdrop");
const postfixUid = idOf("passwd", "postfix");

let postfix: PostfixInstance;
let publicSocket: string;

before(async () => {
  postfix = PostfixInstance.create({}, [
    `${PUBLIC_SERVICE} pass n - n - - smtpd -o syslog_name=postfix/public`,
  ]);
  await postfix.start();
  publicSocket = join(postfix.queueDirectory, "public", PUBLIC_SERVICE);
});

after(async () => {
  await postfix.destroy();
});

/** Ids listed on one line of /proc/PID/status, such as "Uid". */
function idsOf(pid: number, field: string, task?: string): number[] {
  const path =
    task === undefined
      ? `/proc/${pid}/status`
      : `/proc/${pid}/task/${task}/status`;
  const ids = statusIds(readFileSync(path, "utf8"), field);
  assert.ok(ids !== undefined, `${path} has no ${field} line`);
  return ids;
}

function statusLine(pid: number, field: string): string {
  return (
    readFileSync(`/proc/${pid}/status`, "utf8")
      .split("\n")
      .find((text) => text.startsWith(`${field}:`)) ?? ""
  );
}

/**
 * Returns the owner uid that /proc/PID/net/tcp shows for the socket
 * listening on 127.0.0.1:PORT. The kernel records the uid that created
 * the socket, so 0 means it was bound before the switch.
 */
function listenerOwner(pid: number, port: number): number | undefined {
  const localAddress = `0100007F:${port.toString(16).toUpperCase().padStart(4, "0")}`;
  for (const line of readFileSync(`/proc/${pid}/net/tcp`, "utf8").split("\n")) {
    const fields = line.trim().split(/\s+/);
    if (fields[1] === localAddress && fields[3] === "0A") {
      return Number(fields[7]);
    }
  }
  return undefined;
}

/** Finds a free port below 1024 on 127.0.0.1, which only root may bind. */
async function freePrivilegedPort(): Promise<number> {
  for (let port = 1023; port > 600; port--) {
    const free = await new Promise<boolean>((resolve) => {
      const server = createServer();
      server.once("error", () => resolve(false));
      server.listen(port, "127.0.0.1", () => {
        server.close(() => resolve(true));
      });
    });
    if (free) return port;
  }
  throw new Error("no free port between 601 and 1023 on 127.0.0.1");
}

function baseArgs(port = 0): string[] {
  return [
    "--config",
    "/dev/null",
    "--listen",
    `127.0.0.1:${port}`,
    "--postfix-config-directory",
    postfix.configDirectory,
    "--greet-wait",
    "1s",
    "-o",
    "access_list=",
    "-o",
    "myhostname=warden.example.com",
  ];
}

/** Starts postwarden without the test default of staying root. */
function startUnprivileged(...args: string[]): PostwardenProcess {
  return PostwardenProcess.start({ asRoot: false, args });
}

/**
 * Starts postwarden as nobody, not root. It fails before it opens the data
 * directory, so the shared /tmp serves as one.
 */
function startAsNobody(...args: string[]): PostwardenProcess {
  return PostwardenProcess.start({
    asRoot: false,
    wrapper: ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"],
    dataDirectory: tmpdir(),
    args,
  });
}

/** Waits for a process that must fail at start-up; returns its log. */
async function expectStartupFailure(warden: PostwardenProcess) {
  const code = await warden.waitForExit();
  assert.equal(code, 1, warden.lines.join("\n"));
  assert.deepEqual(warden.grep(/listening on/), []);
  return warden.lines.join("\n");
}

describe("privilege switch", () => {
  test("public/ directory mode in the instance", () => {
    const info = statSync(join(postfix.queueDirectory, "public"));
    // Postfix makes public/ owned by mail_owner, group setgid_group, and
    // searchable by that group only.
    assert.equal(info.mode & 0o777, 0o710);
    assert.equal(info.uid, postfixUid);
    assert.equal(info.gid, postdropGid);
    assert.ok(statSync(publicSocket).isSocket());
  });

  test("nobody with postdrop hands off via public/", async () => {
    const port = await freePrivilegedPort();
    const warden = startUnprivileged(
      ...baseArgs(port),
      "-o",
      "user=nobody",
      "-o",
      "supplementary_groups=postdrop",
      "--smtpd-pass-socket",
      publicSocket,
    );
    try {
      assert.equal(await warden.listeningPort(), port);
      await warden.waitForLog(/postwarden started/);
      const pid = warden.pid;

      assert.deepEqual(idsOf(pid, "Uid"), Array(4).fill(nobodyUid));
      assert.deepEqual(idsOf(pid, "Gid"), Array(4).fill(nobodyGid));
      assert.deepEqual(
        idsOf(pid, "Groups").sort((a, b) => a - b),
        [nobodyGid, postdropGid].sort((a, b) => a - b),
      );
      assert.match(statusLine(pid, "CapEff"), /^CapEff:\s+0+$/);
      assert.match(statusLine(pid, "CapPrm"), /^CapPrm:\s+0+$/);
      // Every thread, libuv's pool included, runs as nobody.
      const tasks = readdirSync(`/proc/${pid}/task`);
      assert.ok(tasks.length > 1, "node runs more than one thread");
      for (const task of tasks) {
        assert.deepEqual(idsOf(pid, "Uid", task), Array(4).fill(nobodyUid));
      }

      // The listener was bound by root, before the switch.
      assert.equal(listenerOwner(pid, port), 0);
      const listening = warden.lines.findIndex((line) =>
        line.includes("listening on"),
      );
      const switched = warden.lines.findIndex((line) =>
        line.includes("switched to user nobody"),
      );
      assert.ok(
        listening >= 0 && switched > listening,
        warden.lines.join("\n"),
      );

      const dataInfo = statSync(warden.dataDirectory);
      assert.equal(dataInfo.uid, nobodyUid);
      assert.equal(dataInfo.gid, nobodyGid);
      const store = statSync(join(warden.dataDirectory, "verdict_cache.lmdb"));
      assert.equal(store.uid, nobodyUid);

      const client = await SmtpClient.open(port);
      assert.deepEqual(await client.readReply(), [
        "220-warden.example.com ESMTP Postfix",
        "220 pass-test.localdomain ESMTP Postfix",
      ]);
      assert.match((await client.command("EHLO a.example"))[0] ?? "", /^250-/);
      assert.match((await client.command("QUIT"))[0] ?? "", /^221 /);
      await client.waitForEnd();
      await warden.waitForLog(
        new RegExp(`PASS NEW \\[127\\.0\\.0\\.1\\]:${client.localPort}$`),
      );
      await postfix.waitForLog(
        new RegExp(
          `postfix/public/smtpd\\[\\d+\\]: connect from ` +
            `unknown\\[127\\.0\\.0\\.1\\]:${client.localPort}`,
        ),
      );
      assert.deepEqual(warden.grep(/warning|error|fatal/), []);
      assert.equal(await warden.stop(), 0);
    } finally {
      if (!warden.exited) await warden.stop();
    }
  });

  test("nobody without postdrop warns", async () => {
    const warden = startUnprivileged(
      ...baseArgs(),
      "-o",
      "user=nobody",
      "--smtpd-pass-socket",
      publicSocket,
    );
    try {
      const line = await warden.waitForLog(/smtpd pass socket/);
      assert.match(line, /permission denied for user nobody/);
      assert.match(line, /group postdrop/);
    } finally {
      await warden.stop();
    }
  });

  test("missing user is a start-up error", async () => {
    const missing = "postwarden-missing-test-user";
    assert.equal(getent("passwd", missing), undefined);
    const warden = startUnprivileged(...baseArgs(), "-o", `user=${missing}`);
    const log = await expectStartupFailure(warden);
    assert.match(log, new RegExp(`fatal: user: user ${missing} not found`));
  });

  test("invalid user name is rejected", async () => {
    const warden = startUnprivileged(...baseArgs(), "-o", "user=post:warden");
    const log = await expectStartupFailure(warden);
    assert.match(log, /invalid configuration/);
    assert.match(log, /invalid user or group "post:warden"/);
  });

  test("missing group is a start-up error", async () => {
    const missing = "postwarden-missing-test-group";
    assert.equal(getent("group", missing), undefined);
    const warden = startUnprivileged(
      ...baseArgs(),
      "-o",
      "user=nobody",
      "-o",
      `supplementary_groups=postdrop ${missing}`,
    );
    const log = await expectStartupFailure(warden);
    assert.match(
      log,
      new RegExp(`supplementary_groups: group ${missing} not found`),
    );
  });

  test("root rejected without allow_root", async () => {
    const warden = startUnprivileged(...baseArgs(), "-o", "user=root");
    const log = await expectStartupFailure(warden);
    assert.match(log, /user: root is root/);
    assert.match(log, /set allow_root = yes/);
  });

  test("root kept with allow_root", async () => {
    const warden = startUnprivileged(
      ...baseArgs(),
      "-o",
      "user=root",
      "-o",
      "allow_root=yes",
    );
    try {
      await warden.waitForLog(/postwarden started/);
      assert.equal(warden.grep(/warning: running as root/).length, 1);
      assert.deepEqual(idsOf(warden.pid, "Uid"), [0, 0, 0, 0]);
      assert.equal(await warden.stop(), 0);
    } finally {
      if (!warden.exited) await warden.stop();
    }
  });

  test("unreadable files are named", async () => {
    // A 0700 directory hides the configuration file from nobody, and a
    // 0600 table in a readable directory is unreadable by itself.
    const hidden = mkdtempSync(join(tmpdir(), "postwarden-hidden-"));
    const open = mkdtempSync(join(tmpdir(), "postwarden-open-"));
    chmodSync(open, 0o755);
    const configFile = join(hidden, "main.cf");
    const table = join(open, "access.cidr");
    writeFileSync(configFile, "greet_action = drop\n", { mode: 0o644 });
    writeFileSync(table, "192.0.2.0/24 reject\n", { mode: 0o600 });
    try {
      const warden = startUnprivileged(
        ...baseArgs(),
        "--config",
        configFile,
        "-o",
        "user=nobody",
        "-o",
        `access_list=cidr:${table}`,
      );
      const code = await warden.waitForExit();
      const log = warden.lines.join("\n");
      assert.equal(code, 1, log);
      assert.match(
        log,
        new RegExp(
          `configuration file ${configFile} is not readable by user nobody`,
        ),
      );
      assert.match(
        log,
        new RegExp(`access_list ${table} is not readable by user nobody`),
      );
      assert.deepEqual(warden.grep(/postwarden started/), []);
    } finally {
      rmSync(hidden, { recursive: true, force: true });
      rmSync(open, { recursive: true, force: true });
    }
  });

  test("non-root start cannot bind port", async (context) => {
    const port = await freePrivilegedPort();
    const unprivilegedPortStart = Number(
      readFileSync("/proc/sys/net/ipv4/ip_unprivileged_port_start", "utf8"),
    );
    if (unprivilegedPortStart <= port) {
      context.skip(
        `net.ipv4.ip_unprivileged_port_start is ${unprivilegedPortStart}, ` +
          `so any user may bind port ${port}`,
      );
      return;
    }
    const warden = startAsNobody(...baseArgs(port), "-o", "user=nobody");
    const log = await expectStartupFailure(warden);
    assert.match(log, /bind EACCES/);
    assert.match(log, /Ports below 1024 need root/);
  });

  test("non-root start as another user fails", async () => {
    const warden = startAsNobody(...baseArgs(), "-o", "user=postfix");
    const log = await expectStartupFailure(warden);
    assert.match(log, /postwarden runs as user nobody/);
    assert.match(log, /Start it as root/);
  });
});
