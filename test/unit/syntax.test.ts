import { test } from "node:test";
import assert from "node:assert/strict";
import { expandValue, parseMainCf } from "../../src/config/syntax.js";

test("main.cf comments and continuation lines", () => {
  const text = [
    "# comment",
    "",
    "listen = 127.0.0.1:25,",
    "    [::1]:25",
    "  # indented comment",
    "greet_wait=2s",
  ].join("\n");
  const settings = parseMainCf(text, "main.cf");
  assert.equal(settings.length, 2);
  assert.deepEqual(settings[0], {
    name: "listen",
    value: "127.0.0.1:25, [::1]:25",
    origin: { file: "main.cf", line: 3 },
  });
  assert.equal(settings[1]?.value, "2s");
  assert.equal(settings[1]?.origin.line, 6);
});

test("main.cf line without equals sign", () => {
  assert.throws(
    () => parseMainCf("a = 1\nbogus line\n", "f.cf"),
    /f\.cf:2: missing '='/,
  );
});

test("main.cf continuation at start", () => {
  assert.throws(
    () => parseMainCf("  x = 1\n", "f.cf"),
    /f\.cf:1: continuation/,
  );
});

test("expansion forms", () => {
  const values: Record<string, string> = {
    a: "A",
    b: "$a-b",
    empty: "",
  };
  const lookup = (name: string): string | undefined => values[name];
  assert.equal(expandValue("$a ${a} $(a)", lookup), "A A A");
  assert.equal(expandValue("$b", lookup), "A-b");
  assert.equal(expandValue("$missing.", lookup), ".");
  assert.equal(expandValue("${a?yes}${empty?no}", lookup), "yes");
  assert.equal(expandValue("${a:no}${empty:yes}", lookup), "yes");
  assert.equal(expandValue("${stress?{2}:{6}}s", lookup), "6s");
  assert.equal(expandValue("${a?{2}:{6}}s", lookup), "2s");
  assert.equal(expandValue("$$a", lookup), "$a");
});

test("expansion detects recursion", () => {
  const lookup = (name: string): string | undefined =>
    name === "loop" ? "$loop" : undefined;
  assert.throws(() => expandValue("$loop", lookup), /recursive/);
});

test("expansion rejects bad syntax", () => {
  const lookup = (): undefined => undefined;
  assert.throws(() => expandValue("${a", lookup), /unbalanced/);
  assert.throws(() => expandValue("$ x", lookup), /not followed/);
});
