// Expands a domain's SPF record into the networks whose clients would get
// "pass": ip4 and ip6 networks, the addresses of a and mx hosts with their
// prefix lengths, and the same from include: and redirect= targets. Only
// mechanisms with the "+" qualifier (or none) contribute. ptr, exists,
// all, exp and terms with macros cannot become networks and are listed as
// ignored. The walk follows the record's order and counts DNS-querying
// terms (include, a, mx, ptr, exists, redirect) over the whole expansion,
// as RFC 7208 4.6.4 does for one evaluation.
//
// A rule broken by the record is a permerror: more than 10 such terms,
// more than 10 MX names, more than 2 void lookups, a loop, or a missing,
// duplicate or invalid record. The networks found before that point are
// kept, because a real evaluation reaches them before the error, and the
// reason is returned. A DNS failure (temperror) throws SpfDnsError.
//
// RFC 7208 4.6.4 calls a DNS answer that is NXDOMAIN or has no records a
// void lookup. They are counted per address family, because a real
// evaluation for an IPv4 client queries only A records and one for an IPv6
// client only AAAA. A void TXT or MX answer counts for both families. When
// one family passes the limit, its later networks are dropped but the
// other family's walk goes on, so a record whose hosts have no AAAA
// records still yields its IPv4 networks. The walk stops when both
// families have passed it.
//
// NOTE: ptr and exists are not queried here, so their void lookups, which
// a real evaluation counts, are not counted.
//
// NOTE: a non-pass mechanism that comes before a pass mechanism and
// matches the same address (such as "-ip4:192.0.2.1 ip4:192.0.2.0/24")
// does not remove that address here, although a real evaluation fails it.
import { parseAddress, prefixMask, type Network } from "./network.js";
import {
  LOOKUP_MECHANISMS,
  hasMacro,
  isSpfRecord,
  parseSpfRecord,
  type SpfRecord,
} from "./spf-record.js";
import type { SpfDns } from "./spf-dns.js";

/** RFC 7208 4.6.4: at most 10 DNS-querying terms per evaluation. */
export const MAX_LOOKUP_TERMS = 10;
/**
 * Maximum MX host names one mx term may look up.
 * NOTE: taken to be RFC 7208 4.6.4's limit on address lookups per mx term;
 * the RFC text was not rechecked for this code.
 */
export const MAX_MX_NAMES = 10;
/** RFC 7208 4.6.4: at most 2 void lookups per evaluation. */
export const MAX_VOID_LOOKUPS = 2;

/**
 * Shortest prefix taken from a record, per address family. A shorter
 * network (such as "ip4:0.0.0.0/1") would allowlist a large part of the
 * Internet, so it is ignored.
 * NOTE: these floors are a judgement, not a number from RFC 7208.
 */
export const MIN_PREFIX_LENGTH = { 4: 8, 6: 16 } as const;

export interface SpfExpansion {
  /** Distinct networks, in the order first found. */
  networks: Network[];
  /** Terms that did not become networks, as "domain: term". */
  ignored: string[];
  /** The RFC 7208 rule the record broke (permerror), if any. */
  permanentError: string | undefined;
}

class PermanentError extends Error {}

type Family = 4 | 6;
const BOTH_FAMILIES: readonly Family[] = [4, 6];

interface Walk {
  dns: SpfDns;
  lookups: number;
  /** Void lookups counted per client address family. */
  voidLookups: Record<Family, number>;
  /** The lookup that passed the void lookup limit, per family. */
  voidLimitAt: Partial<Record<Family, string>>;
  networks: Map<string, Network>;
  ignored: string[];
}

/**
 * Expands `domain`'s SPF record. Throws SpfDnsError when a lookup fails or
 * times out; every other problem is reported in `permanentError`.
 */
export async function expandSpf(
  domain: string,
  dns: SpfDns,
): Promise<SpfExpansion> {
  const walk: Walk = {
    dns,
    lookups: 0,
    voidLookups: { 4: 0, 6: 0 },
    voidLimitAt: {},
    networks: new Map(),
    ignored: [],
  };
  let stopError: string | undefined;
  try {
    await expandDomain(domain.toLowerCase(), walk, [], undefined);
  } catch (error) {
    if (!(error instanceof PermanentError)) throw error;
    stopError = error.message;
  }
  // A void limit passed by one family does not stop the walk, so it is
  // reported beside the error that did, unless that error is the same.
  const errors = new Set([describeVoidLimit(walk), stopError]);
  errors.delete(undefined);
  return {
    networks: [...walk.networks.values()],
    ignored: walk.ignored,
    permanentError: errors.size === 0 ? undefined : [...errors].join("; "),
  };
}

