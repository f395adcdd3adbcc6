import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { parseProxyHeader } from "../../src/intake/proxy-protocol.js";

const SIGNATURE = Buffer.from("0d0a0d0a000d0a515549540a", "hex");

function v2(command: number, family: number, body: Buffer): Buffer {
  const header = Buffer.alloc(16);
  SIGNATURE.copy(header);
  header[12] = 0x20 | command;
  header[13] = family;
  header.writeUInt16BE(body.length, 14);
  return Buffer.concat([header, body]);
}

test("v1 TCP4 header", () => {
  const data = Buffer.from(
    "PROXY TCP4 192.0.2.90 203.0.113.25 40090 25\r\nEHLO x\r\n",
  );
  assert.deepEqual(parseProxyHeader(data), {
    kind: "header",
    length: 45,
    source: { address: "192.0.2.90", port: 40090 },
    destination: { address: "203.0.113.25", port: 25 },
  });
});

test("v1 TCP6 and UNKNOWN", () => {
  const tcp6 = parseProxyHeader(
    Buffer.from("PROXY TCP6 2001:DB8::5 2001:db8::25 1234 25\r\n"),
  );
  assert.equal(tcp6.kind, "header");
  assert.equal(
    tcp6.kind === "header" ? tcp6.source?.address : "",
    "2001:db8::5",
  );
  assert.deepEqual(parseProxyHeader(Buffer.from("PROXY UNKNOWN\r\n")), {
    kind: "header",
    length: 15,
  });
});

test("v1 incomplete and invalid", () => {
  assert.deepEqual(parseProxyHeader(Buffer.from("PRO")), {
    kind: "incomplete",
  });
  assert.deepEqual(parseProxyHeader(Buffer.from("PROXY TCP4 192.0.2.1")), {
    kind: "incomplete",
  });
  const bad = [
    "EHLO healthcheck\r\n",
    "QUIT\r\n",
    "PROXY TCP4 192.0.2.1 192.0.2.2 1 2 3\r\n",
    "PROXY TCP4 2001:db8::1 192.0.2.2 1 2\r\n",
    "PROXY TCP4 192.0.2.1 192.0.2.2 65536 2\r\n",
    "PROXY TCP4 192.0.2.01 192.0.2.2 1 2\r\n",
    "PROXY TCP5 192.0.2.1 192.0.2.2 1 2\r\n",
    "PROXY " + "x".repeat(120),
  ];
  for (const text of bad) {
    assert.equal(
      parseProxyHeader(Buffer.from(text)).kind,
      "invalid",
      JSON.stringify(text),
    );
  }
});

test("v2 IPv4, IPv6 and LOCAL", () => {
  const ipv4 = Buffer.from([192, 0, 2, 90, 203, 0, 113, 25, 0x9c, 0x9a, 0, 25]);
  const tlv = Buffer.from([0x03, 0x00, 0x04, 1, 2, 3, 4]);
  const data = Buffer.concat([
    v2(1, 0x11, Buffer.concat([ipv4, tlv])),
    Buffer.from("EHLO"),
  ]);
  assert.deepEqual(parseProxyHeader(data), {
    kind: "header",
    length: 16 + 12 + 7,
    source: { address: "192.0.2.90", port: 40090 },
    destination: { address: "203.0.113.25", port: 25 },
  });
  const ipv6 = Buffer.alloc(36);
  Buffer.from("20010db8000000000000000000000005", "hex").copy(ipv6, 0);
  Buffer.from("00000000000000000000ffffc0000219", "hex").copy(ipv6, 16);
  ipv6.writeUInt16BE(1234, 32);
  ipv6.writeUInt16BE(25, 34);
  const parsed = parseProxyHeader(v2(1, 0x21, ipv6));
  assert.equal(
    parsed.kind === "header" ? parsed.source?.address : "",
    "2001:db8::5",
  );
  assert.equal(
    parsed.kind === "header" ? parsed.destination?.address : "",
    "192.0.2.25",
  );
  assert.deepEqual(parseProxyHeader(v2(0, 0x00, Buffer.alloc(0))), {
    kind: "header",
    length: 16,
  });
});

test("v2 incomplete and invalid", () => {
  assert.deepEqual(parseProxyHeader(SIGNATURE.subarray(0, 5)), {
    kind: "incomplete",
  });
  assert.deepEqual(
    parseProxyHeader(v2(1, 0x11, Buffer.alloc(12)).subarray(0, 20)),
    { kind: "incomplete" },
  );
  assert.equal(parseProxyHeader(v2(1, 0x11, Buffer.alloc(4))).kind, "invalid");
  assert.equal(parseProxyHeader(v2(1, 0x21, Buffer.alloc(12))).kind, "invalid");
  assert.equal(parseProxyHeader(v2(5, 0x11, Buffer.alloc(12))).kind, "invalid");
  const wrongVersion = v2(1, 0x11, Buffer.alloc(12));
  wrongVersion[12] = 0x31;
  assert.equal(parseProxyHeader(wrongVersion).kind, "invalid");
  const huge = v2(1, 0x11, Buffer.alloc(12));
  huge.writeUInt16BE(60000, 14);
  assert.equal(parseProxyHeader(huge).kind, "invalid");
});

test("parser never over-reads or crashes", () => {
  fc.assert(
    fc.property(
      fc.oneof(
        fc.uint8Array({ maxLength: 300 }).map((bytes) => Buffer.from(bytes)),
        fc
          .uint8Array({ maxLength: 80 })
          .map((bytes) => Buffer.concat([SIGNATURE, Buffer.from(bytes)])),
        fc
          .string({ maxLength: 120 })
          .map((text) => Buffer.from("PROXY " + text)),
      ),
      (data) => {
        const result = parseProxyHeader(data);
        if (result.kind === "header") {
          assert.ok(
            result.length > 0 && result.length <= data.length,
            `length ${result.length} of ${data.length}`,
          );
        }
      },
    ),
    { numRuns: 5000 },
  );
});
