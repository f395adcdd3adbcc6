import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { CommandReader } from "../../src/engine/command-reader.js";

test("lines with CRLF and bare LF", () => {
  const reader = new CommandReader(100);
  reader.push(Buffer.from("EHLO a\r\nMAIL FROM:<x>\nRC"));
  assert.deepEqual(reader.next(), {
    kind: "line",
    text: "EHLO a",
    bareNewline: false,
  });
  assert.equal(reader.buffered, 16);
  assert.deepEqual(reader.next(), {
    kind: "line",
    text: "MAIL FROM:<x>",
    bareNewline: true,
  });
  assert.equal(reader.next(), undefined);
  reader.push(Buffer.from("PT TO:<y>\r\n"));
  assert.deepEqual(reader.next(), {
    kind: "line",
    text: "RCPT TO:<y>",
    bareNewline: false,
  });
  assert.equal(reader.buffered, 0);
});

test("long line reported not buffered", () => {
  const reader = new CommandReader(64);
  reader.push(Buffer.alloc(63, 0x41));
  assert.equal(reader.next(), undefined);
  reader.push(Buffer.from("B"));
  assert.deepEqual(reader.next(), { kind: "too long" });
  const withEnd = new CommandReader(64);
  withEnd.push(Buffer.from("x".repeat(80) + "\r\n"));
  assert.deepEqual(withEnd.next(), { kind: "too long" });
});

test("random input never crashes", () => {
  fc.assert(
    fc.property(
      fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 20 }),
      (chunks) => {
        const limit = 128;
        const reader = new CommandReader(limit);
        let lines = 0;
        for (const chunk of chunks) {
          reader.push(Buffer.from(chunk));
          for (;;) {
            const result = reader.next();
            if (result === undefined) break;
            if (result.kind === "too long") return;
            lines++;
            assert.ok(result.text.length < limit);
            assert.ok(!result.text.includes("\n"));
          }
          // Without a complete line, at most a line's worth stays buffered.
          assert.ok(reader.buffered < limit, `buffered ${reader.buffered}`);
        }
        const newlines = chunks.reduce(
          (count, chunk) =>
            count + chunk.filter((byte) => byte === 0x0a).length,
          0,
        );
        assert.equal(lines, newlines);
      },
    ),
    { numRuns: 3000 },
  );
});
