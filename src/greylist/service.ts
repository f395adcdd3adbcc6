// The greylist pieces a running daemon owns. The store keeps triplets,
// passes and traps: in the verdict cache's LMDB file and Redis when the
// cache is on, in memory otherwise. Beside it are the greylist itself, the
// policy service that smtpd queries at RCPT time, and the timers that clean
// up and copy traps from Redis. Built once at startup; a reload does not
// replace it.
import type { Config } from "../config/load.js";
import type { Logger } from "../log/logger.js";
import type { VerdictCache } from "../cache/verdict-cache.js";
import { Greylist } from "./greylist.js";
import { GreylistStore, MemoryTextStore } from "./store.js";
import { PASS_PREFIX, TRAP_PREFIX, TRIPLET_PREFIX } from "./records.js";
import { PolicyServer } from "../policy/server.js";

/** How often trap records are copied from Redis in shared mode. */
const TRAP_SYNC_INTERVAL_MS = 30_000;

export class GreylistService {
  readonly greylist: Greylist;
  private readonly store: GreylistStore;
  private readonly policy: PolicyServer | undefined;
  private trapSyncTimer: NodeJS.Timeout | undefined;

  /**
   * Returns the service when greylisting, traps or the policy service are
   * configured, and undefined otherwise.
   */
  static create(
    config: Config,
    cache: VerdictCache | undefined,
    logger: Logger,
  ): GreylistService | undefined {
    const { mode, traps, policyListen } = config.greylist;
    if (mode === "off" && traps.empty && policyListen === undefined) {
      return undefined;
    }
    return new GreylistService(config, cache, logger);
  }

  private constructor(
    private readonly config: Config,
    cache: VerdictCache | undefined,
    private readonly logger: Logger,
  ) {
    const local = cache?.localStore;
    if (local === undefined) {
      logger.warning(
        "greylist and trap records are kept in memory only, and a " +
          "restart loses them: the verdict cache is off or failed to open",
      );
    }
    this.store = new GreylistStore(
      local ?? new MemoryTextStore(),
      cache?.redisStore,
      logger,
    );
    this.greylist = new Greylist(config, this.store, logger);
    const { policyListen } = config.greylist;
    if (policyListen !== undefined) {
      this.policy = new PolicyServer(policyListen, this.greylist, logger);
    }
  }

  /** Starts copying trap records from Redis, in shared mode. */
  start(): void {
    if (!this.config.cache.settings?.redisUrl) return;
    const store = this.store;
    this.trapSyncTimer = setInterval(
      () => void store.syncTraps(),
      TRAP_SYNC_INTERVAL_MS,
    );
    this.trapSyncTimer.unref();
    void store.syncTraps();
  }

  /** Starts the policy service, if configured; throws when it cannot listen. */
  async startPolicyService(): Promise<void> {
    if (this.policy === undefined) return;
    const label = await this.policy.start();
    this.logger.info(`policy service listening on ${label}`);
  }

  /** Drops expired triplets, passes and traps from the local store. */
  cleanup(): void {
    const dropped = this.store.cleanup([
      TRIPLET_PREFIX,
      PASS_PREFIX,
      TRAP_PREFIX,
    ]);
    this.logger.info(`greylist cleanup: dropped=${dropped} entries`);
  }

  async stop(): Promise<void> {
    clearInterval(this.trapSyncTimer);
    await this.policy?.stop();
  }
}
