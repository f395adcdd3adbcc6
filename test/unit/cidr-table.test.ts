import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { isIP } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import {
  CidrTable,
  CidrTableError,
  type AccessResult,
} from "../../src/access/cidr-table.js";
import {
  formatNetwork,
  networkContains,
  parseAddress,
  parseNetwork,
  parseNetworkList,
  type Network,
} from "../../src/access/network.js";

const FILE = "access.cidr";

function parseError(text: string): CidrTableError {
  try {
    CidrTable.parse(text, FILE);
  } catch (error) {
    assert.ok(error instanceof CidrTableError, `${String(error)}`);
    return error;
  }
  assert.fail(`expected a CidrTableError for ${JSON.stringify(text)}`);
}

function errorMessage(action: () => unknown): string {
  try {
    action();
  } catch (error) {
    assert.ok(error instanceof Error);
    return error.message;
  }
  assert.fail("expected an Error");
}

// Independent helpers for the property tests: formatting and matching by
// plain arithmetic, without the code under test.

const WIDTH = { 4: 32, 6: 128 } as const;

function ipv4Text(bits: bigint): string {
  return [24n, 16n, 8n, 0n]
    .map((shift) => String((bits >> shift) & 0xffn))
    .join(".");
}

/** IPv6 text with all eight groups, or with the first zero run as "::". */
function ipv6Text(bits: bigint, compress: boolean): string {
  const groups: string[] = [];
  for (let shift = 112n; shift >= 0n; shift -= 16n) {
    groups.push(((bits >> shift) & 0xffffn).toString(16));
  }
  const full = groups.join(":");
  return compress ? full.replace(/(?:^|:)0(?::0)+(?::|$)/, "::") : full;
}

function referenceContains(network: Network, bits: bigint): boolean {
  const width = WIDTH[network.family];
  const allOnes = (1n << BigInt(width)) - 1n;
  const hostMask = (1n << BigInt(width - network.prefixLength)) - 1n;
  const mask = allOnes ^ hostMask;
  return (bits & mask) === (network.bits & mask);
}

const networkArbitrary: fc.Arbitrary<Network> = fc
  .constantFrom(4 as const, 6 as const)
  .chain((family) =>
    fc.record({
      family: fc.constant(family),
      bits: fc.bigInt(0n, (1n << BigInt(WIDTH[family])) - 1n),
      prefixLength: fc.integer({ min: 0, max: WIDTH[family] }),
    }),
  )
  .map(({ family, bits, prefixLength }) => {
    const hostMask = (1n << BigInt(WIDTH[family] - prefixLength)) - 1n;
    return { family, bits: bits & ~hostMask, prefixLength };
  });

/** Network text in one of the forms cidr_table(5) accepts. */
function networkText(network: Network, style: number): string {
  const address =
    network.family === 4
      ? ipv4Text(network.bits)
      : ipv6Text(network.bits, style % 2 === 0);
  const full = network.prefixLength === WIDTH[network.family];
  switch (style % 4) {
    case 0:
      return `${address}/${network.prefixLength}`;
    case 1:
      return `[${address}]/${network.prefixLength}`;
    case 2:
      return `[${address}/${network.prefixLength}]`;
    default:
      return full ? address : `${address}/${network.prefixLength}`;
  }
}

interface Client {
  text: string;
  family: 4 | 6;
  bits: bigint;
}

/** Generates client addresses in or near `networks`, some IPv4-mapped. */
function clientArbitrary(networks: Network[]): fc.Arbitrary<Client> {
  const anywhere = fc.oneof(
    fc.bigInt(0n, 0xffffffffn).map((bits) => ({ family: 4 as const, bits })),
    fc
      .bigInt(0n, (1n << 128n) - 1n)
      .map((bits) => ({ family: 6 as const, bits })),
  );
  const near =
    networks.length === 0
      ? anywhere
      : fc
          .tuple(fc.constantFrom(...networks), fc.bigInt(0n, (1n << 128n) - 1n))
          .map(([network, noise]) => {
            const width = WIDTH[network.family];
            const hostMask = (1n << BigInt(width - network.prefixLength)) - 1n;
            return {
              family: network.family,
              bits: network.bits | (noise & hostMask),
            };
          });
  return fc
    .tuple(fc.oneof(near, anywhere), fc.nat(3))
    .filter(
      ([address]) => address.family === 4 || address.bits >> 32n !== 0xffffn,
    )
    .map(([{ family, bits }, style]) => {
      if (family === 6) {
        return { family, bits, text: ipv6Text(bits, style % 2 === 0) };
      }
      const text = style === 3 ? `::ffff:${ipv4Text(bits)}` : ipv4Text(bits);
      return { family, bits, text };
    });
}

