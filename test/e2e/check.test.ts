// `postwarden check` against private Postfix instances, one per mistake on
// the Postfix side, and a clean one that must pass.
import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { packageRoot } from "../../src/native.js";
import { connectProblem } from "../../src/check/access.js";
import { PostfixInstance } from "../support/postfix.js";
import { ROOT_OPTIONS } from "../support/postwarden.js";
import { requireRootAndPostfix } from "../support/requirements.js";

requireRootAndPostfix();
const run = promisify(execFile);

const instances: PostfixInstance[] = [];

after(async () => {
  for (const instance of instances) await instance.destroy();
});

async function startPostfix(
  extra: Record<string, string> = {},
  masterLines: string[] = [],
  editMaster?: (text: string) => string,
): Promise<PostfixInstance> {
  const postfix = PostfixInstance.create(extra, masterLines);
  instances.push(postfix);
  if (editMaster !== undefined) {
    const path = join(postfix.configDirectory, "master.cf");
    writeFileSync(path, editMaster(readFileSync(path, "utf8")));
  }
  await postfix.start();
  return postfix;
}

interface CheckResult {
  code: number;
  stdout: string;
  /** stderr lines after "postwarden: ", without the summary line. */
  problems: string[];
  summary: string;
}

async function check(
  postfix: PostfixInstance,
  ...extra: string[]
): Promise<CheckResult> {
  const cli = join(packageRoot(), "dist", "src", "cli.js");
  const args = [
    cli,
    "check",
    "--config",
    "/dev/null",
    "--listen",
    "127.0.0.1:25",
    "--queue-directory",
    postfix.queueDirectory,
    "--postfix-config-directory",
    postfix.configDirectory,
    // As root, check judges files and sockets as the configured user.
    ...ROOT_OPTIONS,
    ...extra,
  ];
  let output: { code: number; stdout: string; stderr: string };
  try {
    output = { code: 0, ...(await run("node", args, { timeout: 30_000 })) };
  } catch (error) {
    output = error as { code: number; stdout: string; stderr: string };
  }
  const { code, stdout, stderr } = output;
  const lines = stderr
    .split("\n")
    .filter((line) => line !== "")
    .map((line) => line.replace(/^postwarden: /, ""));
  return {
    code,
    stdout,
    problems: lines.filter((line) => !line.startsWith("check ")),
    summary: lines.find((line) => line.startsWith("check ")) ?? "",
  };
}

/** The 1-based number of the first line of `file` that matches. */
function lineOf(file: string, pattern: RegExp): number {
  const index = readFileSync(file, "utf8")
    .split("\n")
    .findIndex((line) => pattern.test(line));
  assert.ok(index >= 0, `no line matching ${String(pattern)} in ${file}`);
  return index + 1;
}

/** A master.cf edit that appends `option` to the smtpd pass service. */
function addToPassService(option: string): (text: string) => string {
  return (text) => text.replace(/^(smtpd +pass .*)$/m, `$1 ${option}`);
}

function mainCf(postfix: PostfixInstance): string {
  return join(postfix.configDirectory, "main.cf");
}

function masterCf(postfix: PostfixInstance): string {
  return join(postfix.configDirectory, "master.cf");
}

