// The daemon: listeners, the sessions in progress, and a clean stop. It
// accepts through the addon, starts a Session per connection, and on stop
// closes the listeners, answers clients under test with 421, lets hand-offs
// already in flight finish, and then closes what is left.
import type { Config } from "./config/load.js";
import type { Addon, ListenerError, NativeListener } from "./native.js";
import { RateLimitedWarning, type Logger } from "./log/logger.js";
import { formatEndpoint } from "./log/format.js";
import type { AddressFamilies } from "./postfix/postconf.js";
import { Session, type SessionContext } from "./screen/session.js";
import { DeadlineQueue } from "./screen/deadline-queue.js";
import { prepareHandoffs } from "./handoff/pass.js";
import { DnsClient } from "./dnsbl/resolver.js";
import { DnsblHealth } from "./dnsbl/health.js";
import { DnsblChecker } from "./dnsbl/checker.js";
import { VerdictCache } from "./cache/verdict-cache.js";
import { ClientCounts } from "./intake/client-counts.js";
import { ConnectionRates, Load } from "./intake/load.js";
import { Watchdog } from "./intake/watchdog.js";

/** Listen backlog; the kernel caps it at net.core.somaxconn. */
const LISTEN_BACKLOG = 65535;
/** Connections accepted per readiness event, so accept never hogs the loop. */
const ACCEPT_LIMIT = 32;
/** Delay before accepting again after accept() itself failed. */
const ACCEPT_RETRY_MS = 1000;
/** Maximum time a stop waits for hand-offs in flight. */
const STOP_TIMEOUT_MS = 5000;

export class Server {
  private readonly listeners: NativeListener[] = [];
  private readonly sessions = new Set<Session>();
  private readonly acceptWarning: RateLimitedWarning;
  private readonly dnsbl: DnsblChecker | undefined;
  private readonly dnsblHealth: DnsblHealth | undefined;
  private readonly cache: VerdictCache | undefined;
  private readonly counts = new ClientCounts();
  private readonly load: Load;
  private readonly rates: ConnectionRates;
  private readonly watchdog: Watchdog;
  private cleanupTimer: NodeJS.Timeout | undefined;
  private stopping = false;
  /** What every session shares, so that a connection allocates none of it. */
  private readonly context: SessionContext;
  private readonly stressContext: SessionContext;

  constructor(
    private readonly config: Config,
    private readonly addon: Addon,
    private readonly logger: Logger,
    private readonly families: AddressFamilies,
    /** The configuration with ${stress} set, used in stress mode. */
    private readonly stressConfig: Config = config,
  ) {
    this.load = new Load(config.limits.preQueueLimit, logger);
    this.watchdog = new Watchdog(logger, config.limits.stallWarningMs);
    this.rates = new ConnectionRates(
      config.limits.clientConnectionRateTimeUnitMs,
    );
    this.acceptWarning = new RateLimitedWarning(logger, 10_000);
    const onEnded = (ended: Session): void => {
      this.sessions.delete(ended);
    };
    if (config.cache.settings !== undefined) {
      this.cache = VerdictCache.open(config.cache.settings, logger);
    }
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
      );
    }
    const shared = {
      addon,
      logger,
      families,
      dnsbl: this.dnsbl,
      cache: this.cache,
      counts: this.counts,
      rates: this.rates,
      load: this.load,
      greetWaits: new DeadlineQueue(),
      onEnded,
    };
    this.context = { ...shared, config };
    this.stressContext = { ...shared, config: stressConfig };
  }

  /** Completes when the first DNS list health checks have run. */
  dnsblHealthChecked: Promise<void> = Promise.resolve();

  /** Number of connections in progress (tests, replies, hand-offs). */
  get sessionCount(): number {
    return this.sessions.size;
  }

  /** Binds every listen address; throws on the first that fails. */
  start(): void {
    prepareHandoffs(this.addon);
    try {
      for (const { host, port, proxy } of this.config.listen) {
        let listener: NativeListener | undefined = undefined;
        const onError = (error: ListenerError): void => {
          this.onAcceptError(error, listener);
        };
        listener = new this.addon.Listener(
          host,
          port,
          LISTEN_BACKLOG,
          ACCEPT_LIMIT,
          (socket, clientAddress, clientPort, serverAddress, serverPort) => {
            const session = new Session(
              this.load.stress ? this.stressContext : this.context,
              socket,
              { address: clientAddress, port: clientPort },
              { address: serverAddress, port: serverPort },
              proxy,
            );
            this.sessions.add(session);
            session.start();
          },
          onError,
        );
        this.listeners.push(listener);
        const bound = listener.address();
        this.logger.info(
          `listening on ${formatEndpoint(bound.address, bound.port)}`,
        );
      }
    } catch (error) {
      this.closeListeners();
      throw error;
    }
    for (const listener of this.listeners) listener.start();
    this.watchdog.start();
    // Lists count as healthy until a check fails, so a slow or
    // dead list does not delay startup.
    if (this.dnsblHealth !== undefined) {
      this.dnsblHealthChecked = this.dnsblHealth.start();
    }
    const interval = this.config.cache.cleanupIntervalMs;
    if (this.cache !== undefined && interval > 0) {
      const cache = this.cache;
      this.cleanupTimer = setInterval(() => cache.cleanup(), interval);
      this.cleanupTimer.unref();
    }
  }

  private onAcceptError(
    error: ListenerError,
    listener: NativeListener | undefined,
  ): void {
    if (error.code === "EMFILE" || error.code === "ENFILE") {
      this.acceptWarning.report(
        `accept: ${error.message}; a connection was dropped. Raise the ` +
          "open files limit (ulimit -n, LimitNOFILE) if this persists",
      );
    } else {
      this.acceptWarning.report(`accept: ${error.message}`);
    }
    if (error.paused && listener !== undefined) {
      setTimeout(() => {
        if (!this.stopping) listener.start();
      }, ACCEPT_RETRY_MS);
    }
  }

  private closeListeners(): void {
    for (const listener of this.listeners) listener.close();
    this.listeners.length = 0;
  }

  /** Stops accepting and ends every session; resolves when done. */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.dnsblHealth?.stop();
    this.watchdog.stop();
    this.closeListeners();
    for (const session of [...this.sessions]) session.shutdown();

    const deadline = Date.now() + STOP_TIMEOUT_MS;
    while (Date.now() < deadline) {
      if ([...this.sessions].every((session) => session.settled)) break;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    // Hand-offs that are sent stop waiting for smtpd now; anything else
    // left after the deadline is closed.
    for (const session of [...this.sessions]) session.shutdown();
    clearInterval(this.cleanupTimer);
    await this.cache?.close();
  }
}