/**
 * Expands the record of `domain`, reached through `via` (the including
 * term, for messages) or undefined for the domain being expanded.
 */
async function expandDomain(
  domain: string,
  walk: Walk,
  chain: readonly string[],
  via: string | undefined,
): Promise<void> {
  if (chain.includes(domain)) {
    throw new PermanentError(
      `loop in SPF records: ${[...chain, domain].join(" -> ")}`,
    );
  }
  const record = await fetchRecord(domain, walk, via);
  const path = [...chain, domain];
  for (const directive of record.directives) {
    const { mechanism, qualifier, text } = directive;
    if (LOOKUP_MECHANISMS.has(mechanism.kind)) countLookup(walk, domain, text);
    if (qualifier !== "+" || mechanism.kind === "all") {
      walk.ignored.push(`${domain}: ${text}`);
      continue;
    }
    switch (mechanism.kind) {
      case "ip4":
      case "ip6":
        addNetwork(walk, domain, text, mechanism.network);
        break;
      case "a":
      case "mx": {
        const target = mechanism.domain ?? domain;
        if (hasMacro(target)) {
          walk.ignored.push(`${domain}: ${text}`);
          break;
        }
        const hosts =
          mechanism.kind === "a"
            ? [target]
            : await exchangeNames(walk, target, domain, text);
        await addHostNetworks(walk, domain, text, hosts, mechanism);
        break;
      }
      case "include":
        if (hasMacro(mechanism.domain)) {
          walk.ignored.push(`${domain}: ${text}`);
          break;
        }
        await expandDomain(
          mechanism.domain,
          walk,
          path,
          `"${text}" in ${domain}`,
        );
        break;
      case "ptr":
      case "exists":
        walk.ignored.push(`${domain}: ${text}`);
        break;
    }
  }

  // SPF ignores redirect= in a record that has an "all" mechanism.
  const hasAll = record.directives.some(
    (directive) => directive.mechanism.kind === "all",
  );
  if (record.redirect !== undefined && !hasAll) {
    const text = `redirect=${record.redirect}`;
    countLookup(walk, domain, text);
    if (hasMacro(record.redirect)) {
      walk.ignored.push(`${domain}: ${text}`);
    } else {
      await expandDomain(record.redirect, walk, path, `"${text}" in ${domain}`);
    }
  }
  if (record.explanation !== undefined) {
    walk.ignored.push(`${domain}: exp=${record.explanation}`);
  }
}

/** Looks up and parses the one SPF record of `domain`. */
async function fetchRecord(
  domain: string,
  walk: Walk,
  via: string | undefined,
): Promise<SpfRecord> {
  const strings = await walk.dns.txt(domain);
  if (strings.length === 0) {
    const lookup = `TXT lookup for ${domain}`;
    countVoidLookup(walk, BOTH_FAMILIES, via ? `${lookup} (${via})` : lookup);
  }
  const records = strings.filter(isSpfRecord);
  if (records.length === 0) {
    throw new PermanentError(`no SPF record found for ${domain}`);
  }
  if (records.length > 1) {
    throw new PermanentError(`more than one SPF record for ${domain}`);
  }
  try {
    return parseSpfRecord(records[0] ?? "");
  } catch (error) {
    throw new PermanentError(`${domain}: ${(error as Error).message}`);
  }
}

function countLookup(walk: Walk, domain: string, text: string): void {
  walk.lookups++;
  if (walk.lookups > MAX_LOOKUP_TERMS) {
    throw new PermanentError(
      `more than ${MAX_LOOKUP_TERMS} DNS-querying terms, ` +
        `the limit of RFC 7208, at "${text}" in ${domain}`,
    );
  }
}

/**
 * Counts a void lookup for each of `families` that has not passed the
 * limit yet, at `lookup` (for messages). Throws once both have passed it.
 */
