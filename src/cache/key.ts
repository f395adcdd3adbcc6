// Per-client keys for the verdict cache and for everything that counts per
// client. An IPv4 client is keyed by its address; an IPv6 client by its
// /client_ipv6_prefix_length network (64 bits by default), because one
// host or subscriber usually owns a whole /64 and rotates addresses in it.
import { isIPv4, isIPv6 } from "node:net";
import { expandIPv6 } from "../dnsbl/resolver.js";

/** Returns the cache key for a client address. */
export function clientKey(address: string, ipv6PrefixLength: number): string {
  if (isIPv4(address)) return address;
  if (!isIPv6(address)) throw new Error(`invalid client address "${address}"`);
  const hex = expandIPv6(address);
  let bits = BigInt("0x" + hex);
  const hostBits = BigInt(128 - ipv6PrefixLength);
  bits = (bits >> hostBits) << hostBits;
  return `${formatIPv6(bits)}/${ipv6PrefixLength}`;
}

/** Formats a 128-bit value as compressed IPv6 text. */
export function formatIPv6(bits: bigint): string {
  const groups: string[] = [];
  for (let shift = 112n; shift >= 0n; shift -= 16n) {
    groups.push(((bits >> shift) & 0xffffn).toString(16));
  }
  // Compress the longest run of two or more zero groups, as RFC 5952 says.
  let bestStart = -1;
  let bestLength = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== "0") {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === "0") j++;
    if (j - i > bestLength && j - i >= 2) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  if (bestStart < 0) return groups.join(":");
  const head = groups.slice(0, bestStart).join(":");
  const tail = groups.slice(bestStart + bestLength).join(":");
  return `${head}::${tail}`;
}

/**
 * Prefixes of the greylist and spam trap records that share the verdict
 * cache's stores. Verdict keys are addresses or IPv6 prefixes, which never
 * start with these letters, so the kinds cannot collide.
 */
export const GREYLIST_KEY_PREFIX = "greylist:";
export const TRAP_KEY_PREFIX = "trap:";

/** True for a verdict cache key, false for a greylist or trap record. */
export function isVerdictKey(key: string): boolean {
  return (
    !key.startsWith(GREYLIST_KEY_PREFIX) && !key.startsWith(TRAP_KEY_PREFIX)
  );
}
