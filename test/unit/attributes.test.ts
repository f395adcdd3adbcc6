import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  AttributeError,
  decodeAttributes,
  encodeAttributes,
  normalizeAddress,
} from "../../src/handoff/attributes.js";

test("attributes match postscreen bytes", () => {
  const encoded = encodeAttributes({
    clientAddress: "203.0.113.7",
    clientPort: 51234,
    serverAddress: "192.0.2.25",
    serverPort: 25,
  });
  const expected = Buffer.from(
    "client_address\x00203.0.113.7\x00client_port\x0051234\x00" +
      "server_address\x00192.0.2.25\x00server_port\x0025\x00\x00",
    "latin1",
  );
  assert.equal(encoded.length, 87);
  assert.deepEqual(encoded, expected);
});

test("attributes strip IPv4-mapped prefix", () => {
  assert.equal(normalizeAddress("::ffff:127.0.0.5", "client"), "127.0.0.5");
  assert.equal(normalizeAddress("::FFFF:192.0.2.1", "client"), "192.0.2.1");
  assert.equal(normalizeAddress("2001:DB8::1", "client"), "2001:db8::1");
});

test("attributes reject invalid addresses", () => {
  for (const bad of [
    "",
    "not-an-ip",
    "[::1]",
    "IPv6:::1",
    "fe80::1%eth0",
    "127.0.0.1\0x",
    "1.2.3",
  ]) {
    assert.throws(
      () => normalizeAddress(bad, "client"),
      AttributeError,
      JSON.stringify(bad),
    );
  }
});

test("attributes reject invalid ports", () => {
  for (const port of [-1, 65536, 1.5, NaN]) {
    assert.throws(
      () =>
        encodeAttributes({
          clientAddress: "192.0.2.1",
          clientPort: port,
          serverAddress: "192.0.2.2",
          serverPort: 25,
        }),
      AttributeError,
      String(port),
    );
  }
});

const ipv4 = fc.ipV4();
const ipv6 = fc.ipV6();
const port = fc.integer({ min: 0, max: 65535 });

test("attributes round trip for any address", () => {
  fc.assert(
    fc.property(
      fc.oneof(ipv4, ipv6),
      port,
      fc.oneof(ipv4, ipv6),
      port,
      (client, clientPort, server, serverPort) => {
        const encoded = encodeAttributes({
          clientAddress: client,
          clientPort,
          serverAddress: server,
          serverPort,
        });
        const decoded = decodeAttributes(encoded);
        assert.ok(decoded !== undefined);
        assert.equal(decoded.size, 4);
        assert.equal(decoded.get("client_port"), String(clientPort));
        assert.equal(decoded.get("server_port"), String(serverPort));
        assert.equal(
          decoded.get("client_address"),
          normalizeAddress(client, "client"),
        );
        // Exactly nine NULs: one after each name and value, one at the end.
        assert.equal(encoded.filter((byte) => byte === 0).length, 9);
        assert.equal(encoded.at(-1), 0);
        assert.equal(encoded.at(-2), 0);
      },
    ),
  );
});

test("attributes never encode arbitrary text", () => {
  fc.assert(
    fc.property(
      fc.string(),
      fc.uint8Array({ maxLength: 40 }),
      (text, bytes) => {
        for (const candidate of [text, Buffer.from(bytes).toString("latin1")]) {
          let encoded: Buffer | undefined;
          try {
            encoded = encodeAttributes({
              clientAddress: candidate,
              clientPort: 1,
              serverAddress: "192.0.2.1",
              serverPort: 25,
            });
          } catch (error) {
            assert.ok(error instanceof AttributeError);
            continue;
          }
          // Accepted text must be a valid address without NUL bytes.
          const decoded = decodeAttributes(encoded);
          assert.ok(decoded !== undefined);
          assert.equal(decoded.size, 4);
        }
      },
    ),
    { numRuns: 2000 },
  );
});

test("decoder first value wins", () => {
  const decoded = decodeAttributes(
    Buffer.from("a\x001\x00a\x002\x00\x00", "latin1"),
  );
  assert.equal(decoded?.get("a"), "1");
  assert.equal(
    decodeAttributes(Buffer.from("a\x001\x00", "latin1")),
    undefined,
  );
});
