// The sender-infrastructure allowlist: the networks that the SPF records
// of infrastructure_allowlist_domains authorise, kept in memory and
// refreshed at start-up, every infrastructure_allowlist_refresh, and when
// refresh() is called (by a reload). Screening never waits for it: the
// set starts empty and fills in when the first refresh completes.
//
// Each domain is expanded on its own. A DNS failure or timeout keeps that
// domain's networks from the previous refresh, with a warning. A broken
// record (RFC 7208 permerror) uses the networks found before the error,
// also with a warning. Every refresh logs one line with the number of
// networks per domain.
import { formatNetwork, networkContainsAddress } from "./network.js";
import type { IpAddress, Network } from "./network.js";
import { expandSpf, type SpfExpansion } from "./spf-expand.js";
import { SpfDnsClient, type SpfDns } from "./spf-dns.js";
import type { Logger } from "../log/logger.js";

/** Settings of the allowlist, from the infrastructure_allowlist_* parameters. */
export interface InfrastructureAllowlistConfig {
  /** Mail domains whose SPF records are expanded; empty turns it off. */
  domains: string[];
  refreshIntervalMs: number;
  /** Time limit for expanding one domain, lookups included. */
  timeoutMs: number;
}

/** Maximum wait for one DNS answer within a domain's time limit. */
const MAX_QUERY_TIMEOUT_MS = 10_000;

/** A resolver that can be cancelled when a domain's time limit passes. */
export type SpfDnsFactory = (timeoutMs: number) => SpfDns & {
  cancel(): void;
};

export class InfrastructureAllowlist {
  private readonly byDomain = new Map<string, Network[]>();
  /** Ignored terms last logged per domain, so unchanged notes are not repeated. */
  private readonly loggedIgnored = new Map<string, string>();
  private ipv4: Network[] = [];
  private ipv6: Network[] = [];
  private running: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    private readonly config: InfrastructureAllowlistConfig,
    private readonly logger: Logger,
    private readonly createDns: SpfDnsFactory,
  ) {}

  /** Builds an allowlist that queries `dnsServers` (empty: the system's). */
  static withServers(
    config: InfrastructureAllowlistConfig,
    logger: Logger,
    dnsServers: readonly string[],
  ): InfrastructureAllowlist {
    return new InfrastructureAllowlist(
      config,
      logger,
      (timeoutMs) => new SpfDnsClient(dnsServers, timeoutMs),
    );
  }

  /** The number of distinct networks in effect. */
  get size(): number {
    return this.ipv4.length + this.ipv6.length;
  }

  /** Tests whether a client address is inside one of the networks. */
  contains(address: IpAddress): boolean {
    const networks = address.family === 4 ? this.ipv4 : this.ipv6;
    return networks.some((network) => networkContainsAddress(network, address));
  }

  /** Formats the networks in effect, for tests and diagnostics. */
  formatNetworks(): string[] {
    return [...this.ipv4, ...this.ipv6].map(formatNetwork);
  }

  /**
   * Runs the first refresh and schedules the next ones. The returned
   * promise settles when the first refresh ends; screening need not wait.
   */
  start(): Promise<void> {
    const first = this.refresh();
    this.timer = setInterval(() => {
      void this.refresh();
    }, this.config.refreshIntervalMs);
    this.timer.unref();
    return first;
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.timer);
  }

  /**
   * Expands every domain again and replaces the networks of those that
   * resolved. A call during a refresh returns that refresh's promise. The
   * promise never rejects: failures are logged.
   */
  refresh(): Promise<void> {
    this.running ??= this.refreshAll().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private async refreshAll(): Promise<void> {
    const results = await Promise.all(
      this.config.domains.map((domain) => this.refreshDomain(domain)),
    );
    if (this.stopped) return;
    const all = [...this.byDomain.values()].flat();
    const distinct = new Map(all.map((net) => [formatNetwork(net), net]));
    this.ipv4 = [...distinct.values()].filter((net) => net.family === 4);
    this.ipv6 = [...distinct.values()].filter((net) => net.family === 6);
    const counts = this.config.domains.map((domain, index) => {
      const count = this.byDomain.get(domain)?.length ?? 0;
      const kept = results[index] === "kept" ? " kept from before" : "";
      return `${domain} ${count}${kept}`;
    });
    this.logger.info(
      `infrastructure allowlist refreshed: ${this.size} networks ` +
        `(${counts.join(", ")})`,
    );
  }

  /** Expands one domain; returns "kept" when it failed and the old set stays. */
  private async refreshDomain(domain: string): Promise<"new" | "kept"> {
    const timeoutMs = this.config.timeoutMs;
    const dns = this.createDns(Math.min(timeoutMs, MAX_QUERY_TIMEOUT_MS));
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        reject(new Error(`timed out after ${timeoutMs / 1000}s`));
      }, timeoutMs);
    });
    let expansion: SpfExpansion;
    try {
      expansion = await Promise.race([expandSpf(domain, dns), deadline]);
    } catch (error) {
      const previous = this.byDomain.get(domain)?.length ?? 0;
      this.logger.warning(
        `infrastructure allowlist: cannot resolve the SPF record of ` +
          `${domain}: ${(error as Error).message}; keeping the ${previous} ` +
          "networks of the previous refresh",
      );
      return "kept";
    } finally {
      clearTimeout(timer);
      dns.cancel();
    }
    if (expansion.permanentError !== undefined) {
      this.logger.warning(
        `infrastructure allowlist: invalid SPF record of ${domain}: ` +
          `${expansion.permanentError}; using the ` +
          `${expansion.networks.length} networks found before the error`,
      );
    }
    this.logIgnored(domain, expansion.ignored);
    this.byDomain.set(domain, expansion.networks);
    return "new";
  }

  private logIgnored(domain: string, ignored: readonly string[]): void {
    const text = ignored.join(", ");
    if (this.loggedIgnored.get(domain) === text) return;
    this.loggedIgnored.set(domain, text);
    if (text === "") return;
    this.logger.info(
      `infrastructure allowlist: terms of ${domain} that add no ` +
        `networks: ${text}`,
    );
  }
}
