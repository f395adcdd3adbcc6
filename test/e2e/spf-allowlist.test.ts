// The SPF infrastructure allowlist against SPF records served on loopback:
// rbldnsd's generic dataset serves the A, TXT and MX records, and the
// test's own DnsResponder serves AAAA records, too many MX hosts, and
// failures. The last tests run postwarden in front of a private Postfix
// and check that a client inside the SPF networks skips the tests.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { Rbldnsd } from "../support/rbldnsd.js";
import {
  DnsResponder,
  type NameRecords,
  type ResponderBehaviour,
} from "../support/dns-responder.js";
import { PostfixInstance } from "../support/postfix.js";
import { PostwardenProcess } from "../support/postwarden.js";
import { SmtpClient } from "../support/smtp-client.js";
import { requireRootAndPostfix } from "../support/requirements.js";
import { expandSpf, type SpfExpansion } from "../../src/access/spf-expand.js";
import { SpfDnsClient, SpfDnsError } from "../../src/access/spf-dns.js";
import { InfrastructureAllowlist } from "../../src/access/infrastructure-allowlist.js";
import { formatNetwork, parseAddress } from "../../src/access/network.js";

requireRootAndPostfix();

const ZONE = "infra.test";
const SOA = "$SOA 300 ns.infra.test. admin.infra.test. 1 600 300 86400 120";
const ELEVEN_A_TERMS = Array<string>(11).fill("a:host.infra.test").join(" ");

/** rbldnsd generic lines; names are relative to infra.test. */
const RECORDS = [
  SOA,
  `chain TXT "v=spf1 ip4:192.0.2.0/24 include:inc1.infra.test -all"`,
  `inc1 TXT "v=spf1 ip4:198.51.100.0/25 include:inc2.infra.test ~all"`,
  `inc2 TXT "v=spf1 a:host.infra.test/28 mx/30 -all"`,
  "inc2 MX 10 mx1.infra.test",
  "host A 203.0.113.9",
  "mx1 A 203.0.113.65",
  `redirect TXT "v=spf1 redirect=chain.infra.test"`,
  `redirall TXT "v=spf1 ip4:192.0.2.128/25 redirect=chain.infra.test ~all"`,
  `limit TXT "v=spf1 ip4:192.0.2.1 ${ELEVEN_A_TERMS} ip4:192.0.2.3"`,
  `nest TXT "v=spf1 include:chain.infra.test include:chain.infra.test ` +
    `include:chain.infra.test ip4:192.0.2.9"`,
  `loop TXT "v=spf1 ip4:192.0.2.4 include:loop2.infra.test"`,
  `loop2 TXT "v=spf1 ip4:192.0.2.5 include:loop.infra.test"`,
  `self TXT "v=spf1 ip4:192.0.2.6 redirect=self.infra.test"`,
  `nospf TXT "google-site-verification=abc"`,
  `ignored TXT "v=spf1 ptr exists:%{i}.x.infra.test -ip4:192.0.2.7 ` +
    `ip4:0.0.0.0/1 ip4:192.0.2.8 include:%{d}.infra.test +all exp=e.infra.test"`,
  `two TXT "v=spf1 ip4:192.0.2.10"`,
  `two TXT "v=spf1 ip4:192.0.2.11"`,
  `lo TXT "v=spf1 a:lohost.infra.test/30 -all"`,
  "lohost A 127.0.0.52",
];

const CHAIN_NETWORKS = [
  "192.0.2.0/24",
  "198.51.100.0/25",
  "203.0.113.0/28",
  "203.0.113.64/30",
];

let rbldnsd: Rbldnsd;

before(async () => {
  rbldnsd = await Rbldnsd.start([
    { name: ZONE, type: "generic", lines: RECORDS },
  ]);
});

after(async () => {
  await rbldnsd?.stop();
});

async function expand(
  domain: string,
  server = rbldnsd.server,
  timeoutMs = 2000,
): Promise<SpfExpansion> {
  const dns = new SpfDnsClient([server], timeoutMs);
  try {
    return await expandSpf(domain, dns);
  } finally {
    dns.cancel();
  }
}

