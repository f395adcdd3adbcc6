// `postwarden cache ...`: look inside the verdict cache, and delete from
// it, while the daemon runs. LMDB lets this process read and write the
// store beside the daemon; in shared mode deletes also go to Redis. When
// run as root, files the store creates are given to the owner of the data
// directory, so the daemon (running as that user) can still open them.
import { chownSync, readdirSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { isIP } from "node:net";
import type { Config } from "../config/load.js";
import {
  networkContains,
  parseNetwork,
  type Network,
} from "../access/network.js";
import { clientKey } from "./key.js";
import { LocalStore, type LocalEntry } from "./local-store.js";
import { RedisStore, redactUrl } from "./redis-store.js";
import type { CacheSettings } from "./verdict-cache.js";
import type { CacheRecord } from "./record.js";
import { greylistKey } from "../greylist/key.js";
import {
  formatGreylistTable,
  readGreylistEntries,
  removeGreylistEntries,
  type GreylistEntry,
} from "../greylist/entries.js";

export class CacheCliError extends Error {}

interface Stores {
  settings: CacheSettings;
  local: LocalStore;
  redis: RedisStore | undefined;
}

async function openStores(config: Config): Promise<Stores> {
  const settings = config.cache.settings;
  if (settings === undefined) {
    throw new CacheCliError("the verdict cache is off (cache_map is empty)");
  }
  let local: LocalStore;
  try {
    local = LocalStore.open(settings.localPath);
  } catch (error) {
    throw new CacheCliError(
      `cannot open verdict cache ${settings.localPath}: ${(error as Error).message}`,
    );
  }
  let redis: RedisStore | undefined;
  if (settings.redisUrl !== undefined) {
    redis = new RedisStore({
      url: settings.redisUrl,
      keyPrefix: settings.keyPrefix,
      timeoutMs: Math.max(settings.redisTimeoutMs, 2000),
      retentionMs: settings.retentionMs,
    });
    try {
      await redis.ready(3000);
    } catch (error) {
      await redis.close();
      await local.close();
      throw new CacheCliError(
        `shared cache ${redactUrl(settings.redisUrl)}: ${(error as Error).message}`,
      );
    }
  }
  return { settings, local, redis };
}

async function closeStores(stores: Stores): Promise<void> {
  await stores.local.flushed();
  await stores.local.close();
  await stores.redis?.close();
  giveFilesToDirectoryOwner(stores.settings.localPath);
}

/** Makes root-created store files belong to the data directory's owner. */
function giveFilesToDirectoryOwner(path: string): void {
  if (process.getuid?.() !== 0) return;
  const directory = dirname(path);
  const owner = statSync(directory);
  if (owner.uid === 0) return;
  for (const name of readdirSync(directory)) {
    const file = join(directory, name);
    if (!file.startsWith(path)) continue;
    const info = statSync(file);
    if (info.uid === 0) chownSync(file, owner.uid, owner.gid);
  }
}

function formatTime(ms: number, now: number): string {
  if (ms <= 0) return "-";
  const remaining = Math.round((ms - now) / 1000);
  const state =
    remaining > 0 ? `in ${remaining}s` : `expired ${-remaining}s ago`;
  return `${new Date(ms).toISOString()} (${state})`;
}

interface RecordSummary {
  key: string;
  pregreet: number;
  dnsbl: number;
  updated: number;
  passed: string[];
}

function describeRecord(
  key: string,
  record: CacheRecord,
  now: number,
): RecordSummary {
  return {
    key,
    pregreet: record.tests.pregreet ?? 0,
    dnsbl: record.tests.dnsbl ?? 0,
    updated: record.updated,
    passed: Object.entries(record.tests)
      .filter(([, expiry]) => expiry > now)
      .map(([name]) => name),
  };
}

/** Key for an address argument, or a network for a CIDR argument. */
function parseTarget(
  text: string,
  config: Config,
): { key: string } | { network: Network } {
  if (text.includes("/")) {
    try {
      return { network: parseNetwork(text) };
    } catch (error) {
      throw new CacheCliError(
        `invalid network "${text}": ${(error as Error).message}`,
      );
    }
  }
  if (isIP(text) === 0) {
    throw new CacheCliError(
      `invalid address "${text}": expected an IPv4 or IPv6 address`,
    );
  }
  return { key: clientKey(text, config.clientIpv6PrefixLength) };
}

/** Whether a cache key (an address or an IPv6 prefix) lies in `network`. */
function keyInNetwork(key: string, network: Network): boolean {
  const address = key.split("/")[0] ?? key;
  try {
    return networkContains(network, address);
  } catch {
    return false;
  }
}

type Output = (text: string) => void;

export async function showCommand(
  config: Config,
  address: string,
  json: boolean,
  out: Output,
): Promise<number> {
  const target = parseTarget(address, config);
  if (!("key" in target))
    throw new CacheCliError("show takes an address, not a network");
  const stores = await openStores(config);
  try {
    const now = Date.now();
    let entry: LocalEntry | undefined = stores.local.get(target.key);
    let source = `local ${stores.settings.localPath}`;
    if (stores.redis !== undefined) {
      const shared = await stores.redis.get(target.key);
      if (shared.status === "hit") {
        entry = { record: shared.record, syncedAt: now };
        source = "shared";
      } else if (shared.status === "malformed") {
        throw new CacheCliError(
          `shared cache: malformed record for ${target.key}: ${shared.reason}`,
        );
      }
    }
    const greylist = await clientGreylistEntries(stores, config, address, now);
    if (entry === undefined) {
      if (greylist.length > 0) {
        out(
          json
            ? JSON.stringify({ key: target.key, greylist }) + "\n"
            : formatGreylistTable(greylist, now),
        );
        return 0;
      }
      out(json ? "null\n" : `${target.key}: not in the cache\n`);
      return 1;
    }
    const described = describeRecord(target.key, entry.record, now);
    if (json) {
      out(JSON.stringify({ ...described, source, greylist }) + "\n");
    } else {
      out(
        `${target.key} (${source})\n` +
          Object.entries(entry.record.tests)
            .map(
              ([name, expiry]) =>
                `  ${name.padEnd(12)}${formatTime(expiry, now)}\n`,
            )
            .join("") +
          `  ${"updated".padEnd(12)}${new Date(entry.record.updated).toISOString()}\n`,
      );
      if (greylist.length > 0) out(formatGreylistTable(greylist, now));
    }
    return 0;
  } finally {
    await closeStores(stores);
  }
}

export async function listCommand(
  config: Config,
  json: boolean,
  out: Output,
): Promise<number> {
  const stores = await openStores(config);
  try {
    const now = Date.now();
    const rows: RecordSummary[] = [];
    for (const { key, entry } of stores.local.entries()) {
      if (entry !== undefined)
        rows.push(describeRecord(key, entry.record, now));
    }
    if (json) {
      out(JSON.stringify(rows) + "\n");
    } else {
      const cell = (expiry: number): string => {
        if (expiry <= 0) return "-".padEnd(10);
        if (expiry <= now) return "expired".padEnd(10);
        return `${Math.round((expiry - now) / 1000)}s`.padEnd(10);
      };
      out(
        `${"client".padEnd(24)} ${"pregreet".padEnd(10)} ` +
          `${"dnsbl".padEnd(10)} updated\n`,
      );
      for (const row of rows) {
        out(
          `${row.key.padEnd(24)} ${cell(row.pregreet)} ${cell(row.dnsbl)} ` +
            `${new Date(row.updated).toISOString()}\n`,
        );
      }
      const greylist = await readGreylistEntries(
        stores.local,
        stores.redis,
        now,
      );
      if (greylist.length > 0) out("\n" + formatGreylistTable(greylist, now));
    }
    return 0;
  } finally {
    await closeStores(stores);
  }
}

/**
 * Removes verdicts, greylist and trap records whose client key matches
 * from the local store and Redis; returns how many.
 */
async function removeKeys(
  stores: Stores,
  matches: (key: string) => boolean,
): Promise<number> {
  const localKeys = [...stores.local.entries()].map(({ key }) => key);
  const sharedKeys =
    stores.redis === undefined ? [] : await stores.redis.keys();
  const keys = new Set([...localKeys, ...sharedKeys].filter(matches));
  for (const key of keys) {
    await stores.local.remove(key);
    await stores.redis?.remove(key);
  }
  const greylist = await removeGreylistEntries(
    stores.local,
    stores.redis,
    matches,
  );
  return keys.size + greylist;
}

/** Greylist and trap records for one address: its client and greylist keys. */
async function clientGreylistEntries(
  stores: Stores,
  config: Config,
  address: string,
  now: number,
): Promise<GreylistEntry[]> {
  const keys = new Set([
    clientKey(address, config.clientIpv6PrefixLength),
    greylistKey(
      address,
      config.greylist.ipv4PrefixLength,
      config.clientIpv6PrefixLength,
    ),
  ]);
  const entries = await readGreylistEntries(stores.local, stores.redis, now);
  return entries.filter(({ record }) => keys.has(record.client));
}

export async function greylistCommand(
  config: Config,
  json: boolean,
  out: Output,
): Promise<number> {
  const stores = await openStores(config);
  try {
    const now = Date.now();
    const entries = await readGreylistEntries(stores.local, stores.redis, now);
    out(
      json
        ? JSON.stringify(entries.map(({ record }) => record)) + "\n"
        : formatGreylistTable(entries, now),
    );
    return 0;
  } finally {
    await closeStores(stores);
  }
}

function deletedMessage(count: number): string {
  return `deleted ${count} ${count === 1 ? "entry" : "entries"}\n`;
}

export async function deleteCommand(
  config: Config,
  target: string,
  out: Output,
): Promise<number> {
  const parsed = parseTarget(target, config);
  const stores = await openStores(config);
  try {
    const greylistTarget =
      "key" in parsed
        ? greylistKey(
            target,
            config.greylist.ipv4PrefixLength,
            config.clientIpv6PrefixLength,
          )
        : undefined;
    const count = await removeKeys(stores, (key) =>
      "key" in parsed
        ? key === parsed.key || key === greylistTarget
        : keyInNetwork(key, parsed.network),
    );
    out(deletedMessage(count));
    return 0;
  } finally {
    await closeStores(stores);
  }
}

export async function flushCommand(
  config: Config,
  out: Output,
): Promise<number> {
  const stores = await openStores(config);
  try {
    out(deletedMessage(await removeKeys(stores, () => true)));
    return 0;
  } finally {
    await closeStores(stores);
  }
}

export async function statsCommand(
  config: Config,
  json: boolean,
  out: Output,
): Promise<number> {
  const stores = await openStores(config);
  try {
    const now = Date.now();
    let total = 0;
    let malformed = 0;
    const passed: Record<string, number> = { pregreet: 0, dnsbl: 0 };
    for (const { entry } of stores.local.entries()) {
      total++;
      if (entry === undefined) {
        malformed++;
        continue;
      }
      for (const [name, expiry] of Object.entries(entry.record.tests)) {
        if (expiry > now) passed[name] = (passed[name] ?? 0) + 1;
      }
    }
    const shared =
      stores.redis === undefined
        ? undefined
        : (await stores.redis.keys()).length;
    const greylist = { triplet: 0, pass: 0, trap: 0 };
    for (const { record } of await readGreylistEntries(
      stores.local,
      stores.redis,
      now,
    )) {
      greylist[record.kind]++;
    }
    const stats = {
      store: stores.settings.mapName,
      entries: total,
      malformed,
      passed,
      shared_entries: shared,
      greylist,
    };
    if (json) {
      out(JSON.stringify(stats) + "\n");
    } else {
      out(
        `store     ${stats.store}\n` +
          `entries   ${total} (${malformed} malformed)\n` +
          `passed    pregreet ${passed.pregreet ?? 0}, dnsbl ${passed.dnsbl ?? 0}\n` +
          `greylist  ${greylist.triplet} triplets, ${greylist.pass} passed ` +
          `clients, ${greylist.trap} trapped clients\n` +
          (shared === undefined
            ? ""
            : `shared    ${shared} entries in Redis\n`),
      );
    }
    return 0;
  } finally {
    await closeStores(stores);
  }
}
