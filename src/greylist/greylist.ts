// Greylisting and spam traps for recipients seen by the policy service and
// the dummy engine, and the trap check at connect time. It keeps what
// screening learned about each handed-off client in a bounded map that
// drops entries after an hour, so that a policy request from smtpd can be
// judged with the client's DNS list score and greeting result.
import { isIPv6 } from "node:net";
import type { Config } from "../config/load.js";
import type { Logger } from "../log/logger.js";
import { clientKey } from "../cache/key.js";
import { expandIPv6 } from "../dnsbl/resolver.js";
import { formatEndpoint } from "../log/format.js";
import { greylistKey } from "./key.js";
import {
  passKey,
  trapKey,
  tripletKey,
  type PassRecord,
  type TrapRecord,
  type TripletRecord,
} from "./records.js";
import type { GreylistStore } from "./store.js";
import { judgeTriplet } from "./timing.js";
import {
  suspicionReasons,
  type ClientFacts,
  type ClientNames,
} from "./gate.js";

/** Clients remembered after hand-off; the oldest is forgotten first. */
const MAX_REMEMBERED_CLIENTS = 50_000;
/** How long a hand-off is remembered for policy requests. */
const REMEMBER_MS = 3600_000;
/** A pass record is rewritten (its expiry moved) at most this often. */
const PASS_REFRESH_MS = 3600_000;

/** The reply for a trapped client, the denylist's enforce reply. */
export const TRAP_REPLY = "550 5.3.2 Service currently unavailable";

export interface RecipientCheck {
  clientAddress: string;
  clientPort: number | undefined;
  sender: string;
  recipient: string;
  /** Reverse DNS from smtpd; undefined in the dummy engine. */
  names: ClientNames | undefined;
}

export type RecipientDecision =
  /** Greylisting does not apply, or the client passed. */
  | { kind: "dunno" }
  /** Defer this recipient; the client may retry after `retrySeconds`. */
  | { kind: "greylist"; retrySeconds: number }
  /** The client is trapped: reply with TRAP_REPLY. */
  | { kind: "trap" };

/** Event counts since startup. */
export interface GreylistCounts {
  deferred: number;
  passed: number;
  trapHits: number;
  trappedConnections: number;
}

export class Greylist {
  private readonly remembered = new Map<
    string,
    { facts: ClientFacts; expires: number }
  >();
  readonly counts: GreylistCounts = {
    deferred: 0,
    passed: 0,
    trapHits: 0,
    trappedConnections: 0,
  };

  constructor(
    private readonly config: Config,
    private readonly store: GreylistStore,
    private readonly logger: Logger,
  ) {}

  /** Records what screening learned about a client it hands off. */
  remember(address: string, facts: ClientFacts, now = Date.now()): void {
    const key = normalize(address);
    this.remembered.delete(key);
    this.remembered.set(key, { facts, expires: now + REMEMBER_MS });
    if (this.remembered.size > MAX_REMEMBERED_CLIENTS) {
      const oldest = this.remembered.keys().next().value;
      if (oldest !== undefined) this.remembered.delete(oldest);
    }
  }

  /** Returns what is remembered about `address`, if still fresh. */
  recall(address: string, now = Date.now()): ClientFacts | undefined {
    const key = normalize(address);
    const entry = this.remembered.get(key);
    if (entry === undefined) return undefined;
    if (entry.expires <= now) {
      this.remembered.delete(key);
      return undefined;
    }
    return entry.facts;
  }

  /**
   * Tests at connect time whether the client is trapped, from the local
   * store only, so that screening never waits; logs and counts a hit.
   */
  isTrapped(address: string, label: string, now = Date.now()): boolean {
    const key = clientKey(address, this.config.clientIpv6PrefixLength);
    const record = this.store.getLocal(trapKey(key), now);
    if (record?.kind !== "trap") return false;
    this.counts.trappedConnections++;
    this.logger.info(
      `TRAPPED ${label}: sent to spam trap <${record.recipient}>; ` +
        `denied for ${Math.ceil((record.expires - now) / 1000)}s more`,
    );
    return true;
  }