function formatted(expansion: SpfExpansion): string[] {
  return expansion.networks.map(formatNetwork);
}

describe("spf expansion through rbldnsd", () => {
  test("include chain with a and mx", async () => {
    const result = await expand("chain.infra.test");
    assert.equal(result.permanentError, undefined);
    assert.deepEqual(formatted(result), CHAIN_NETWORKS);
    assert.deepEqual(result.ignored, [
      "inc2.infra.test: -all",
      "inc1.infra.test: ~all",
      "chain.infra.test: -all",
    ]);
  });

  test("redirect without all", async () => {
    const result = await expand("redirect.infra.test");
    assert.equal(result.permanentError, undefined);
    assert.deepEqual(formatted(result), CHAIN_NETWORKS);
  });

  test("redirect ignored beside all", async () => {
    const result = await expand("redirall.infra.test");
    assert.equal(result.permanentError, undefined);
    assert.deepEqual(formatted(result), ["192.0.2.128/25"]);
  });

  test("eleventh lookup term stops", async () => {
    const result = await expand("limit.infra.test");
    assert.match(
      result.permanentError ?? "",
      /more than 10 DNS-querying terms.* at "a:host.infra.test" in limit.infra.test/,
    );
    // host.infra.test has no AAAA record, so the IPv6 evaluation passed the
    // void lookup limit at the third term, and the IPv4 walk went on.
    assert.match(
      result.permanentError ?? "",
      /^more than 2 void lookups, .* at the AAAA lookup for host\.infra\.test .* for IPv6 clients; more than 10/,
    );
    assert.deepEqual(formatted(result), ["192.0.2.1/32", "203.0.113.9/32"]);
  });

  test("lookup limit spans includes", async () => {
    const result = await expand("nest.infra.test");
    assert.match(
      result.permanentError ?? "",
      /more than 10 DNS-querying terms.* at "include:chain.infra.test" in nest.infra.test/,
    );
    assert.deepEqual(formatted(result), CHAIN_NETWORKS);
  });

  test("include loop stops", async () => {
    const result = await expand("loop.infra.test");
    assert.equal(
      result.permanentError,
      "loop in SPF records: loop.infra.test -> loop2.infra.test -> " +
        "loop.infra.test",
    );
    assert.deepEqual(formatted(result), ["192.0.2.4/32", "192.0.2.5/32"]);
  });

  test("redirect to itself stops", async () => {
    const result = await expand("self.infra.test");
    assert.match(result.permanentError ?? "", /loop in SPF records/);
    assert.deepEqual(formatted(result), ["192.0.2.6/32"]);
  });

  test("missing and duplicate records", async () => {
    const missing = await expand("nospf.infra.test");
    assert.equal(
      missing.permanentError,
      "no SPF record found for nospf.infra.test",
    );
    assert.deepEqual(missing.networks, []);
    const nxdomain = await expand("absent.infra.test");
    assert.equal(
      nxdomain.permanentError,
      "no SPF record found for absent.infra.test",
    );
    const two = await expand("two.infra.test");
    assert.equal(
      two.permanentError,
      "more than one SPF record for two.infra.test",
    );
  });

  test("terms without networks are ignored", async () => {
    const result = await expand("ignored.infra.test");
    assert.equal(result.permanentError, undefined);
    assert.deepEqual(formatted(result), ["192.0.2.8/32"]);
    assert.deepEqual(result.ignored, [
      "ignored.infra.test: ptr",
      "ignored.infra.test: exists:%{i}.x.infra.test",
      "ignored.infra.test: -ip4:192.0.2.7",
      "ignored.infra.test: ip4:0.0.0.0/1 (broader than /8 for IPv4)",
      "ignored.infra.test: include:%{d}.infra.test",
      "ignored.infra.test: +all",
      "ignored.infra.test: exp=e.infra.test",
    ]);
  });
});

