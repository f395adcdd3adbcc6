// The configured DNS lists, one per query domain: the entries that score
// its answers, the name that replies and logs show for it, and the filter
// for answers that report an error rather than a listing. Answers outside
// 127.0.0.0/8 never count (a list that answers there is broken or
// hijacked), and neither do error answers such as Spamhaus's
// 127.255.255.254 for queries through a public resolver.
import {
  networkContains,
  parseNetwork,
  type Network,
} from "../access/network.js";
import type { ReplyMap } from "./reply-map.js";
import type { DnsblSite } from "./sites.js";

export interface DnsblList {
  domain: string;
  /** Shown to clients and in logs; never the secret query domain. */
  publicName: string;
  sites: DnsblSite[];
  isErrorAnswer(answer: string): boolean;
}

const LOOPBACK = parseNetwork("127.0.0.0/8");

/** True for an answer inside 127.0.0.0/8, the only range lists use. */
export function isLoopbackAnswer(answer: string): boolean {
  return networkContains(LOOPBACK, answer);
}

interface ErrorAnswerRule {
  domain: string | undefined;
  network: Network;
}

/**
 * Parses dnsbl_error_answers items: "network" applies to every list,
 * "domain=network" to that list only.
 */
export function parseErrorAnswers(items: readonly string[]): ErrorAnswerRule[] {
  return items.map((item) => {
    const equals = item.indexOf("=");
    const domain =
      equals >= 0 ? item.slice(0, equals).toLowerCase() : undefined;
    const text = equals >= 0 ? item.slice(equals + 1) : item;
    try {
      return { domain, network: parseNetwork(text) };
    } catch (error) {
      throw new Error(
        `invalid error answer "${item}": ${(error as Error).message}`,
        {
          cause: error,
        },
      );
    }
  });
}

/** Groups sites by domain and attaches public names and error filters. */
export function buildLists(
  sites: readonly DnsblSite[],
  replyMap: ReplyMap,
  errorRules: readonly ErrorAnswerRule[],
): DnsblList[] {
  const byDomain = new Map<string, DnsblSite[]>();
  for (const site of sites) {
    const group = byDomain.get(site.domain) ?? [];
    group.push(site);
    byDomain.set(site.domain, group);
  }
  return [...byDomain].map(([domain, group]) => {
    const rules = errorRules.filter(
      (rule) => rule.domain === undefined || rule.domain === domain,
    );
    return {
      domain,
      publicName: replyMap.get(domain) ?? domain,
      sites: group,
      isErrorAnswer: (answer) =>
        rules.some((rule) => networkContains(rule.network, answer)),
    };
  });
}
