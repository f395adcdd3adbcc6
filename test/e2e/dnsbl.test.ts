// DNS lists end to end: rbldnsd on loopback serves the test zones (and a
// small responder of our own produces SERVFAIL, REFUSED and silence),
// postwarden queries them during the greeting wait, and listed clients
// never reach the private Postfix. Clients use distinct 127.0.0.0/8
// source addresses; 127.0.0.1 and 127.0.0.2 are the RFC 5782 test points.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { PostfixInstance } from "../support/postfix.js";
import { PostwardenProcess } from "../support/postwarden.js";
import { SmtpClient } from "../support/smtp-client.js";
import { requireRootAndPostfix } from "../support/requirements.js";
import { Rbldnsd } from "../support/rbldnsd.js";
import {
  DnsResponder,
  type ResponderBehaviour,
} from "../support/dns-responder.js";

requireRootAndPostfix();

const SOA = "$SOA 300 ns.test. admin.test. 1 600 300 86400 120";

let postfix: PostfixInstance;
let rbldnsd: Rbldnsd;

before(async () => {
  postfix = PostfixInstance.create();
  await postfix.start();
  rbldnsd = await Rbldnsd.start([
    {
      name: "bl.test",
      type: "ip4set",
      lines: [
        SOA,
        ":127.0.0.2:listed",
        "127.0.0.2",
        "127.0.0.20",
        ":127.0.0.4:",
        "127.0.0.21",
      ],
    },
    {
      name: "bl2.test",
      type: "ip4set",
      lines: [SOA, ":127.0.0.2:", "127.0.0.2", "127.0.0.21", "127.0.0.22"],
    },
    {
      name: "wl.test",
      type: "ip4set",
      lines: [SOA, ":127.0.10.1:", "127.0.0.2", "127.0.0.30"],
    },
    {
      name: "all.test",
      type: "ip4set",
      lines: [SOA, ":127.0.0.2:", "127.0.0.0-127.0.0.255"],
    },
    {
      name: "outside.test",
      type: "ip4set",
      lines: [SOA, ":192.0.2.1:", "127.0.0.2", "127.0.0.23"],
    },
    {
      name: "v6.test",
      type: "ip6trie",
      lines: [SOA, ":127.0.0.2:", "::ffff:7f00:2", "::1"],
    },
  ]);
});

after(async () => {
  await rbldnsd?.stop();
  await postfix?.destroy();
});

function startPostwarden(
  dnsServer: string,
  ...extra: string[]
): PostwardenProcess {
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
      `dns_servers=${dnsServer}`,
      ...extra,
    ],
  });
}

function escape(text: string): string {
  return text.replace(/[[\].*+?^$()|{}\\]/g, "\\$&");
}

/** Connects from `source`, waits for the greeting, returns its lines. */
async function greet(
  port: number,
  source: string,
): Promise<{ client: SmtpClient; lines: string[] }> {
  const host = source.includes(":") ? "::1" : "127.0.0.1";
  const client = await SmtpClient.open(port, host, source);
  const lines: string[] = [];
  for (;;) {
    const line = await client.readLine(15_000);
    lines.push(line);
    if (line[3] !== "-") return { client, lines };
  }
}

async function expectBlocked(
  warden: PostwardenProcess,
  port: number,
  source: string,
  listName: string,
  rank: number,
): Promise<void> {
  const { client, lines } = await greet(port, source);
  assert.deepEqual(lines, [
    "220-warden.example.com ESMTP Postfix",
    `521 5.7.1 Service unavailable; client [${source}] blocked using ${listName}`,
  ]);
  await client.waitForEnd();
  const label = escape(`[${source}]:${client.localPort}`);
  await warden.waitForLog(new RegExp(`DNSBL rank ${rank} for ${label}$`));
  await warden.waitForLog(new RegExp(`DISCONNECT ${label}$`));
  assert.doesNotMatch(
    postfix.log(),
    new RegExp(`${label}(?!\\d)`),
    "smtpd saw the listed client",
  );
}

