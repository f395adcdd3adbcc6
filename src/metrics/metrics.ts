// The events that screening reports for monitoring, as one interface with
// a no-op implementation. Screening code calls these methods on its hot
// path, so with metrics off (NO_METRICS) each call is an empty function.
import type { DnsblScore } from "../dnsbl/checker.js";
import type { LoadPhase } from "../intake/load.js";
import type { GreylistCounts } from "../greylist/greylist.js";

/** Tests that reach a verdict, named as in their parameters. */
export type VerdictTest =
  | "access"
  | "cache"
  | "pregreet"
  | "dnsbl"
  | "pipelining"
  | "non_smtp_command"
  | "bare_newline"
  | "limit";

/**
 * Results per test. access: the access list's permit or reject. cache: a
 * client whose tests had all passed before. dnsbl: "allowlist" for a score
 * at or below dnsbl_allowlist_threshold, "incomplete" when a lookup failed
 * or had not answered by the end of greet_wait. limit: which load limit
 * rejected the connection.
 */
export const VERDICT_RESULTS = {
  access: ["permit", "reject"],
  cache: ["pass"],
  pregreet: ["pass", "fail"],
  dnsbl: ["pass", "fail", "allowlist", "incomplete"],
  pipelining: ["pass", "fail"],
  non_smtp_command: ["pass", "fail"],
  bare_newline: ["pass", "fail"],
  limit: ["connection_count", "connection_rate", "post_queue", "pre_queue"],
} as const satisfies Record<VerdictTest, readonly string[]>;

export type VerdictResult<T extends VerdictTest> =
  (typeof VERDICT_RESULTS)[T][number];

/** Reasons for a failed hand-off to smtpd. */
export const HANDOFF_FAILURES = [
  /** The client's attributes could not be encoded. */
  "attributes",
  /** Connecting to the pass socket failed or timed out. */
  "connect",
  /** Sending the descriptor or the attributes failed or timed out. */
  "send",
  /** smtpd reset the channel with the attributes unread. */
  "unread",
  /** smtpd did not close the channel within its deadline. */
  "timeout",
] as const;
export type HandoffFailure = (typeof HANDOFF_FAILURES)[number];

export type CacheStore = "local" | "shared";

/**
 * Result of one cache lookup. "expired" is a local copy of a shared
 * verdict older than cache_local_ttl, so Redis was asked; "malformed" and
 * "unavailable" are Redis answers that count as a miss.
 */
export const CACHE_RESULTS = {
  local: ["hit", "miss", "expired"],
  shared: ["hit", "miss", "malformed", "unavailable"],
} as const satisfies Record<CacheStore, readonly string[]>;

export type CacheResult<S extends CacheStore> =
  (typeof CACHE_RESULTS)[S][number];

/** The daemon's current state, read when metrics are scraped. */
export interface StateSource {
  /** Bound listen addresses, as connectionAccepted names them. */
  listeners(): string[];
  /** Sessions by phase. */
  phases(): Readonly<Record<LoadPhase, number>>;
  /** Connections in progress (tests, replies, hand-offs). */
  activeConnections(): number;
  stress(): boolean;
  /** Connections the tarpit is answering now. */
  tarpitted(): number;
  /** DNS lists by public name, with their health per address family. */
  dnsblHealth(): { list: string; family: 4 | 6; healthy: boolean }[];
  /** Greylist and spam trap events since startup; none when both are off. */
  greylist(): Readonly<GreylistCounts> | undefined;
}

export interface Metrics {
  connectionAccepted(listener: string): void;
  verdict<T extends VerdictTest>(test: T, result: VerdictResult<T>): void;
  /** One DNS list query: its duration and, when it failed, the reason. */
  dnsblQuery(list: string, seconds: number, error: string | undefined): void;
  cacheLookup<S extends CacheStore>(store: S, result: CacheResult<S>): void;
  /** Records the DNS list verdict for a client's score; see dnsblVerdict. */
  dnsbl(score: DnsblScore, threshold: number, allowlisted: boolean): void;
  /** Records that smtpd took a client, `milliseconds` after it was sent. */
  handoffFinished(milliseconds: number): void;
  handoffFailed(reason: HandoffFailure): void;
  tarpitStarted(): void;
  /** Registers the source of the gauges; called once by the server. */
  attachState(source: StateSource): void;
}

function ignore(): void {
  // Metrics are off.
}

/** The implementation used when metrics_listen is empty. */
export const NO_METRICS: Metrics = {
  connectionAccepted: ignore,
  verdict: ignore,
  dnsblQuery: ignore,
  cacheLookup: ignore,
  dnsbl: ignore,
  handoffFinished: ignore,
  handoffFailed: ignore,
  tarpitStarted: ignore,
  attachState: ignore,
};

/**
 * Classifies a DNS list score at the end of the early tests: `allowlisted`
 * is true when the score reached dnsbl_allowlist_threshold.
 */
export function dnsblVerdict(
  score: DnsblScore,
  threshold: number,
  allowlisted: boolean,
): VerdictResult<"dnsbl"> {
  if (score.score >= threshold) return "fail";
  if (allowlisted) return "allowlist";
  return score.complete ? "pass" : "incomplete";
}