// parseNetwork, parseAddress and networkContains

test("parseNetwork accepts pattern forms", () => {
  const cases: [string, Network][] = [
    ["192.0.2.0/24", { family: 4, bits: 0xc0000200n, prefixLength: 24 }],
    ["192.0.2.1", { family: 4, bits: 0xc0000201n, prefixLength: 32 }],
    ["[192.0.2.1]", { family: 4, bits: 0xc0000201n, prefixLength: 32 }],
    ["[192.0.2.0]/24", { family: 4, bits: 0xc0000200n, prefixLength: 24 }],
    ["192.0.2.0/024", { family: 4, bits: 0xc0000200n, prefixLength: 24 }],
    ["0.0.0.0/0", { family: 4, bits: 0n, prefixLength: 0 }],
    ["::/0", { family: 6, bits: 0n, prefixLength: 0 }],
    ["::1", { family: 6, bits: 1n, prefixLength: 128 }],
    ["[::1]", { family: 6, bits: 1n, prefixLength: 128 }],
    ["[::1]/128", { family: 6, bits: 1n, prefixLength: 128 }],
    [
      "2001:db8::/32",
      { family: 6, bits: 0x20010db8n << 96n, prefixLength: 32 },
    ],
    [
      "[2001:db8::]/32",
      { family: 6, bits: 0x20010db8n << 96n, prefixLength: 32 },
    ],
    [
      "[2001:db8::/32]",
      { family: 6, bits: 0x20010db8n << 96n, prefixLength: 32 },
    ],
    [
      "2001:DB8:0:0:0:0:0:0/32",
      { family: 6, bits: 0x20010db8n << 96n, prefixLength: 32 },
    ],
    [
      "1:2:3:4:5:6:7::",
      {
        family: 6,
        bits: 0x00010002000300040005000600070000n,
        prefixLength: 128,
      },
    ],
    [
      "1:2:3:4:5:6:192.0.2.1",
      {
        family: 6,
        bits: 0x000100020003000400050006c0000201n,
        prefixLength: 128,
      },
    ],
    [
      "::ffff:192.0.2.0/120",
      { family: 6, bits: 0xffffc0000200n, prefixLength: 120 },
    ],
  ];
  for (const [text, expected] of cases) {
    assert.deepEqual(parseNetwork(text), expected, text);
  }
});

