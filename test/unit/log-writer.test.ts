import { test } from "node:test";
import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { LineWriter } from "../../src/log/writer.js";
import { syslogTimestamp } from "../../src/log/logger.js";

/** A stream that records each write call's text. */
function recordingStream(): { stream: Writable; writes: string[] } {
  const writes: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      writes.push(chunk.toString());
      done();
    },
  });
  return { stream, writes };
}

test("batched lines of one loop turn go out in one write", async () => {
  const { stream, writes } = recordingStream();
  const writer = new LineWriter(stream, () => "", true);
  writer.write("one\n");
  writer.write("two\n");
  assert.deepEqual(writes, []);
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(writes, ["one\ntwo\n"]);
  writer.write("three\n");
  writer.flush();
  assert.deepEqual(writes, ["one\ntwo\n", "three\n"]);
});

test("unbatched lines go out at once", () => {
  const { stream, writes } = recordingStream();
  const writer = new LineWriter(stream, () => "");
  writer.write("one\n");
  writer.write("two\n");
  assert.deepEqual(writes, ["one\n", "two\n"]);
});

test("timestamp follows the second", () => {
  const first = new Date(2026, 11, 4, 5, 6, 7, 100);
  assert.equal(syslogTimestamp(first), "Dec  4 05:06:07");
  assert.equal(
    syslogTimestamp(new Date(first.getTime() + 800)),
    "Dec  4 05:06:07",
  );
  assert.equal(
    syslogTimestamp(new Date(first.getTime() + 900)),
    "Dec  4 05:06:08",
  );
});
