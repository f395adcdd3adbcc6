// Greylisting and spam traps end to end: a private Postfix whose smtpd queries
// postwarden's policy service at RCPT time (check_policy_service on a
// UNIX-domain socket), with short greylist delays. Clients use distinct
// 127.0.0.0/8 source addresses, one /24 per test, so that greylist keys
// grouped by /24 never meet across tests.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { metricsUrl, nonzero, scrape } from "../support/metrics.js";
import { PostfixInstance } from "../support/postfix.js";
import { PostwardenProcess } from "../support/postwarden.js";
import { SmtpClient } from "../support/smtp-client.js";
import { requireRootAndPostfix } from "../support/requirements.js";
import { Rbldnsd } from "../support/rbldnsd.js";
import { RedisServer } from "../support/redis.js";
import { packageRoot } from "../../src/native.js";

requireRootAndPostfix();

const run = promisify(execFile);
const SOA = "$SOA 300 ns.test. admin.test. 1 600 300 86400 120";
const MIN_DELAY_S = 3;
const EXPIRE_S = 7;

let postfix: PostfixInstance;
let socketDirectory: string;
let policySocket: string;
let rbldnsd: Rbldnsd;

before(async () => {
  socketDirectory = mkdtempSync(join(tmpdir(), "postwarden-policy-"));
  // mkdtemp makes 0700; smtpd, running as postfix, must reach the socket.
  chmodSync(socketDirectory, 0o755);
  policySocket = join(socketDirectory, "policy");
  postfix = PostfixInstance.create({
    smtpd_recipient_restrictions: `check_policy_service unix:${policySocket}`,
  });
  await postfix.start();
  rbldnsd = await Rbldnsd.start([
    {
      name: "bl.test",
      type: "ip4set",
      lines: [SOA, ":127.0.0.2:", "127.0.0.2", "127.0.7.20"],
    },
  ]);
});

after(async () => {
  await rbldnsd?.stop();
  await postfix?.destroy();
  rmSync(socketDirectory, { recursive: true, force: true });
});

async function startPostwarden(
  data: string,
  ...extra: string[]
): Promise<{ warden: PostwardenProcess; port: number }> {
  const warden = PostwardenProcess.start({
    dataDirectory: data,
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
      `policy_listen=unix:${policySocket}`,
      "-o",
      `greylist_min_delay=${MIN_DELAY_S}s`,
      "-o",
      `greylist_expire=${EXPIRE_S}s`,
      ...extra,
    ],
  });
  const port = await warden.listeningPort();
  await warden.waitForLog(/policy service listening on unix:/);
  return { warden, port };
}

function cacheCli(data: string, ...args: string[]): Promise<string> {
  const cli = join(packageRoot(), "dist", "src", "cli.js");
  return run(
    "node",
    [
      cli,
      "cache",
      ...args,
      "--config",
      "/dev/null",
      "-o",
      `data_directory=${data}`,
      "-o",
      "greylist_ipv4_prefix_length=24",
    ],
    { timeout: 20_000 },
  ).then(({ stdout }) => stdout);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function escape(text: string): string {
  return text.replace(/[[\].*+?^$()|{}\\]/g, "\\$&");
}

/**
 * Connects from `source` and sends one envelope. Returns the RCPT reply;
 * on 250 the message is sent too, and `queued` is the reply to its dot.
 */
async function attempt(
  port: number,
  source: string,
  sender: string,
  recipient: string,
): Promise<{ rcpt: string; queued: string | undefined }> {
  const client = await SmtpClient.open(port, "127.0.0.1", source);
  try {
    const greeting = await client.readReply(15_000);
    assert.match(greeting.at(-1) ?? "", /^220 /);
    assert.match((await client.command("EHLO client.test"))[0] ?? "", /^250/);
    assert.match(
      (await client.command(`MAIL FROM:<${sender}>`))[0] ?? "",
      /^250 /,
    );
    const rcpt = (await client.command(`RCPT TO:<${recipient}>`))[0] ?? "";
    let queued: string | undefined;
    if (rcpt.startsWith("250")) {
      assert.match((await client.command("DATA"))[0] ?? "", /^354 /);
      queued = (await client.command("Subject: grey\r\n\r\nhello\r\n."))[0];
    }
    await client.command("QUIT");
    return { rcpt, queued };
  } finally {
    client.destroy();
  }
}

/** Sends one policy request over `path` and returns the reply lines. */
function policyRequest(
  path: string,
  attributes: Record<string, string>,
): Promise<string> {
  const text =
    Object.entries(attributes)
      .map(([name, value]) => `${name}=${value}\n`)
      .join("") + "\n";
  return new Promise((resolve, reject) => {
    const socket = connect(path);
    let reply = "";
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => {
      reply += chunk;
      if (reply.endsWith("\n\n")) {
        socket.end();
        resolve(reply);
      }
    });
    socket.on("error", reject);
    socket.on("close", () => resolve(reply));
    socket.write(text);
  });
}