test("parseNetwork rejects invalid patterns", () => {
  const cases: [string, RegExp][] = [
    ["", /^missing network address$/],
    [
      "192.0.2.1/24",
      /^non-null host address bits in "192\.0\.2\.1\/24": .* "192\.0\.2\.0\/24"$/,
    ],
    [
      "2001:db8::1/32",
      /^non-null host address bits in "2001:db8::1\/32": .* "2001:db8::\/32"$/,
    ],
    ["0.0.0.1/0", /^non-null host address bits .* "0\.0\.0\.0\/0"$/],
    ["192.0.2.0/33", /^prefix length 33 is out of range .* 0 to 32 for IPv4$/],
    ["::/129", /^prefix length 129 is out of range .* 0 to 128 for IPv6$/],
    ["192.0.2.0/", /^invalid prefix length "" in "192\.0\.2\.0\/"$/],
    ["192.0.2.0/x", /^invalid prefix length "x"/],
    ["192.0.2.0/-1", /^invalid prefix length "-1"/],
    ["192.0.2.0/24/24", /^invalid prefix length "24\/24"/],
    ["192.0.2.256", /^invalid IPv4 address "192\.0\.2\.256"$/],
    ["192.0.2.256/32", /^invalid IPv4 address "192\.0\.2\.256" in /],
    ["192.0.2", /^invalid IPv4 address/],
    ["1.2.3.4.5", /^invalid IPv4 address/],
    ["01.2.3.4", /^invalid IPv4 address/],
    ["host.example", /^invalid IPv4 address/],
    [" 192.0.2.1", /^invalid IPv4 address/],
    ["[]", /^invalid IPv4 address ""/],
    ["[::1", /^missing "\]" in "\[::1"$/],
    ["[::1]x", /^unexpected text "x" after "\]" in "\[::1\]x"$/],
    ["[::1]]", /^unexpected text "\]" after "\]"/],
    ["192.0.2.1]", /^invalid IPv4 address "192\.0\.2\.1\]"$/],
    ["1:2:3:4:5:6:7:8:9", /^invalid IPv6 address/],
    ["1:2:3:4:5:6:7:8::", /^invalid IPv6 address/],
    ["1::2::3", /^invalid IPv6 address/],
    [":1::", /^invalid IPv6 address/],
    ["1::2:", /^invalid IPv6 address/],
    [":::", /^invalid IPv6 address/],
    ["12345::", /^invalid IPv6 address/],
    ["fe80::1%eth0", /^invalid IPv6 address/],
    ["1.2.3.4::", /^invalid IPv6 address/],
    ["::1.2.3.4.5", /^invalid IPv6 address/],
    ["1:2:3:4:5:6:7:1.2.3.4", /^invalid IPv6 address/],
    ["192.0.2.1:25", /^invalid IPv6 address/],
  ];
  for (const [text, expected] of cases) {
    assert.match(
      errorMessage(() => parseNetwork(text)),
      expected,
      text,
    );
  }
});

test("parseAddress agrees with isIP on IPv4", () => {
  const octetLike = fc.string({
    unit: fc.constantFrom(..."0123456789."),
    maxLength: 17,
  });
  fc.assert(
    fc.property(octetLike, (text) => {
      let parsed: bigint | undefined;
      try {
        parsed = parseAddress(text).bits;
      } catch {
        parsed = undefined;
      }
      assert.equal(parsed !== undefined, isIP(text) === 4, text);
      if (parsed !== undefined) {
        const expected = text
          .split(".")
          .reduce((bits, octet) => (bits << 8n) | BigInt(octet), 0n);
        assert.equal(parsed, expected, text);
      }
    }),
    { numRuns: 5000 },
  );
  for (const text of ["0.0.0.0", "255.255.255.255", "10.0.0.1"]) {
    assert.equal(parseAddress(text).family, 4, text);
  }
  for (const text of ["1.2.3", "1.2.3.4.", ".1.2.3", "1..2.3", "256.0.0.1"]) {
    assert.throws(() => parseAddress(text), /invalid address/, text);
  }
});

test("parseAddress maps IPv4 in IPv6", () => {
  const ipv4 = { family: 4, bits: 0xc0000201n };
  assert.deepEqual(parseAddress("192.0.2.1"), ipv4);
  assert.deepEqual(parseAddress("::ffff:192.0.2.1"), ipv4);
  assert.deepEqual(parseAddress("::FFFF:c000:201"), ipv4);
  assert.deepEqual(parseAddress("2001:db8::1"), {
    family: 6,
    bits: (0x20010db8n << 96n) | 1n,
  });
  assert.deepEqual(parseAddress("::192.0.2.1"), {
    family: 6,
    bits: 0xc0000201n,
  });
  assert.deepEqual(parseAddress("::ffff:0:192.0.2.1"), {
    family: 6,
    bits: 0xffff0000c0000201n,
  });
});

test("parseAddress rejects invalid addresses", () => {
  for (const text of [
    "",
    "[::1]",
    "[192.0.2.1]",
    "192.0.2.1/32",
    "fe80::1%eth0",
    "localhost",
    "::ffff:192.0.2.256",
  ]) {
    assert.equal(
      errorMessage(() => parseAddress(text)),
      `invalid address "${text}"`,
    );
  }
});

