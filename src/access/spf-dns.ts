// DNS lookups for SPF expansion: TXT, MX, A and AAAA through node:dns,
// using only the configured dns_servers when they are set. NXDOMAIN and
// NODATA return an empty list; any other failure or a timeout throws
// SpfDnsError, which RFC 7208 calls a temperror.
import type { Resolver } from "node:dns";
import { createResolver } from "../dnsbl/resolver.js";

/** The lookups an SPF expansion makes; a fake implements it in unit tests. */
export interface SpfDns {
  /** TXT records, each the concatenation of its strings. */
  txt(name: string): Promise<string[]>;
  /** Exchange host names, lower-case, without a final dot. */
  mx(name: string): Promise<string[]>;
  a(name: string): Promise<string[]>;
  aaaa(name: string): Promise<string[]>;
}

export class SpfDnsError extends Error {}

/** Error codes of node:dns that mean "no such record". */
const EMPTY_CODES = new Set(["ENODATA", "ENOTFOUND"]);

export class SpfDnsClient implements SpfDns {
  private readonly resolver: Resolver;

  /**
   * `servers` are "addr" or "addr:port" ("[v6addr]:port"); empty means the
   * system's resolver configuration. Each lookup ends within `timeoutMs`.
   */
  constructor(
    servers: readonly string[],
    private readonly timeoutMs: number,
  ) {
    this.resolver = createResolver(servers, timeoutMs);
  }

  txt(name: string): Promise<string[]> {
    return this.lookup("TXT", name, (callback) =>
      this.resolver.resolveTxt(name, (error, records) =>
        callback(
          error,
          records?.map((chunks) => chunks.join("")),
        ),
      ),
    );
  }

  mx(name: string): Promise<string[]> {
    return this.lookup("MX", name, (callback) =>
      this.resolver.resolveMx(name, (error, records) =>
        callback(
          error,
          records?.map((record) =>
            record.exchange.toLowerCase().replace(/\.$/, ""),
          ),
        ),
      ),
    );
  }

  a(name: string): Promise<string[]> {
    return this.lookup("A", name, (callback) =>
      this.resolver.resolve4(name, callback),
    );
  }

  aaaa(name: string): Promise<string[]> {
    return this.lookup("AAAA", name, (callback) =>
      this.resolver.resolve6(name, callback),
    );
  }

  /** Cancels every lookup in progress; they fail with ECANCELLED. */
  cancel(): void {
    this.resolver.cancel();
  }

  private lookup(
    type: string,
    name: string,
    start: (
      callback: (
        error: NodeJS.ErrnoException | null,
        records: string[] | undefined,
      ) => void,
    ) => void,
  ): Promise<string[]> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new SpfDnsError(`${type} lookup for ${name} timed out`));
      }, this.timeoutMs);
      start((error, records) => {
        clearTimeout(timer);
        if (error === null) {
          resolve(records ?? []);
        } else if (EMPTY_CODES.has(error.code ?? "")) {
          resolve([]);
        } else {
          reject(
            new SpfDnsError(
              `${type} lookup for ${name} failed: ${error.code ?? error.message}`,
            ),
          );
        }
      });
    });
  }
}
