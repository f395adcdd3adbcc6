// The permanent access list, with postscreen's meaning: items are tried in
// order and the first definite answer wins. "permit_mynetworks" permits
// clients in mynetworks; "cidr:/path" looks the client up in a
// cidr_table(5) file, whose permit or reject ends the search and whose
// dunno (or no match) goes on to the next item. Tables are read at
// startup and on each reload; a bad line stops startup, or rejects the
// reload, with the file and line. A permit source set with permitFirst()
// (the infrastructure allowlist) is asked before every item.
import { CidrTable, type AccessResult } from "./cidr-table.js";
import {
  networkContains,
  networkContainsAddress,
  parseAddress,
  parseNetworkList,
  type IpAddress,
  type Network,
} from "./network.js";

/** A set of addresses that the access list permits before its items. */
export interface PermitSource {
  contains(address: IpAddress): boolean;
}

type AccessItem =
  { kind: "mynetworks" } | { kind: "cidr"; name: string; table: CidrTable };

export class AccessList {
  private permitSource: PermitSource | undefined;

  private constructor(
    private readonly items: readonly AccessItem[],
    private readonly mynetworks: readonly Network[],
  ) {}

  /**
   * Builds the list from access_list items and the mynetworks value;
   * throws an Error naming the bad item.
   */
  static parse(
    items: readonly string[],
    mynetworks: readonly Network[],
  ): AccessList {
    const parsed = items.map((item): AccessItem => {
      if (item === "permit_mynetworks") return { kind: "mynetworks" };
      if (item.startsWith("cidr:")) {
        return {
          kind: "cidr",
          name: item,
          table: CidrTable.load(item.slice(5)),
        };
      }
      throw new Error(
        `unsupported access list item "${item}": use permit_mynetworks or cidr:/path`,
      );
    });
    return new AccessList(parsed, mynetworks);
  }

  get empty(): boolean {
    return this.items.length === 0 && this.permitSource === undefined;
  }

  /** Makes `source` permit its addresses before the items are tried. */
  permitFirst(source: PermitSource): void {
    this.permitSource = source;
  }

  /** Returns permit, reject, or undefined when nothing decides. */
  evaluate(address: string): Exclude<AccessResult, "dunno"> | undefined {
    if (this.empty) return undefined;
    const client = parseAddress(address);
    if (this.permitSource?.contains(client) === true) {
      return "permit";
    }
    for (const item of this.items) {
      if (item.kind === "mynetworks") {
        if (
          this.mynetworks.some((network) =>
            networkContainsAddress(network, client),
          )
        ) {
          return "permit";
        }
        continue;
      }
      const result = item.table.lookupAddress(client);
      if (result === "permit" || result === "reject") return result;
    }
    return undefined;
  }
}

/**
 * allowlist_interfaces: server addresses on which a client may be passed
 * to smtpd after its tests. "static:all" allows every address; other items
 * are networks, "!network" excludes, and the first match wins.
 */
export class InterfaceList {
  private constructor(
    private readonly rules: readonly {
      allow: boolean;
      network: Network | "all";
    }[],
  ) {}

  static parse(items: readonly string[]): InterfaceList {
    return new InterfaceList(
      items.map((item) => {
        const allow = !item.startsWith("!");
        const text = allow ? item : item.slice(1);
        if (text === "static:all") return { allow, network: "all" as const };
        const [network] = parseNetworkList(text);
        if (network === undefined)
          throw new Error(`invalid interface "${item}"`);
        return { allow, network };
      }),
    );
  }

  allows(serverAddress: string): boolean {
    for (const rule of this.rules) {
      if (
        rule.network === "all" ||
        networkContains(rule.network, serverAddress)
      ) {
        return rule.allow;
      }
    }
    return false;
  }
}
