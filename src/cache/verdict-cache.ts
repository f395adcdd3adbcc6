// The verdict cache as screening sees it: the embedded store first, and in
// shared mode Redis behind it. A local copy of a shared verdict is trusted
// for cache_local_ttl; after that Redis is asked again, and its answer
// wins (a miss there removes the local copy, so a delete on one host
// reaches the others). When Redis is slow or down, lookups fall back to
// the local store after the Redis deadline, with a rate-limited warning.
// A store that cannot be opened leaves the daemon screening without a
// cache, and says so; it never stops the daemon.
import type { Logger } from "../log/logger.js";
import { RateLimitedWarning } from "../log/logger.js";
import { LocalStore } from "./local-store.js";
import { RedisStore, redactUrl } from "./redis-store.js";
import { latestExpiry, RecordFormatError, type CacheRecord } from "./record.js";
import { NO_METRICS, type Metrics } from "../metrics/metrics.js";

export interface CacheSettings {
  /** Path of the embedded store file. */
  localPath: string;
  /** Name of the cache in log lines, such as "lmdb:/var/lib/...". */
  mapName: string;
  /** redis:// or rediss:// URL for shared mode, or undefined. */
  redisUrl: string | undefined;
  keyPrefix: string;
  localTtlMs: number;
  redisTimeoutMs: number;
  retentionMs: number;
}

/** The local part of a lookup; see VerdictCache.lookupLocal(). */
export interface LocalLookup {
  /** True when `record` is the result and Redis needs no lookup. */
  final: boolean;
  record: CacheRecord | undefined;
}

export interface CleanupResult {
  retained: number;
  dropped: number;
}

export class VerdictCache {
  private readonly redisWarning: RateLimitedWarning;
  private readonly formatWarning: RateLimitedWarning;

  private constructor(
    private settings: CacheSettings,
    private readonly logger: Logger,
    private readonly local: LocalStore | undefined,
    private readonly redis: RedisStore | undefined,
    private readonly metrics: Metrics,
  ) {
    this.redisWarning = new RateLimitedWarning(logger, 60_000);
    this.formatWarning = new RateLimitedWarning(logger, 60_000);
  }

  /** Opens the stores; logs and carries on without a store that fails. */
  static open(
    settings: CacheSettings,
    logger: Logger,
    metrics: Metrics = NO_METRICS,
  ): VerdictCache {
    let local: LocalStore | undefined;
    try {
      local = LocalStore.open(settings.localPath);
    } catch (error) {
      logger.error(
        `cannot open verdict cache ${settings.localPath}: ` +
          `${(error as Error).message}; screening continues without the ` +
          "local cache. Move the file away or fix its permissions, then " +
          "restart",
      );
    }
    let redis: RedisStore | undefined;
    if (settings.redisUrl !== undefined) {
      const warning = new RateLimitedWarning(logger, 60_000);
      redis = new RedisStore(
        {
          url: settings.redisUrl,
          keyPrefix: settings.keyPrefix,
          timeoutMs: settings.redisTimeoutMs,
          retentionMs: settings.retentionMs,
        },
        (error) =>
          warning.report(
            `shared cache ${redactUrl(settings.redisUrl ?? "")}: ` +
              `${error.message}; using the local cache until it is back`,
          ),
        () =>
          logger.info(
            `shared cache ${redactUrl(settings.redisUrl ?? "")} connected`,
          ),
      );
    }
    return new VerdictCache(settings, logger, local, redis, metrics);
  }

  /**
   * Applies new settings from a reload. The store file, the Redis URL and
   * the Redis timeout belong to open connections and must not change.
   */
  updateSettings(settings: CacheSettings): void {
    const { localPath, redisUrl, redisTimeoutMs } = this.settings;
    if (
      settings.localPath !== localPath ||
      settings.redisUrl !== redisUrl ||
      settings.redisTimeoutMs !== redisTimeoutMs
    ) {
      throw new Error(
        "the verdict cache's store, Redis URL and timeout need a restart",
      );
    }
    this.settings = settings;
    this.redis?.updateSettings({
      keyPrefix: settings.keyPrefix,
      retentionMs: settings.retentionMs,
    });
  }