function rcptRequest(
  clientAddress: string,
  sender: string,
  recipient: string,
): Record<string, string> {
  return {
    request: "smtpd_access_policy",
    protocol_state: "RCPT",
    protocol_name: "ESMTP",
    client_address: clientAddress,
    client_name: "unknown",
    reverse_client_name: "unknown",
    sender,
    recipient,
  };
}

const GREYLISTED = /^450 4\.7\.1 .*Greylisted, try again in \d+ seconds?/;

describe("greylisting in mode all", () => {
  let data: string;
  let warden: PostwardenProcess;
  let port: number;

  before(async () => {
    data = mkdtempSync(join(tmpdir(), "postwarden-data-"));
    ({ warden, port } = await startPostwarden(
      data,
      "-o",
      "greylist_mode=all",
      "-o",
      "greylist_ipv4_prefix_length=24",
      "-o",
      "trap_recipients=trap@example.net @spamtrap.test",
      "-o",
      "denylist_action=drop",
      "-o",
      "metrics_listen=127.0.0.1:0",
    ));
  });

  after(async () => {
    await warden?.stop();
    rmSync(data, { recursive: true, force: true });
  });

  test("retry after the delay is delivered", async () => {
    const first = await attempt(port, "127.0.1.10", "a@x.test", "b@y.test");
    const firstAt = Date.now();
    assert.match(first.rcpt, GREYLISTED);
    await warden.waitForLog(
      /GREYLIST DEFER \[127\.0\.1\.10\]:\d+: .*key=127\.0\.1\.0\/24: new triplet$/,
    );

    const early = await attempt(port, "127.0.1.10", "a@x.test", "b@y.test");
    assert.match(early.rcpt, GREYLISTED);
    await warden.waitForLog(/GREYLIST DEFER \[127\.0\.1\.10\].*early retry/);

    await sleep(Math.max(0, firstAt + MIN_DELAY_S * 1000 + 500 - Date.now()));
    const late = await attempt(port, "127.0.1.10", "a@x.test", "b@y.test");
    assert.match(late.rcpt, /^250 /);
    assert.match(late.queued ?? "", /^250 2\.0\.0 Ok: queued as/);
    await warden.waitForLog(/GREYLIST PASS \[127\.0\.1\.10\].*retried after/);
    await postfix.waitForLog(/to=<b@y\.test>.*status=sent/);

    // The key passed: another triplet from it is not deferred.
    const other = await attempt(port, "127.0.1.10", "c@x.test", "d@y.test");
    assert.match(other.rcpt, /^250 /);
    await warden.waitForLog(/GREYLIST PASS \[127\.0\.1\.10\].*passed before/);
    assert.match(
      await cacheCli(data, "show", "127.0.1.10"),
      /pass +127\.0\.1\.0\/24 +\d+s +passed greylisting/,
    );
  });

  test("early retry does not move the first sighting", async () => {
    const first = await attempt(port, "127.0.2.10", "a@x.test", "b@y.test");
    const firstAt = Date.now();
    assert.match(first.rcpt, GREYLISTED);
    await sleep(MIN_DELAY_S * 500);
    const early = await attempt(port, "127.0.2.10", "a@x.test", "b@y.test");
    assert.match(early.rcpt, GREYLISTED);
    // Counted from the early retry, this would still be too soon.
    await sleep(Math.max(0, firstAt + MIN_DELAY_S * 1000 + 300 - Date.now()));
    const late = await attempt(port, "127.0.2.10", "a@x.test", "b@y.test");
    assert.match(late.rcpt, /^250 /);
  });

  test("triplet expires without a retry", async () => {
    const first = await attempt(port, "127.0.3.10", "a@x.test", "b@y.test");
    assert.match(first.rcpt, GREYLISTED);
    await sleep(EXPIRE_S * 1000 + 500);
    const again = await attempt(port, "127.0.3.10", "a@x.test", "b@y.test");
    assert.match(again.rcpt, GREYLISTED);
    const defers = warden.grep(
      /GREYLIST DEFER \[127\.0\.3\.10\].*: new triplet$/,
    );
    assert.equal(defers.length, 2, defers.join("\n"));
  });

  test("IPv4 neighbours share a /24 key", async () => {
    const first = await attempt(port, "127.0.4.10", "a@x.test", "b@y.test");
    const firstAt = Date.now();
    assert.match(first.rcpt, GREYLISTED);
    await sleep(Math.max(0, firstAt + MIN_DELAY_S * 1000 + 500 - Date.now()));
    // The retry comes from another address of the same pool.
    const retry = await attempt(port, "127.0.4.77", "a@x.test", "b@y.test");
    assert.match(retry.rcpt, /^250 /);
    await warden.waitForLog(
      /GREYLIST PASS \[127\.0\.4\.77\].*key=127\.0\.4\.0\/24: retried after/,
    );
  });

  test("IPv6 neighbours share a /64 key", async () => {
    const first = await policyRequest(
      policySocket,
      rcptRequest("2001:db8:5:6::1", "a@x.test", "b@y.test"),
    );
    assert.match(first, /^action=DEFER_IF_PERMIT Greylisted/);
    await sleep(MIN_DELAY_S * 1000 + 500);
    const sameNetwork = await policyRequest(
      policySocket,
      rcptRequest("2001:db8:5:6:ffff::2", "a@x.test", "b@y.test"),
    );
    assert.equal(sameNetwork, "action=DUNNO\n\n");
    await warden.waitForLog(
      /GREYLIST PASS \[2001:db8:5:6:ffff::2\].*key=2001:db8:5:6::\/64/,
    );
    const otherNetwork = await policyRequest(
      policySocket,
      rcptRequest("2001:db8:5:7::1", "a@x.test", "b@y.test"),
    );
    assert.match(otherNetwork, /^action=DEFER_IF_PERMIT Greylisted/);
  });

  test("policy service survives garbage", async () => {
    const garbage = await new Promise<string>((resolve) => {
      const socket = connect(policySocket);
      let received = "";
      socket.setEncoding("utf8");
      socket.on("data", (chunk: string) => (received += chunk));
      socket.on("close", () => resolve(received));
      socket.on("error", () => undefined);
      socket.write("GET / HTTP/1.0\r\n\r\n");
    });
    assert.equal(garbage, "", "a protocol error gets no reply");
    const long = await new Promise<string>((resolve) => {
      const socket = connect(policySocket);
      socket.on("close", () => resolve("closed"));
      socket.on("error", () => undefined);
      socket.write("request=" + "x".repeat(100_000));
    });
    assert.equal(long, "closed");
    await warden.waitForLog(/policy service: protocol error/);
    const fine = await policyRequest(policySocket, {
      request: "smtpd_access_policy",
      protocol_state: "MAIL",
      client_address: "192.0.2.1",
    });
    assert.equal(fine, "action=DUNNO\n\n");
  });

  test("trap hit refuses the next connection", async () => {
    const hit = await attempt(
      port,
      "127.0.5.10",
      "a@x.test",
      "trap@example.net",
    );
    assert.match(hit.rcpt, /^550 5\.3\.2 /);
    await warden.waitForLog(
      /TRAP \[127\.0\.5\.10\]:\d+: .*to=<trap@example\.net>; client 127\.0\.5\.10 denied for 86400s/,
    );

    const client = await SmtpClient.open(port, "127.0.0.1", "127.0.5.10");
    const label = escape(`[127.0.5.10]:${client.localPort}`);
    assert.deepEqual(await client.readReply(), [
      "521 5.3.2 Service currently unavailable",
    ]);
    await client.waitForEnd();
    await warden.waitForLog(new RegExp(`TRAPPED ${label}: sent to spam trap`));
    await warden.waitForLog(new RegExp(`DENYLISTED ${label}$`));

    const domain = await attempt(
      port,
      "127.0.5.11",
      "a@x.test",
      "x@SpamTrap.test",
    );
    assert.match(domain.rcpt, /^550 5\.3\.2 /);

    // The earlier tests deferred and passed clients; this one hit two traps.
    const samples = await scrape(await metricsUrl(warden));
    assert.equal(samples.get("postwarden_trap_hits_total"), 2);
    assert.equal(samples.get("postwarden_trapped_connections_total"), 1);
    const decisions = nonzero(samples, "postwarden_greylist_decisions_total");
    assert.ok(
      (decisions['result="defer"'] ?? 0) > 0,
      JSON.stringify(decisions),
    );
    assert.ok((decisions['result="pass"'] ?? 0) > 0, JSON.stringify(decisions));
  });

  test("cache CLI lists and deletes entries", async () => {
    await attempt(port, "127.0.6.10", "list@x.test", "b@y.test");
    await attempt(port, "127.0.6.20", "a@x.test", "trap@example.net");
    // The daemon's writes are committed in batches; wait for them.
    let listing = "";
    for (let i = 0; i < 50; i++) {
      listing = await cacheCli(data, "list");
      if (/trap +127\.0\.6\.20 /.test(listing)) break;
      await sleep(100);
    }
    assert.match(
      listing,
      /triplet +127\.0\.6\.0\/24 +\d+s +from=<list@x\.test> to=<b@y\.test>/,
    );
    assert.match(listing, /trap +127\.0\.6\.20 +\d+s +sent to spam trap/);

    const json = JSON.parse(await cacheCli(data, "greylist", "--json")) as {
      kind: string;
      client: string;
    }[];
    assert.ok(json.some((r) => r.kind === "trap" && r.client === "127.0.6.20"));

    const shown = await cacheCli(data, "show", "127.0.6.20");
    assert.match(shown, /trap +127\.0\.6\.20 /);
    const stats = await cacheCli(data, "stats");
    assert.match(
      stats,
      /greylist +\d+ triplets, \d+ passed clients, \d+ trapped clients/,
    );

    // The verdict and the trap of 127.0.6.20, and the triplet of its
    // greylist key 127.0.6.0/24.
    assert.equal(
      await cacheCli(data, "delete", "127.0.6.20"),
      "deleted 3 entries\n",
    );
    const after = await cacheCli(data, "greylist");
    assert.doesNotMatch(after, /127\.0\.6\.20/);
    // The daemon reads the deleted trap no more.
    const client = await SmtpClient.open(port, "127.0.0.1", "127.0.6.20");
    const greeting = await client.readReply(15_000);
    assert.match(greeting.at(-1) ?? "", /^220 /);
    client.destroy();

    assert.match(
      await cacheCli(data, "delete", "127.0.6.0/24"),
      /^deleted [1-9]\d* entr/,
    );
    assert.doesNotMatch(await cacheCli(data, "greylist"), /127\.0\.6\.0\/24/);
  });
});