test("networkContains matches by family", () => {
  const cases: [string, string, boolean][] = [
    ["192.0.2.0/24", "192.0.2.0", true],
    ["192.0.2.0/24", "192.0.2.255", true],
    ["192.0.2.0/24", "192.0.3.0", false],
    ["192.0.2.0/24", "::ffff:192.0.2.9", true],
    ["192.0.2.9", "192.0.2.9", true],
    ["192.0.2.9", "192.0.2.8", false],
    ["0.0.0.0/0", "203.0.113.9", true],
    ["0.0.0.0/0", "::ffff:203.0.113.9", true],
    ["0.0.0.0/0", "::1", false],
    ["::/0", "2001:db8::1", true],
    ["::/0", "192.0.2.1", false],
    ["::/0", "::ffff:192.0.2.1", false],
    ["2001:db8::/32", "2001:db8:ffff::1", true],
    ["2001:db8::/32", "2001:db9::", false],
    ["[::1]", "::1", true],
    ["::ffff:192.0.2.0/120", "::ffff:192.0.2.1", false],
  ];
  for (const [network, address, expected] of cases) {
    assert.equal(
      networkContains(parseNetwork(network), address),
      expected,
      `${network} contains ${address}`,
    );
  }
});

test("networkContains rejects invalid address", () => {
  assert.throws(
    () => networkContains(parseNetwork("0.0.0.0/0"), "192.0.2"),
    /^Error: invalid address "192\.0\.2"$/,
  );
});

test("parseNetworkList splits mynetworks values", () => {
  assert.deepEqual(
    parseNetworkList("127.0.0.0/8 [::1]/128").map(formatNetwork),
    ["127.0.0.0/8", "::1/128"],
  );
  assert.deepEqual(
    parseNetworkList(" 127.0.0.0/8,192.0.2.0/24 ,\n\t[2001:db8::]/32, ").map(
      formatNetwork,
    ),
    ["127.0.0.0/8", "192.0.2.0/24", "2001:db8::/32"],
  );
  assert.deepEqual(parseNetworkList(""), []);
  assert.deepEqual(parseNetworkList(" , "), []);
});

test("parseNetworkList names bad item", () => {
  assert.equal(
    errorMessage(() => parseNetworkList("127.0.0.0/8 bogus [::1]")),
    'invalid network "bogus": invalid IPv4 address "bogus"',
  );
  assert.match(
    errorMessage(() => parseNetworkList("127.0.0.1/8")),
    /^invalid network "127\.0\.0\.1\/8": non-null host address bits/,
  );
});

test("formatNetwork follows RFC 5952", () => {
  const cases: [string, string][] = [
    ["192.0.2.0/24", "192.0.2.0/24"],
    ["192.0.2.1", "192.0.2.1/32"],
    ["::/0", "::/0"],
    ["::1", "::1/128"],
    ["1::/16", "1::/16"],
    ["2001:0DB8:0000:0000:0001:0000:0000:0001", "2001:db8::1:0:0:1/128"],
    ["2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1/128"],
    ["2001:0:0:1:0:0:0:1", "2001:0:0:1::1/128"],
    ["1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0/128"],
  ];
  for (const [text, expected] of cases) {
    assert.equal(formatNetwork(parseNetwork(text)), expected, text);
  }
});

// CidrTable parsing and lookups

test("lookup uses first match", () => {
  const table = CidrTable.parse(
    [
      "# Postscreen access list",
      "192.0.2.1          permit",
      "192.0.2.0/24       reject",
      "[198.51.100.0]/24  dunno",
      "",
      "2001:db8::1        permit",
      "[2001:db8::]/32    reject",
      "[2001:db9::/32]    permit",
      "0.0.0.0/0          dunno",
    ].join("\n"),
    FILE,
  );
  const cases: [string, AccessResult | undefined][] = [
    ["192.0.2.1", "permit"],
    ["192.0.2.2", "reject"],
    ["::ffff:192.0.2.1", "permit"],
    ["::ffff:192.0.2.200", "reject"],
    ["198.51.100.7", "dunno"],
    ["2001:db8::1", "permit"],
    ["2001:DB8:0::1", "permit"],
    ["2001:db8::2", "reject"],
    ["2001:db9:1::", "permit"],
    ["203.0.113.1", "dunno"],
    ["2001:dba::1", undefined],
    ["::1", undefined],
  ];
  for (const [address, expected] of cases) {
    assert.equal(table.lookup(address), expected, address);
  }
  assert.equal(table.size, 7);
});

