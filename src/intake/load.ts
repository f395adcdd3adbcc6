// Sessions in progress, by what they wait for, and postscreen's stress
// mode. A session is "under test" while postwarden screens it (greeting
// wait or dummy engine) and "waiting" while smtpd has not yet taken its
// hand-off. Stress starts when all sessions reach 90% of pre_queue_limit
// and ends at 70%; new sessions then use the stress settings.
import { RateLimitedWarning, type Logger } from "../log/logger.js";

export type LoadPhase = "testing" | "engine" | "passing" | "ended";

export class Load {
  underTest = 0;
  waiting = 0;
  /** Connections being answered slowly by the tarpit. */
  tarpitted = 0;
  /** Sessions by phase, for metrics. */
  readonly phases: Record<LoadPhase, number> = {
    testing: 0,
    engine: 0,
    passing: 0,
    ended: 0,
  };
  private stressed = false;
  private readonly slowHandoffWarning: RateLimitedWarning;

  constructor(
    private preQueueLimit: number,
    private readonly logger: Logger,
    /** Hand-offs slower than this are reported (ms). */
    private readonly slowHandoffMs = 1000,
  ) {
    this.slowHandoffWarning = new RateLimitedWarning(logger, 60_000);
  }

  /**
   * Records how long smtpd took to take a hand-off, and warns (rate-limited)
   * when it was slow: then every smtpd process is busy or master throttles
   * the service, and post_queue_limit is what protects new clients.
   */
  recordHandoffTime(ms: number): void {
    if (ms >= this.slowHandoffMs) {
      this.slowHandoffWarning.report(
        `smtpd took ${(ms / 1000).toFixed(1)}s to take a connection ` +
          `(${this.waiting} hand-offs waiting); check its process_limit`,
      );
    }
  }

  /** Sets a new pre_queue_limit. Stress mode follows it at the next change. */
  setPreQueueLimit(limit: number): void {
    this.preQueueLimit = limit;
  }

  get stress(): boolean {
    return this.stressed;
  }

  get total(): number {
    return this.underTest + this.waiting;
  }

  /** Moves one session from phase `from` to phase `to`. */
  change(from: LoadPhase | undefined, to: LoadPhase): void {
    if (from === to) return;
    if (from !== undefined) this.phases[from]--;
    this.phases[to]++;
    if (from === "testing" || from === "engine") this.underTest--;
    if (from === "passing") this.waiting--;
    if (to === "testing" || to === "engine") this.underTest++;
    if (to === "passing") this.waiting++;
    this.checkStress();
  }

  private checkStress(): void {
    const total = this.total;
    if (!this.stressed && total >= Math.ceil(this.preQueueLimit * 0.9)) {
      this.stressed = true;
      this.logger.info(`entering STRESS mode with ${total} connections`);
    } else if (this.stressed && total <= Math.floor(this.preQueueLimit * 0.7)) {
      this.stressed = false;
      this.logger.info(`leaving STRESS mode with ${total} connections`);
    }
  }
}

/**
 * Connections per client key within a fixed time window, as Postfix's
 * anvil counts them for smtpd_client_connection_rate_limit.
 */
export class ConnectionRates {
  private readonly windows = new Map<
    string,
    { start: number; count: number }
  >();

  constructor(private windowMs: number) {}

  /** Sets a new window length. Windows already open keep their start. */
  setWindow(windowMs: number): void {
    this.windowMs = windowMs;
  }

  /** Counts a connection; returns the count in the current window. */
  add(key: string, now = Date.now()): number {
    let window = this.windows.get(key);
    if (window === undefined || now - window.start >= this.windowMs) {
      window = { start: now, count: 0 };
      this.windows.set(key, window);
    }
    window.count++;
    if (this.windows.size > 10_000) this.sweep(now);
    return window.count;
  }

  private sweep(now: number): void {
    for (const [key, window] of this.windows) {
      if (now - window.start >= this.windowMs) this.windows.delete(key);
    }
  }
}
