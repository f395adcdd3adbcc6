// Greylist timing, as OpenBSD spamd does it: the first sighting of a
// triplet is deferred; a retry at least min_delay after the first sighting
// and before expire passes. An early retry is deferred again without
// moving the first sighting, and a triplet older than expire starts over.
import type { TripletRecord } from "./records.js";

export interface Triplet {
  client: string;
  sender: string;
  recipient: string;
}

export interface GreylistTiming {
  minDelayMs: number;
  expireMs: number;
}

export type TripletVerdict =
  /** First sighting, or the old one expired: store `record`, defer. */
  | { kind: "new"; record: TripletRecord }
  /** Retry before min_delay: store `record`, defer. */
  | { kind: "early"; record: TripletRecord; missingMs: number }
  /** Retry in the window: the client key passes. */
  | { kind: "pass"; waitedMs: number };

export function judgeTriplet(
  existing: TripletRecord | undefined,
  triplet: Triplet,
  now: number,
  timing: GreylistTiming,
): TripletVerdict {
  const age = existing === undefined ? undefined : now - existing.firstSeen;
  if (existing === undefined || age === undefined || age >= timing.expireMs) {
    return {
      kind: "new",
      record: {
        kind: "triplet",
        ...triplet,
        firstSeen: now,
        lastSeen: now,
        attempts: 1,
        expires: now + timing.expireMs,
      },
    };
  }
  if (age < timing.minDelayMs) {
    return {
      kind: "early",
      record: { ...existing, lastSeen: now, attempts: existing.attempts + 1 },
      missingMs: timing.minDelayMs - age,
    };
  }
  return { kind: "pass", waitedMs: age };
}
