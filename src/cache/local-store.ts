// The embedded, persistent verdict store: an LMDB file (the lmdb package),
// which other processes can read while the daemon writes, so the cache CLI
// works against a running daemon. Each value is a versioned JSON record
// plus the time this copy was last confirmed with the shared store.
// Writes are not awaited: lmdb batches them into few commits.
import { open, type RootDatabase } from "lmdb";
import { spawnSync } from "node:child_process";
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readSync,
  statSync,
} from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { checkRecord, RecordFormatError, type CacheRecord } from "./record.js";
import { isVerdictKey } from "./key.js";

export interface LocalEntry {
  record: CacheRecord;
  /** When this copy was written or last confirmed with Redis (ms). */
  syncedAt: number;
}

export class LocalStore {
  /**
   * Writes not yet committed, by key; LMDB reads do not see a write until
   * its batch commits, and a client may come back before that.
   */
  private readonly pending = new Map<string, string | undefined>();

  private constructor(
    private readonly db: RootDatabase<string, string>,
    readonly path: string,
  ) {}

  /** Opens (creating if needed) the store file; throws on failure. */
  static open(path: string): LocalStore {
    mkdirSync(dirname(path), { recursive: true, mode: 0o750 });
    if (existsSync(path) && statSync(path).size > 0) {
      checkHeader(path);
      probe(path);
    }
    const db = open<string, string>({
      path,
      encoding: "string",
      compression: false,
    });
    // Reading once surfaces a corrupt or foreign file now, not later.
    db.getKeysCount({ limit: 1 });
    return new LocalStore(db, path);
  }

  /**
   * Returns the entry for `key`, or undefined. Throws RecordFormatError
   * for a value that is not a record of this version.
   */
  get(key: string): LocalEntry | undefined {
    const text = this.getText(key);
    if (text === undefined) return undefined;
    return decodeEntry(text);
  }

  /** Returns the stored text under `key`, whatever its record kind. */
  getText(key: string): string | undefined {
    // A fresh read transaction: the cached one may predate our own last
    // commit, or a delete by the cache CLI in another process.
    if (!this.pending.has(key)) this.db.resetReadTxn();
    return this.pending.has(key) ? this.pending.get(key) : this.db.get(key);
  }

  put(key: string, record: CacheRecord, syncedAt: number): void {
    this.putText(key, encodeEntry(record, syncedAt));
  }

  /** Stores text under `key` without waiting for the commit. */
  putText(key: string, text: string): void {
    this.pending.set(key, text);
    void this.db.put(key, text).finally(() => {
      if (this.pending.get(key) === text) this.pending.delete(key);
    });
  }

  /** Writes and waits for the commit (for the CLI, which exits after). */
  async putAndCommit(
    key: string,
    record: CacheRecord,
    syncedAt: number,
  ): Promise<void> {
    await this.db.put(key, encodeEntry(record, syncedAt));
  }

  async remove(key: string): Promise<void> {
    this.pending.set(key, undefined);
    try {
      await this.db.remove(key);
    } finally {
      if (this.pending.has(key) && this.pending.get(key) === undefined) {
        this.pending.delete(key);
      }
    }
  }

  /**
   * Every verdict key and entry; a malformed value has `entry` undefined.
   * Greylist and trap records are skipped.
   */
  *entries(): Generator<{ key: string; entry: LocalEntry | undefined }> {
    for (const { key, value } of this.db.getRange()) {
      if (!isVerdictKey(key)) continue;
      let entry: LocalEntry | undefined;
      try {
        entry = decodeEntry(value);
      } catch {
        entry = undefined;
      }
      yield { key, entry };
    }
  }

  /** Every key starting with `prefix`, with its stored text. */
  *textEntries(prefix: string): Generator<{ key: string; text: string }> {
    this.db.resetReadTxn();
    for (const { key, value } of this.db.getRange({ start: prefix })) {
      if (!key.startsWith(prefix)) break;
      yield { key, text: value };
    }
  }

  get count(): number {
    return this.db.getKeysCount();
  }

  async flushed(): Promise<void> {
    await this.db.flushed;
  }

  async close(): Promise<void> {
    await this.db.close();
  }
}

/** LMDB's magic number, at this offset of the first meta page. */
const LMDB_MAGIC = 0xbeefc0de;
const MAGIC_OFFSET = 0x18;
const PROBE_TIMEOUT_MS = 60_000;

function checkHeader(path: string): void {
  const header = Buffer.alloc(MAGIC_OFFSET + 4);
  const fd = openSync(path, "r");
  let length: number;
  try {
    length = readSync(fd, header, 0, header.length, 0);
  } finally {
    closeSync(fd);
  }
  if (
    length < header.length ||
    header.readUInt32LE(MAGIC_OFFSET) !== LMDB_MAGIC
  ) {
    throw new Error("not an LMDB file (bad magic number)");
  }
}

/** Reads the whole store in a child process; throws if that fails. */
function probe(path: string): void {
  const script = join(dirname(fileURLToPath(import.meta.url)), "probe.js");
  const result = spawnSync(process.execPath, [script, path], {
    encoding: "utf8",
    timeout: PROBE_TIMEOUT_MS,
  });
  if (result.error !== undefined) {
    throw new Error(`cannot check the store: ${result.error.message}`);
  }
  if (result.signal !== null) {
    throw new Error(
      `the store is corrupt: reading it killed a test process (${result.signal})`,
    );
  }
  if (result.status !== 0) {
    const detail = result.stderr.trim().split("\n").at(-1) ?? "";
    throw new Error(`the store cannot be read: ${detail}`);
  }
}

function encodeEntry(record: CacheRecord, syncedAt: number): string {
  return JSON.stringify({ v: 1, ...record, synced: syncedAt });
}

function decodeEntry(text: string): LocalEntry {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new RecordFormatError("not JSON");
  }
  const record = checkRecord(value);
  const synced = (value as { synced?: unknown }).synced;
  return {
    record,
    syncedAt:
      typeof synced === "number" && Number.isFinite(synced) ? synced : 0,
  };
}
