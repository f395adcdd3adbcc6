// Checks the DNS test servers, rbldnsd and DnsResponder, through node:dns's
// Resolver, which is pointed at them on 127.0.0.1 and at nothing else.
// The rbldnsd tests need the rbldnsd package; no system resolver is used.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createSocket } from "node:dgram";
import { Resolver } from "node:dns/promises";
import {
  DnsResponder,
  type QueryType,
  type ResponderBehaviour,
} from "../support/dns-responder.js";
import { Rbldnsd } from "../support/rbldnsd.js";

const SOA_LINE = "$SOA 300 ns.test. admin.test. 1 600 300 86400 120";
const DEFAULT_TTL = 42;

/** Creates a resolver that queries only `server`, with one try of at most `timeoutMs`. */
function resolverFor(server: string, timeoutMs = 2_000): Resolver {
  const resolver = new Resolver({ timeout: timeoutMs, tries: 1 });
  resolver.setServers([server]);
  return resolver;
}

/** Builds the DNSBL query name for an IPv6 address: 32 reversed nibbles. */
function reversedNibbles(address: string, zone: string): string {
  const [head = "", tail] = address.split("::");
  const headGroups = head === "" ? [] : head.split(":");
  const tailGroups = tail === undefined || tail === "" ? [] : tail.split(":");
  const zeros = Array<string>(8 - headGroups.length - tailGroups.length).fill(
    "0",
  );
  const hex = [...headGroups, ...zeros, ...tailGroups]
    .map((group) => group.padStart(4, "0"))
    .join("");
  return [...hex].reverse().join(".") + "." + zone;
}

/** Encodes a standard query with recursion desired and one question. */
function encodeQuery(id: number, name: string, type: number): Buffer {
  const header = Buffer.alloc(12);
  header.writeUInt16BE(id, 0);
  header.writeUInt16BE(0x0100, 2);
  header.writeUInt16BE(1, 4);
  const labels = name
    .split(".")
    .map((label) =>
      Buffer.concat([Buffer.from([label.length]), Buffer.from(label)]),
    );
  const tail = Buffer.alloc(5);
  tail.writeUInt16BE(type, 1);
  tail.writeUInt16BE(1, 3);
  return Buffer.concat([header, ...labels, tail]);
}

async function withResponder(
  handler: (name: string, type: QueryType) => ResponderBehaviour,
  body: (responder: DnsResponder) => Promise<void>,
): Promise<void> {
  const responder = await DnsResponder.start(handler);
  try {
    await body(responder);
  } finally {
    await responder.stop();
  }
}

test("responder answers A with TTL", async () => {
  const handler = (): ResponderBehaviour => ({
    kind: "answer",
    addresses: ["192.0.2.1", "127.0.0.2"],
    ttl: 300,
  });
  await withResponder(handler, async (responder) => {
    const answers = await resolverFor(responder.server).resolve4(
      "2.0.0.127.bl.test",
      { ttl: true },
    );
    assert.deepEqual(answers, [
      { address: "192.0.2.1", ttl: 300 },
      { address: "127.0.0.2", ttl: 300 },
    ]);
    assert.deepEqual(responder.queries, [
      { name: "2.0.0.127.bl.test", type: "A" },
    ]);
  });
});

test("responder error codes reach node:dns", async () => {
  const cases: { behaviour: ResponderBehaviour; code: string }[] = [
    { behaviour: { kind: "servfail" }, code: "ESERVFAIL" },
    { behaviour: { kind: "refused" }, code: "EREFUSED" },
    { behaviour: { kind: "nxdomain" }, code: "ENOTFOUND" },
    { behaviour: { kind: "nxdomain", soaMinimum: 60 }, code: "ENOTFOUND" },
  ];
  for (const { behaviour, code } of cases) {
    await withResponder(
      () => behaviour,
      async (responder) => {
        await assert.rejects(
          resolverFor(responder.server).resolve4("x.bl.test"),
          { code },
          JSON.stringify(behaviour),
        );
        assert.ok(responder.queries.length >= 1, JSON.stringify(behaviour));
      },
    );
  }
});

test("responder silence gives ETIMEOUT", async () => {
  await withResponder(
    () => ({ kind: "silent" }),
    async (responder) => {
      await assert.rejects(
        resolverFor(responder.server, 500).resolve4("x.bl.test"),
        { code: "ETIMEOUT" },
      );
      assert.equal(responder.queries.length, 1);
    },
  );
});