async function expectHandedOff(
  warden: PostwardenProcess,
  port: number,
  source: string,
): Promise<SmtpClient> {
  const { client, lines } = await greet(port, source);
  assert.equal(lines.at(-1), "220 pass-test.localdomain ESMTP Postfix");
  assert.match((await client.command("QUIT"))[0] ?? "", /^221 /);
  await client.waitForEnd();
  return client;
}

describe("DNS lists with rbldnsd", () => {
  test("listed client dropped with reply", async () => {
    const warden = startPostwarden(
      rbldnsd.server,
      "-o",
      "dnsbl_sites=bl.test",
      "-o",
      "dnsbl_action=drop",
    );
    try {
      const port = await warden.listeningPort();
      await expectBlocked(warden, port, "127.0.0.20", "bl.test", 1);
      const client = await expectHandedOff(warden, port, "127.0.0.40");
      await warden.waitForLog(
        new RegExp(`PASS NEW \\[127\\.0\\.0\\.40\\]:${client.localPort}$`),
      );
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("weights and threshold", async () => {
    const warden = startPostwarden(
      rbldnsd.server,
      "-o",
      "dnsbl_sites=bl.test=127.0.0.4*2 bl.test=127.0.0.2 bl2.test*3",
      "-o",
      "dnsbl_threshold=3",
      "-o",
      "dnsbl_action=drop",
    );
    try {
      const port = await warden.listeningPort();
      // .21: bl.test answers 127.0.0.4 (2) and bl2.test lists it (3).
      await expectBlocked(warden, port, "127.0.0.21", "bl2.test", 5);
      // .22: bl2.test alone reaches 3.
      await expectBlocked(warden, port, "127.0.0.22", "bl2.test", 3);
      // .20: bl.test answers 127.0.0.2, weight 1: under the threshold.
      const client = await expectHandedOff(warden, port, "127.0.0.20");
      assert.equal(
        warden.grep(
          new RegExp(
            `DNSBL rank .* for \\[127\\.0\\.0\\.20\\]:${client.localPort}`,
          ),
        ).length,
        0,
      );
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("enforce action rejects at RCPT", async () => {
    const warden = startPostwarden(
      rbldnsd.server,
      "-o",
      "dnsbl_sites=bl.test",
      "-o",
      "dnsbl_action=enforce",
    );
    try {
      const port = await warden.listeningPort();
      const { client, lines } = await greet(port, "127.0.0.20");
      assert.deepEqual(lines, [
        "220-warden.example.com ESMTP Postfix",
        "220 warden.example.com ESMTP Postfix",
      ]);
      await client.command("HELO listed.example");
      await client.command("MAIL FROM:<a@example.org>");
      assert.deepEqual(await client.command("RCPT TO:<b@example.net>"), [
        "550 5.7.1 Service unavailable; client [127.0.0.20] blocked using bl.test",
      ]);
      client.destroy();
      await warden.waitForLog(
        /NOQUEUE: reject: RCPT from \[127\.0\.0\.20\]:\d+: 550 5\.7\.1 Service unavailable; client \[127\.0\.0\.20\] blocked using bl\.test; from=<a@example\.org>, to=<b@example\.net>, proto=SMTP, helo=<listed\.example>$/,
      );
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("ignore action hands off", async () => {
    const warden = startPostwarden(rbldnsd.server, "-o", "dnsbl_sites=bl.test");
    try {
      const port = await warden.listeningPort();
      const client = await expectHandedOff(warden, port, "127.0.0.20");
      await warden.waitForLog(
        new RegExp(
          `DNSBL rank 1 for \\[127\\.0\\.0\\.20\\]:${client.localPort}$`,
        ),
      );
      // A listed client is not a pass, even when only logged.
      assert.equal(warden.grep(/PASS NEW/).length, 0);
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("reply map hides query domain", async () => {
    const warden = startPostwarden(
      rbldnsd.server,
      "-o",
      "dnsbl_sites=bl.test",
      "-o",
      "dnsbl_action=drop",
      "-o",
      "dnsbl_reply_map=inline:{ bl.test=public.example }",
    );
    try {
      const port = await warden.listeningPort();
      await expectBlocked(warden, port, "127.0.0.20", "public.example", 1);
      assert.deepEqual(warden.grep(/bl\.test/), []);
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("allowlist threshold hands off at once", async () => {
    const warden = startPostwarden(
      rbldnsd.server,
      "--greet-wait",
      "20s",
      "-o",
      "dnsbl_sites=wl.test*-5 bl.test",
      "-o",
      "dnsbl_allowlist_threshold=-1",
    );
    try {
      const port = await warden.listeningPort();
      const started = Date.now();
      const client = await expectHandedOff(warden, port, "127.0.0.30");
      // Far less than the 20 s greet wait: the wait was cut short.
      assert.ok(
        Date.now() - started < 10_000,
        "allowlisted client waited for the greet wait",
      );
      await warden.waitForLog(
        new RegExp(`PASS NEW \\[127\\.0\\.0\\.30\\]:${client.localPort}$`),
      );
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("allowlist threshold default off", async () => {
    const warden = startPostwarden(
      rbldnsd.server,
      "--greet-wait",
      "2s",
      "-o",
      "dnsbl_sites=wl.test*-5",
    );
    try {
      const port = await warden.listeningPort();
      const started = Date.now();
      await expectHandedOff(warden, port, "127.0.0.30");
      assert.ok(
        Date.now() - started >= 1900,
        "client was handed off before the greet wait ended",
      );
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("health check disables broken lists", async () => {
    const warden = startPostwarden(
      rbldnsd.server,
      "-o",
      "dnsbl_sites=all.test outside.test bl.test",
      "-o",
      "dnsbl_action=drop",
    );
    try {
      const port = await warden.listeningPort();
      await warden.waitForLog(
        /warning: DNS list all\.test for IPv4 clients disabled: test point 127\.0\.0\.1 is listed .*answers for everything/,
      );
      await warden.waitForLog(
        /warning: DNS list outside\.test for IPv4 clients disabled: test point 127\.0\.0\.2 answered 192\.0\.2\.1, not a listing/,
      );
      assert.equal(
        warden.grep(/DNS list bl\.test for IPv4 clients disabled/).length,
        0,
      );
      // all.test lists all of 127.0.0.0/24 and outside.test lists .23
      // outside 127.0.0.0/8: neither counts.
      await expectHandedOff(warden, port, "127.0.0.23");
      await expectBlocked(warden, port, "127.0.0.20", "bl.test", 1);
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("IPv6 client queried by nibbles", async () => {
    const warden = startPostwarden(
      rbldnsd.server,
      "-o",
      "listen=[::1]:0",
      "-o",
      "dnsbl_sites=v6.test",
      "-o",
      "dnsbl_action=drop",
    );
    try {
      const port = await warden.listeningPort();
      await expectBlocked(warden, port, "::1", "v6.test", 1);
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });
});

describe("DNS lists that misbehave", () => {
  let behaviour: ResponderBehaviour = { kind: "servfail" };
  let healthy = true;
  let responder: DnsResponder;

  before(async () => {
    responder = await DnsResponder.start((name, type) => {
      if (type === "SOA") return { kind: "soa", minimum: 300, ttl: 300 };
      if (!healthy) return { kind: "silent" };
      if (name.startsWith("2.0.0.127."))
        return { kind: "answer", addresses: ["127.0.0.2"], ttl: 300 };
      if (name.startsWith("1.0.0.127."))
        return { kind: "nxdomain", soaMinimum: 300 };
      if (name.startsWith("50.0.0.127.")) return behaviour;
      return { kind: "nxdomain", soaMinimum: 300 };
    });
  });

  after(async () => {
    await responder?.stop();
  });

  for (const [kind, pattern] of [
    [
      "servfail",
      /warning: dnsblog_query: lookup error for DNS list bad\.test: ESERVFAIL/,
    ],
    [
      "refused",
      /warning: dnsblog_query: lookup error for DNS list bad\.test: EREFUSED/,
    ],
    ["silent", /warning: dnsblog reply timeout 2s for bad\.test/],
  ] as const) {
    test(`${kind} answer contributes nothing`, async () => {
      behaviour = { kind };
      const warden = startPostwarden(
        responder.server,
        "-o",
        "dnsbl_sites=bad.test",
        "-o",
        "dnsbl_action=drop",
        "-o",
        "dnsbl_timeout=2s",
      );
      try {
        const port = await warden.listeningPort();
        const client = await expectHandedOff(warden, port, "127.0.0.50");
        await warden.waitForLog(pattern, 5000);
        // An unanswered list is no pass: the client is tested again.
        assert.equal(
          warden.grep(
            new RegExp(`PASS NEW \\[127\\.0\\.0\\.50\\]:${client.localPort}`),
          ).length,
          0,
        );
      } finally {
        assert.equal(await warden.stop(), 0);
      }
    });
  }

  test("error answer never lists", async () => {
    behaviour = { kind: "answer", addresses: ["127.255.255.254"], ttl: 300 };
    const warden = startPostwarden(
      responder.server,
      "-o",
      "dnsbl_sites=bad.test",
      "-o",
      "dnsbl_action=drop",
    );
    try {
      const port = await warden.listeningPort();
      await expectHandedOff(warden, port, "127.0.0.50");
      await expectHandedOff(warden, port, "127.0.0.50");
      await warden.waitForLog(
        /warning: DNS list bad\.test answered 127\.255\.255\.254, an error code: .*public or overloaded resolver/,
      );
      // Rate-limited: one warning for two clients.
      assert.equal(warden.grep(/answered 127\.255\.255\.254/).length, 1);
      assert.equal(warden.grep(/DNSBL rank/).length, 0);
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });

  test("list that stops answering", async () => {
    healthy = true;
    const warden = startPostwarden(
      responder.server,
      "-o",
      "dnsbl_sites=bad.test",
      "-o",
      "dnsbl_timeout=1s",
      "-o",
      "dnsbl_health_check_interval=1s",
    );
    try {
      await warden.listeningPort();
      healthy = false;
      await warden.waitForLog(
        /warning: DNS list bad\.test for IPv4 clients disabled: test point 127\.0\.0\.2 lookup failed \(ETIMEOUT\)/,
        10_000,
      );
      healthy = true;
      await warden.waitForLog(
        /DNS list bad\.test for IPv4 clients enabled again: health check passed/,
        10_000,
      );
      assert.equal(
        warden.grep(/bad\.test for IPv4 clients disabled/).length,
        1,
      );
    } finally {
      healthy = true;
      assert.equal(await warden.stop(), 0);
    }
  });

  test("lists down keep greeting test", async () => {
    healthy = false;
    const warden = startPostwarden(
      responder.server,
      "-o",
      "dnsbl_sites=bad.test",
      "-o",
      "dnsbl_timeout=1s",
    );
    try {
      const port = await warden.listeningPort();
      await warden.waitForLog(
        /DNS list bad\.test for IPv4 clients disabled/,
        10_000,
      );
      // With every list disabled the greeting test still runs, and the
      // client does not pass: the DNS list test was not done.
      const client = await SmtpClient.open(port, "127.0.0.1", "127.0.0.51");
      assert.deepEqual(await client.readReply(), [
        "220-warden.example.com ESMTP Postfix",
        "220 pass-test.localdomain ESMTP Postfix",
      ]);
      assert.match(
        (await client.command("EHLO client.example.org"))[0] ?? "",
        /^250-pass-test/,
      );
      client.destroy();
      assert.equal(warden.grep(/PASS NEW/).length, 0);
    } finally {
      healthy = true;
      assert.equal(await warden.stop(), 0);
    }
  });

  test("queries only the configured server", async () => {
    const before = responder.queries.length;
    const warden = startPostwarden(
      responder.server,
      "-o",
      "dnsbl_sites=bad.test",
    );
    try {
      const port = await warden.listeningPort();
      behaviour = { kind: "nxdomain", soaMinimum: 300 };
      await expectHandedOff(warden, port, "127.0.0.50");
      const names = responder.queries.slice(before).map((query) => query.name);
      assert.ok(names.includes("50.0.0.127.bad.test"), JSON.stringify(names));
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });
});
