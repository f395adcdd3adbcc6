// IPv4 and IPv6 addresses and networks for access lists. Parses Postfix
// network patterns ("192.0.2.0/24", "[2001:db8::]/32", or a bare address
// for one host) into numbers, and tests whether a client address is inside
// a network.
//
// It does not resolve host names, and it does not read the "/file/name",
// "type:table" or "!pattern" items that Postfix also allows in mynetworks.
// It accepts only the numeric address forms that inet_pton() in glibc 2.36
// accepts: four decimal IPv4 octets without leading zeros, IPv6 with at
// most one "::" and an optional IPv4 tail, and no zone index ("%eth0").

export type AddressFamily = 4 | 6;

export interface IpAddress {
  family: AddressFamily;
  /** The address as an unsigned 32-bit (IPv4) or 128-bit (IPv6) integer. */
  bits: bigint;
}

export interface Network {
  family: AddressFamily;
  /** The network address as an unsigned 32-bit or 128-bit integer. */
  bits: bigint;
  prefixLength: number;
}

const WIDTH: Record<AddressFamily, number> = { 4: 32, 6: 128 };

/** The ::ffff:0:0/96 prefix of IPv4-mapped IPv6 addresses (RFC 4291). */
const MAPPED_PREFIX = 0xffffn;

/** Separators between mynetworks items, as Postfix's CHARS_COMMA_SP. */
const LIST_SEPARATORS = /[ \t\r\n,]+/;

/** Returns the mask with the first `prefixLength` of the family's bits set. */
export function prefixMask(
  family: AddressFamily,
  prefixLength: number,
): bigint {
  const width = WIDTH[family];
  const ones = (1n << BigInt(prefixLength)) - 1n;
  return ones << BigInt(width - prefixLength);
}

/**
 * Parses a network pattern as Postfix's cidr_table(5) does. The address
 * may be in brackets ("[2001:db8::]/32" or "[2001:db8::/32]"), a pattern
 * with a colon is IPv6, and a bare address is a network of one host.
 * Throws an Error for an invalid address or prefix length, and for
 * "non-null host address bits" when bits after the prefix are set.
 */
export function parseNetwork(text: string): Network {
  if (text === "") throw new Error("missing network address");
  const { address, prefix } = splitPattern(text);
  const family: AddressFamily = address.includes(":") ? 6 : 4;
  const width = WIDTH[family];

  let prefixLength = width;
  if (prefix !== undefined) {
    if (!/^[0-9]+$/.test(prefix)) {
      throw new Error(`invalid prefix length "${prefix}" in "${text}"`);
    }
    prefixLength = Number(prefix);
    if (prefixLength > width) {
      throw new Error(
        `prefix length ${prefix} is out of range in "${text}": ` +
          `expected 0 to ${width} for IPv${family}`,
      );
    }
  }

  const bits = family === 4 ? parseIpv4(address) : parseIpv6(address);
  if (bits === undefined) {
    const where = address === text ? "" : ` in "${text}"`;
    throw new Error(`invalid IPv${family} address "${address}"${where}`);
  }

  const mask = prefixMask(family, prefixLength);
  if ((bits & ~mask) !== 0n) {
    const network = { family, bits: bits & mask, prefixLength };
    throw new Error(
      `non-null host address bits in "${text}": the /${prefixLength} ` +
        `network that contains it is "${formatNetwork(network)}"`,
    );
  }
  return { family, bits, prefixLength };
}

/**
 * Splits "addr/len", "[addr]/len", "[addr/len]" or "[addr]" into the
 * address and the prefix length text (undefined when there is none).
 */
function splitPattern(text: string): { address: string; prefix?: string } {
  let body = text;
  if (text.startsWith("[")) {
    const close = text.indexOf("]");
    if (close < 0) throw new Error(`missing "]" in "${text}"`);
    body = text.slice(1, close);
    const rest = text.slice(close + 1);
    if (rest.startsWith("/")) return { address: body, prefix: rest.slice(1) };
    if (rest !== "") {
      throw new Error(`unexpected text "${rest}" after "]" in "${text}"`);
    }
  }
  const slash = body.indexOf("/");
  if (slash < 0) return { address: body };
  return { address: body.slice(0, slash), prefix: body.slice(slash + 1) };
}

/**
 * Parses a client address. An IPv4-mapped IPv6 address such as
 * "::ffff:192.0.2.1" becomes the IPv4 address, because postscreen converts
 * it the same way before lookups when inet_protocols enables both IPv4 and
 * IPv6 (postscreen_endpt.c, Postfix 3.12). Brackets and zone indexes are
 * invalid. Throws an Error when the text is not an address.
 */
export function parseAddress(text: string): IpAddress {
  if (!text.includes(":")) {
    const bits = parseIpv4(text);
    if (bits !== undefined) return { family: 4, bits };
  } else {
    const bits = parseIpv6(text);
    if (bits !== undefined) {
      if (bits >> 32n === MAPPED_PREFIX) {
        return { family: 4, bits: bits & 0xffffffffn };
      }
      return { family: 6, bits };
    }
  }
  throw new Error(`invalid address "${text}"`);
}

/**
 * Tests whether the client address is inside the network. An address of
 * the other family never matches. Throws an Error for an invalid address.
 */
export function networkContains(network: Network, address: string): boolean {
  return networkContainsAddress(network, parseAddress(address));
}