function countVoidLookup(
  walk: Walk,
  families: readonly Family[],
  lookup: string,
): void {
  for (const family of families) {
    if (walk.voidLimitAt[family] !== undefined) continue;
    walk.voidLookups[family]++;
    if (walk.voidLookups[family] > MAX_VOID_LOOKUPS) {
      walk.voidLimitAt[family] = lookup;
    }
  }
  if (BOTH_FAMILIES.every((family) => walk.voidLimitAt[family] !== undefined)) {
    throw new PermanentError(describeVoidLimit(walk));
  }
}

/** Describes where each family passed the void lookup limit, if any. */
function describeVoidLimit(walk: Walk): string | undefined {
  const { 4: ipv4, 6: ipv6 } = walk.voidLimitAt;
  const limit =
    `more than ${MAX_VOID_LOOKUPS} void lookups, the limit of RFC 7208, ` +
    "at the";
  if (ipv4 !== undefined && ipv4 === ipv6) return `${limit} ${ipv4}`;
  const places = BOTH_FAMILIES.flatMap((family) => {
    const lookup = walk.voidLimitAt[family];
    return lookup === undefined ? [] : [`${lookup} for IPv${family} clients`];
  });
  return places.length === 0 ? undefined : `${limit} ${places.join(" and ")}`;
}

async function exchangeNames(
  walk: Walk,
  target: string,
  domain: string,
  text: string,
): Promise<string[]> {
  const answer = await walk.dns.mx(target);
  if (answer.length === 0) {
    countVoidLookup(
      walk,
      BOTH_FAMILIES,
      `MX lookup for ${target} ("${text}" in ${domain})`,
    );
  }
  // A null MX (RFC 7505) has the root, "", as its exchange.
  const names = answer.filter((name) => name !== "");
  if (names.length > MAX_MX_NAMES) {
    throw new PermanentError(
      `"${text}": ${target} has ${names.length} MX hosts, more than the ` +
        `limit of ${MAX_MX_NAMES}`,
    );
  }
  return names;
}

/**
 * Adds every A and AAAA address of `hosts` with the term's prefixes. The
 * answers are taken in host order, as an evaluation reads them, so a void
 * lookup that passes the limit drops only the networks after it.
 */
async function addHostNetworks(
  walk: Walk,
  domain: string,
  text: string,
  hosts: readonly string[],
  prefixes: { ipv4PrefixLength: number; ipv6PrefixLength: number },
): Promise<void> {
  const answers = await Promise.all(
    hosts.map((host) => Promise.all([walk.dns.a(host), walk.dns.aaaa(host)])),
  );
  for (const [index, host] of hosts.entries()) {
    const [ipv4, ipv6] = answers[index] ?? [[], []];
    for (const [family, addresses] of [
      [4, ipv4],
      [6, ipv6],
    ] as const) {
      if (addresses.length === 0) {
        const type = family === 4 ? "A" : "AAAA";
        const lookup = `${type} lookup for ${host} ("${text}" in ${domain})`;
        countVoidLookup(walk, [family], lookup);
      }
      for (const address of addresses) {
        addAddress(walk, domain, text, address, prefixes);
      }
    }
  }
}

function addAddress(
  walk: Walk,
  domain: string,
  text: string,
  address: string,
  prefixes: { ipv4PrefixLength: number; ipv6PrefixLength: number },
): void {
  let parsed;
  try {
    parsed = parseAddress(address);
  } catch {
    walk.ignored.push(`${domain}: ${text} (invalid address ${address})`);
    return;
  }
  // An IPv4-mapped AAAA answer parses as IPv4 and takes the IPv4 prefix.
  const prefixLength =
    parsed.family === 4 ? prefixes.ipv4PrefixLength : prefixes.ipv6PrefixLength;
  const mask = prefixMask(parsed.family, prefixLength);
  addNetwork(walk, domain, text, {
    family: parsed.family,
    bits: parsed.bits & mask,
    prefixLength,
  });
}

function addNetwork(
  walk: Walk,
  domain: string,
  text: string,
  network: Network,
): void {
  // An evaluation for this family has already ended with a permerror.
  if (walk.voidLimitAt[network.family] !== undefined) return;
  const floor = MIN_PREFIX_LENGTH[network.family];
  if (network.prefixLength < floor) {
    walk.ignored.push(
      `${domain}: ${text} (broader than /${floor} for IPv${network.family})`,
    );
    return;
  }
  const key = `${network.family}/${network.bits}/${network.prefixLength}`;
  if (!walk.networks.has(key)) walk.networks.set(key, network);
}
