// Queries every enabled DNS list for a client in parallel and scores the
// answers as postscreen does: each entry whose filter matches an answer
// adds its weight; the reply names the list whose matching entry has the
// largest weight. Results arrive while the greeting test runs, and the
// score can be read at any time (a partial score when the wait ends before
// every answer). A failed lookup contributes 0 and marks the result
// incomplete, so that it is never cached as a clean result.
import type { Logger } from "../log/logger.js";
import { RateLimitedWarning } from "../log/logger.js";
import type { DnsblHealth } from "./health.js";
import { isLoopbackAnswer, type DnsblList } from "./lists.js";
import { queryName, type DnsClient, type LookupResult } from "./resolver.js";
import { NO_METRICS, type Metrics } from "../metrics/metrics.js";

export interface DnsblSettings {
  lists: DnsblList[];
  minTtlSeconds: number;
  maxTtlSeconds: number;
  timeoutMs: number;
}

export interface DnsblScore {
  score: number;
  /** Public name of the list with the largest matching weight. */
  listName: string | undefined;
  /** How long the result may be reused, clamped to the TTL limits. */
  ttlSeconds: number;
  /** False when a lookup failed or had not answered yet. */
  complete: boolean;
}

/** One client's queries in progress. */
export class DnsblQuery {
  private total = 0;
  private listName: string | undefined;
  private largestWeight = -Infinity;
  private passTtl: number | undefined;
  private failTtl: number | undefined;
  private pending: number;
  private failed = false;
  private completeCallback: (() => void) | undefined;

  constructor(
    private readonly settings: DnsblSettings,
    listCount: number,
  ) {
    this.pending = listCount;
  }

  get done(): boolean {
    return this.pending === 0;
  }

  /** Calls `callback` once every list has answered (now, if done). */
  onComplete(callback: () => void): void {
    if (this.done) {
      callback();
    } else {
      this.completeCallback = callback;
    }
  }

  /** Marks the result as not a pass, whatever the score. */
  markIncomplete(): void {
    this.failed = true;
  }

  /** Stops reporting completion; late answers are then ignored. */
  cancel(): void {
    this.completeCallback = undefined;
  }

  current(): DnsblScore {
    const { minTtlSeconds, maxTtlSeconds } = this.settings;
    const ttl = (this.total > 0 ? this.failTtl : this.passTtl) ?? minTtlSeconds;
    return {
      score: this.total,
      listName: this.listName,
      ttlSeconds: Math.min(Math.max(ttl, minTtlSeconds), maxTtlSeconds),
      complete: this.done && !this.failed,
    };
  }

  /** Records one list's trusted answers (empty when not listed). */
  record(
    list: DnsblList,
    answers: string[] | undefined,
    ttl: number | undefined,
  ): void {
    if (answers === undefined) {
      this.failed = true;
    } else {
      for (const site of list.sites) {
        const listed = answers.some((answer) => site.matches(answer));
        if (listed) {
          this.total += site.weight;
          if (site.weight > this.largestWeight) {
            this.largestWeight = site.weight;
            this.listName = list.publicName;
          }
        }
        // A listing's TTL bounds how long a block (or an allow) lasts; an
        // absence bounds how long a pass lasts.
        if (ttl !== undefined) {
          const blocks = site.weight > 0 === answers.length > 0;
          if (blocks) this.failTtl = Math.min(this.failTtl ?? ttl, ttl);
          else this.passTtl = Math.min(this.passTtl ?? ttl, ttl);
        }
      }
    }
    this.pending--;
    if (this.pending === 0) {
      const callback = this.completeCallback;
      this.completeCallback = undefined;
      callback?.();
    }
  }
}

export class DnsblChecker {
  /** One rate limit per list and kind of problem. */
  private readonly warnings = new Map<string, RateLimitedWarning>();

