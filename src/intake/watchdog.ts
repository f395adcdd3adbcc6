// Logs when the event loop stalls: a timer that should fire every
// interval and fires late means that something held the loop, and every
// client waited that long. postscreen kills itself after its watchdog
// timeout; postwarden only reports, because a stall ends by itself and a
// restart would drop every client under test.
import type { Logger } from "../log/logger.js";
import { RateLimitedWarning } from "../log/logger.js";

export class Watchdog {
  private timer: NodeJS.Timeout | undefined;
  private last = 0;
  private readonly warning: RateLimitedWarning;

  constructor(
    logger: Logger,
    private readonly thresholdMs: number,
    private readonly intervalMs = Math.max(50, Math.floor(thresholdMs / 4)),
  ) {
    this.warning = new RateLimitedWarning(logger, 60_000);
  }

  start(): void {
    this.last = performance.now();
    this.timer = setInterval(() => this.tick(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  private tick(): void {
    const now = performance.now();
    const late = now - this.last - this.intervalMs;
    this.last = now;
    if (late >= this.thresholdMs) {
      this.warning.report(`event loop stalled for ${Math.round(late)} ms`);
    }
  }
}