describe("postwarden check", () => {
  test("clean Postfix passes", async () => {
    const postfix = await startPostfix();
    const result = await check(postfix, "--listen", "127.0.0.1:25 [::1]:25");
    assert.deepEqual(result.problems, []);
    assert.equal(result.code, 0);
    assert.match(result.summary, /^check passed/);
    assert.match(result.stdout, /^smtpd_pass_socket = $/m);
  });

  test("run-time user that does not exist", async () => {
    const postfix = await startPostfix();
    const result = await check(postfix, "-o", "user=postwarden-no-such-user");
    assert.equal(result.code, 1);
    assert.equal(result.problems.length, 1, result.problems.join("\n"));
    assert.match(
      result.problems[0] ?? "",
      /^\/dev\/null: user: user postwarden-no-such-user not found/,
    );
  });

  test("missing pass service", async () => {
    const postfix = await startPostfix({}, [], (text) =>
      text.replace(/^smtpd +pass .*$/m, ""),
    );
    const result = await check(postfix);
    assert.equal(result.code, 1);
    assert.equal(result.problems.length, 2);
    assert.equal(
      result.problems[0],
      `${masterCf(postfix)}: no pass service for private/smtpd, where ` +
        'postwarden hands off clients: add "smtpd pass - - y - - smtpd" ' +
        "(keep the chroot column of your smtpd lines), then run " +
        '"postfix reload"',
    );
    assert.match(
      result.problems[1] ?? "",
      /\/spool\/private\/smtpd: pass socket private\/smtpd: not found/,
    );
    assert.match(result.summary, /^check failed: 2 problem/);
  });

  test("smtpd service of the wrong type", async () => {
    const postfix = await startPostfix({}, [], (text) =>
      text.replace(/^smtpd +pass /m, "smtpd      unix "),
    );
    const result = await check(postfix);
    const line = lineOf(masterCf(postfix), /^smtpd +unix /);
    assert.equal(result.code, 1);
    assert.match(
      result.problems[0] ?? "",
      new RegExp(
        `^${masterCf(postfix)}:${line}: "smtpd" is a service of type unix, ` +
          "but postwarden hands off to private/smtpd",
      ),
    );
  });

  test("pass socket without Postfix running", async () => {
    const postfix = await startPostfix();
    await postfix.stop();
    const result = await check(postfix);
    assert.equal(result.code, 1);
    assert.equal(result.problems.length, 1);
    assert.match(
      result.problems[0] ?? "",
      /^\S+\/spool\/private\/smtpd: pass socket private\/smtpd: (not found|connection refused)/,
    );
  });

  test("pass socket in another queue directory", async () => {
    const postfix = await startPostfix();
    const other = mkdtempSync(join(tmpdir(), "postwarden-queue-"));
    const result = await check(postfix, "--queue-directory", other);
    assert.equal(result.code, 1);
    assert.match(
      result.problems[0] ?? "",
      new RegExp(
        `^${mainCf(postfix)}:\\d+: Postfix's queue_directory is ` +
          `${postfix.queueDirectory}, but postwarden hands off to ` +
          `${other}/private/smtpd`,
      ),
    );
  });

  test("pass socket denied to the user", () => {
    // Root passes every permission check, so the rule is tested with
    // another identity on the real socket of a private directory.
    const directory = mkdtempSync(join(tmpdir(), "postwarden-perm-"));
    chmodSync(directory, 0o700);
    const nobody = { name: "nobody", uid: 65534, gids: [65534] };
    assert.match(
      connectProblem(join(directory, "socket"), nobody) ?? "",
      /nobody has no search permission on directory .*postwarden-perm-/,
    );
  });

  test("smtpd_delay_reject = no in main.cf", async () => {
    const postfix = await startPostfix({ smtpd_delay_reject: "no" });
    const result = await check(postfix);
    const line = lineOf(mainCf(postfix), /^smtpd_delay_reject = no$/);
    assert.equal(result.code, 1);
    assert.deepEqual(result.problems, [
      `${mainCf(postfix)}:${line}: smtpd_delay_reject = no (main.cf) for ` +
        "private/smtpd: smtpd would reject at connect time right after " +
        'postwarden\'s "220-" greeting line, which makes a malformed ' +
        "reply; set smtpd_delay_reject = yes for that service",
    ]);
  });

  test("smtpd_delay_reject = no as -o", async () => {
    // On a continuation line, as master.cf allows.
    const postfix = await startPostfix(
      {},
      [],
      addToPassService("\n  -o smtpd_delay_reject=no"),
    );
    const result = await check(postfix);
    const line = lineOf(masterCf(postfix), /^smtpd +pass /);
    assert.equal(result.code, 1);
    assert.equal(result.problems.length, 1);
    assert.match(
      result.problems[0] ?? "",
      new RegExp(
        `^${masterCf(postfix)}:${line}: smtpd_delay_reject = no ` +
          "\\(-o in master.cf\\) for private/smtpd",
      ),
    );
  });

  test("-o smtpd_delay_reject=yes overrides main.cf", async () => {
    const postfix = await startPostfix(
      { smtpd_delay_reject: "no" },
      [],
      addToPassService("-o { smtpd_delay_reject = yes }"),
    );
    const result = await check(postfix);
    assert.deepEqual(result.problems, []);
    assert.equal(result.code, 0);
  });

  test("upstream proxy protocol on the service", async () => {
    const postfix = await startPostfix(
      {},
      [],
      addToPassService("-o smtpd_upstream_proxy_protocol=haproxy"),
    );
    const result = await check(postfix);
    const line = lineOf(masterCf(postfix), /^smtpd +pass /);
    assert.equal(result.code, 1);
    assert.equal(result.problems.length, 1);
    assert.match(
      result.problems[0] ?? "",
      new RegExp(
        `^${masterCf(postfix)}:${line}: smtpd_upstream_proxy_protocol = ` +
          "haproxy \\(-o in master.cf\\) for private/smtpd: smtpd would " +
          "wait for a PROXY header",
      ),
    );
  });

  test("upstream proxy protocol in main.cf", async () => {
    const postfix = await startPostfix({
      smtpd_upstream_proxy_protocol: "haproxy",
    });
    const result = await check(postfix);
    const line = lineOf(mainCf(postfix), /^smtpd_upstream_proxy_protocol/);
    assert.equal(result.code, 1);
    assert.equal(result.problems.length, 1);
    assert.match(
      result.problems[0] ?? "",
      new RegExp(
        `^${mainCf(postfix)}:${line}: smtpd_upstream_proxy_protocol = ` +
          "haproxy \\(main.cf\\)",
      ),
    );
  });

  test("IPv6 listener with inet_protocols = ipv4", async () => {
    const postfix = await startPostfix({ inet_protocols: "ipv4" });
    const result = await check(postfix, "--listen", "127.0.0.1:25 [::1]:25");
    const line = lineOf(mainCf(postfix), /^inet_protocols = ipv4$/);
    assert.equal(result.code, 1);
    assert.deepEqual(result.problems, [
      `${mainCf(postfix)}:${line}: inet_protocols = ipv4 (main.cf) has no ` +
        "ipv6, but postwarden listens on [::1]:25: private/smtpd would " +
        "exit on IPv6 clients; add ipv6 to inet_protocols or remove the " +
        "IPv6 listen address",
    ]);
  });

  test("IPv4 listener with inet_protocols = ipv6", async () => {
    const postfix = await startPostfix({ inet_protocols: "ipv6" });
    const result = await check(postfix);
    assert.equal(result.code, 1);
    assert.equal(result.problems.length, 1);
    assert.match(
      result.problems[0] ?? "",
      /inet_protocols = ipv6 \(main.cf\) has no ipv4, but postwarden listens on 127\.0\.0\.1:25/,
    );
  });

  test("unreadable access table", async () => {
    // The configuration fails first, so Postfix need not run.
    const postfix = PostfixInstance.create();
    instances.push(postfix);
    const table = join(postfix.root, "missing.cidr");
    const result = await check(postfix, "-o", `access_list=cidr:${table}`);
    assert.equal(result.code, 1);
    assert.match(
      result.problems[0] ?? "",
      new RegExp(`${table}: cannot read file`),
    );
    assert.match(result.problems[1] ?? "", /Postfix side was not checked/);
  });
});