/** Starts a DnsResponder that serves `zone`, NXDOMAIN for other names. */
function serve(
  zone: () => Record<string, NameRecords | ResponderBehaviour>,
): Promise<DnsResponder> {
  return DnsResponder.start((name) => {
    const entry = zone()[name];
    if (entry === undefined) return { kind: "nxdomain" };
    if ("kind" in entry) return entry;
    return { kind: "records", records: entry, ttl: 60 };
  });
}

const V6_ZONE: Record<string, NameRecords> = {
  "v6.example": {
    txt: ["v=spf1 ip6:2001:db8:1::/48 a:dual.v6.example/24//64 mx//56 -all"],
    mx: [{ preference: 10, exchange: "mx.v6.example" }],
  },
  "dual.v6.example": { a: ["192.0.2.77"], aaaa: ["2001:db8:2::7"] },
  "mx.v6.example": { aaaa: ["2001:db8:3::1"] },
  "manymx.example": {
    txt: ["v=spf1 ip4:192.0.2.12 mx"],
    mx: Array.from({ length: 11 }, (_, index) => ({
      preference: index,
      exchange: `mx${index}.manymx.example`,
    })),
  },
  "nullmx.example": {
    txt: ["v=spf1 mx ip4:192.0.2.13"],
    mx: [{ preference: 0, exchange: "" }],
  },
};

describe("spf expansion through a responder", () => {
  let responder: DnsResponder;
  before(async () => {
    responder = await serve(() => V6_ZONE);
  });
  after(async () => {
    await responder?.stop();
  });

  test("ip6 and AAAA with prefixes", async () => {
    const result = await expand("v6.example", responder.server);
    assert.equal(result.permanentError, undefined);
    assert.deepEqual(formatted(result), [
      "2001:db8:1::/48",
      "192.0.2.0/24",
      "2001:db8:2::/64",
      "2001:db8:3::/56",
    ]);
  });

  test("more than ten MX hosts", async () => {
    const result = await expand("manymx.example", responder.server);
    assert.match(
      result.permanentError ?? "",
      /"mx": manymx.example has 11 MX hosts, more than the limit of 10/,
    );
    assert.deepEqual(formatted(result), ["192.0.2.12/32"]);
  });

  test("null MX adds nothing", async () => {
    const result = await expand("nullmx.example", responder.server);
    assert.equal(result.permanentError, undefined);
    assert.deepEqual(formatted(result), ["192.0.2.13/32"]);
  });
});

// nx.void.example is NXDOMAIN and nomx.void.example has no MX records:
// each is one void lookup for both address families.
const VOID_ZONE: Record<string, NameRecords | ResponderBehaviour> = {
  "nomx.void.example": { a: ["192.0.2.30"] },
  "three.void.example": {
    txt: [
      "v=spf1 ip4:192.0.2.20 a:nx.void.example ip4:192.0.2.21 " +
        "mx:nomx.void.example ip4:192.0.2.22 include:absent.void.example " +
        "ip4:192.0.2.23",
    ],
  },
  "two.void.example": {
    txt: [
      "v=spf1 a:nx.void.example mx:nomx.void.example ip4:192.0.2.24 " +
        "a:dual.void.example",
    ],
  },
  "dual.void.example": { a: ["192.0.2.40"], aaaa: ["2001:db8:40::1"] },
  // Three of the four MX hosts have no AAAA record, so an evaluation for
  // an IPv6 client makes its third void lookup at mxd.
  "family.void.example": {
    txt: ["v=spf1 mx ip4:192.0.2.25 ip6:2001:db8:25::/48"],
    mx: ["mxa", "mxb", "mxc", "mxd"].map((host, index) => ({
      preference: index,
      exchange: `${host}.void.example`,
    })),
  },
  "mxa.void.example": { a: ["192.0.2.31"], aaaa: ["2001:db8:31::1"] },
  "mxb.void.example": { a: ["192.0.2.32"] },
  "mxc.void.example": { a: ["192.0.2.33"] },
  "mxd.void.example": { a: ["192.0.2.34"] },
  // The IPv6 evaluation passes the limit at v4c, the IPv4 one at v6c.
  "apart.void.example": {
    txt: [
      "v=spf1 a:v4a.void.example a:v4b.void.example a:v4c.void.example " +
        "a:v6a.void.example a:v6b.void.example a:v6c.void.example " +
        "ip4:192.0.2.26",
    ],
  },
  "v4a.void.example": { a: ["192.0.2.51"] },
  "v4b.void.example": { a: ["192.0.2.52"] },
  "v4c.void.example": { a: ["192.0.2.53"] },
  "v6a.void.example": { aaaa: ["2001:db8:61::1"] },
  "v6b.void.example": { aaaa: ["2001:db8:62::1"] },
  "v6c.void.example": { aaaa: ["2001:db8:63::1"] },
  "servfail.void.example": {
    txt: ["v=spf1 a:nx.void.example mx:nomx.void.example a:fail.void.example"],
  },
  "timeout.void.example": {
    txt: ["v=spf1 a:nx.void.example mx:nomx.void.example a:slow.void.example"],
  },
  "fail.void.example": { kind: "servfail" },
  "slow.void.example": { kind: "silent" },
};