test("lookup of empty table", () => {
  const table = CidrTable.parse("# nothing\n\n   \n", FILE);
  assert.equal(table.size, 0);
  assert.equal(table.lookup("192.0.2.1"), undefined);
  assert.equal(table.format(), "");
});

test("lookup rejects invalid address", () => {
  const table = CidrTable.parse("0.0.0.0/0 permit\n", FILE);
  assert.throws(() => table.lookup("not-an-address"), /invalid address/);
});

test("results ignore letter case", () => {
  const table = CidrTable.parse(
    "192.0.2.1 PERMIT\n192.0.2.2 Reject\n192.0.2.3 dUNNO\n",
    FILE,
  );
  assert.equal(table.lookup("192.0.2.1"), "permit");
  assert.equal(table.lookup("192.0.2.2"), "reject");
  assert.equal(table.lookup("192.0.2.3"), "dunno");
});

test("negated patterns skip other family", () => {
  const table = CidrTable.parse(
    "! ! 198.51.100.0/24 permit\n!192.0.2.0/24 reject\n::/0 dunno\n",
    FILE,
  );
  assert.equal(table.lookup("203.0.113.1"), "reject");
  assert.equal(table.lookup("192.0.2.1"), undefined);
  assert.equal(table.lookup("198.51.100.1"), "permit");
  // An IPv6 client is not in the IPv4 network, but Postfix skips
  // entries of the other family even when they are negated.
  assert.equal(table.lookup("2001:db8::1"), "dunno");
});

test("continuation lines join rules", () => {
  const table = CidrTable.parse(
    [
      "192.0.2.0/24",
      "# a comment inside the logical line",
      "",
      "\tpermit",
      "if",
      "  198.51.100.0/24",
      "198.51.100.1 reject",
      "endif",
    ].join("\n"),
    FILE,
  );
  assert.equal(table.size, 2);
  assert.equal(table.lookup("192.0.2.9"), "permit");
  assert.equal(table.lookup("198.51.100.1"), "reject");
  assert.equal(
    table.format(),
    "192.0.2.0/24 permit\nif 198.51.100.0/24\n198.51.100.1/32 reject\nendif\n",
  );
});

test("comment lines may be indented", () => {
  const table = CidrTable.parse("   # note\n192.0.2.1 permit\n", FILE);
  assert.equal(table.lookup("192.0.2.1"), "permit");
});

test("long white space parses", () => {
  // A trim with /\s+$/ is quadratic in V8: tens of seconds for this line.
  const spaces = " ".repeat(200_000);
  const table = CidrTable.parse(
    `192.0.2.0/24${spaces}permit${spaces}\n${spaces}#${spaces}x`,
    FILE,
  );
  assert.equal(table.lookup("192.0.2.1"), "permit");
});

test("CRLF line endings parse", () => {
  const table = CidrTable.parse(
    "# note\r\nif 192.0.2.0/24\r\n192.0.2.1 permit\r\nendif\r\n",
    FILE,
  );
  assert.equal(table.lookup("192.0.2.1"), "permit");
});

test("if blocks nest", () => {
  const table = CidrTable.parse(
    [
      "if 10.0.0.0/8",
      "if !10.1.0.0/16",
      "10.2.0.0/16 permit",
      "0.0.0.0/0 reject",
      "endif",
      "10.1.2.0/24 dunno",
      "ENDIF",
      "IF ![2001:db8::]/32",
      "::/0 reject",
      "EndIf",
      "if 192.0.2.0/24",
      "endif",
      "0.0.0.0/0 permit",
    ].join("\n"),
    FILE,
  );
  const cases: [string, AccessResult | undefined][] = [
    ["10.2.3.4", "permit"],
    ["10.3.0.1", "reject"],
    ["10.1.2.3", "dunno"],
    ["10.1.3.3", "permit"],
    ["192.0.2.1", "permit"],
    ["2001:db8::1", undefined],
    ["2001:db9::1", "reject"],
    ["::ffff:10.2.0.1", "permit"],
  ];
  for (const [address, expected] of cases) {
    assert.equal(table.lookup(address), expected, address);
  }
  assert.equal(table.size, 5);
});