test("responder serves SOA minimum", async () => {
  const handler = (name: string, type: QueryType): ResponderBehaviour =>
    type === "SOA"
      ? { kind: "soa", minimum: 77, ttl: 300 }
      : { kind: "answer", addresses: ["127.0.0.2"], ttl: 5 };
  await withResponder(handler, async (responder) => {
    const soa = await resolverFor(responder.server).resolveSoa("bl.test");
    assert.equal(soa.minttl, 77);
    assert.equal(soa.nsname, "ns.invalid");
    assert.equal(soa.hostmaster, "hostmaster.invalid");
  });
});

test("responder answers other types empty", async () => {
  const handler = (): ResponderBehaviour => ({
    kind: "answer",
    addresses: ["127.0.0.2"],
    ttl: 60,
  });
  await withResponder(handler, async (responder) => {
    const resolver = resolverFor(responder.server);
    await assert.rejects(resolver.resolveTxt("2.0.0.127.bl.test"), {
      code: "ENODATA",
    });
    await assert.rejects(resolver.resolve6("2.0.0.127.bl.test"), {
      code: "ENODATA",
    });
    const soa = await resolver.resolveSoa("bl.test");
    assert.equal(soa.minttl, 60);
    assert.deepEqual(
      responder.queries.map((query) => query.type),
      ["TXT", "AAAA", "SOA"],
    );
  });
});

test("responder ignores malformed packets", async () => {
  await withResponder(
    () => ({ kind: "answer", addresses: ["127.0.0.2"], ttl: 60 }),
    async (responder) => {
      const client = createSocket("udp4");
      try {
        await new Promise<void>((resolve) =>
          client.bind({ address: "127.0.0.1", port: 0 }, () => resolve()),
        );
        const reply = new Promise<Buffer>((resolve, reject) => {
          const timer = setTimeout(
            () =>
              reject(new Error("timed out after 2000 ms waiting for a reply")),
            2_000,
          );
          client.once("message", (message) => {
            clearTimeout(timer);
            resolve(message);
          });
        });
        const valid = encodeQuery(0x1234, "MiXeD.Bl.Test", 1);
        const responseBitSet = Buffer.from(valid);
        responseBitSet.writeUInt16BE(0x8100, 2);
        const pointerName = Buffer.concat([
          valid.subarray(0, 12),
          Buffer.from([0xc0, 0x0c, 0, 1, 0, 1]),
        ]);
        const malformed = [
          Buffer.alloc(0),
          Buffer.from([1, 2, 3]),
          valid.subarray(0, 12),
          valid.subarray(0, valid.length - 2),
          Buffer.concat([valid.subarray(0, 12), Buffer.from([40, 0x61])]),
          responseBitSet,
          pointerName,
        ];
        for (const packet of malformed) {
          client.send(packet, responder.port, "127.0.0.1");
        }
        client.send(valid, responder.port, "127.0.0.1");

        const message = await reply;
        assert.equal(message.readUInt16BE(0), 0x1234, "first reply's ID");
        assert.equal(message.readUInt16BE(2) & 0x000f, 0, "response code");
        assert.equal(message.readUInt16BE(6), 1, "answer count");
        assert.deepEqual(
          message.subarray(12, valid.length),
          valid.subarray(12),
          "question echoed byte for byte",
        );
        assert.deepEqual(responder.queries, [
          { name: "mixed.bl.test", type: "A" },
        ]);
      } finally {
        client.close();
      }
    },
  );
});

test("responder reports handler errors", async () => {
  const responder = await DnsResponder.start(() => ({
    kind: "answer",
    addresses: ["2001:db8::1"],
    ttl: 60,
  }));
  await assert.rejects(resolverFor(responder.server).resolve4("x.bl.test"), {
    code: "ESERVFAIL",
  });
  assert.match(responder.errors[0]?.message ?? "", /invalid address/);
  await assert.rejects(responder.stop(), /invalid address/);
});

let rbldnsd: Rbldnsd | undefined;

