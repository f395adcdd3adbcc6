// Varied client addresses end to end. On loopback a client can only come
// from ::1 or 127.0.0.0/8, so here rbldnsd, postwarden and the clients run
// in a private network namespace where clients may bind any source address
// in 2001:db8::/32 or 127.0.0.0/8. The private Postfix stays in the root
// namespace: postwarden reaches its pass socket through the file system,
// and smtpd logs the client address of the socket that it receives.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { packageRoot } from "../../src/native.js";
import { NetworkNamespace } from "../support/netns.js";
import {
  runClientInNamespace,
  type ClientResult,
  type ClientStep,
} from "../support/netns-client.js";
import { PostfixInstance } from "../support/postfix.js";
import { PostwardenProcess } from "../support/postwarden.js";
import { Rbldnsd } from "../support/rbldnsd.js";
import { requireRootAndPostfix } from "../support/requirements.js";

requireRootAndPostfix();

const run = promisify(execFile);

const SOA = "$SOA 300 ns.test. admin.test. 1 600 300 86400 120";
const TEASER = "220-warden.example.com ESMTP Postfix";
const SMTPD_GREETING = "220 pass-test.localdomain ESMTP Postfix";
// Covers a 1 s greet wait, the DNS queries and the hand-off.
const EXCHANGE_TIMEOUT_MS = 15_000;
const HOOK_TIMEOUT_MS = 60_000;

let namespace: NetworkNamespace | undefined;
let postfix: PostfixInstance | undefined;
let rbldnsd: Rbldnsd | undefined;

before(
  async () => {
    namespace = await NetworkNamespace.create();
    postfix = PostfixInstance.create();
    await postfix.start();
    rbldnsd = await Rbldnsd.start(
      [
        {
          // ::ffff:7f00:2 is the RFC 5782 IPv6 test point that a healthy
          // list includes.
          name: "v6.test",
          type: "ip6trie",
          lines: [SOA, ":127.0.0.2:", "::ffff:7f00:2", "2001:db8:1::/48"],
        },
        {
          name: "bl.test",
          type: "ip4set",
          lines: [SOA, ":127.0.0.2:", "127.0.0.2", "127.0.0.20"],
        },
      ],
      { wrapper: namespace.wrapper() },
    );
  },
  { timeout: HOOK_TIMEOUT_MS },
);

after(
  async () => {
    // Every step runs even when an earlier one fails. The namespace goes
    // last, once no process of ours runs inside it.
    const errors: unknown[] = [];
    for (const step of [
      () => rbldnsd?.stop(),
      () => postfix?.destroy(),
      () => namespace?.destroy(),
    ]) {
      try {
        await step();
      } catch (error) {
        errors.push(error);
      }
    }
    if (errors.length > 0) {
      throw new AggregateError(errors, "cleanup after netns tests failed");
    }
  },
  { timeout: HOOK_TIMEOUT_MS },
);

function requireSetUp(): {
  namespace: NetworkNamespace;
  postfix: PostfixInstance;
  rbldnsd: Rbldnsd;
} {
  assert.ok(namespace, "before() did not create the namespace");
  assert.ok(postfix, "before() did not start Postfix");
  assert.ok(rbldnsd, "before() did not start rbldnsd");
  return { namespace, postfix, rbldnsd };
}

/** Starts postwarden inside the namespace with both test lists. */
function startPostwarden(listen: string): PostwardenProcess {
  const { namespace, postfix, rbldnsd } = requireSetUp();
  return PostwardenProcess.start({
    wrapper: namespace.wrapper(),
    args: [
      "--config",
      "/dev/null",
      "--listen",
      listen,
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
      `dns_servers=${rbldnsd.server}`,
      "-o",
      "dnsbl_sites=v6.test bl.test",
      "-o",
      "dnsbl_action=drop",
    ],
  });
}

/** Waits for the first listener and checks that the wrapper kept the PID. */
async function listeningPort(warden: PostwardenProcess): Promise<number> {
  const port = await warden.listeningPort();
  await warden.waitForLog(
    new RegExp(`postwarden\\[${warden.pid}\\]: listening on `),
  );
  return port;
}

function escape(text: string): string {
  return text.replace(/[[\].*+?^$()|{}\\]/g, "\\$&");
}

function serverHost(source: string): string {
  return source.includes(":") ? "::1" : "127.0.0.1";
}

function connectFrom(
  source: string,
  port: number,
  steps: ClientStep[],
): Promise<ClientResult> {
  const { namespace } = requireSetUp();
  return runClientInNamespace(namespace, {
    host: serverHost(source),
    port,
    localAddress: source,
    steps,
    timeoutMs: EXCHANGE_TIMEOUT_MS,
  });
}