  /** Decides one recipient: trap, greylist, or nothing to do. */
  async checkRecipient(
    check: RecipientCheck,
    now = Date.now(),
  ): Promise<RecipientDecision> {
    const { config } = this;
    const label =
      check.clientPort === undefined
        ? `[${check.clientAddress}]`
        : formatEndpoint(check.clientAddress, check.clientPort);
    const envelope = `from=<${check.sender}>, to=<${check.recipient}>`;
    const client = clientKey(
      check.clientAddress,
      config.clientIpv6PrefixLength,
    );

    if (config.greylist.traps.matches(check.recipient)) {
      await this.trap(client, check.recipient, now);
      this.logger.info(
        `TRAP ${label}: ${envelope}; client ${client} denied for ` +
          `${config.greylist.trapTtlMs / 1000}s`,
      );
      return { kind: "trap" };
    }
    const trapped = await this.store.get(trapKey(client), now);
    if (trapped?.kind === "trap") {
      this.logger.info(
        `TRAPPED ${label}: ${envelope}; sent to spam trap ` +
          `<${trapped.recipient}> before`,
      );
      return { kind: "trap" };
    }

    const skipReason = this.exemption(check, now);
    if (skipReason === null) return { kind: "dunno" };
    const key = greylistKey(
      check.clientAddress,
      config.greylist.ipv4PrefixLength,
      config.clientIpv6PrefixLength,
    );
    const log = (outcome: string, reason: string): void =>
      this.logger.info(
        `GREYLIST ${outcome} ${label}: ${envelope}, key=${key}: ${reason}`,
      );
    if (typeof skipReason === "string") {
      log("SKIP", skipReason);
      return { kind: "dunno" };
    }
    const suspicion = skipReason.reasons;

    const passed = await this.store.get(passKey(key), now);
    if (passed?.kind === "pass") {
      if (now - passed.updated >= PASS_REFRESH_MS) {
        await this.storePass(key, now);
      }
      log("PASS", `passed before${suspicion}`);
      return { kind: "dunno" };
    }

    const triplet = {
      client: key,
      sender: check.sender.toLowerCase(),
      recipient: check.recipient.toLowerCase(),
    };
    const storeKey = tripletKey(key, triplet.sender, triplet.recipient);
    const existing = await this.store.get(storeKey, now);
    const verdict = judgeTriplet(
      existing?.kind === "triplet" ? existing : undefined,
      triplet,
      now,
      config.greylist,
    );
    switch (verdict.kind) {
      case "new":
        await this.store.put(storeKey, verdict.record);
        this.counts.deferred++;
        log("DEFER", `new triplet${suspicion}`);
        return { kind: "greylist", retrySeconds: this.seconds(verdict.record) };
      case "early":
        await this.store.put(storeKey, verdict.record);
        this.counts.deferred++;
        log(
          "DEFER",
          `early retry, ${Math.ceil(verdict.missingMs / 1000)}s missing${suspicion}`,
        );
        return {
          kind: "greylist",
          retrySeconds: Math.ceil(verdict.missingMs / 1000),
        };
      case "pass":
        await this.storePass(key, now);
        await this.store.remove(storeKey);
        this.counts.passed++;
        log(
          "PASS",
          `retried after ${Math.round(verdict.waitedMs / 1000)}s${suspicion}`,
        );
        return { kind: "dunno" };
    }
  }

  /**
   * Returns null when greylisting is off (nothing to log), a reason
   * string when this client is exempt, or the suspicion reasons (as a
   * log suffix) when it is greylisted.
   */
  private exemption(
    check: RecipientCheck,
    now: number,
  ): null | string | { reasons: string } {
    const { config } = this;
    if (config.greylist.mode === "off") return null;
    if (config.accessList.evaluate(check.clientAddress) === "permit") {
      return "permitted by the access list";
    }
    const facts = this.recall(check.clientAddress, now);
    if (facts?.dnsAllowlisted === true) return "allowlisted by DNS lists";
    if (config.greylist.mode === "all") return { reasons: "" };
    const reasons = suspicionReasons(facts, check.names, config.greylist);
    if (reasons.length === 0) return "not suspicious";
    return { reasons: ` (suspicious: ${reasons.join(", ")})` };
  }

  private seconds(record: TripletRecord): number {
    return Math.ceil(
      (record.firstSeen + this.config.greylist.minDelayMs - record.lastSeen) /
        1000,
    );
  }

  private async storePass(key: string, now: number): Promise<void> {
    const record: PassRecord = {
      kind: "pass",
      client: key,
      updated: now,
      expires: now + this.config.greylist.passTtlMs,
    };
    await this.store.put(passKey(key), record);
  }

  private async trap(
    client: string,
    recipient: string,
    now: number,
  ): Promise<void> {
    this.counts.trapHits++;
    const record: TrapRecord = {
      kind: "trap",
      client,
      recipient,
      updated: now,
      expires: now + this.config.greylist.trapTtlMs,
    };
    await this.store.put(trapKey(client), record);
  }

  /**
   * Returns the dummy engine's recipient hook for one client. A trap
   * recipient gets the trap reply at once (the record is written in the
   * background); any other recipient is checked in the background, so that
   * the engine's own 4xx counts as the triplet's first sighting.
   */
  engineHook(
    clientAddress: string,
    clientPort: number,
  ): (sender: string, recipient: string) => string | undefined {
    return (sender, recipient) => {
      const decision = this.checkRecipient({
        clientAddress,
        clientPort,
        sender,
        recipient,
        names: undefined,
      }).catch((error: unknown) => {
        this.logger.warning(
          `greylist check for [${clientAddress}] failed: ` +
            (error as Error).message,
        );
      });
      void decision;
      return this.config.greylist.traps.matches(recipient)
        ? `${TRAP_REPLY}\r\n`
        : undefined;
    };
  }
}

function normalize(address: string): string {
  return isIPv6(address) ? expandIPv6(address) : address;
}
