// Greylist and spam trap records, stored beside the verdict cache's records
// under their own key prefixes. Each is versioned JSON with an absolute
// expiry time (ms since the epoch, UTC); Redis removes a record at that
// time, and the daemon's cleanup removes it from the embedded store.
import { createHash } from "node:crypto";
import { GREYLIST_KEY_PREFIX, TRAP_KEY_PREFIX } from "../cache/key.js";

const FORMAT_VERSION = 1;

/** The first sighting of a (client key, sender, recipient) triplet. */
export interface TripletRecord {
  kind: "triplet";
  /** The greylist client key: an address or a network. */
  client: string;
  sender: string;
  recipient: string;
  firstSeen: number;
  lastSeen: number;
  attempts: number;
  expires: number;
}

/** A greylist client key that retried in time, allowed until `expires`. */
export interface PassRecord {
  kind: "pass";
  client: string;
  updated: number;
  expires: number;
}

/** A client key that sent to a spam trap, denied until `expires`. */
export interface TrapRecord {
  kind: "trap";
  client: string;
  recipient: string;
  updated: number;
  expires: number;
}

export type GreylistRecord = TripletRecord | PassRecord | TrapRecord;

export const TRIPLET_PREFIX = `${GREYLIST_KEY_PREFIX}triplet:`;
export const PASS_PREFIX = `${GREYLIST_KEY_PREFIX}pass:`;
export const TRAP_PREFIX = TRAP_KEY_PREFIX;

/**
 * Returns the store key of a triplet. Sender and recipient go in as a
 * hash, because LMDB keys are limited to 1978 bytes and an address may
 * contain any separator. The record keeps them in full.
 */
export function tripletKey(
  client: string,
  sender: string,
  recipient: string,
): string {
  const hash = createHash("sha256")
    .update(`${sender}\0${recipient}`)
    .digest("hex")
    .slice(0, 32);
  return `${TRIPLET_PREFIX}${client}#${hash}`;
}

export function passKey(client: string): string {
  return PASS_PREFIX + client;
}

export function trapKey(client: string): string {
  return TRAP_PREFIX + client;
}

export function encodeGreylistRecord(record: GreylistRecord): string {
  return JSON.stringify({ v: FORMAT_VERSION, ...record });
}

/** Decodes a stored record; returns undefined for anything malformed. */
export function decodeGreylistRecord(text: string): GreylistRecord | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof value !== "object" || value === null) return undefined;
  const object = value as Record<string, unknown>;
  if (object.v !== FORMAT_VERSION) return undefined;
  if (typeof object.client !== "string" || !isTime(object.expires)) {
    return undefined;
  }
  switch (object.kind) {
    case "triplet":
      if (
        typeof object.sender !== "string" ||
        typeof object.recipient !== "string" ||
        !isTime(object.firstSeen) ||
        !isTime(object.lastSeen) ||
        !isTime(object.attempts)
      ) {
        return undefined;
      }
      break;
    case "pass":
      if (!isTime(object.updated)) return undefined;
      break;
    case "trap":
      if (typeof object.recipient !== "string" || !isTime(object.updated)) {
        return undefined;
      }
      break;
    default:
      return undefined;
  }
  const record: Record<string, unknown> = { ...object };
  delete record.v;
  return record as unknown as GreylistRecord;
}

function isTime(value: unknown): value is number {
  return typeof value === "number" && Number.isFinite(value) && value >= 0;
}