/**
 * Connects from `source`, expects the DNS list reply and the close, and
 * checks postwarden's log. Returns the client's port.
 */
async function expectBlocked(
  warden: PostwardenProcess,
  port: number,
  source: string,
  listName: string,
): Promise<number> {
  const result = await connectFrom(source, port, [
    { read: "reply" },
    { expectEnd: true },
  ]);
  assert.deepEqual(result.lines, [
    TEASER,
    `521 5.7.1 Service unavailable; client [${source}] blocked using ${listName}`,
  ]);
  assert.equal(result.closed, true, "server did not close the connection");

  const label = escape(`[${source}]:${result.localPort}`);
  const server = escape(`[${serverHost(source)}]:${port}`);
  await warden.waitForLog(new RegExp(`CONNECT from ${label} to ${server}$`));
  await warden.waitForLog(new RegExp(`DNSBL rank 1 for ${label}$`));
  await warden.waitForLog(new RegExp(`DISCONNECT ${label}$`));
  return result.localPort;
}

/**
 * Connects from `source`, expects smtpd's greeting after the teaser, quits,
 * and checks both logs. Returns the client's port.
 */
async function expectHandedOff(
  warden: PostwardenProcess,
  port: number,
  source: string,
): Promise<number> {
  const { postfix } = requireSetUp();
  const result = await connectFrom(source, port, [
    { read: "reply" },
    { send: "QUIT\r\n" },
    { read: "reply" },
    { expectEnd: true },
  ]);
  assert.equal(result.lines.length, 3, JSON.stringify(result.lines));
  assert.equal(result.lines[0], TEASER);
  assert.equal(result.lines[1], SMTPD_GREETING);
  assert.match(result.lines[2] ?? "", /^221 /);
  assert.equal(result.closed, true, "server did not close the connection");

  const label = escape(`[${source}]:${result.localPort}`);
  const server = escape(`[${serverHost(source)}]:${port}`);
  await warden.waitForLog(new RegExp(`CONNECT from ${label} to ${server}$`));
  await warden.waitForLog(new RegExp(`PASS NEW ${label}$`));
  await postfix.waitForLog(
    new RegExp(
      `connect from unknown${escape(`[${source}]`)}:${result.localPort}$`,
    ),
  );
  return result.localPort;
}

/**
 * Asserts that smtpd never logged `source`. Call it after a later client's
 * connection is in the maillog, so that the log is known to be current.
 */
function assertNeverReachedSmtpd(source: string): void {
  const { postfix } = requireSetUp();
  assert.doesNotMatch(
    postfix.log(),
    new RegExp(escape(`[${source}]`)),
    `smtpd saw the listed client ${source}`,
  );
}

describe("IPv6 clients in a namespace", () => {
  let warden: PostwardenProcess | undefined;
  let port = 0;

  before(
    async () => {
      warden = startPostwarden("[::1]:0");
      port = await listeningPort(warden);
    },
    { timeout: HOOK_TIMEOUT_MS },
  );

  after(
    async () => {
      assert.equal(await warden?.stop(), 0);
    },
    { timeout: HOOK_TIMEOUT_MS },
  );

  test("listed IPv6 client refused", { timeout: HOOK_TIMEOUT_MS }, async () => {
    assert.ok(warden);
    await expectBlocked(warden, port, "2001:db8:1::99", "v6.test");
    // Another client's hand-off puts a later line in the maillog. It uses
    // its own /64, because postwarden may cache a pass for a whole /64.
    await expectHandedOff(warden, port, "2001:db8:3::6");
    assertNeverReachedSmtpd("2001:db8:1::99");
  });

  test(
    "unlisted IPv6 client handed off",
    { timeout: HOOK_TIMEOUT_MS },
    async () => {
      assert.ok(warden);
      await expectHandedOff(warden, port, "2001:db8:2::5");
    },
  );
});