describe("score-gated greylisting", () => {
  let warden: PostwardenProcess;
  let port: number;
  let data: string;

  before(async () => {
    data = mkdtempSync(join(tmpdir(), "postwarden-data-"));
    ({ warden, port } = await startPostwarden(
      data,
      "-o",
      "greylist_mode=suspicious",
      "-o",
      "greylist_suspicious_criteria=dnsbl pregreet",
      "-o",
      `dns_servers=${rbldnsd.server}`,
      "-o",
      "dnsbl_sites=bl.test*1",
      "-o",
      "dnsbl_threshold=2",
    ));
  });

  after(async () => {
    await warden?.stop();
    rmSync(data, { recursive: true, force: true });
  });

  test("clean client is not greylisted", async () => {
    const clean = await attempt(port, "127.0.7.10", "a@x.test", "b@y.test");
    assert.match(clean.rcpt, /^250 /);
    await warden.waitForLog(
      /GREYLIST SKIP \[127\.0\.7\.10\]:\d+: .*: not suspicious$/,
    );
  });

  test("client listed under the threshold is greylisted", async () => {
    const listed = await attempt(port, "127.0.7.20", "a@x.test", "b@y.test");
    assert.match(listed.rcpt, GREYLISTED);
    await warden.waitForLog(
      /GREYLIST DEFER \[127\.0\.7\.20\]:\d+: .*new triplet \(suspicious: DNS list score 1\)$/,
    );
    assert.equal(warden.grep(/DNSBL rank/).length, 0);
  });

  test("pregreeting client is greylisted", async () => {
    const client = await SmtpClient.open(port, "127.0.0.1", "127.0.7.30");
    client.send("EHLO early.test\r\n");
    const greeting = await client.readReply(15_000);
    assert.match(greeting.at(-1) ?? "", /^220 /);
    // smtpd replies to the early EHLO.
    assert.match((await client.readReply())[0] ?? "", /^250/);
    assert.match(
      (await client.command("MAIL FROM:<a@x.test>"))[0] ?? "",
      /^250 /,
    );
    const rcpt = await client.command("RCPT TO:<b@y.test>");
    assert.match(rcpt[0] ?? "", GREYLISTED);
    client.destroy();
    await warden.waitForLog(
      /GREYLIST DEFER \[127\.0\.7\.30\].*\(suspicious: pregreet\)$/,
    );
  });
});