describe("spf void lookup limit", () => {
  let responder: DnsResponder;
  before(async () => {
    responder = await serve(() => VOID_ZONE);
  });
  after(async () => {
    await responder?.stop();
  });

  test("third void lookup stops", async () => {
    const result = await expand("three.void.example", responder.server);
    assert.equal(
      result.permanentError,
      "more than 2 void lookups, the limit of RFC 7208, at the TXT lookup " +
        'for absent.void.example ("include:absent.void.example" in ' +
        "three.void.example)",
    );
    assert.deepEqual(formatted(result), [
      "192.0.2.20/32",
      "192.0.2.21/32",
      "192.0.2.22/32",
    ]);
  });

  test("two void lookups still expand", async () => {
    const result = await expand("two.void.example", responder.server);
    assert.equal(result.permanentError, undefined);
    assert.deepEqual(formatted(result), [
      "192.0.2.24/32",
      "192.0.2.40/32",
      "2001:db8:40::1/128",
    ]);
  });

  test("limit counted per address family", async () => {
    const result = await expand("family.void.example", responder.server);
    assert.equal(
      result.permanentError,
      "more than 2 void lookups, the limit of RFC 7208, at the AAAA lookup " +
        'for mxd.void.example ("mx" in family.void.example) for IPv6 clients',
    );
    // The IPv4 walk goes on to the end. The IPv6 walk keeps what it found
    // before mxd and drops the ip6 network after it.
    assert.deepEqual(formatted(result), [
      "192.0.2.31/32",
      "2001:db8:31::1/128",
      "192.0.2.32/32",
      "192.0.2.33/32",
      "192.0.2.34/32",
      "192.0.2.25/32",
    ]);
  });

  test("both families pass the limit apart", async () => {
    const result = await expand("apart.void.example", responder.server);
    assert.equal(
      result.permanentError,
      "more than 2 void lookups, the limit of RFC 7208, at the A lookup " +
        'for v6c.void.example ("a:v6c.void.example" in apart.void.example) ' +
        "for IPv4 clients and AAAA lookup for v4c.void.example " +
        '("a:v4c.void.example" in apart.void.example) for IPv6 clients',
    );
    assert.deepEqual(formatted(result), [
      "192.0.2.51/32",
      "192.0.2.52/32",
      "192.0.2.53/32",
    ]);
  });

  test("SERVFAIL is not a void lookup", async () => {
    await assert.rejects(
      expand("servfail.void.example", responder.server),
      (error: unknown) =>
        error instanceof SpfDnsError &&
        /A+ lookup for fail\.void\.example failed: ESERVFAIL/.test(
          error.message,
        ),
    );
  });

  test("timeout is not a void lookup", async () => {
    await assert.rejects(
      expand("timeout.void.example", responder.server, 500),
      (error: unknown) =>
        error instanceof SpfDnsError &&
        /A+ lookup for slow\.void\.example (timed out|failed: ETIMEOUT)/.test(
          error.message,
        ),
    );
  });
});