/** Tests a parsed address; see networkContains. */
export function networkContainsAddress(
  network: Network,
  address: IpAddress,
): boolean {
  if (address.family !== network.family) return false;
  const mask = prefixMask(network.family, network.prefixLength);
  return (address.bits & mask) === network.bits;
}

/**
 * Parses a mynetworks-style list: network patterns separated by commas or
 * white space, such as "127.0.0.0/8 [::1]/128". An empty list is valid.
 * Throws an Error that names the first invalid item.
 */
export function parseNetworkList(value: string): Network[] {
  const items = value.split(LIST_SEPARATORS).filter((item) => item !== "");
  return items.map((item) => {
    try {
      // NOTE: Postfix reads an IPv6 item without brackets, such as
      // "::1/128", as a "type:table" name. This parser accepts it as a
      // network, so a list that works here can fail in Postfix.
      return parseNetwork(item);
    } catch (error) {
      throw new Error(
        `invalid network "${item}": ${(error as Error).message}`,
        {
          cause: error,
        },
      );
    }
  });
}

/** Formats an address: dotted quad, or RFC 5952 text for IPv6. */
export function formatAddress(address: IpAddress): string {
  if (address.family === 4) {
    const octets: number[] = [];
    for (let shift = 24n; shift >= 0n; shift -= 8n) {
      octets.push(Number((address.bits >> shift) & 0xffn));
    }
    return octets.join(".");
  }
  return formatIpv6(address.bits);
}

/** Formats a network as "address/length", such as "2001:db8::/32". */
export function formatNetwork(network: Network): string {
  return `${formatAddress(network)}/${network.prefixLength}`;
}

/**
 * Parses four decimal octets, as inet_pton(AF_INET) does: one to three
 * digits each, without leading zeros. Every client is parsed at least
 * once, so this reads characters instead of splitting and matching.
 */
function parseIpv4(text: string): bigint | undefined {
  let value = 0;
  let octet = 0;
  let digits = 0;
  let dots = 0;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code === 0x2e) {
      if (digits === 0 || dots === 3) return undefined;
      value = value * 256 + octet;
      octet = 0;
      digits = 0;
      dots++;
      continue;
    }
    const digit = code - 0x30;
    if (digit < 0 || digit > 9) return undefined;
    // A leading zero is only valid as the whole octet.
    if (digits > 0 && octet === 0) return undefined;
    octet = octet * 10 + digit;
    digits++;
    if (octet > 255) return undefined;
  }
  if (digits === 0 || dots !== 3) return undefined;
  return BigInt(value * 256 + octet);
}

/**
 * Parses IPv6 text as inet_pton(AF_INET6) does: eight groups of one to
 * four hex digits, or fewer with one "::" that stands for at least one
 * zero group. The last 32 bits may be written as an IPv4 address.
 */
function parseIpv6(text: string): bigint | undefined {
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const compressed = halves.length === 2;
  const head = parseGroups(halves[0] ?? "", !compressed);
  const tail = compressed ? parseGroups(halves[1] ?? "", true) : [];
  if (head === undefined || tail === undefined) return undefined;

  const count = head.length + tail.length;
  if (compressed ? count > 7 : count !== 8) return undefined;
  const groups = [...head, ...new Array<number>(8 - count).fill(0), ...tail];
  let bits = 0n;
  for (const group of groups) bits = (bits << 16n) | BigInt(group);
  return bits;
}

/**
 * Parses colon-separated hex groups, where "" is an empty list. When
 * `ipv4Tail` is set, the last item may be an IPv4 address, which counts as
 * two groups.
 */
function parseGroups(text: string, ipv4Tail: boolean): number[] | undefined {
  if (text === "") return [];
  const parts = text.split(":");
  const groups: number[] = [];
  for (const [index, part] of parts.entries()) {
    if (/^[0-9A-Fa-f]{1,4}$/.test(part)) {
      groups.push(parseInt(part, 16));
      continue;
    }
    if (!ipv4Tail || index !== parts.length - 1) return undefined;
    const ipv4 = parseIpv4(part);
    if (ipv4 === undefined) return undefined;
    groups.push(Number(ipv4 >> 16n), Number(ipv4 & 0xffffn));
  }
  return groups;
}

/**
 * Formats 128 bits as RFC 5952 recommends: lower-case hex without leading
 * zeros, and "::" for the first of the longest runs of two or more zero
 * groups.
 */
function formatIpv6(bits: bigint): string {
  const groups: number[] = [];
  for (let shift = 112n; shift >= 0n; shift -= 16n) {
    groups.push(Number((bits >> shift) & 0xffffn));
  }

  let bestStart = -1;
  let bestLength = 1;
  let runStart = -1;
  for (let i = 0; i <= groups.length; i++) {
    if (i < groups.length && groups[i] === 0) {
      if (runStart < 0) runStart = i;
      continue;
    }
    if (runStart >= 0 && i - runStart > bestLength) {
      bestStart = runStart;
      bestLength = i - runStart;
    }
    runStart = -1;
  }

  const hex = (list: number[]): string =>
    list.map((group) => group.toString(16)).join(":");
  if (bestStart < 0) return hex(groups);
  const before = hex(groups.slice(0, bestStart));
  const after = hex(groups.slice(bestStart + bestLength));
  return `${before}::${after}`;
}
