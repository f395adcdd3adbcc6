// Parses an SPF record ("v=spf1 ...", RFC 7208 section 4.5 to 6) into its
// directives and modifiers. Names are matched in any letter case. Domains
// are lower-cased and lose a final dot. A domain that contains a macro
// ("%{d}", "%{i}") is kept as written, because the allowlist cannot expand
// macros that depend on the client.
import { parseNetwork, prefixMask, type Network } from "./network.js";

export type SpfQualifier = "+" | "-" | "~" | "?";

export type SpfMechanism =
  | { kind: "all" }
  | { kind: "include"; domain: string }
  | { kind: "exists"; domain: string }
  | { kind: "ptr"; domain: string | undefined }
  | {
      kind: "a" | "mx";
      /** Undefined means the domain whose record this is. */
      domain: string | undefined;
      ipv4PrefixLength: number;
      ipv6PrefixLength: number;
    }
  | { kind: "ip4" | "ip6"; network: Network };

export interface SpfDirective {
  qualifier: SpfQualifier;
  mechanism: SpfMechanism;
  /** The term as written, for log lines. */
  text: string;
}

export interface SpfRecord {
  directives: SpfDirective[];
  redirect: string | undefined;
  explanation: string | undefined;
}

/** Mechanisms and modifiers that cost a DNS lookup (RFC 7208 4.6.4). */
export const LOOKUP_MECHANISMS: ReadonlySet<SpfMechanism["kind"]> = new Set([
  "include",
  "a",
  "mx",
  "ptr",
  "exists",
]);

const VERSION = /^v=spf1(?: |$)/i;
const QUALIFIERS = "+-~?";
const MODIFIER_NAME = /^[A-Za-z][A-Za-z0-9._-]*$/;
const DOMAIN_LABEL = /^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/;
const MAX_DOMAIN_LENGTH = 253;

/** Tests whether a TXT string is an SPF version 1 record. */
export function isSpfRecord(text: string): boolean {
  return VERSION.test(text);
}

/** Tests whether a domain-spec contains a macro such as "%{i}". */
export function hasMacro(domain: string): boolean {
  return domain.includes("%");
}

/**
 * Parses a whole record, "v=spf1" included. Throws an Error naming the
 * invalid term; RFC 7208 calls such a record a permerror.
 */
export function parseSpfRecord(text: string): SpfRecord {
  if (!isSpfRecord(text)) {
    throw new Error(`invalid SPF record "${text}": must start with "v=spf1"`);
  }
  const record: SpfRecord = {
    directives: [],
    redirect: undefined,
    explanation: undefined,
  };
  const terms = text
    .slice("v=spf1".length)
    .split(" ")
    .filter((term) => term !== "");
  for (const term of terms) {
    const modifier = /^([^=:/]+)=(.*)$/.exec(term);
    if (modifier !== null) {
      parseModifier(record, term, modifier[1] ?? "", modifier[2] ?? "");
      continue;
    }
    record.directives.push(parseDirective(term));
  }
  return record;
}

function parseModifier(
  record: SpfRecord,
  term: string,
  name: string,
  value: string,
): void {
  if (!MODIFIER_NAME.test(name)) {
    throw new Error(`invalid SPF term "${term}"`);
  }
  const lower = name.toLowerCase();
  if (lower !== "redirect" && lower !== "exp") {
    // RFC 7208 6: unknown modifiers are ignored.
    return;
  }
  const domain = parseDomainSpec(value, term);
  if (lower === "redirect") {
    if (record.redirect !== undefined) {
      throw new Error(`invalid SPF record: a second redirect in "${term}"`);
    }
    record.redirect = domain;
  } else {
    if (record.explanation !== undefined) {
      throw new Error(`invalid SPF record: a second exp in "${term}"`);
    }
    record.explanation = domain;
  }
}

/** Parses one directive: an optional qualifier and a mechanism. */
export function parseDirective(term: string): SpfDirective {
  const first = term.charAt(0);
  const qualifier = (QUALIFIERS.includes(first) ? first : "+") as SpfQualifier;
  const body = QUALIFIERS.includes(first) ? term.slice(1) : term;
  const match = /^([A-Za-z0-9]+)(.*)$/.exec(body);
  const name = match?.[1]?.toLowerCase() ?? "";
  const rest = match?.[2] ?? "";
  const mechanism = parseMechanism(name, rest, term);
  return { qualifier, mechanism, text: term };
}

