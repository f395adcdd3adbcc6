import { test } from "node:test";
import assert from "node:assert/strict";
import { withFooter } from "../../src/engine/engine.js";

test("footer appended to rejects", () => {
  assert.equal(
    withFooter(
      "550 5.5.1 Protocol error\r\n",
      "See https://mx.example.com/help",
    ),
    "550-5.5.1 Protocol error\r\n550 5.5.1 See https://mx.example.com/help\r\n",
  );
  assert.equal(
    withFooter("421 Service unavailable\r\n", "Line one\\nLine two"),
    "421-Service unavailable\r\n421-Line one\r\n421 Line two\r\n",
  );
});

test("footer leaves other replies", () => {
  assert.equal(withFooter("250 2.0.0 Ok\r\n", "x"), "250 2.0.0 Ok\r\n");
  assert.equal(
    withFooter("550 5.5.1 Protocol error\r\n", ""),
    "550 5.5.1 Protocol error\r\n",
  );
  assert.equal(withFooter("250-a\r\n250 b\r\n", "x"), "250-a\r\n250 b\r\n");
});
