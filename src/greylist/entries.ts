// Greylist and trap records as the cache CLI reads, prints and deletes
// them. In shared mode Redis contains the records every host uses, so its
// copy wins over the local one.
import type { LocalStore } from "../cache/local-store.js";
import type { RedisStore } from "../cache/redis-store.js";
import { GREYLIST_KEY_PREFIX, TRAP_KEY_PREFIX } from "../cache/key.js";
import { decodeGreylistRecord, type GreylistRecord } from "./records.js";

export interface GreylistEntry {
  /** The store key, such as "greylist:pass:192.0.2.0/24". */
  key: string;
  record: GreylistRecord;
}

const PREFIXES = [GREYLIST_KEY_PREFIX, TRAP_KEY_PREFIX];

/** Reads every unexpired greylist and trap record. */
export async function readGreylistEntries(
  local: LocalStore,
  redis: RedisStore | undefined,
  now: number,
): Promise<GreylistEntry[]> {
  const texts = new Map<string, string>();
  for (const prefix of PREFIXES) {
    for (const { key, text } of local.textEntries(prefix)) texts.set(key, text);
    if (redis === undefined) continue;
    for (const key of await redis.keysWithPrefix(prefix)) {
      const text = await redis.getText(key);
      if (text !== undefined) texts.set(key, text);
    }
  }
  const entries: GreylistEntry[] = [];
  for (const [key, text] of texts) {
    const record = decodeGreylistRecord(text);
    if (record !== undefined && record.expires > now) {
      entries.push({ key, record });
    }
  }
  return entries.sort((a, b) => a.key.localeCompare(b.key));
}

/** Deletes the entries whose client key matches; returns how many. */
export async function removeGreylistEntries(
  local: LocalStore,
  redis: RedisStore | undefined,
  matches: (client: string) => boolean,
): Promise<number> {
  // Expired records are read too, so that a delete leaves nothing behind.
  const entries = await readGreylistEntries(local, redis, 0);
  let count = 0;
  for (const { key, record } of entries) {
    if (!matches(record.client)) continue;
    await local.remove(key);
    await redis?.remove(key);
    count++;
  }
  return count;
}

/** Formats entries as a table, one line each, with times left in seconds. */
export function formatGreylistTable(
  entries: readonly GreylistEntry[],
  now: number,
): string {
  const seconds = (ms: number): string => `${Math.round((ms - now) / 1000)}s`;
  const lines = [
    `${"kind".padEnd(8)} ${"client".padEnd(24)} ${"expires".padEnd(10)} detail`,
  ];
  for (const { record } of entries) {
    let detail: string;
    switch (record.kind) {
      case "triplet":
        detail =
          `from=<${record.sender}> to=<${record.recipient}> ` +
          `first seen ${Math.round((now - record.firstSeen) / 1000)}s ago, ` +
          `attempts=${record.attempts}`;
        break;
      case "pass":
        detail = "passed greylisting";
        break;
      case "trap":
        detail = `sent to spam trap <${record.recipient}>`;
        break;
    }
    lines.push(
      `${record.kind.padEnd(8)} ${record.client.padEnd(24)} ` +
        `${seconds(record.expires).padEnd(10)} ${detail}`,
    );
  }
  return lines.join("\n") + "\n";
}