function parseMechanism(
  name: string,
  rest: string,
  term: string,
): SpfMechanism {
  switch (name) {
    case "all":
      if (rest !== "") throw invalidTerm(term);
      return { kind: "all" };
    case "include":
    case "exists":
      if (!rest.startsWith(":")) {
        throw new Error(`invalid SPF term "${term}": missing ":domain"`);
      }
      return { kind: name, domain: parseDomainSpec(rest.slice(1), term) };
    case "ptr":
      if (rest === "") return { kind: "ptr", domain: undefined };
      if (!rest.startsWith(":")) throw invalidTerm(term);
      return { kind: "ptr", domain: parseDomainSpec(rest.slice(1), term) };
    case "a":
    case "mx":
      return parseHostMechanism(name, rest, term);
    case "ip4":
    case "ip6":
      if (!rest.startsWith(":")) {
        throw new Error(`invalid SPF term "${term}": missing ":address"`);
      }
      return { kind: name, network: parseIpNetwork(name, rest.slice(1), term) };
    default:
      throw new Error(`invalid SPF term "${term}": unknown mechanism`);
  }
}

/** Parses the rest of "a" or "mx": [":" domain] ["/" v4len] ["//" v6len]. */
function parseHostMechanism(
  kind: "a" | "mx",
  rest: string,
  term: string,
): SpfMechanism {
  let domainText: string | undefined;
  let cidrText = rest;
  if (rest.startsWith(":")) {
    const slash = rest.indexOf("/");
    domainText = slash < 0 ? rest.slice(1) : rest.slice(1, slash);
    cidrText = slash < 0 ? "" : rest.slice(slash);
  }
  const cidr = /^(?:\/([0-9]+))?(?:\/\/([0-9]+))?$/.exec(cidrText);
  if (cidr === null) throw invalidTerm(term);
  return {
    kind,
    domain:
      domainText === undefined ? undefined : parseDomainSpec(domainText, term),
    ipv4PrefixLength: parsePrefixLength(cidr[1], 32, term),
    ipv6PrefixLength: parsePrefixLength(cidr[2], 128, term),
  };
}

function parsePrefixLength(
  text: string | undefined,
  width: number,
  term: string,
): number {
  if (text === undefined) return width;
  // RFC 7208 5.6: no leading zeros, and at most the address width.
  if (!/^(?:0|[1-9][0-9]*)$/.test(text) || Number(text) > width) {
    throw new Error(
      `invalid SPF term "${term}": prefix length ${text} is out of range ` +
        `0 to ${width}`,
    );
  }
  return Number(text);
}

/**
 * Parses the address and optional prefix of ip4: or ip6:. Host bits after
 * the prefix are cleared, as RFC 7208 5.6 compares only the prefix.
 */
function parseIpNetwork(
  kind: "ip4" | "ip6",
  text: string,
  term: string,
): Network {
  const slash = text.indexOf("/");
  const addressText = slash < 0 ? text : text.slice(0, slash);
  const width = kind === "ip4" ? 32 : 128;
  const prefixLength = parsePrefixLength(
    slash < 0 ? undefined : text.slice(slash + 1),
    width,
    term,
  );
  let address: Network;
  try {
    if (addressText.includes("[")) throw new Error("brackets");
    address = parseNetwork(addressText);
  } catch {
    throw new Error(
      `invalid SPF term "${term}": invalid IPv${kind === "ip4" ? 4 : 6} ` +
        `address "${addressText}"`,
    );
  }
  if (address.family !== (kind === "ip4" ? 4 : 6)) {
    throw new Error(
      `invalid SPF term "${term}": "${addressText}" is not an ` +
        `IPv${kind === "ip4" ? 4 : 6} address`,
    );
  }
  const mask = prefixMask(address.family, prefixLength);
  return { family: address.family, bits: address.bits & mask, prefixLength };
}

/**
 * Checks a domain-spec and returns it lower-cased without a final dot.
 * A domain with a macro is returned as written.
 */
function parseDomainSpec(text: string, term: string): string {
  if (text === "") {
    throw new Error(`invalid SPF term "${term}": missing domain`);
  }
  if (hasMacro(text)) return text;
  const domain = text.endsWith(".") ? text.slice(0, -1) : text;
  const labels = domain.split(".");
  if (
    domain.length > MAX_DOMAIN_LENGTH ||
    labels.length < 2 ||
    !labels.every((label) => DOMAIN_LABEL.test(label))
  ) {
    throw new Error(`invalid SPF term "${term}": invalid domain "${text}"`);
  }
  return domain.toLowerCase();
}

function invalidTerm(term: string): Error {
  return new Error(`invalid SPF term "${term}"`);
}
