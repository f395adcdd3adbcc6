// Greylisting, spam trap and policy service settings, and the parsers for
// their values. Times are in milliseconds.
import { isIP } from "node:net";

export type GreylistMode = "off" | "all" | "suspicious";

/** What makes a client suspicious in greylist_mode suspicious. */
export type SuspicionCriterion =
  "dnsbl" | "pregreet" | "fcrdns" | "dynamic_name";

const CRITERIA: readonly SuspicionCriterion[] = [
  "dnsbl",
  "pregreet",
  "fcrdns",
  "dynamic_name",
];

export type PolicyListen =
  { kind: "unix"; path: string } | { kind: "tcp"; host: string; port: number };

export interface GreylistConfig {
  mode: GreylistMode;
  minDelayMs: number;
  expireMs: number;
  passTtlMs: number;
  ipv4PrefixLength: number;
  criteria: SuspicionCriterion[];
  dynamicNamePatterns: RegExp[];
  traps: TrapList;
  trapTtlMs: number;
  /** Undefined when policy_listen is empty: no policy service. */
  policyListen: PolicyListen | undefined;
}

/** Parses greylist_suspicious_criteria; throws on an unknown word. */
export function parseCriteria(items: readonly string[]): SuspicionCriterion[] {
  return items.map((item) => {
    if (!CRITERIA.includes(item as SuspicionCriterion)) {
      throw new Error(
        `invalid criterion "${item}": expected ${CRITERIA.join(", ")}`,
      );
    }
    return item as SuspicionCriterion;
  });
}

/**
 * Parses greylist_dynamic_name_patterns: regular expressions separated by
 * white space, matched without regard to case.
 */
export function parsePatterns(value: string): RegExp[] {
  return value
    .split(/\s+/)
    .filter((item) => item !== "")
    .map((item) => {
      try {
        return new RegExp(item, "i");
      } catch (error) {
        throw new Error(
          `invalid regular expression "${item}": ${(error as Error).message}`,
          { cause: error },
        );
      }
    });
}

/**
 * Parses policy_listen: "unix:/path" or "/path" for a UNIX-domain socket,
 * "addr:port" or "[v6addr]:port" for TCP. TCP addresses must be loopback,
 * because the policy protocol has no authentication and its answers
 * reveal which clients are greylisted or trapped.
 */
export function parsePolicyListen(value: string): PolicyListen | undefined {
  const text = value.trim();
  if (text === "") return undefined;
  if (text.startsWith("unix:") || text.startsWith("/")) {
    const path = text.startsWith("unix:") ? text.slice(5) : text;
    if (!path.startsWith("/")) {
      throw new Error(`invalid socket path "${path}": must be absolute`);
    }
    return { kind: "unix", path };
  }
  const match = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d+)$/.exec(text);
  const host = match?.[1] ?? match?.[2];
  const port = Number(match?.[3]);
  if (host === undefined || isIP(host) === 0 || port > 65535) {
    throw new Error(
      `invalid policy address "${text}": use unix:/path, ` +
        '"127.0.0.1:port" or "[::1]:port"',
    );
  }
  if (!isLoopback(host)) {
    throw new Error(
      `invalid policy address "${text}": only loopback addresses ` +
        "(127.0.0.0/8, ::1) or a UNIX-domain socket are allowed",
    );
  }
  return { kind: "tcp", host, port };
}

function isLoopback(host: string): boolean {
  return host === "::1" || /^127\./.test(host);
}

/**
 * Spam trap recipients: "user@domain" matches that address, "@domain" or
 * "domain" every address in that domain (not its subdomains). Matching
 * ignores case.
 */
export class TrapList {
  private constructor(
    private readonly addresses: ReadonlySet<string>,
    private readonly domains: ReadonlySet<string>,
  ) {}

  static parse(items: readonly string[]): TrapList {
    const addresses = new Set<string>();
    const domains = new Set<string>();
    for (const item of items) {
      const lower = item.toLowerCase();
      const at = lower.lastIndexOf("@");
      if (at < 0) {
        domains.add(checkDomain(lower, item));
      } else if (at === 0) {
        domains.add(checkDomain(lower.slice(1), item));
      } else {
        checkDomain(lower.slice(at + 1), item);
        addresses.add(lower);
      }
    }
    return new TrapList(addresses, domains);
  }

  get empty(): boolean {
    return this.addresses.size === 0 && this.domains.size === 0;
  }

  /** True when `recipient` is a trap address or in a trap domain. */
  matches(recipient: string): boolean {
    if (this.empty) return false;
    const lower = recipient.toLowerCase();
    if (this.addresses.has(lower)) return true;
    const at = lower.lastIndexOf("@");
    return at >= 0 && this.domains.has(lower.slice(at + 1));
  }
}

function checkDomain(domain: string, item: string): string {
  if (!/^[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?$/.test(domain)) {
    throw new Error(
      `invalid trap recipient "${item}": expected user@domain, @domain ` +
        "or domain",
    );
  }
  return domain.replace(/\.$/, "");
}