describe("spf dns failures", () => {
  test("SERVFAIL is a temporary error", async () => {
    const responder = await serve(() => ({
      "fail.example": { kind: "servfail" },
    }));
    try {
      await assert.rejects(
        expand("fail.example", responder.server),
        (error: unknown) =>
          error instanceof SpfDnsError &&
          /TXT lookup for fail.example failed: ESERVFAIL/.test(error.message),
      );
    } finally {
      await responder.stop();
    }
  });
});

function memoryLogger(): {
  lines: string[];
  logger: {
    info(line: string): void;
    warning(line: string): void;
    error(line: string): void;
  };
} {
  const lines: string[] = [];
  return {
    lines,
    logger: {
      info: (line) => lines.push(line),
      warning: (line) => lines.push(`warning: ${line}`),
      error: (line) => lines.push(`error: ${line}`),
    },
  };
}

/** Builds an allowlist of `domains` that queries `server` and logs to `lines`. */
function createAllowlist(
  domains: string[],
  server: string,
): { lines: string[]; allowlist: InfrastructureAllowlist } {
  const { lines, logger } = memoryLogger();
  const allowlist = InfrastructureAllowlist.withServers(
    { domains, refreshIntervalMs: 3600_000, timeoutMs: 1000 },
    logger,
    [server],
  );
  return { lines, allowlist };
}

describe("infrastructure allowlist refresh", () => {
  test("failed refresh keeps old set", async () => {
    let failure: ResponderBehaviour | undefined;
    const zone: Record<string, NameRecords> = {
      "a.example": { txt: ["v=spf1 ip4:192.0.2.0/28 ip6:2001:db8::/32"] },
      "b.example": { txt: ["v=spf1 ip4:198.51.100.0/24"] },
    };
    const responder = await serve(() =>
      failure === undefined ? zone : { ...zone, "b.example": failure },
    );
    const { lines, allowlist } = createAllowlist(
      ["a.example", "b.example"],
      responder.server,
    );
    try {
      await allowlist.start();
      assert.deepEqual(lines, [
        "infrastructure allowlist refreshed: 3 networks " +
          "(a.example 2, b.example 1)",
      ]);
      assert.equal(allowlist.contains(parseAddress("198.51.100.9")), true);
      assert.equal(allowlist.contains(parseAddress("192.0.2.15")), true);
      assert.equal(allowlist.contains(parseAddress("192.0.2.16")), false);
      assert.equal(allowlist.contains(parseAddress("2001:db8:5::1")), true);

      failure = { kind: "servfail" };
      zone["a.example"] = { txt: ["v=spf1 ip4:192.0.2.0/29"] };
      lines.length = 0;
      await allowlist.refresh();
      assert.deepEqual(lines, [
        "warning: infrastructure allowlist: cannot resolve the SPF record " +
          "of b.example: TXT lookup for b.example failed: ESERVFAIL; " +
          "keeping the 1 networks of the previous refresh",
        "infrastructure allowlist refreshed: 2 networks " +
          "(a.example 1, b.example 1 kept from before)",
      ]);
      assert.deepEqual(allowlist.formatNetworks(), [
        "192.0.2.0/29",
        "198.51.100.0/24",
      ]);

      // No reply at all: the refresh ends at the time limit.
      failure = { kind: "silent" };
      lines.length = 0;
      const started = Date.now();
      await allowlist.refresh();
      const elapsed = Date.now() - started;
      assert.ok(elapsed < 5000, `refresh took ${elapsed} ms`);
      // Either postwarden's own deadline or c-ares's ends the lookup first.
      assert.match(
        lines[0] ?? "",
        /cannot resolve the SPF record of b\.example: .*(timed out|ETIMEOUT)/,
      );
      assert.equal(allowlist.contains(parseAddress("198.51.100.9")), true);
    } finally {
      allowlist.stop();
      await responder.stop();
    }
  });

  test("void lookup limit keeps earlier networks", async () => {
    const responder = await serve(() => VOID_ZONE);
    const { lines, allowlist } = createAllowlist(
      ["three.void.example"],
      responder.server,
    );
    try {
      await allowlist.start();
      assert.deepEqual(lines, [
        "warning: infrastructure allowlist: invalid SPF record of " +
          "three.void.example: more than 2 void lookups, the limit of " +
          "RFC 7208, at the TXT lookup for absent.void.example " +
          '("include:absent.void.example" in three.void.example); using ' +
          "the 3 networks found before the error",
        "infrastructure allowlist refreshed: 3 networks " +
          "(three.void.example 3)",
      ]);
      assert.equal(allowlist.contains(parseAddress("192.0.2.22")), true);
      assert.equal(allowlist.contains(parseAddress("192.0.2.23")), false);
    } finally {
      allowlist.stop();
      await responder.stop();
    }
  });

  test("concurrent refresh calls share one", async () => {
    const responder = await serve(() => ({
      "c.example": { txt: ["v=spf1 ip4:192.0.2.0/24"] },
    }));
    const { lines, allowlist } = createAllowlist(
      ["c.example"],
      responder.server,
    );
    try {
      const first = allowlist.refresh();
      const second = allowlist.refresh();
      assert.equal(first, second);
      await first;
      assert.equal(lines.length, 1);
      assert.equal(responder.queries.length, 1);
    } finally {
      allowlist.stop();
      await responder.stop();
    }
  });
});

