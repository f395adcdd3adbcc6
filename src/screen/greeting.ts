// The pregreet test. In teaser mode it sends the first line of a multi-line
// greeting ("220-" + greet_banner) and waits greet_wait; in silent mode
// (Sendmail's greet_pause) it sends nothing and waits. A client that sends
// anything before the final "220 " line, which smtpd sends after the
// hand-off, fails. Bytes are peeked, never consumed, so smtpd still reads
// them when the action is ignore. It does not send the final greeting, run
// other tests or decide what happens to the client.
import type { Config } from "../config/load.js";
import { READABLE, type NativeSocket } from "../native.js";
import type { Logger } from "../log/logger.js";
import { escapeForLog, formatDelay } from "../log/format.js";

/** Bytes peeked to detect and log a pregreet, as postscreen reads. */
const PEEK_SIZE = 1024;

export type GreetingOutcome =
  /** The client waited for its turn. */
  | "passed"
  /** The client spoke first and the action is ignore. */
  | "failed"
  /** The client spoke first and the action is drop. */
  | "drop"
  /** The client closed or reset the connection during the wait. */
  | "hangup";

export class GreetingTest {
  private timer: NodeJS.Timeout | undefined;
  private spoke = false;
  private done = false;

  constructor(
    private readonly socket: NativeSocket,
    private readonly config: Config,
    private readonly logger: Logger,
    private readonly clientLabel: string,
    private readonly elapsedSeconds: () => number,
    private readonly onDone: (outcome: GreetingOutcome) => void,
  ) {}

  /** Whether the test runs at all: an empty teaser banner turns it off. */
  static isEnabled(config: Config): boolean {
    return config.greetMode === "silent" || config.greetBanner !== "";
  }

  /** Whether a "220-" line was sent; a reply must then finish the greeting. */
  get teaserSent(): boolean {
    return this.config.greetMode === "teaser";
  }

  start(): void {
    if (this.config.greetMode === "teaser") {
      const teaser = Buffer.from(`220-${this.config.greetBanner}\r\n`);
      try {
        this.socket.write(teaser);
      } catch {
        this.conclude("hangup");
        return;
      }
    }
    this.timer = setTimeout(() => this.onWaitOver(), this.config.greetWaitMs);
    this.watch();
  }

  /** Stops the test without an outcome (shutdown). */
  cancel(): void {
    this.done = true;
    clearTimeout(this.timer);
    this.socket.unwatch();
  }

  private watch(): void {
    this.socket.watch(READABLE, (status) => this.onReadable(status));
  }

  private onReadable(status: number): void {
    if (this.done) return;
    // A reset may arrive with data still peekable: the client is gone.
    if (status < 0) {
      this.conclude("hangup");
      return;
    }
    let data: Buffer | null;
    try {
      data = this.socket.peek(PEEK_SIZE);
    } catch {
      this.conclude("hangup");
      return;
    }
    if (data === null) {
      this.watch();
      return;
    }
    if (data.length === 0) {
      this.conclude("hangup");
      return;
    }

    this.spoke = true;
    this.logger.info(
      `PREGREET ${data.length} after ${formatDelay(this.elapsedSeconds())} ` +
        `from ${this.clientLabel}: ${escapeForLog(data)}`,
    );
    if (this.config.greetAction === "drop") {
      this.conclude("drop");
    }
    // With ignore, the wait goes on (later tests run during it) but the
    // socket is no longer watched: the pending bytes stay for smtpd.
  }

  private onWaitOver(): void {
    this.conclude(this.spoke ? "failed" : "passed");
  }

  private conclude(outcome: GreetingOutcome): void {
    if (this.done) return;
    this.done = true;
    clearTimeout(this.timer);
    this.socket.unwatch();
    this.onDone(outcome);
  }
}
