// Score gating: which clients greylisting applies to. In mode "all" every
// client is greylisted; in mode "suspicious" only a client with at least
// one reason from greylist_suspicious_criteria. DNS-allowlisted and
// access-list-permitted clients are never greylisted.
import type { GreylistConfig } from "./settings.js";

/** What screening learned about a client before handing it off. */
export interface ClientFacts {
  /** Sum of the DNS list weights, or undefined when not queried. */
  dnsblScore: number | undefined;
  /** The client talked before the greeting (action ignore or enforce). */
  pregreeted: boolean;
  /** The DNS list score reached dnsbl_allowlist_threshold. */
  dnsAllowlisted: boolean;
}

/** Reverse DNS as Postfix smtpd reports it in a policy request. */
export interface ClientNames {
  /** Forward-confirmed name, or "unknown" (policy attribute client_name). */
  name: string | undefined;
  /** Unverified PTR name, or "unknown" (reverse_client_name). */
  reverseName: string | undefined;
}

/**
 * Lists the reasons that make a client suspicious; an empty list means it
 * is not. Facts that are unknown count as no reason: without a hand-off
 * record the DNS list and pregreet criteria cannot apply, and without a
 * name from smtpd (the dummy engine) neither can the reverse DNS ones.
 */
export function suspicionReasons(
  facts: ClientFacts | undefined,
  names: ClientNames | undefined,
  config: Pick<GreylistConfig, "criteria" | "dynamicNamePatterns">,
): string[] {
  const reasons: string[] = [];
  const criteria = new Set(config.criteria);
  const score = facts?.dnsblScore ?? 0;
  if (criteria.has("dnsbl") && score > 0) {
    reasons.push(`DNS list score ${score}`);
  }
  if (criteria.has("pregreet") && facts?.pregreeted === true) {
    reasons.push("pregreet");
  }
  if (names === undefined) return reasons;
  if (criteria.has("fcrdns") && isUnknown(names.name)) {
    reasons.push("no forward-confirmed reverse DNS");
  }
  const reverse = names.reverseName;
  if (
    criteria.has("dynamic_name") &&
    reverse !== undefined &&
    !isUnknown(reverse) &&
    config.dynamicNamePatterns.some((pattern) => pattern.test(reverse))
  ) {
    reasons.push(`dynamic reverse name ${reverse}`);
  }
  return reasons;
}

function isUnknown(name: string | undefined): boolean {
  return name === undefined || name === "" || name === "unknown";
}
