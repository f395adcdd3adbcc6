// Storage for greylist and spam trap records: the verdict cache's embedded
// store (or, when the cache is off, a map in memory that a restart loses),
// and in shared mode Redis in front of it. Redis has the copy all hosts share, so
// every MX host sees the same triplets, passes and traps; when Redis is
// slow or down, the local copy answers. Trap checks at connect time read
// only the local store, because screening must not wait: traps set on
// other hosts arrive with syncTraps(), which the daemon runs periodically.
import type { Logger } from "../log/logger.js";
import { RateLimitedWarning } from "../log/logger.js";
import type { RedisStore } from "../cache/redis-store.js";
import {
  decodeGreylistRecord,
  encodeGreylistRecord,
  TRAP_PREFIX,
  type GreylistRecord,
} from "./records.js";

/** The subset of LocalStore that greylist records use. */
export interface TextStore {
  getText(key: string): string | undefined;
  putText(key: string, text: string): void;
  remove(key: string): Promise<void>;
  textEntries(prefix: string): Iterable<{ key: string; text: string }>;
}

/** A TextStore in memory, used when the verdict cache is off. */
export class MemoryTextStore implements TextStore {
  private readonly values = new Map<string, string>();

  getText(key: string): string | undefined {
    return this.values.get(key);
  }

  putText(key: string, text: string): void {
    this.values.set(key, text);
  }

  remove(key: string): Promise<void> {
    this.values.delete(key);
    return Promise.resolve();
  }

  *textEntries(prefix: string): Generator<{ key: string; text: string }> {
    for (const [key, text] of [...this.values]) {
      if (key.startsWith(prefix)) yield { key, text };
    }
  }
}

export class GreylistStore {
  private readonly redisWarning: RateLimitedWarning;

  constructor(
    private readonly local: TextStore,
    private readonly redis: RedisStore | undefined,
    logger: Logger,
  ) {
    this.redisWarning = new RateLimitedWarning(logger, 60_000);
  }

  /** Returns the unexpired record under `key`, asking Redis first. */
  async get(
    key: string,
    now = Date.now(),
  ): Promise<GreylistRecord | undefined> {
    if (this.redis !== undefined) {
      try {
        const text = await this.redis.getText(key);
        if (text === undefined) {
          if (this.local.getText(key) !== undefined)
            void this.local.remove(key);
          return undefined;
        }
        this.local.putText(key, text);
        return unexpired(decodeGreylistRecord(text), now);
      } catch (error) {
        this.redisWarning.report(
          `shared cache greylist lookup for ${key} failed: ` +
            `${(error as Error).message}; using the local copy`,
        );
      }
    }
    return this.getLocal(key, now);
  }

  /** Returns the unexpired record in the local store only (never waits). */
  getLocal(key: string, now = Date.now()): GreylistRecord | undefined {
    const text = this.local.getText(key);
    return text === undefined
      ? undefined
      : unexpired(decodeGreylistRecord(text), now);
  }

  /** Stores a record locally and, in shared mode, in Redis. */
  async put(key: string, record: GreylistRecord): Promise<void> {
    const text = encodeGreylistRecord(record);
    this.local.putText(key, text);
    try {
      await this.redis?.putText(key, text, record.expires);
    } catch (error) {
      this.redisWarning.report(
        `shared cache greylist update for ${key} failed: ` +
          (error as Error).message,
      );
    }
  }

  async remove(key: string): Promise<void> {
    await this.local.remove(key);
    try {
      await this.redis?.remove(key);
    } catch (error) {
      this.redisWarning.report(
        `shared cache greylist delete for ${key} failed: ` +
          (error as Error).message,
      );
    }
  }

  /** Removes expired and malformed local records; returns how many. */
  cleanup(prefixes: readonly string[], now = Date.now()): number {
    let dropped = 0;
    for (const prefix of prefixes) {
      for (const { key, text } of [...this.local.textEntries(prefix)]) {
        if (unexpired(decodeGreylistRecord(text), now) === undefined) {
          void this.local.remove(key);
          dropped++;
        }
      }
    }
    return dropped;
  }

  /**
   * Copies the trap records in Redis to the local store, so that the
   * connect-time check sees traps set by other hosts. Returns how many
   * were copied, or undefined without Redis.
   */
  async syncTraps(): Promise<number | undefined> {
    if (this.redis === undefined) return undefined;
    let copied = 0;
    try {
      for (const key of await this.redis.keysWithPrefix(TRAP_PREFIX)) {
        const text = await this.redis.getText(key);
        if (text !== undefined && this.local.getText(key) !== text) {
          this.local.putText(key, text);
          copied++;
        }
      }
    } catch (error) {
      this.redisWarning.report(
        `shared cache trap sync failed: ${(error as Error).message}`,
      );
    }
    return copied;
  }
}

function unexpired(
  record: GreylistRecord | undefined,
  now: number,
): GreylistRecord | undefined {
  return record !== undefined && record.expires > now ? record : undefined;
}
