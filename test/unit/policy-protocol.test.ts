import { test } from "node:test";
import assert from "node:assert/strict";
import {
  formatReply,
  MAX_ATTRIBUTES,
  MAX_LINE_BYTES,
  PolicyRequestParser,
  type ParseResult,
} from "../../src/policy/protocol.js";
import { actionFor } from "../../src/policy/server.js";

function parseAll(...chunks: (string | Buffer)[]): ParseResult[] {
  const parser = new PolicyRequestParser();
  const results: ParseResult[] = [];
  for (const chunk of chunks) {
    parser.push(typeof chunk === "string" ? Buffer.from(chunk) : chunk);
    for (let result = parser.next(); result; result = parser.next()) {
      results.push(result);
      if (result.kind === "error") return results;
    }
  }
  return results;
}

test("parser reads split and pipelined requests", () => {
  const results = parseAll(
    "request=smtpd_access_policy\nrecip",
    "ient=a=b@x\r\n\nrequest=two\n",
    "\n",
  );
  assert.equal(results.length, 2);
  const [first, second] = results;
  assert.equal(first?.kind, "request");
  assert.equal(
    first?.kind === "request" && first.attributes.get("recipient"),
    "a=b@x",
  );
  assert.equal(
    second?.kind === "request" && second.attributes.get("request"),
    "two",
  );
});

test("parser waits for the empty line", () => {
  assert.deepEqual(parseAll("request=x\n"), []);
});

test("parser rejects garbage", () => {
  const cases: [string | Buffer, RegExp][] = [
    ["GET / HTTP/1.0\r\n\r\n", /line without name=value/],
    ["=value\n\n", /line without name=value/],
    ["na me=x\n\n", /invalid attribute name/],
    ["\n", /empty request/],
    [Buffer.from("a=b\0c\n\n"), /NUL byte/],
    ["x".repeat(MAX_LINE_BYTES + 1), /line longer than/],
    ["a=" + "x".repeat(MAX_LINE_BYTES) + "\n", /line longer than/],
    [
      Array.from({ length: MAX_ATTRIBUTES + 1 }, (_, i) => `n${i}=v\n`).join(
        "",
      ),
      /more than 128 attributes/,
    ],
    [Buffer.from([0xff, 0xfe, 0x0a, 0x0a]), /line without name=value/],
  ];
  for (const [input, reason] of cases) {
    const results = parseAll(input);
    const last = results.at(-1);
    assert.equal(last?.kind, "error", `no error for ${JSON.stringify(input)}`);
    assert.match(last?.kind === "error" ? last.reason : "", reason);
  }
});

test("parser stays failed after an error", () => {
  const parser = new PolicyRequestParser();
  parser.push(Buffer.from("garbage\n"));
  assert.equal(parser.next()?.kind, "error");
  parser.push(Buffer.from("request=x\n\n"));
  assert.equal(parser.next()?.kind, "error");
});

test("replies and actions", () => {
  assert.equal(formatReply("DUNNO"), "action=DUNNO\n\n");
  assert.throws(() => formatReply("DUNNO\nx"), /line break/);
  assert.equal(actionFor({ kind: "dunno" }), "DUNNO");
  assert.equal(
    actionFor({ kind: "greylist", retrySeconds: 0 }),
    "DEFER_IF_PERMIT Greylisted, try again in 1 second",
  );
  assert.equal(
    actionFor({ kind: "greylist", retrySeconds: 300 }),
    "DEFER_IF_PERMIT Greylisted, try again in 300 seconds",
  );
  assert.equal(
    actionFor({ kind: "trap" }),
    "550 5.3.2 Service currently unavailable",
  );
});