test("if of other family skips block", () => {
  const table = CidrTable.parse(
    "if !192.0.2.0/24\n::/0 reject\nendif\n::/0 permit\n",
    FILE,
  );
  assert.equal(table.lookup("2001:db8::1"), "permit");
});

test("format writes canonical rules", () => {
  const table = CidrTable.parse(
    [
      "[2001:DB8::]/32 Permit",
      "!! [192.0.2.1] REJECT",
      "if !0.0.0.0/0",
      "! ::1 dunno",
      "endif",
    ].join("\n"),
    FILE,
  );
  assert.equal(
    table.format(),
    "2001:db8::/32 permit\n192.0.2.1/32 reject\nif !0.0.0.0/0\n!::1/128 dunno\nendif\n",
  );
});

test("parse errors name file and line", () => {
  const cases: [string, number, RegExp][] = [
    [
      "192.0.2.1/24 permit",
      1,
      /^non-null host address bits in "192\.0\.2\.1\/24": .* "192\.0\.2\.0\/24"$/,
    ],
    [
      "# comment\n\n192.0.2.0/24",
      3,
      /^missing result after "192\.0\.2\.0\/24": expected permit, reject or dunno$/,
    ],
    [
      "192.0.2.0/24 OK",
      1,
      /^invalid result "OK": expected permit, reject or dunno$/,
    ],
    ["192.0.2.0/24 permit reject", 1, /^invalid result "permit reject"/],
    ["192.0.2.0/24 permit # note", 1, /^invalid result "permit # note"/],
    [
      "192.0.2.0/24\n  permit\n  reject",
      1,
      /^invalid result "permit {2}reject"/,
    ],
    ["192.0.2.0/24 permit_mynetworks", 1, /^invalid result/],
    ["192.0.2.0/33 permit", 1, /^prefix length 33 is out of range/],
    ["192.0.2.0/x permit", 1, /^invalid prefix length "x"/],
    ["bogus permit", 1, /^invalid IPv4 address "bogus"$/],
    ["[::1 permit", 1, /^missing "\]" in "\[::1"$/],
    ["ifx 192.0.2.0/24", 1, /^invalid IPv4 address "ifx"$/],
    ["! permit", 1, /^invalid IPv4 address "permit"$/],
    ["!", 1, /^missing pattern before the result$/],
    [" 192.0.2.1 permit", 1, /^continuation line without a rule before it/],
    ["#\n\t192.0.2.1 permit", 2, /^continuation line without a rule/],
    ["if", 1, /^missing pattern after if$/],
    ["if !", 1, /^missing pattern after if$/],
    [
      "if 192.0.2.0/24 permit\nendif",
      1,
      /^unexpected text "permit" after the if pattern "192\.0\.2\.0\/24"$/,
    ],
    ["if 192.0.2.1/24\nendif", 1, /^non-null host address bits/],
    ["if 192.0.2.0/24\nendif x", 2, /^unexpected text "x" after endif$/],
    ["endif", 1, /^endif without a matching if$/],
    [
      "if 192.0.2.0/24\nendif\n192.0.2.1 permit\nendif",
      4,
      /^endif without a matching if$/,
    ],
    ["if 192.0.2.0/24\n192.0.2.1 permit", 1, /^if without a matching endif$/],
    [
      "if 10.0.0.0/8\nif 10.1.0.0/16\nendif\n10.0.0.1 permit",
      1,
      /^if without a matching endif$/,
    ],
    [
      "if 10.0.0.0/8\nif 10.1.0.0/16\n10.1.0.1 permit",
      2,
      /^if without a matching endif$/,
    ],
    ["192.0.2.1 permit\n192.0.2.2 allow\n192.0.2.3 nope", 2, /"allow"/],
  ];
  for (const [text, line, reason] of cases) {
    const error = parseError(text);
    assert.equal(error.file, FILE, text);
    assert.equal(error.line, line, text);
    assert.match(error.reason, reason, text);
    assert.equal(error.message, `${FILE}:${line}: ${error.reason}`, text);
  }
});