  /** The embedded store, shared with the greylist; undefined if it failed. */
  get localStore(): LocalStore | undefined {
    return this.local;
  }

  /** The Redis store in shared mode, shared with the greylist. */
  get redisStore(): RedisStore | undefined {
    return this.redis;
  }

  get name(): string {
    return this.settings.mapName;
  }

  /** Returns the record for `key`, or undefined on a miss. */
  async lookup(
    key: string,
    now = Date.now(),
  ): Promise<CacheRecord | undefined> {
    const local = this.lookupLocal(key, now);
    return local.final
      ? local.record
      : this.lookupShared(key, local.record, now);
  }

  /**
   * Reads the local store. Returns the result when it needs no Redis
   * lookup (final), or else the local copy that lookupShared() falls back
   * to. A session calls this first, so that a local result costs no
   * promise.
   */
  lookupLocal(key: string, now = Date.now()): LocalLookup {
    let local: CacheRecord | undefined;
    let syncedAt = 0;
    try {
      const entry = this.local?.get(key);
      local = entry?.record;
      syncedAt = entry?.syncedAt ?? 0;
    } catch (error) {
      this.warnFormat(`local cache ${this.settings.localPath}`, key, error);
    }
    // In shared mode a local copy is trusted only for cache_local_ttl.
    const fresh =
      this.redis === undefined || now - syncedAt < this.settings.localTtlMs;
    const localResult = fresh ? "hit" : "expired";
    this.metrics.cacheLookup(
      "local",
      local === undefined ? "miss" : localResult,
    );
    const final = this.redis === undefined || (local !== undefined && fresh);
    return { final, record: local };
  }

  /** Looks the key up in Redis, after lookupLocal() had no final result. */
  async lookupShared(
    key: string,
    local: CacheRecord | undefined,
    now = Date.now(),
  ): Promise<CacheRecord | undefined> {
    if (this.redis === undefined) return local;
    const result = await this.redis.get(key);
    this.metrics.cacheLookup("shared", result.status);
    switch (result.status) {
      case "hit":
        this.local?.put(key, result.record, now);
        return result.record;
      case "miss":
        if (local !== undefined) void this.local?.remove(key);
        return undefined;
      case "malformed":
        this.warnFormat(
          `shared cache`,
          key,
          new RecordFormatError(result.reason),
        );
        return undefined;
      case "unavailable":
        this.redisWarning.report(
          `shared cache ${redactUrl(this.settings.redisUrl ?? "")} ` +
            `lookup failed: ${result.reason}; using the local cache`,
        );
        return local;
    }
  }

  /** Stores a record locally and, in shared mode, in Redis. */
  store(key: string, record: CacheRecord, now = Date.now()): void {
    this.local?.put(key, record, now);
    this.redis?.put(key, record).catch((error: unknown) => {
      this.redisWarning.report(
        `shared cache ${redactUrl(this.settings.redisUrl ?? "")} update ` +
          `failed: ${(error as Error).message}`,
      );
    });
  }

  /** Drops local records whose last expiry is older than the retention. */
  cleanup(now = Date.now()): CleanupResult {
    const result = { retained: 0, dropped: 0 };
    if (this.local === undefined) return result;
    for (const { key, entry } of this.local.entries()) {
      if (
        entry === undefined ||
        latestExpiry(entry.record) + this.settings.retentionMs < now
      ) {
        void this.local.remove(key);
        result.dropped++;
      } else {
        result.retained++;
      }
    }
    this.logger.info(
      `cache ${this.settings.mapName} full cleanup: ` +
        `retained=${result.retained} dropped=${result.dropped} entries`,
    );
    return result;
  }

  async close(): Promise<void> {
    await this.local?.flushed();
    await this.local?.close();
    await this.redis?.close();
  }

  private warnFormat(store: string, key: string, error: unknown): void {
    this.formatWarning.report(
      `${store}: malformed record for ${key} (${(error as Error).message}); ` +
        "treated as a miss",
    );
  }
}
