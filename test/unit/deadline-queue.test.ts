import { test } from "node:test";
import assert from "node:assert/strict";
import {
  DeadlineQueue,
  type DeadlineEntry,
} from "../../src/screen/deadline-queue.js";

/** A queue entry that records when its deadline fired. */
class Entry implements DeadlineEntry {
  deadlineAt = 0;
  deadlineList: DeadlineEntry["deadlineList"] = undefined;
  deadlinePrevious: DeadlineEntry | undefined = undefined;
  deadlineNext: DeadlineEntry | undefined = undefined;
  firedAt: number | undefined;

  constructor(
    readonly name: string,
    private readonly fired: string[],
    private readonly then?: () => void,
  ) {}

  onDeadline(): void {
    this.firedAt = performance.now();
    this.fired.push(this.name);
    this.then?.();
  }
}

function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

test("deadline queue fires in deadline order", async () => {
  const queue = new DeadlineQueue();
  const fired: string[] = [];
  const started = performance.now();
  const late = new Entry("late", fired);
  const early = new Entry("early", fired);
  const middle = new Entry("middle", fired);
  queue.add(late, 120);
  queue.add(early, 40);
  queue.add(middle, 80);
  assert.equal(queue.size, 3);

  await pause(200);

  assert.deepEqual(fired, ["early", "middle", "late"]);
  assert.equal(queue.size, 0);
  for (const [entry, delay] of [
    [early, 40],
    [middle, 80],
    [late, 120],
  ] as const) {
    const elapsed = (entry.firedAt ?? 0) - started;
    assert.ok(elapsed >= delay - 1, `${entry.name} fired after ${elapsed} ms`);
  }
});

test("deadline queue skips removed entries", async () => {
  const queue = new DeadlineQueue();
  const fired: string[] = [];
  const first = new Entry("first", fired);
  const second = new Entry("second", fired);
  const third = new Entry("third", fired);
  queue.add(first, 30);
  queue.add(second, 30);
  queue.add(third, 30);
  queue.remove(second);
  queue.remove(second);
  assert.equal(queue.size, 2);
  assert.equal(second.deadlineList, undefined);

  await pause(100);

  assert.deepEqual(fired, ["first", "third"]);
});

test("deadline queue empties without firing", async () => {
  const queue = new DeadlineQueue();
  const fired: string[] = [];
  const only = new Entry("only", fired);
  queue.add(only, 30);
  queue.remove(only);
  assert.equal(queue.size, 0);

  await pause(80);

  assert.deepEqual(fired, []);
});

test("deadline queue accepts adds from callbacks", async () => {
  const queue = new DeadlineQueue();
  const fired: string[] = [];
  const again = new Entry("again", fired);
  const first = new Entry("first", fired, () => queue.add(again, 20));
  queue.add(first, 20);

  await pause(150);

  assert.deepEqual(fired, ["first", "again"]);
  assert.equal(queue.size, 0);
});
