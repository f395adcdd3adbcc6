// The configuration in force and the objects built from it that a reload
// replaces: the DNS list checker and its health checks, the event-loop
// watchdog and the verdict cache cleanup timer. Each new connection takes
// the Runtime current at accept, and keeps it until it ends, so a reload
// never changes the rules for a client under test. The verdict cache, the
// listeners and the load counters live in the Server and survive reloads.
import type { Config } from "./config/load.js";
import type { Logger } from "./log/logger.js";
import type { AddressFamilies } from "./postfix/postconf.js";
import { DnsClient } from "./dnsbl/resolver.js";
import { DnsblHealth } from "./dnsbl/health.js";
import { DnsblChecker } from "./dnsbl/checker.js";
import { Watchdog } from "./intake/watchdog.js";
import type { Metrics } from "./metrics/metrics.js";

export class Runtime {
  readonly dnsbl: DnsblChecker | undefined;
  readonly dnsblHealth: DnsblHealth | undefined;
  private readonly watchdog: Watchdog;
  private cleanupTimer: NodeJS.Timeout | undefined;
  private started = false;
  private stopped = false;

  constructor(
    readonly config: Config,
    /** The configuration with ${stress} set, used in stress mode. */
    readonly stressConfig: Config,
    /** The address families Postfix's smtpd accepts. */
    readonly families: AddressFamilies,
    logger: Logger,
    metrics: Metrics,
  ) {
    this.watchdog = new Watchdog(logger, config.limits.stallWarningMs);
    const { lists, timeoutMs, healthCheckIntervalMs } = config.dnsbl;
    if (lists.length > 0) {
      const client = new DnsClient(config.dnsServers, timeoutMs);
      this.dnsblHealth = new DnsblHealth(
        lists,
        client,
        logger,
        healthCheckIntervalMs,
      );
      this.dnsbl = new DnsblChecker(
        { ...config.dnsbl, lists },
        client,
        logger,
        this.dnsblHealth,
        metrics,
      );
    }
  }

  /** Returns the configuration for a new connection under the current load. */
  configFor(stress: boolean): Config {
    return stress ? this.stressConfig : this.config;
  }

  /**
   * Starts the timers: the watchdog, the DNS list health checks and, when
   * `cleanup` is given, the periodic cleanup of the stores. Returns a
   * promise that completes when the first health checks have run. A
   * stopped Runtime cannot be started again.
   */
  start(cleanup: (() => void) | undefined): Promise<void> {
    if (this.started || this.stopped) {
      throw new Error("a Runtime can be started only once");
    }
    this.started = true;
    this.watchdog.start();
    const interval = this.config.cache.cleanupIntervalMs;
    if (cleanup !== undefined && interval > 0) {
      this.cleanupTimer = setInterval(cleanup, interval);
      this.cleanupTimer.unref();
    }
    // Lists count as healthy until a check fails, so a slow or dead list
    // does not delay startup or a reload.
    return this.dnsblHealth?.start() ?? Promise.resolve();
  }

  /**
   * Stops every timer. Connections that started under this Runtime keep
   * using its DNS list checker until they end, and its lists keep the
   * health state of the last check.
   */
  stop(): void {
    this.stopped = true;
    this.dnsblHealth?.stop();
    this.watchdog.stop();
    clearInterval(this.cleanupTimer);
  }
}
