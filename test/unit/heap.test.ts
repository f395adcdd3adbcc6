import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { limitYoungGeneration } from "../../src/heap.js";

const HEAP_MODULE = new URL("../../src/heap.js", import.meta.url).href;

/**
 * Allocates at a high rate in a fresh node, with or without the limit,
 * and returns the young generation's size in KiB at the end.
 */
function youngGenerationAfterBurst(limited: boolean): number {
  const script = `
    import { getHeapSpaceStatistics } from "node:v8";
    import { limitYoungGeneration } from ${JSON.stringify(HEAP_MODULE)};
    if (${limited}) limitYoungGeneration([]);
    const kept = [];
    for (let i = 0; i < 2_000_000; i++) {
      const item = { index: i, list: [i], label: "c" + i };
      if (i % 50 === 0) kept.push(item);
    }
    const space = getHeapSpaceStatistics()
      .find((entry) => entry.space_name === "new_space");
    console.log(Math.round(space.space_size / 1024), kept.length);
  `;
  const result = spawnSync(
    process.execPath,
    ["--input-type=module", "-e", script],
    { encoding: "utf8", env: { ...process.env, NODE_OPTIONS: "" } },
  );
  assert.equal(result.status, 0, result.stderr);
  return Number(result.stdout.split(" ")[0]);
}

test("the young generation stays at its starting size when limited", () => {
  const grown = youngGenerationAfterBurst(false);
  const limited = youngGenerationAfterBurst(true);
  // Two semi-spaces of 1 MiB at the start; unlimited, a burst grows them.
  assert.ok(limited <= 2048, `limited young generation ${limited} KiB`);
  assert.ok(grown > 2 * limited, `unlimited young generation ${grown} KiB`);
});

test("a semi-space size given to node wins over the limit", () => {
  assert.equal(limitYoungGeneration(["--max-semi-space-size=8"]), false);
  assert.equal(
    limitYoungGeneration(["--inspect", "--min-semi-space-size=4"]),
    false,
  );
});
