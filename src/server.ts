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
import { socketSet, type SocketSet } from "./native-socket.js";
import { VerdictCache } from "./cache/verdict-cache.js";
import { ClientCounts } from "./intake/client-counts.js";
import { ConnectionRates, Load } from "./intake/load.js";
import { NO_METRICS, type Metrics } from "./metrics/metrics.js";
import { daemonState } from "./metrics/state.js";
import { Runtime } from "./runtime.js";
import { GreylistService } from "./greylist/service.js";
import { InfrastructureAllowlist } from "./access/infrastructure-allowlist.js";

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
  private cache: VerdictCache | undefined;
  /** The addon's socket operations and readiness watches. */
  private readonly sockets: SocketSet;
  private greylist: GreylistService | undefined;
  /** The greet wait of every session under test, across reloads. */
  private readonly greetWaits = new DeadlineQueue();
  /**
   * The contexts every session shares, normal and under stress, so that a
   * connection allocates none of them. Built at start and on each reload.
   */
  private contexts: { normal: SessionContext; stress: SessionContext };
  private readonly infrastructure: InfrastructureAllowlist | undefined;
  private readonly counts = new ClientCounts();
  private readonly load: Load;
  private readonly rates: ConnectionRates;
  /** The configuration for new connections and what is built from it. */
  private current: Runtime;
  private started = false;
  private stopping = false;

  constructor(
    config: Config,
    private readonly addon: Addon,
    private readonly logger: Logger,
    families: AddressFamilies,
    /** The configuration with ${stress} set, used in stress mode. */
    stressConfig: Config = config,
    private readonly metrics: Metrics = NO_METRICS,
  ) {
    this.current = new Runtime(config, stressConfig, families, logger, metrics);
    this.sockets = socketSet(addon);
    this.load = new Load(config.limits.preQueueLimit, logger);
    this.rates = new ConnectionRates(
      config.limits.clientConnectionRateTimeUnitMs,
    );
    this.acceptWarning = new RateLimitedWarning(logger, 10_000);
    if (config.infrastructureAllowlist.domains.length > 0) {
      this.infrastructure = InfrastructureAllowlist.withServers(
        config.infrastructureAllowlist,
        logger,
        config.dnsServers,
      );
      this.permitInfrastructure(this.current);
    }
    this.contexts = this.buildContexts();
  }

  /** Makes a configuration's access lists permit the infrastructure first. */
  private permitInfrastructure(runtime: Runtime): void {
    if (this.infrastructure === undefined) return;
    runtime.config.accessList.permitFirst(this.infrastructure);
    runtime.stressConfig.accessList.permitFirst(this.infrastructure);
  }

  /** The configuration in force for new connections. */
  get runtime(): Runtime {
    return this.current;
  }

  /** Builds a configuration's pieces with this server's logger and metrics. */
  newRuntime(
    config: Config,
    stressConfig: Config,
    families: AddressFamilies,
  ): Runtime {
    return new Runtime(
      config,
      stressConfig,
      families,
      this.logger,
      this.metrics,
    );
  }

  /**
   * Makes `next` the configuration for new connections and stops the
   * timers of the one it replaces. Connections in progress keep the
   * configuration they started with. The listeners and the verdict
   * cache's store stay open, so the caller must keep their settings.
   */
  replaceRuntime(next: Runtime): void {
    if (this.stopping) {
      next.stop();
      return;
    }
    // The only step that can throw comes first, so a failure changes nothing.
    const { limits, cache } = next.config;
    if (cache.settings !== undefined) {
      this.cache?.updateSettings(cache.settings);
    }
    this.permitInfrastructure(next);
    const previous = this.current;
    this.current = next;
    this.contexts = this.buildContexts();
    previous.stop();
    this.load.setPreQueueLimit(limits.preQueueLimit);
    this.rates.setWindow(limits.clientConnectionRateTimeUnitMs);
    if (this.started) {
      this.dnsblHealthChecked = next.start(this.cleanup());
      void this.refreshInfrastructureAllowlist();
    }
  }

  /** Completes when the first DNS list health checks have run. */
  dnsblHealthChecked: Promise<void> = Promise.resolve();

  /** Number of connections in progress (tests, replies, hand-offs). */
  get sessionCount(): number {
    return this.sessions.size;
  }

  /**
   * Binds every listen address without accepting yet, so that start-up
   * can switch user in between; throws on the first that fails.
   */
  bind(): void {
    if (this.listeners.length > 0) return;
    try {
      for (const { host, port, proxy } of this.current.config.listen) {
        let listener: NativeListener | undefined = undefined;
        let label = "";
        const onError = (error: ListenerError): void => {
          this.onAcceptError(error, listener);
        };
        listener = new this.addon.Listener(
          host,
          port,
          LISTEN_BACKLOG,
          ACCEPT_LIMIT,
          (fd, clientAddress, clientPort, serverAddress, serverPort) => {
            this.metrics.connectionAccepted(label);
            const session = new Session(
              this.load.stress ? this.contexts.stress : this.contexts.normal,
              this.sockets.adopt(fd),
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
        label = formatEndpoint(bound.address, bound.port);
        this.logger.info(`listening on ${label}`);
      }
    } catch (error) {
      this.closeListeners();
      throw error;
    }
  }

  /**
   * Binds if bind() has not, opens the verdict cache and the greylist
   * store, and starts accepting. The stores open here, after any switch of
   * user, so that their files belong to the user that writes them.
   */
  start(): void {
    this.bind();
    const config = this.current.config;
    if (config.cache.settings !== undefined) {
      this.cache = VerdictCache.open(
        config.cache.settings,
        this.logger,
        this.metrics,
      );
    }
    this.greylist = GreylistService.create(config, this.cache, this.logger);
    this.contexts = this.buildContexts();
    prepareHandoffs(this.addon);
    for (const listener of this.listeners) listener.start();
    this.metrics.attachState(
      daemonState(
        this.listeners,
        this.sessions,
        this.load,
        () => this.current.dnsblHealth,
        this.greylist?.greylist,
      ),
    );
    this.started = true;
    this.dnsblHealthChecked = this.current.start(this.cleanup());
    this.greylist?.start();
    // Screening starts with an empty allowlist, which fills in when the
    // first refresh completes.
    void this.infrastructure?.start();
  }

  /**
   * Expands the infrastructure allowlist's SPF records again, as a reload
   * does; resolves when done. Failures are logged, never thrown.
   */
  refreshInfrastructureAllowlist(): Promise<void> {
    return this.infrastructure?.refresh() ?? Promise.resolve();
  }

  /** Builds the session contexts from the runtime in force. */
  private buildContexts(): { normal: SessionContext; stress: SessionContext } {
    const runtime = this.current;
    const shared = {
      addon: this.addon,
      logger: this.logger,
      families: runtime.families,
      dnsbl: runtime.dnsbl,
      cache: this.cache,
      greylist: this.greylist?.greylist,
      counts: this.counts,
      rates: this.rates,
      load: this.load,
      metrics: this.metrics,
      greetWaits: this.greetWaits,
      onEnded: (ended: Session): void => {
        this.sessions.delete(ended);
      },
    };
    return {
      normal: { ...shared, config: runtime.configFor(false) },
      stress: { ...shared, config: runtime.configFor(true) },
    };
  }

  /** Starts the policy service, if configured; throws when it cannot listen. */
  async startPolicyService(): Promise<void> {
    await this.greylist?.startPolicyService();
  }

  /** Returns the periodic cleanup of the verdict cache and greylist store. */
  private cleanup(): (() => void) | undefined {
    const { cache, greylist } = this;
    if (cache === undefined) return undefined;
    return () => {
      cache.cleanup();
      greylist?.cleanup();
    };
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
    this.current.stop();
    this.infrastructure?.stop();
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
    await this.greylist?.stop();
    await this.cache?.close();
  }
}
