// DNS queries for DNS lists: A lookups with their TTL, the SOA negative TTL
// of a list's zone (node:dns reports no TTL for NXDOMAIN, so the SOA is
// asked for separately and kept for a while), and query names for IPv4
// (reversed octets) and IPv6 (reversed nibbles) clients. It uses the
// system's resolver, or only the dns_servers when they are set.
import { Resolver } from "node:dns";
import { isIPv4, isIPv6 } from "node:net";

export type LookupResult =
  /** NOERROR with A records; answers are not filtered here. */
  | { kind: "listed"; answers: string[]; ttlSeconds: number }
  /** NXDOMAIN or no A record; ttl from the zone's SOA, if known. */
  | { kind: "clean"; ttlSeconds: number | undefined }
  /** SERVFAIL, REFUSED, a timeout or another failure. */
  | { kind: "error"; code: string };

/** How long an SOA negative TTL is reused before asking again. */
const SOA_REUSE_MS = 3600_000;
/** How long a failed SOA lookup is remembered. */
const SOA_FAILURE_REUSE_MS = 60_000;

/** Expands an IPv6 address to 32 hexadecimal digits. */
export function expandIPv6(address: string): string {
  let text = address.toLowerCase();
  // An embedded IPv4 tail such as ::ffff:127.0.0.2 becomes two groups.
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (v4 !== null) {
    const bytes = v4.slice(1, 5).map(Number);
    const high = (((bytes[0] ?? 0) << 8) | (bytes[1] ?? 0)).toString(16);
    const low = (((bytes[2] ?? 0) << 8) | (bytes[3] ?? 0)).toString(16);
    text = text.slice(0, v4.index) + `${high}:${low}`;
  }
  const [head = "", tail] = text.split("::");
  const headGroups = head === "" ? [] : head.split(":");
  const tailGroups = tail === undefined || tail === "" ? [] : tail.split(":");
  const missing = 8 - headGroups.length - tailGroups.length;
  const groups = [
    ...headGroups,
    ...Array<string>(tail === undefined ? 0 : missing).fill("0"),
    ...tailGroups,
  ];
  return groups.map((group) => group.padStart(4, "0")).join("");
}

/**
 * Returns the name to query for `address` in list `domain`: reversed
 * octets for IPv4, reversed nibbles for IPv6.
 */
export function queryName(address: string, domain: string): string {
  if (isIPv4(address)) {
    return `${address.split(".").reverse().join(".")}.${domain}`;
  }
  if (isIPv6(address)) {
    return `${expandIPv6(address).split("").reverse().join(".")}.${domain}`;
  }
  throw new Error(`invalid client address "${address}"`);
}

/**
 * Creates a c-ares resolver that queries only `servers` ("addr", "addr:port",
 * "[v6addr]:port"), or the system's resolvers when the list is empty.
 */
export function createResolver(
  servers: readonly string[],
  timeoutMs: number,
): Resolver {
  // c-ares doubles the timeout on each try, so two tries of a third
  // each end at the deadline and its sockets do not outlive it.
  const resolver = new Resolver({
    timeout: Math.max(100, Math.floor(timeoutMs / 3)),
    tries: 2,
  });
  if (servers.length > 0) resolver.setServers([...servers]);
  return resolver;
}

export class DnsClient {
  private readonly resolver: Resolver;
  private readonly soaCache = new Map<
    string,
    { ttlSeconds: number | undefined; expires: number }
  >();

  /**
   * `servers` are "addr" or "addr:port" ("[v6addr]:port"); empty means the
   * system's resolver configuration.
   */
  constructor(
    servers: readonly string[],
    private readonly timeoutMs: number,
  ) {
    this.resolver = createResolver(servers, timeoutMs);
  }

  /** Looks up A records for `name`, within the timeout. */
  queryA(name: string): Promise<LookupResult> {
    const query = new Promise<LookupResult>((resolve) => {
      this.resolver.resolve4(name, { ttl: true }, (error, records) => {
        if (error === null) {
          resolve({
            kind: "listed",
            answers: records.map((record) => record.address),
            ttlSeconds: Math.min(...records.map((record) => record.ttl)),
          });
        } else if (error.code === "ENOTFOUND" || error.code === "ENODATA") {
          resolve({ kind: "clean", ttlSeconds: undefined });
        } else {
          resolve({ kind: "error", code: error.code ?? "EUNKNOWN" });
        }
      });
    });
    return this.withTimeout(query);
  }

  /** Returns the negative TTL (SOA minimum) of `zone`, when it has one. */
  async negativeTtl(zone: string): Promise<number | undefined> {
    const cached = this.soaCache.get(zone);
    if (cached !== undefined && cached.expires > Date.now()) {
      return cached.ttlSeconds;
    }
    const lookup = new Promise<LookupResult>((resolve) => {
      this.resolver.resolveSoa(zone, (error, soa) => {
        if (error === null) {
          resolve({ kind: "clean", ttlSeconds: soa.minttl });
        } else {
          resolve({ kind: "error", code: error.code ?? "EUNKNOWN" });
        }
      });
    });
    const result = await this.withTimeout(lookup);
    const ttlSeconds = result.kind === "clean" ? result.ttlSeconds : undefined;
    this.soaCache.set(zone, {
      ttlSeconds,
      expires:
        Date.now() +
        (ttlSeconds === undefined ? SOA_FAILURE_REUSE_MS : SOA_REUSE_MS),
    });
    return ttlSeconds;
  }

  private withTimeout(query: Promise<LookupResult>): Promise<LookupResult> {
    return new Promise((resolve) => {
      const timer = setTimeout(
        () => resolve({ kind: "error", code: "ETIMEOUT" }),
        this.timeoutMs,
      );
      void query.then((result) => {
        clearTimeout(timer);
        resolve(result);
      });
    });
  }
}