test("load reads table file", (t) => {
  const directory = mkdtempSync(join(tmpdir(), "postwarden-cidr-"));
  t.after(() => rmSync(directory, { recursive: true, force: true }));
  const path = join(directory, "access.cidr");
  writeFileSync(path, "192.0.2.0/24 permit\n");
  const table = CidrTable.load(path);
  assert.equal(table.lookup("192.0.2.7"), "permit");

  writeFileSync(path, "192.0.2.0/24 permit\n192.0.2.1/24 reject\n");
  assert.throws(
    () => CidrTable.load(path),
    (error: unknown) =>
      error instanceof CidrTableError &&
      error.file === path &&
      error.line === 2 &&
      error.message.startsWith(`${path}:2: non-null host address bits`),
  );
});

test("load reports unreadable file", (t) => {
  const directory = mkdtempSync(join(tmpdir(), "postwarden-cidr-"));
  t.after(() => rmSync(directory, { recursive: true, force: true }));
  const missing = join(directory, "missing.cidr");
  for (const [path, code] of [
    [missing, "ENOENT"],
    [directory, "EISDIR"],
  ] as const) {
    try {
      CidrTable.load(path);
      assert.fail(`expected an error for ${path}`);
    } catch (error) {
      assert.ok(error instanceof CidrTableError);
      assert.equal(error.file, path);
      assert.equal(error.line, 0);
      assert.match(error.reason, new RegExp(`^cannot read file: ${code}`));
      assert.equal(error.message, `${path}: ${error.reason}`);
    }
  }
});

// Property-based tests

test("networkContains agrees with masks", () => {
  fc.assert(
    fc.property(
      networkArbitrary.chain((network) =>
        fc.tuple(fc.constant(network), clientArbitrary([network]), fc.nat(3)),
      ),
      ([network, client, style]) => {
        const parsed = parseNetwork(networkText(network, style));
        assert.deepEqual(parsed, network);
        const expected =
          client.family === network.family &&
          referenceContains(network, client.bits);
        assert.equal(networkContains(parsed, client.text), expected);
      },
    ),
    { numRuns: 500 },
  );
});

test("formatNetwork round-trips", () => {
  fc.assert(
    fc.property(networkArbitrary, (network) => {
      const text = formatNetwork(network);
      const address = text.slice(0, text.lastIndexOf("/"));
      assert.equal(isIP(address), network.family);
      assert.deepEqual(parseNetwork(text), network);
    }),
    { numRuns: 500 },
  );
});

test("parseAddress agrees with node:net", () => {
  const hexDigit = fc.constantFrom(..."0123456789abcdefABCDEF");
  const character = fc.constantFrom(..."0123456789abcdefABCDEF:.");
  const candidate = fc.oneof(
    fc.string({ unit: character, maxLength: 45 }),
    fc
      .array(fc.string({ unit: hexDigit, maxLength: 5 }), { maxLength: 10 })
      .map((groups) => groups.join(":")),
  );
  fc.assert(
    fc.property(candidate, (text) => {
      let accepted = true;
      try {
        parseAddress(text);
      } catch {
        accepted = false;
      }
      assert.equal(accepted, isIP(text) !== 0, text);
    }),
    { numRuns: 2000 },
  );
});

test("garbage tables never crash", () => {
  const character = fc.constantFrom(
    ..."0123456789abcdef.:/[]!# \t\r\nifendIFpermitrejectdunno",
  );
  const line = fc.oneof(
    fc.string({ unit: character, maxLength: 40 }),
    fc.string({ unit: "binary", maxLength: 20 }),
    fc.constantFrom("if 0.0.0.0/0", "endif", "::/0 permit", " reject"),
  );
  fc.assert(
    fc.property(fc.array(line, { maxLength: 12 }), (lines) => {
      const text = lines.join("\n");
      let table: CidrTable;
      try {
        table = CidrTable.parse(text, FILE);
      } catch (error) {
        assert.ok(error instanceof CidrTableError, String(error));
        assert.ok(error.line >= 1, error.message);
        return;
      }
      for (const address of ["192.0.2.1", "::1", "0.0.0.0", "::"]) {
        const result = table.lookup(address);
        assert.ok(
          result === undefined ||
            ["permit", "reject", "dunno"].includes(result),
        );
      }
      const again = CidrTable.parse(table.format(), FILE);
      assert.equal(again.format(), table.format());
    }),
    { numRuns: 1000 },
  );
});

