// Verdict cache records, with postscreen's semantics: one absolute expiry
// time per test (milliseconds since the epoch, UTC). A test whose expiry is
// in the future counts as passed; a client whose enabled tests have all
// passed is handed off at once ("PASS OLD"). Records carry a format version
// so that a store written by another version, or garbage in a shared
// store, is recognised and treated as a miss.

export const RECORD_VERSION = 1;

/** Test names: the early tests, then the dummy engine's deep tests. */
export type TestName =
  "pregreet" | "dnsbl" | "pipelining" | "nonSmtp" | "bareNewline";

const TEST_NAMES: readonly string[] = [
  "pregreet",
  "dnsbl",
  "pipelining",
  "nonSmtp",
  "bareNewline",
];

export interface CacheRecord {
  /** Expiry time of each passed test; absent or 0 means not passed. */
  tests: Partial<Record<TestName, number>>;
  /** When the record was last written, for retention and listings. */
  updated: number;
}

export class RecordFormatError extends Error {}

/** Encodes a record for a store: versioned JSON. */
export function encodeRecord(record: CacheRecord): string {
  return JSON.stringify({ v: RECORD_VERSION, ...record });
}

/** Decodes a stored record; throws RecordFormatError on anything else. */
export function decodeRecord(text: string): CacheRecord {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new RecordFormatError("not JSON");
  }
  return checkRecord(value);
}

/** Validates a decoded value; throws RecordFormatError. */
export function checkRecord(value: unknown): CacheRecord {
  if (typeof value !== "object" || value === null) {
    throw new RecordFormatError("not an object");
  }
  const object = value as Record<string, unknown>;
  if (object.v !== RECORD_VERSION) {
    throw new RecordFormatError(`unknown format version ${String(object.v)}`);
  }
  const updated = object.updated;
  if (typeof updated !== "number" || !Number.isFinite(updated)) {
    throw new RecordFormatError("invalid updated time");
  }
  const tests = object.tests;
  if (typeof tests !== "object" || tests === null) {
    throw new RecordFormatError("missing tests");
  }
  // Only the known names are read, so other keys cost nothing: this runs
  // for every cache hit.
  const checked: Partial<Record<TestName, number>> = {};
  const stored = tests as Record<string, unknown>;
  for (const name of TEST_NAMES) {
    if (!Object.hasOwn(stored, name)) continue;
    const expiry = stored[name];
    if (typeof expiry !== "number" || !Number.isFinite(expiry) || expiry < 0) {
      throw new RecordFormatError(`invalid expiry time for ${name}`);
    }
    checked[name as TestName] = expiry;
  }
  return { tests: checked, updated };
}

/** True when `test` has passed and has not expired at `now`. */
export function hasPassed(
  record: CacheRecord | undefined,
  test: TestName,
  now: number,
): boolean {
  return (record?.tests[test] ?? 0) > now;
}

/** Merges newly passed tests into a record (or a new one). */
export function withPasses(
  record: CacheRecord | undefined,
  passes: Partial<Record<TestName, number>>,
  now: number,
): CacheRecord {
  return { tests: { ...record?.tests, ...passes }, updated: now };
}

/** The latest expiry in a record; 0 when nothing has passed. */
export function latestExpiry(record: CacheRecord): number {
  return Math.max(0, ...Object.values(record.tests));
}