describe("IPv4 clients in a namespace", () => {
  test("listed IPv4 client refused", { timeout: HOOK_TIMEOUT_MS }, async () => {
    const warden = startPostwarden("127.0.0.1:0");
    try {
      const port = await listeningPort(warden);
      await expectBlocked(warden, port, "127.0.0.20", "bl.test");
      await expectHandedOff(warden, port, "127.0.0.40");
      assertNeverReachedSmtpd("127.0.0.20");
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });
});

describe("NetworkNamespace", () => {
  test("setup and repeated destroy", { timeout: HOOK_TIMEOUT_MS }, async () => {
    const own = await NetworkNamespace.create();
    try {
      assert.match(own.name, new RegExp(`^pwtest-${process.pid}-\\d+$`));
      assert.notEqual(own.name, requireSetUp().namespace.name);
      assert.deepEqual(own.wrapper(), ["ip", "netns", "exec", own.name]);

      const routes = await own.run("ip", [
        "-6",
        "route",
        "show",
        "table",
        "local",
      ]);
      assert.equal(routes.code, 0, routes.stderr);
      assert.match(routes.stdout, /^local 2001:db8::\/32 dev lo /m);

      const sysctls = await own.run("sysctl", [
        "-n",
        "net.ipv6.ip_nonlocal_bind",
        "net.ipv4.ip_nonlocal_bind",
      ]);
      assert.equal(sysctls.code, 0, sysctls.stderr);
      assert.deepEqual(sysctls.stdout.split("\n"), ["1", "1", ""]);

      const failing = await own.run("sh", ["-c", "exit 3"]);
      assert.equal(failing.code, 3);
    } finally {
      await own.destroy();
    }
    await own.destroy();

    const { stdout } = await run("ip", ["netns", "list"], { timeout: 10_000 });
    assert.doesNotMatch(stdout, new RegExp(`^${own.name}( |$)`, "m"));
    await assert.rejects(own.run("true", []), /already destroyed/);
  });
});

describe("IPv6 prefix keys", () => {
  /** Connects and quits; returns the lines and the client's port. */
  async function quit(
    warden: PostwardenProcess,
    port: number,
    source: string,
    age: "NEW" | "OLD",
  ): Promise<string[]> {
    const result = await connectFrom(source, port, [
      { read: "reply" },
      { send: "QUIT\r\n" },
      { read: "reply" },
      { expectEnd: true },
    ]);
    const label = escape(`[${source}]:${result.localPort}`);
    await warden.waitForLog(new RegExp(`PASS ${age} ${label}$`));
    return result.lines.slice(0, -1);
  }

  test(
    "one verdict per /64 by default",
    { timeout: HOOK_TIMEOUT_MS },
    async () => {
      const warden = startPostwarden("[::1]:0");
      try {
        const port = await listeningPort(warden);
        assert.deepEqual(await quit(warden, port, "2001:db8:5::1", "NEW"), [
          TEASER,
          SMTPD_GREETING,
        ]);
        // Same /64, other address: known, handed off at once.
        assert.deepEqual(await quit(warden, port, "2001:db8:5::2:3", "OLD"), [
          SMTPD_GREETING,
        ]);
        // Next /64: a new client.
        assert.deepEqual(await quit(warden, port, "2001:db8:5:1::1", "NEW"), [
          TEASER,
          SMTPD_GREETING,
        ]);
      } finally {
        assert.equal(await warden.stop(), 0);
      }
    },
  );

  test(
    "prefix length is configurable",
    { timeout: HOOK_TIMEOUT_MS },
    async () => {
      const { namespace, postfix, rbldnsd } = requireSetUp();
      const warden = PostwardenProcess.start({
        wrapper: namespace.wrapper(),
        args: [
          "--config",
          "/dev/null",
          "--listen",
          "[::1]:0",
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
          `dns_servers=${rbldnsd.server}`,
          "-o",
          "client_ipv6_prefix_length=48",
        ],
      });
      try {
        const port = await listeningPort(warden);
        await quit(warden, port, "2001:db8:6:1::1", "NEW");
        assert.deepEqual(await quit(warden, port, "2001:db8:6:2::1", "OLD"), [
          SMTPD_GREETING,
        ]);
        assert.deepEqual(await quit(warden, port, "2001:db8:7:1::1", "NEW"), [
          TEASER,
          SMTPD_GREETING,
        ]);
        const cli = await run(
          "node",
          [
            join(packageRoot(), "dist", "src", "cli.js"),
            "cache",
            "show",
            "2001:db8:6:ffff::9",
            "--json",
            "--config",
            "/dev/null",
            "-o",
            `data_directory=${warden.dataDirectory}`,
            "-o",
            "client_ipv6_prefix_length=48",
          ],
          { timeout: 20_000 },
        );
        const record = JSON.parse(cli.stdout) as {
          key: string;
          passed: string[];
        };
        assert.equal(record.key, "2001:db8:6::/48");
        assert.deepEqual(record.passed, ["pregreet"]);
      } finally {
        assert.equal(await warden.stop(), 0);
      }
    },
  );
});