test("garbage patterns throw Error", () => {
  fc.assert(
    fc.property(fc.string({ unit: "binary", maxLength: 50 }), (text) => {
      try {
        parseNetwork(text);
      } catch (error) {
        assert.ok(error instanceof Error);
        assert.equal(error.constructor, Error, String(error));
      }
    }),
  );
});

type ModelRule =
  | {
      kind: "entry";
      network: Network;
      negated: boolean;
      result: AccessResult;
    }
  | { kind: "if"; network: Network; negated: boolean; body: ModelRule[] };

const { rules: modelArbitrary } = fc.letrec<{
  rules: ModelRule[];
  rule: ModelRule;
}>((tie) => ({
  rules: fc.array(tie("rule"), { maxLength: 6 }),
  rule: fc.oneof(
    { maxDepth: 3, depthIdentifier: "rule" },
    fc.record({
      kind: fc.constant("entry" as const),
      network: networkArbitrary,
      negated: fc.boolean(),
      result: fc.constantFrom<AccessResult>("permit", "reject", "dunno"),
    }),
    fc.record({
      kind: fc.constant("if" as const),
      network: networkArbitrary,
      negated: fc.boolean(),
      body: tie("rules"),
    }),
  ),
}));

/** Looks up a client in the nested model, as the reference result. */
function evaluateModel(
  rules: ModelRule[],
  client: Client,
): AccessResult | undefined {
  for (const rule of rules) {
    const inside = referenceContains(rule.network, client.bits);
    const hit =
      rule.network.family === client.family && inside !== rule.negated;
    if (!hit) continue;
    if (rule.kind === "entry") return rule.result;
    const result = evaluateModel(rule.body, client);
    if (result !== undefined) return result;
  }
  return undefined;
}

function modelNetworks(rules: ModelRule[]): Network[] {
  return rules.flatMap((rule) =>
    rule.kind === "if"
      ? [rule.network, ...modelNetworks(rule.body)]
      : [rule.network],
  );
}

const FILLER_LINES = fc.constantFrom("# note", "", "  # x");
const NEGATIONS = fc.constantFrom("!", "! ", "!!!");
const SEPARATORS = fc.constantFrom(" ", "\t", "   ");

/** Writes the model as table text with varied but valid spelling. */
function renderModel(rules: ModelRule[], g: fc.GeneratorValue): string[] {
  const lines: string[] = [];
  for (const rule of rules) {
    if (g(fc.boolean)) lines.push(g(() => FILLER_LINES));
    const bang = rule.negated ? g(() => NEGATIONS) : "";
    const pattern = bang + networkText(rule.network, g(fc.nat, 3));
    if (rule.kind === "entry") {
      const result = g(fc.mixedCase, fc.constant(rule.result));
      if (g(fc.boolean)) {
        lines.push(pattern, `\t${result}`);
      } else {
        lines.push(`${pattern}${g(() => SEPARATORS)}${result}`);
      }
      continue;
    }
    lines.push(`${g(fc.mixedCase, fc.constant("if"))} ${pattern}`);
    lines.push(...renderModel(rule.body, g));
    lines.push(g(fc.mixedCase, fc.constant("endif")));
  }
  return lines;
}

test("tables match reference model", () => {
  fc.assert(
    fc.property(
      modelArbitrary.chain((model) =>
        fc.tuple(
          fc.constant(model),
          fc.array(clientArbitrary(modelNetworks(model)), {
            minLength: 1,
            maxLength: 10,
          }),
        ),
      ),
      fc.gen(),
      ([model, clients], g) => {
        const text = renderModel(model, g).join("\n");
        const table = CidrTable.parse(text, FILE);
        const formatted = table.format();
        const again = CidrTable.parse(formatted, FILE);
        assert.equal(again.format(), formatted);
        assert.equal(again.size, table.size);
        for (const client of clients) {
          const expected = evaluateModel(model, client);
          assert.equal(table.lookup(client.text), expected, client.text);
          assert.equal(again.lookup(client.text), expected, client.text);
        }
      },
    ),
    { numRuns: 300 },
  );
});
