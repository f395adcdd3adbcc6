// The shared verdict store for several MX hosts: one Redis key per client,
// "<prefix><client key>", holding a versioned JSON record and expiring by
// itself when the retention time after its last test expiry has passed.
// Every command has a short deadline and nothing is queued while Redis is
// unreachable, so screening never waits on Redis for longer than that.
import { Redis } from "ioredis";
import {
  decodeRecord,
  encodeRecord,
  latestExpiry,
  RecordFormatError,
  type CacheRecord,
} from "./record.js";
import { isVerdictKey } from "./key.js";

export type RedisLookup =
  | { status: "hit"; record: CacheRecord }
  | { status: "miss" }
  /** The value was not a record of this version. */
  | { status: "malformed"; reason: string }
  /** Redis was down, slow or failed, as `reason` describes. */
  | { status: "unavailable"; reason: string };

export interface RedisSettings {
  url: string;
  keyPrefix: string;
  /** Deadline for each command, in ms. */
  timeoutMs: number;
  /** How long records stay after their last expiry, in ms. */
  retentionMs: number;
}

export class RedisStore {
  private readonly client: Redis;

  constructor(
    private settings: RedisSettings,
    onError: (error: Error) => void = () => undefined,
    onReady: () => void = () => undefined,
  ) {
    this.client = new Redis(settings.url, {
      commandTimeout: settings.timeoutMs,
      connectTimeout: Math.max(settings.timeoutMs, 1000),
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      // Reconnect once a second for as long as Redis is away.
      retryStrategy: () => 1000,
      lazyConnect: false,
    });
    this.client.on("error", onError);
    this.client.on("ready", onReady);
  }

  /** Applies a new key prefix and retention time to later commands. */
  updateSettings(
    changes: Pick<RedisSettings, "keyPrefix" | "retentionMs">,
  ): void {
    this.settings = { ...this.settings, ...changes };
  }

  get connected(): boolean {
    return this.client.status === "ready";
  }

  /** Waits until connected, for the CLI; throws after `timeoutMs`. */
  async ready(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.connected) {
      if (Date.now() > deadline) {
        throw new Error(`cannot connect to ${redactUrl(this.settings.url)}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  private redisKey(key: string): string {
    return this.settings.keyPrefix + key;
  }

  async get(key: string): Promise<RedisLookup> {
    let text: string | null;
    try {
      text = await this.client.get(this.redisKey(key));
    } catch (error) {
      return { status: "unavailable", reason: (error as Error).message };
    }
    if (text === null) return { status: "miss" };
    try {
      return { status: "hit", record: decodeRecord(text) };
    } catch (error) {
      if (error instanceof RecordFormatError) {
        return { status: "malformed", reason: error.message };
      }
      throw error;
    }
  }

  /** Writes a record; rejects when Redis is unavailable. */
  async put(key: string, record: CacheRecord): Promise<void> {
    const expiresAt = latestExpiry(record) + this.settings.retentionMs;
    await this.client.set(
      this.redisKey(key),
      encodeRecord(record),
      "PXAT",
      Math.max(expiresAt, Date.now() + 1000),
    );
  }

  async remove(key: string): Promise<void> {
    await this.client.del(this.redisKey(key));
  }

  /** Returns the text under `key`, or undefined; rejects when unavailable. */
  async getText(key: string): Promise<string | undefined> {
    return (await this.client.get(this.redisKey(key))) ?? undefined;
  }

  /** Stores text that Redis removes at `expiresAt` (ms since the epoch). */
  async putText(key: string, text: string, expiresAt: number): Promise<void> {
    await this.client.set(
      this.redisKey(key),
      text,
      "PXAT",
      Math.max(expiresAt, Date.now() + 1000),
    );
  }

  /** Lists every verdict cache key under the prefix, with SCAN. */
  async keys(): Promise<string[]> {
    return (await this.keysWithPrefix("")).filter(isVerdictKey);
  }

  /** Lists every key (without the configured prefix) that starts with `start`. */
  async keysWithPrefix(start: string): Promise<string[]> {
    const found: string[] = [];
    let cursor = "0";
    do {
      const [next, batch] = await this.client.scan(
        cursor,
        "MATCH",
        escapeGlob(this.settings.keyPrefix + start) + "*",
        "COUNT",
        1000,
      );
      cursor = next;
      for (const key of batch)
        found.push(key.slice(this.settings.keyPrefix.length));
    } while (cursor !== "0");
    return found;
  }

  async close(): Promise<void> {
    try {
      await this.client.quit();
    } catch {
      this.client.disconnect();
    }
  }
}

function escapeGlob(text: string): string {
  return text.replace(/[*?[\]\\]/g, "\\$&");
}

/** Returns the URL without its password, for logs and errors. */
export function redactUrl(url: string): string {
  return url.replace(/\/\/([^@/]*)@/, (_match, credentials: string) =>
    credentials.includes(":")
      ? `//${credentials.split(":")[0]}:***@`
      : "//***@",
  );
}