describe("infrastructure allowlist end to end", () => {
  let postfix: PostfixInstance;
  before(async () => {
    postfix = PostfixInstance.create();
    await postfix.start();
  });
  after(async () => {
    await postfix?.destroy();
  });

  async function readGreeting(client: SmtpClient): Promise<string[]> {
    const lines: string[] = [];
    for (;;) {
      const line = await client.readLine(15_000);
      lines.push(line);
      if (line[3] !== "-") return lines;
    }
  }

  test("client in SPF networks skips tests", async () => {
    const warden = PostwardenProcess.startInFrontOf(postfix, [
      "-o",
      "access_list=",
      "-o",
      `dns_servers=${rbldnsd.server}`,
      "-o",
      "infrastructure_allowlist_domains=lo.infra.test",
    ]);
    try {
      const port = await warden.listeningPort();
      await warden.waitForLog(
        /infrastructure allowlist refreshed: 1 networks \(lo\.infra\.test 1\)$/,
      );

      const inside = await SmtpClient.open(port, "127.0.0.1", "127.0.0.53");
      assert.deepEqual(await readGreeting(inside), [
        "220 pass-test.localdomain ESMTP Postfix",
      ]);
      await warden.waitForLog(
        new RegExp(`ALLOWLISTED \\[127\\.0\\.0\\.53\\]:${inside.localPort}$`),
      );
      assert.match((await inside.command("QUIT"))[0] ?? "", /^221 /);

      const outside = await SmtpClient.open(port, "127.0.0.1", "127.0.0.60");
      assert.deepEqual(await readGreeting(outside), [
        "220-warden.example.com ESMTP Postfix",
        "220 pass-test.localdomain ESMTP Postfix",
      ]);
      await warden.waitForLog(
        new RegExp(`PASS NEW \\[127\\.0\\.0\\.60\\]:${outside.localPort}$`),
      );
      assert.equal(
        warden.grep(/ALLOWLISTED \[127\.0\.0\.60\]/).length,
        0,
        "the client outside the SPF networks was allowlisted",
      );
      assert.match((await outside.command("QUIT"))[0] ?? "", /^221 /);
    } finally {
      assert.equal(await warden.stop(), 0);
    }
  });
});