describe("greylisting in the dummy engine", () => {
  test("engine 4xx counts as the first sighting", async () => {
    const data = mkdtempSync(join(tmpdir(), "postwarden-data-"));
    const { warden, port } = await startPostwarden(
      data,
      "-o",
      "greylist_mode=all",
      "-o",
      "pipelining_enable=yes",
    );
    try {
      const first = await attempt(port, "127.0.8.10", "a@x.test", "b@y.test");
      const firstAt = Date.now();
      assert.match(first.rcpt, /^450 /);
      await warden.waitForLog(
        /GREYLIST DEFER \[127\.0\.8\.10\]:\d+: .*: new triplet$/,
      );
      await sleep(Math.max(0, firstAt + MIN_DELAY_S * 1000 + 500 - Date.now()));
      // The deep test passed, so this connection reaches smtpd, whose
      // policy request finds the triplet old enough.
      const second = await attempt(port, "127.0.8.10", "a@x.test", "b@y.test");
      assert.match(second.rcpt, /^250 /);
      await warden.waitForLog(/GREYLIST PASS \[127\.0\.8\.10\].*retried after/);
    } finally {
      await warden.stop();
      rmSync(data, { recursive: true, force: true });
    }
  });
});

describe("greylisting shared through Redis", () => {
  test("two daemons share triplets and traps", async () => {
    const redis = await RedisServer.start();
    const dataA = mkdtempSync(join(tmpdir(), "postwarden-data-"));
    const dataB = mkdtempSync(join(tmpdir(), "postwarden-data-"));
    const socketA = join(socketDirectory, "policy-a");
    const socketB = join(socketDirectory, "policy-b");
    const shared = [
      "-o",
      "greylist_mode=all",
      "-o",
      `cache_map=${redis.url}`,
      "-o",
      "trap_recipients=trap@example.net",
    ];
    const a = await startPostwarden(
      dataA,
      ...shared,
      "-o",
      `policy_listen=unix:${socketA}`,
    );
    const b = await startPostwarden(
      dataB,
      ...shared,
      "-o",
      `policy_listen=unix:${socketB}`,
    );
    try {
      const first = await policyRequest(
        socketA,
        rcptRequest("192.0.2.30", "a@x.test", "b@y.test"),
      );
      assert.match(first, /^action=DEFER_IF_PERMIT Greylisted/);
      await sleep(MIN_DELAY_S * 1000 + 500);
      // The retry reaches the other MX, which finds the first sighting.
      const retry = await policyRequest(
        socketB,
        rcptRequest("192.0.2.30", "a@x.test", "b@y.test"),
      );
      assert.equal(retry, "action=DUNNO\n\n");
      await b.warden.waitForLog(/GREYLIST PASS \[192\.0\.2\.30\].*retried/);

      // A trap hit on one MX refuses the client on the other.
      const hit = await policyRequest(
        socketA,
        rcptRequest("192.0.2.31", "a@x.test", "trap@example.net"),
      );
      assert.match(hit, /^action=550 5\.3\.2 /);
      const after = await policyRequest(
        socketB,
        rcptRequest("192.0.2.31", "a@x.test", "c@y.test"),
      );
      assert.match(after, /^action=550 5\.3\.2 /);
    } finally {
      await a.warden.stop();
      await b.warden.stop();
      await redis.stop();
      rmSync(dataA, { recursive: true, force: true });
      rmSync(dataB, { recursive: true, force: true });
    }
  });
});
