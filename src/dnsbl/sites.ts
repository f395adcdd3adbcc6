// Parses postscreen's dnsbl_sites entries, "domain[=filter][*weight]",
// and its reply filters, patterns of four dot-separated fields where each
// field is a number or a bracketed sequence such as [2..11;15]. A domain
// may appear in several entries with different filters and weights; it is
// queried once and every entry is scored. Filters match IPv4 answers only,
// because DNS lists answer with A records.

export interface DnsblSite {
  /** The query domain, lower-cased. */
  domain: string;
  /** The filter as written, or undefined to match any listing. */
  filter: string | undefined;
  matches: (answer: string) => boolean;
  /** Positive for block lists, negative for allow lists. */
  weight: number;
}

type FieldMatcher = (octet: number) => boolean;

function parseOctet(text: string, pattern: string): number {
  if (!/^\d{1,3}$/.test(text) || Number(text) > 255) {
    throw new Error(`invalid octet "${text}" in filter "${pattern}"`);
  }
  return Number(text);
}

function parseField(field: string, pattern: string): FieldMatcher {
  if (!field.startsWith("[")) {
    const value = parseOctet(field, pattern);
    return (octet) => octet === value;
  }
  if (!field.endsWith("]") || field.length < 3) {
    throw new Error(`invalid sequence "${field}" in filter "${pattern}"`);
  }
  const ranges = field
    .slice(1, -1)
    .split(";")
    .map((member) => {
      const bounds = member.split("..");
      if (bounds.length > 2) {
        throw new Error(`invalid range "${member}" in filter "${pattern}"`);
      }
      const low = parseOctet(bounds[0] ?? "", pattern);
      const high = parseOctet(bounds[1] ?? bounds[0] ?? "", pattern);
      if (low > high) {
        throw new Error(`empty range "${member}" in filter "${pattern}"`);
      }
      return [low, high] as const;
    });
  return (octet) => ranges.some(([low, high]) => octet >= low && octet <= high);
}

/** Compiles a reply filter; throws an Error that quotes the pattern. */
export function parseReplyFilter(pattern: string): (answer: string) => boolean {
  // Split on dots outside brackets: "127.0.0.[2..11;15]" has four fields.
  const fields: string[] = [];
  let current = "";
  let depth = 0;
  for (const ch of pattern) {
    if (ch === "[") depth++;
    if (ch === "]") depth--;
    if (depth < 0 || depth > 1) {
      throw new Error(`unbalanced brackets in filter "${pattern}"`);
    }
    if (ch === "." && depth === 0) {
      fields.push(current);
      current = "";
    } else {
      current += ch;
    }
  }
  fields.push(current);
  if (depth !== 0 || fields.length !== 4) {
    throw new Error(
      `invalid filter "${pattern}": expected four fields such as ` +
        "127.0.0.[2..11;15]",
    );
  }
  const matchers = fields.map((field) => parseField(field, pattern));
  return (answer) => {
    const octets = answer.split(".");
    if (octets.length !== 4) return false;
    return matchers.every((matcher, index) => {
      const text = octets[index] ?? "";
      return /^\d{1,3}$/.test(text) && matcher(Number(text));
    });
  };
}

const DOMAIN =
  /^(?=.{1,253}$)([a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*$/;

/** Parses one dnsbl_sites entry; throws an Error that quotes it. */
export function parseSite(entry: string): DnsblSite {
  let rest = entry;
  let weight = 1;
  const star = rest.indexOf("*");
  if (star >= 0) {
    const text = rest.slice(star + 1);
    if (!/^[+-]?\d+$/.test(text) || Number(text) === 0) {
      throw new Error(
        `invalid weight "${text}" in "${entry}": expected a non-zero integer`,
      );
    }
    weight = Number(text);
    rest = rest.slice(0, star);
  }
  let filter: string | undefined;
  let matches: (answer: string) => boolean = () => true;
  const equals = rest.indexOf("=");
  if (equals >= 0) {
    filter = rest.slice(equals + 1);
    matches = parseReplyFilter(filter);
    rest = rest.slice(0, equals);
  }
  const domain = rest.toLowerCase().replace(/\.$/, "");
  if (!DOMAIN.test(domain) || !domain.includes(".")) {
    throw new Error(`invalid domain name "${rest}" in "${entry}"`);
  }
  return { domain, filter, matches, weight };
}

/** Parses the dnsbl_sites list. */
export function parseSites(items: readonly string[]): DnsblSite[] {
  return items.map(parseSite);
}