before(async () => {
  rbldnsd = await Rbldnsd.start(
    [
      {
        name: "bl.test",
        type: "ip4set",
        lines: [
          SOA_LINE,
          "$NS 300 ns.test.",
          ":127.0.0.2:listed",
          "127.0.0.2",
          "127.0.0.4 :127.0.0.4:",
          "192.0.2.99 :192.0.2.1:",
        ],
      },
      {
        name: "bl6.test",
        type: "ip6trie",
        lines: [SOA_LINE, ":127.0.0.3:", "2001:db8::1"],
      },
      {
        name: "wl.test",
        type: "ip4trie",
        lines: [SOA_LINE, ":127.0.9.5:", "198.51.100.0/25"],
      },
      {
        name: "names.test",
        type: "generic",
        lines: [SOA_LINE, "www A 192.0.2.10"],
      },
    ],
    { defaultTtl: DEFAULT_TTL },
  );
});

after(async () => {
  await rbldnsd?.stop();
});

function rbldnsdResolver(): Resolver {
  assert.ok(rbldnsd, "rbldnsd did not start");
  return resolverFor(rbldnsd.server);
}

test("rbldnsd lists IPv4 with TTL", async () => {
  const answers = await rbldnsdResolver().resolve4("2.0.0.127.bl.test", {
    ttl: true,
  });
  assert.deepEqual(answers, [{ address: "127.0.0.2", ttl: DEFAULT_TTL }]);
  const texts = await rbldnsdResolver().resolveTxt("2.0.0.127.bl.test");
  assert.deepEqual(texts, [["listed"]]);
});

test("rbldnsd serves custom answer values", async () => {
  const resolver = rbldnsdResolver();
  assert.deepEqual(await resolver.resolve4("4.0.0.127.bl.test"), ["127.0.0.4"]);
  assert.deepEqual(await resolver.resolve4("99.2.0.192.bl.test"), [
    "192.0.2.1",
  ]);
  assert.deepEqual(await resolver.resolve4("100.100.51.198.wl.test"), [
    "127.0.9.5",
  ]);
  assert.deepEqual(await resolver.resolve4("www.names.test"), ["192.0.2.10"]);
});

test("rbldnsd lists IPv6 by nibbles", async () => {
  const resolver = rbldnsdResolver();
  const listed = reversedNibbles("2001:db8::1", "bl6.test");
  assert.equal(
    listed,
    "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl6.test",
  );
  assert.deepEqual(await resolver.resolve4(listed, { ttl: true }), [
    { address: "127.0.0.3", ttl: DEFAULT_TTL },
  ]);
  await assert.rejects(
    resolver.resolve4(reversedNibbles("2001:db8::2", "bl6.test")),
    { code: "ENOTFOUND" },
  );
});

test("rbldnsd gives NXDOMAIN when unlisted", async () => {
  const resolver = rbldnsdResolver();
  for (const name of [
    "3.0.0.127.bl.test",
    "99.2.0.192.bl6.test",
    "200.100.51.198.wl.test",
  ]) {
    await assert.rejects(resolver.resolve4(name), { code: "ENOTFOUND" }, name);
  }
});

test("rbldnsd serves zone SOA", async () => {
  const soa = await rbldnsdResolver().resolveSoa("bl.test");
  assert.equal(soa.minttl, 120);
  assert.equal(soa.nsname, "ns.test");
  assert.equal(soa.hostmaster, "admin.test");
  assert.equal(soa.serial, 1);
});

test("rbldnsd stop ends the daemon", async () => {
  const own = await Rbldnsd.start([
    { name: "stop.test", type: "ip4set", lines: ["127.0.0.2"] },
  ]);
  const resolver = resolverFor(own.server, 500);
  assert.deepEqual(await resolver.resolve4("2.0.0.127.stop.test"), [
    "127.0.0.2",
  ]);
  await own.stop();
  await assert.rejects(resolver.resolve4("2.0.0.127.stop.test"), (error) => {
    const code = (error as NodeJS.ErrnoException).code;
    return code === "ECONNREFUSED" || code === "ETIMEOUT";
  });
});

test("rbldnsd rejects invalid zone name", async () => {
  await assert.rejects(
    Rbldnsd.start([{ name: "bl.test:x", type: "ip4set", lines: [] }]),
    /invalid zone name/,
  );
});

test("rbldnsd rejects unparsable zone lines", async () => {
  await assert.rejects(
    Rbldnsd.start([
      {
        name: "typo.test",
        type: "ip4set",
        lines: ["127.0.0.2", "127.0.0.300"],
      },
    ]),
    /0-typo\.test\.ip4set\(2\): invalid address/,
  );
});
