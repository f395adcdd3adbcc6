// One timer for many deadlines, such as every session's greet wait. Entries
// with the same delay expire in the order they were added, so each delay
// keeps a doubly linked list in that order, and adding or removing an entry
// is O(1). The links live in the entries themselves: a waiting session
// costs four fields instead of a Node.js Timeout object and its closure.

/** An entry of a DeadlineQueue; its fields belong to the queue. */
export interface DeadlineEntry {
  /** When it expires, in performance.now() milliseconds. */
  deadlineAt: number;
  deadlineList: DeadlineList | undefined;
  deadlinePrevious: DeadlineEntry | undefined;
  deadlineNext: DeadlineEntry | undefined;
  /** Called once when the deadline passes, unless removed before. */
  onDeadline(): void;
}

/** The entries of one delay, earliest first. */
export interface DeadlineList {
  head: DeadlineEntry | undefined;
  tail: DeadlineEntry | undefined;
}

/**
 * Node.js timers may fire up to a millisecond before a deadline computed
 * from performance.now(), because they count whole milliseconds of the
 * loop's clock; an entry this close to its deadline counts as expired.
 */
const SLACK_MS = 1;

export class DeadlineQueue {
  private readonly lists = new Map<number, DeadlineList>();
  private timer: NodeJS.Timeout | undefined;
  /** When the timer fires, in performance.now() ms; 0 when not armed. */
  private timerAt = 0;
  private count = 0;

  /** Number of entries queued. */
  get size(): number {
    return this.count;
  }

  /** Calls entry.onDeadline() after `delayMs`; the entry must not be queued. */
  add(entry: DeadlineEntry, delayMs: number): void {
    let list = this.lists.get(delayMs);
    if (list === undefined) {
      list = { head: undefined, tail: undefined };
      this.lists.set(delayMs, list);
    }
    entry.deadlineAt = performance.now() + delayMs;
    entry.deadlineList = list;
    entry.deadlinePrevious = list.tail;
    entry.deadlineNext = undefined;
    if (list.tail === undefined) {
      list.head = entry;
    } else {
      list.tail.deadlineNext = entry;
    }
    list.tail = entry;
    this.count++;
    if (this.timerAt === 0 || entry.deadlineAt < this.timerAt) {
      this.arm(entry.deadlineAt);
    }
  }

  /** Takes the entry out of the queue; does nothing if it is not queued. */
  remove(entry: DeadlineEntry): void {
    const list = entry.deadlineList;
    if (list === undefined) return;
    if (entry.deadlinePrevious === undefined) {
      list.head = entry.deadlineNext;
    } else {
      entry.deadlinePrevious.deadlineNext = entry.deadlineNext;
    }
    if (entry.deadlineNext === undefined) {
      list.tail = entry.deadlinePrevious;
    } else {
      entry.deadlineNext.deadlinePrevious = entry.deadlinePrevious;
    }
    entry.deadlineList = undefined;
    entry.deadlinePrevious = undefined;
    entry.deadlineNext = undefined;
    this.count--;
    // An empty queue stops its timer, so that it keeps no process alive.
    // Otherwise the timer stays armed and re-arms for the head when it
    // fires early.
    if (this.count === 0) this.stop();
  }

  private stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = 0;
  }

  private arm(at: number): void {
    clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = setTimeout(
      () => this.expire(),
      Math.max(0, Math.ceil(at - performance.now())),
    );
  }

  private expire(): void {
    this.timer = undefined;
    this.timerAt = 0;
    const now = performance.now() + SLACK_MS;
    const due: DeadlineEntry[] = [];
    let next = Infinity;
    for (const list of this.lists.values()) {
      while (list.head !== undefined && list.head.deadlineAt <= now) {
        const entry = list.head;
        this.remove(entry);
        due.push(entry);
      }
      if (list.head !== undefined) next = Math.min(next, list.head.deadlineAt);
    }
    if (next !== Infinity) this.arm(next);
    // Called last, because a callback may add or remove entries.
    for (const entry of due) entry.onDeadline();
  }
}