  constructor(
    private readonly settings: DnsblSettings,
    private readonly client: DnsClient,
    private readonly logger: Logger,
    private readonly health: DnsblHealth | undefined,
    private readonly metrics: Metrics = NO_METRICS,
  ) {}

  private warn(list: DnsblList, kind: string, message: string): void {
    const key = `${list.domain} ${kind}`;
    let warning = this.warnings.get(key);
    if (warning === undefined) {
      warning = new RateLimitedWarning(this.logger, 60_000);
      this.warnings.set(key, warning);
    }
    warning.report(message);
  }

  get enabled(): boolean {
    return this.settings.lists.length > 0;
  }

  /** Starts the queries for `address`; returns the query to read later. */
  start(address: string): DnsblQuery {
    const family = address.includes(":") ? 6 : 4;
    const lists = this.settings.lists.filter(
      (list) => this.health?.isEnabled(list.domain, family) ?? true,
    );
    const query = new DnsblQuery(this.settings, lists.length);
    if (lists.length === 0) {
      // Every list is disabled for this address family (an outage, or
      // lists that do not serve it): the test was not run, so no pass.
      query.markIncomplete();
    }
    for (const list of lists) {
      void this.lookup(list, address).then(({ answers, ttl }) =>
        query.record(list, answers, ttl),
      );
    }
    return query;
  }

  private async lookup(
    list: DnsblList,
    address: string,
  ): Promise<{ answers: string[] | undefined; ttl: number | undefined }> {
    const startedAt = performance.now();
    const result: LookupResult = await this.client.queryA(
      queryName(address, list.domain),
    );
    const seconds = (performance.now() - startedAt) / 1000;
    if (result.kind === "error") {
      this.metrics.dnsblQuery(list.publicName, seconds, result.code);
      this.warnLookup(list, result.code);
      return { answers: undefined, ttl: undefined };
    }
    if (result.kind === "clean") {
      this.metrics.dnsblQuery(list.publicName, seconds, undefined);
      const ttl = await this.client.negativeTtl(list.domain);
      return { answers: [], ttl };
    }
    const trusted = this.trustedAnswers(list, result.answers);
    const error = trusted === undefined ? "error_answer" : undefined;
    this.metrics.dnsblQuery(list.publicName, seconds, error);
    if (trusted === undefined) return { answers: undefined, ttl: undefined };
    return { answers: trusted, ttl: result.ttlSeconds };
  }

  /**
   * Drops answers that must not count as listings. Returns undefined when
   * every answer was an error answer, which is a failed lookup, not a
   * clean one.
   */
  trustedAnswers(list: DnsblList, answers: string[]): string[] | undefined {
    const trusted: string[] = [];
    for (const answer of answers) {
      if (!isLoopbackAnswer(answer)) {
        this.warn(
          list,
          "outside",
          `DNS list ${list.publicName} answered ${answer}, outside ` +
            "127.0.0.0/8; the answer is ignored",
        );
      } else if (list.isErrorAnswer(answer)) {
        this.warn(
          list,
          "error answer",
          `DNS list ${list.publicName} answered ${answer}, an error code: ` +
            "queries probably go through a public or overloaded resolver, " +
            "or the list needs an access key; the answer is ignored",
        );
      } else {
        trusted.push(answer);
      }
    }
    const allErrors =
      trusted.length === 0 &&
      answers.some(
        (answer) => isLoopbackAnswer(answer) && list.isErrorAnswer(answer),
      );
    return allErrors ? undefined : trusted;
  }

  private warnLookup(list: DnsblList, code: string): void {
    if (code === "ETIMEOUT") {
      this.warn(
        list,
        "lookup",
        `dnsblog reply timeout ${Math.round(this.settings.timeoutMs / 1000)}s ` +
          `for ${list.publicName}`,
      );
    } else {
      this.warn(
        list,
        "lookup",
        `dnsblog_query: lookup error for DNS list ${list.publicName}: ${code}`,
      );
    }
  }
}
