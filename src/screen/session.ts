// One client connection from accept to its end, in postscreen's order.
// It reads a PROXY header when the listener expects one, logs CONNECT,
// applies the load limits and the permanent access list, and reads the
// verdict cache. Then the early tests (the pregreet test and the DNS
// lists) run in parallel during greet_wait. Last comes the verdict: hand
// the descriptor to smtpd, give the client to the dummy SMTP engine, or
// reply and close. The session owns the client socket until the hand-off
// has sent it, and the Handoff closes our copy after that. Before close(),
// up to 4 MiB of a rejected client's pending input is discarded, so that
// the reply is not lost to a TCP reset.
import type { Config } from "../config/load.js";
import type { Addon, NativeSocket } from "../native.js";
import type { Logger } from "../log/logger.js";
import {
  SessionSummary,
  testResult,
  type SessionOutcome,
} from "../log/summary.js";
import { escapeForLog, formatDelay, formatEndpoint } from "../log/format.js";
import { parseProxyHeader } from "../intake/proxy-protocol.js";
import { READABLE } from "../native.js";
import type { AddressFamilies } from "../postfix/postconf.js";
import { encodeAttributes } from "../handoff/attributes.js";
import { Handoff, type PassFailure } from "../handoff/pass.js";
import { choosePassSocket } from "../handoff/classes.js";
import type { DnsblChecker, DnsblQuery } from "../dnsbl/checker.js";
import { GreetingTest, type GreetingEvents } from "./greeting.js";
import type {
  DeadlineEntry,
  DeadlineList,
  DeadlineQueue,
} from "./deadline-queue.js";
import type { VerdictCache } from "../cache/verdict-cache.js";
import type { Greylist } from "../greylist/greylist.js";
import { clientKey } from "../cache/key.js";
import {
  hasPassed,
  withPasses,
  type CacheRecord,
  type TestName,
} from "../cache/record.js";
import type { ClientCounts } from "../intake/client-counts.js";
import type { ConnectionRates, Load } from "../intake/load.js";
import { Socket as NodeSocket } from "node:net";
import {
  withFooter,
  DummyEngine,
  type DeepTest,
  type EngineOutcome,
} from "../engine/engine.js";
import type { Metrics } from "../metrics/metrics.js";

export const REPLY_PROTOCOL_ERROR_DROP = "521 5.5.1 Protocol error\r\n";
export const REPLY_DENYLIST_DROP =
  "521 5.3.2 Service currently unavailable\r\n";
export const REPLY_PORTS_BUSY = "421 4.3.2 All server ports are busy\r\n";
export const REPLY_NO_RESOURCES = "421 4.3.2 No system resources\r\n";
export const REPLY_UNAVAILABLE = "421 4.3.2 Service currently unavailable\r\n";
export const REPLY_TOO_MANY = "421 4.7.0 Error: too many connections\r\n";
export const REPLY_SCREENING_BUSY =
  "421 4.3.2 All screening ports are busy\r\n";

/** Formats the drop reply for a client whose DNS list score reached the threshold. */
export function dnsblDropReply(address: string, listName: string): string {
  return `521 5.7.1 Service unavailable; client [${address}] blocked using ${listName}\r\n`;
}

/**
 * The initial deep tests to do and tests passed of every session, shared
 * so that a session under test allocates them only when it needs them.
 */
const NO_DEEP_TESTS: ReadonlySet<DeepTest> = new Set();
const NO_PASSES: Readonly<Partial<Record<TestName, number>>> = Object.freeze(
  {},
);

/** The words of the access list's log lines, as respectful_logging sets. */
const RESPECTFUL_WORDS = { allow: "ALLOW", deny: "DENY" };
const LEGACY_WORDS = { allow: "WHITE", deny: "BLACK" };

/** The dummy engine's RCPT reply to a client that has to come back. */
const REPLY_COME_BACK = "450 4.3.2 Service currently unavailable\r\n";
const REPLY_PROTOCOL_ERROR_ENFORCE = "550 5.5.1 Protocol error\r\n";
const REPLY_DENYLIST_ENFORCE = "550 5.3.2 Service currently unavailable\r\n";

export interface SessionContext {
  config: Config;
  addon: Addon;
  logger: Logger;
  families: AddressFamilies;
  dnsbl: DnsblChecker | undefined;
  cache: VerdictCache | undefined;
  /** Greylisting and spam traps; undefined when neither is configured. */
  greylist: Greylist | undefined;
  counts: ClientCounts;
  rates: ConnectionRates;
  load: Load;
  metrics: Metrics;
  /** The greet wait of every session under test. */
  greetWaits: DeadlineQueue;
  /** Called once, when the session no longer owns the client socket. */
  onEnded(session: Session): void;
}

export interface Endpoint {
  address: string;
  port: number;
}

type Phase = "testing" | "passing" | "engine" | "ended";

export class Session implements DeadlineEntry, GreetingEvents {
  private readonly startedAt = performance.now();
  private clientLabel: string;
  private currentPhase: Phase = "testing";
  private greeting: GreetingTest | undefined;
  private dnsblQuery: DnsblQuery | undefined;
  private handoff: Handoff | undefined;
  private teaserSent = false;
  private timer: NodeJS.Timeout | undefined;
  /** A test failed with action ignore: hand off, but not as a pass. */
  private failedIgnored = false;
  /** The client connected to a server address outside allowlist_interfaces. */
  private vetoed = false;
  private allowlistedByDns = false;
  private key: string;
  private counted = false;
  /** The cache record found at the start, if any. */
  private record: CacheRecord | undefined;
  private greetingTodo = false;
  private dnsblTodo = false;
  private deepTodo: ReadonlySet<DeepTest> = NO_DEEP_TESTS;
  /** Tests passed in this session, stored when the session concludes. */
  private passes: Readonly<Partial<Record<TestName, number>>> = NO_PASSES;
  /** The 550 reply of a test failed with action enforce. */
  private enforceReply: string | undefined;
  private engine: DummyEngine | undefined;
  /**
   * The JSON log's connection summary, written when the session ends;
   * undefined when the log has no summaries, so that it costs nothing.
   */
  private readonly summary: SessionSummary | undefined;
  deadlineAt = 0;
  deadlineList: DeadlineList | undefined = undefined;
  deadlinePrevious: DeadlineEntry | undefined = undefined;
  deadlineNext: DeadlineEntry | undefined = undefined;

  constructor(
    private readonly context: SessionContext,
    private readonly socket: NativeSocket,
    private client: Endpoint,
    private server: Endpoint,
    /** The connection starts with a PROXY protocol header. */
    private readonly proxy = false,
  ) {
    this.clientLabel = formatEndpoint(client.address, client.port);
    this.key = clientKey(client.address, context.config.clientIpv6PrefixLength);
    const logger = context.logger.forClient?.(() => this.client);
    if (logger !== undefined) this.context = { ...context, logger };
    if (context.logger.summary !== undefined) {
      this.summary = new SessionSummary();
    }
  }

  private get phase(): Phase {
    return this.currentPhase;
  }

  /** Moves to `next`, keeping the load counters right. */
  private set phase(next: Phase) {
    this.context.load.change(this.currentPhase, next);
    this.currentPhase = next;
  }

  start(): void {
    this.context.load.change(undefined, "testing");
    if (this.proxy) {
      this.readProxyHeader();
      return;
    }
    this.begin();
  }

  /**
   * Reads the load balancer's PROXY header, exactly its bytes and no more,
   * before anything is sent; then screens the real client it names. A bad
   * or missing header closes the connection without a reply, as Postfix
   * does, and counts against nobody.
   */
  private readProxyHeader(): void {
    const { config, logger } = this.context;
    const fail = (reason: string): void => {
      clearTimeout(this.timer);
      logger.warning(`haproxy read: ${reason} (from ${this.clientLabel})`);
      this.socket.unwatch();
      this.socket.close();
      this.end();
    };
    this.timer = setTimeout(
      () => fail("time limit exceeded"),
      config.upstreamProxyTimeoutMs,
    );
    const attempt = (): void => {
      this.socket.watch(READABLE, (status) => {
        if (this.phase !== "testing") return;
        let data: Buffer | null;
        try {
          data = status < 0 ? Buffer.alloc(0) : this.socket.peek(2100);
        } catch {
          data = Buffer.alloc(0);
        }
        if (data === null) return attempt();
        if (data.length === 0) return fail("EOF");
        const result = parseProxyHeader(data);
        if (result.kind === "incomplete") {
          // The bytes stay unread, so an immediate watch would fire at
          // once again: wait a little for the rest of the header.
          setTimeout(() => {
            if (this.phase === "testing") attempt();
          }, 20);
          return;
        }
        if (result.kind === "invalid") {
          return fail(`${result.reason}: ${escapeForLog(data)}`);
        }
        try {
          this.socket.read(result.length);
        } catch {
          return fail("EOF");
        }
        clearTimeout(this.timer);
        if (result.source !== undefined && result.destination !== undefined) {
          this.client = result.source;
          this.server = result.destination;
          this.clientLabel = formatEndpoint(
            this.client.address,
            this.client.port,
          );
          this.key = clientKey(
            this.client.address,
            config.clientIpv6PrefixLength,
          );
        }
        this.begin();
      });
    };
    attempt();
  }

  /** Screens the client, from the CONNECT line on. */
  private begin(): void {
    const { logger, config, families } = this.context;
    logger.info(
      `CONNECT from ${this.clientLabel} to ` +
        formatEndpoint(this.server.address, this.server.port),
    );
    const concurrent = this.context.counts.add(this.key);
    this.counted = true;

    // Limits come first, as in postscreen: a permitted client is limited
    // too, because one address (a NAT gateway, a scanner) is still one host
    // whose connections hold slots that everyone else needs.
    const limits = config.limits;
    if (
      limits.clientConnectionCountLimit > 0 &&
      concurrent > limits.clientConnectionCountLimit
    ) {
      logger.info(
        `NOQUEUE: reject: CONNECT from ${this.clientLabel}: too many connections`,
      );
      this.context.metrics.verdict("limit", "connection_count");
      this.closeWithReply(REPLY_TOO_MANY);
      return;
    }
    if (
      limits.clientConnectionRateLimit > 0 &&
      this.context.rates.add(this.key) > limits.clientConnectionRateLimit
    ) {
      logger.info(
        `NOQUEUE: reject: CONNECT from ${this.clientLabel}: too many ` +
          `connections per ${limits.clientConnectionRateTimeUnitMs / 1000}s`,
      );
      this.context.metrics.verdict("limit", "connection_rate");
      this.closeWithReply(REPLY_TOO_MANY);
      return;
    }
    if (this.context.load.waiting >= limits.postQueueLimit) {
      logger.info(
        `NOQUEUE: reject: CONNECT from ${this.clientLabel}: all server ports busy`,
      );
      this.context.metrics.verdict("limit", "post_queue");
      this.closeWithReply(REPLY_PORTS_BUSY);
      return;
    }

    const isIPv6 = this.client.address.includes(":");
    if ((isIPv6 && !families.ipv6) || (!isIPv6 && !families.ipv4)) {
      logger.warning(
        `cannot hand off ${this.clientLabel}: Postfix inet_protocols in ` +
          `${config.postfixConfigDirectory} does not include ` +
          (isIPv6 ? "ipv6" : "ipv4"),
      );
      this.closeWithReply(REPLY_UNAVAILABLE);
      return;
    }

    const words = config.respectfulLogging ? RESPECTFUL_WORDS : LEGACY_WORDS;
    let access = config.accessList.evaluate(this.client.address);
    // A client that mailed a spam trap is treated as denylisted.
    if (
      access !== "permit" &&
      this.context.greylist?.isTrapped(
        this.client.address,
        this.clientLabel,
      ) === true
    )
      access = "reject";
    if (access !== undefined) this.context.metrics.verdict("access", access);
    if (access === "permit") {
      if (this.summary !== undefined) this.summary.allowlisted = true;
      logger.info(`${words.allow}LISTED ${this.clientLabel}`);
      this.passToSmtpd();
      return;
    }
    if (access === "reject") {
      logger.info(`${words.deny}LISTED ${this.clientLabel}`);
      if (config.denylistAction === "drop") {
        this.closeWithReply(REPLY_DENYLIST_DROP, "denylist_drop");
        return;
      }
      if (config.denylistAction === "enforce") {
        this.enforceReply = REPLY_DENYLIST_ENFORCE;
      } else {
        this.failedIgnored = true;
      }
    }

    // Like postscreen, only a client's first concurrent connection reads
    // the cache.
    const cache = this.context.cache;
    if (cache === undefined || concurrent > 1) {
      this.continueAfterCache(undefined);
      return;
    }
    const local = cache.lookupLocal(this.key);
    if (local.final) {
      this.continueAfterCache(local.record);
      return;
    }
    cache.lookupShared(this.key, local.record).then(
      (record) => this.continueAfterCache(record),
      (error: unknown) => {
        logger.warning(
          `cache ${cache.name} lookup for ${this.key} failed: ` +
            (error as Error).message,
        );
        this.continueAfterCache(undefined);
      },
    );
  }

  private continueAfterCache(record: CacheRecord | undefined): void {
    if (this.phase !== "testing") return;
    const { config, logger, dnsbl } = this.context;
    this.record = record;
    const now = Date.now();
    const greetingEnabled = GreetingTest.isEnabled(config);
    const dnsblEnabled = dnsbl?.enabled === true;
    this.greetingTodo = greetingEnabled && !hasPassed(record, "pregreet", now);
    this.dnsblTodo = dnsblEnabled && !hasPassed(record, "dnsbl", now);
    const { pipelining, nonSmtp, bareNewline } = config.engine;
    if (pipelining.enabled && !hasPassed(record, "pipelining", now)) {
      this.addDeepTest("pipelining");
    }
    if (nonSmtp.enabled && !hasPassed(record, "nonSmtp", now)) {
      this.addDeepTest("nonSmtp");
    }
    if (bareNewline.enabled && !hasPassed(record, "bareNewline", now)) {
      this.addDeepTest("bareNewline");
    }

    const anyEnabled =
      greetingEnabled ||
      dnsblEnabled ||
      pipelining.enabled ||
      nonSmtp.enabled ||
      bareNewline.enabled;
    if (
      record !== undefined &&
      anyEnabled &&
      !this.greetingTodo &&
      !this.dnsblTodo &&
      this.deepTodo.size === 0 &&
      !this.failedIgnored &&
      this.enforceReply === undefined
    ) {
      logger.info(`PASS OLD ${this.clientLabel}`);
      this.context.metrics.verdict("cache", "pass");
      this.passToSmtpd();
      return;
    }

    const words = config.respectfulLogging ? "ALLOW" : "WHITE";
    if (!config.allowlistInterfaces.allows(this.server.address)) {
      logger.info(`${words}LIST VETO ${this.clientLabel}`);
      this.vetoed = true;
    }

    // This session is under test already, so the others number one less.
    if (this.context.load.underTest - 1 >= config.limits.preQueueLimit) {
      // The source writes this line without NOQUEUE; log parsers rely on it.
      logger.info(
        `reject: connect from ${this.clientLabel}: all screening ports busy`,
      );
      this.context.metrics.verdict("limit", "pre_queue");
      this.closeWithReply(REPLY_SCREENING_BUSY);
      return;
    }

    this.startEarlyTests();
  }

  /**
   * Ends the session for a shutdown: a client still under test gets 421; a
   * hand-off whose descriptor is sent stops waiting for smtpd. A hand-off
   * still connecting finishes on its own, within its connect deadline.
   */
  shutdown(): void {
    if (this.phase === "testing") {
      this.stopEarlyTests();
      // A stuttered teaser may be mid-line; the 421 needs a line of its own.
      this.greeting?.finishLine();
      this.closeWithReply(REPLY_UNAVAILABLE);
    } else if (this.phase === "engine") {
      this.engine?.stop(REPLY_UNAVAILABLE);
    } else if (this.phase === "passing" && this.handoff?.sent === true) {
      this.handoff.finishNow();
    }
  }

  /** True when the session no longer needs time to end cleanly. */
  get settled(): boolean {
    return (
      this.phase === "ended" ||
      (this.phase === "passing" && this.handoff?.sent === true)
    );
  }

  /** Seconds since the connection was accepted. */
  elapsedSeconds(): number {
    return (performance.now() - this.startedAt) / 1000;
  }

  private startEarlyTests(): void {
    const { config, logger, dnsbl } = this.context;
    if (!this.greetingTodo && !this.dnsblTodo) {
      this.conclude();
      return;
    }

    if (this.dnsblTodo && dnsbl !== undefined) {
      this.dnsblQuery = dnsbl.start(this.client.address);
    }
    if (this.greetingTodo) {
      this.greeting = new GreetingTest(
        this.socket,
        config,
        logger,
        this.clientLabel,
        this,
      );
      this.teaserSent = this.greeting.sendsTeaser;
      this.greeting.start();
    }
    this.context.greetWaits.add(this, config.greetWaitMs);
    // Registered last: a query with nothing to ask completes at once, and
    // the greeting test must exist by then.
    this.dnsblQuery?.onComplete(() => this.onDnsblComplete());
  }

  /** Ends the greet wait. */
  onDeadline(): void {
    this.endEarlyTests();
  }

  private stopEarlyTests(): void {
    this.context.greetWaits.remove(this);
    this.greeting?.stop();
    this.dnsblQuery?.cancel();
  }

  onPregreet(): void {
    if (this.phase !== "testing") return;
    this.context.metrics.verdict("pregreet", "fail");
    const action = this.context.config.greetAction;
    if (action === "drop") {
      this.stopEarlyTests();
      this.greeting?.finishLine();
      this.closeWithReply(REPLY_PROTOCOL_ERROR_DROP);
    } else if (action === "enforce") {
      this.enforceReply ??= REPLY_PROTOCOL_ERROR_ENFORCE;
    }
    // Otherwise the wait goes on so that the DNS lists can answer.
  }

  onHangup(): void {
    if (this.phase !== "testing") return;
    this.stopEarlyTests();
    this.summary?.act("hangup");
    this.context.logger.info(
      `HANGUP after ${formatDelay(this.elapsedSeconds())} from ` +
        `${this.clientLabel} in tests before SMTP handshake`,
    );
    this.closeWithReply(undefined);
  }

  private onDnsblComplete(): void {
    if (this.phase !== "testing") return;
    const threshold = this.context.config.dnsbl.allowlistThreshold;
    const score = this.dnsblQuery?.current().score ?? 0;
    if (threshold < 0 && score <= threshold) {
      // An allowlist score skips the other tests: hand off at once.
      this.allowlistedByDns = true;
      this.endEarlyTests();
    } else if (!this.greetingTodo) {
      this.endEarlyTests();
    }
  }

  /** Collects the early test results at the end of greet_wait. */
  private endEarlyTests(): void {
    if (this.phase !== "testing") return;
    this.stopEarlyTests();
    const { config, logger } = this.context;
    const now = Date.now();

    let dnsblTtlMs: number | undefined;
    if (this.dnsblQuery !== undefined) {
      const result = this.dnsblQuery.current();
      const { threshold } = config.dnsbl;
      this.context.metrics.dnsbl(result, threshold, this.allowlistedByDns);
      if (result.score >= config.dnsbl.threshold) {
        logger.info(`DNSBL rank ${result.score} for ${this.clientLabel}`);
        const listName = result.listName ?? "unknown";
        if (config.dnsbl.action === "drop") {
          this.greeting?.finishLine();
          this.closeWithReply(
            dnsblDropReply(this.client.address, listName),
            "dnsbl_drop",
          );
          return;
        }
        if (config.dnsbl.action === "enforce") {
          this.enforceReply ??= dnsblDropReply(
            this.client.address,
            listName,
          ).replace(/^521/, "550");
        } else {
          // Action ignore: hand off, and test again next time.
          this.failedIgnored = true;
        }
      } else if (result.complete || this.allowlistedByDns) {
        // A failed lookup is no pass: the list is asked again next time.
        dnsblTtlMs = result.ttlSeconds * 1000;
        this.addPass("dnsbl", now + dnsblTtlMs);
      }
    }

    if (this.greeting?.pregreeted === true) {
      // Action ignore or enforce (drop ended the session already).
      if (config.greetAction === "ignore") this.failedIgnored = true;
    } else if (this.greetingTodo) {
      if (!this.allowlistedByDns)
        this.context.metrics.verdict("pregreet", "pass");
      // An allowlist score replaces the greeting test, for as long as the
      // DNS answer lives.
      const ttl =
        this.allowlistedByDns && dnsblTtlMs !== undefined
          ? dnsblTtlMs
          : config.cache.greetTtlMs;
      this.addPass("pregreet", now + ttl);
    }

    if (this.allowlistedByDns) {
      // An allowlisted client skips the deep tests too.
      this.deepTodo = NO_DEEP_TESTS;
    }
    if (this.enforceReply !== undefined) {
      // As postscreen does, a failed client goes through every enabled
      // deep test, so that its log shows all it did wrong.
      const engine = config.engine;
      if (engine.pipelining.enabled) this.addDeepTest("pipelining");
      if (engine.nonSmtp.enabled) this.addDeepTest("nonSmtp");
      if (engine.bareNewline.enabled) this.addDeepTest("bareNewline");
    }
    this.conclude();
  }

  /** Adds a deep test to do, in a new set: the first is shared. */
  private addDeepTest(test: DeepTest): void {
    this.deepTodo = new Set([...this.deepTodo, test]);
  }

  /** Records a test passed until `until` (ms since the epoch). */
  private addPass(test: TestName, until: number): void {
    this.passes = { ...this.passes, [test]: until };
  }

  /** True when every test to do in this session has passed. */
  private allPassed(): boolean {
    if (this.failedIgnored || this.vetoed || this.enforceReply !== undefined) {
      return false;
    }
    return (
      (!this.greetingTodo || this.passes.pregreet !== undefined) &&
      (!this.dnsblTodo || this.passes.dnsbl !== undefined) &&
      [...this.deepTodo].every((test) => this.passes[test] !== undefined)
    );
  }

  /** Logs PASS NEW or PASS OLD when all passed, and updates the cache. */
  private recordVerdict(): void {
    const passed = this.allPassed();
    if (passed) {
      const age = this.record === undefined ? "NEW" : "OLD";
      this.context.logger.info(`PASS ${age} ${this.clientLabel}`);
    }
    // A failed test, even with action ignore, records nothing as passed.
    const failed =
      this.failedIgnored || this.vetoed || this.enforceReply !== undefined;
    if (!failed && Object.keys(this.passes).length > 0) {
      this.context.cache?.store(
        this.key,
        withPasses(this.record, this.passes, Date.now()),
      );
    }
  }

  private conclude(): void {
    this.greeting?.finishLine();
    const noForward = this.vetoed || this.enforceReply !== undefined;
    if (noForward || this.deepTodo.size > 0) {
      this.startEngine({
        rcptReply: this.enforceReply ?? REPLY_COME_BACK,
      });
      return;
    }
    this.recordVerdict();
    this.passToSmtpd();
  }

  /** The shortest TTL, for a deep test failed with action ignore. */
  private minTtlMs(): number {
    const { config } = this.context;
    return Math.min(
      config.cache.greetTtlMs,
      config.dnsbl.minTtlSeconds * 1000,
      config.engine.pipelining.ttlMs,
      config.engine.nonSmtp.ttlMs,
      config.engine.bareNewline.ttlMs,
    );
  }

  /**
   * Gives the client to the dummy SMTP engine: the addon lets go of the
   * descriptor and a Node socket adopts it in the same tick, so the bytes
   * the client sent early are still unread and become the first input.
   */
  private startEngine(options: {
    rcptReply: string;
    firstCommandReply?: string;
  }): void {
    const { config, logger } = this.context;
    this.phase = "engine";
    this.summary?.act("engine");
    this.summary?.replied(options.firstCommandReply ?? options.rcptReply);
    const fd = this.socket.release();
    const socket = new NodeSocket({ fd, readable: true, writable: true });
    this.engine = new DummyEngine(
      socket,
      {
        config,
        logger,
        metrics: this.context.metrics,
        clientAddress: this.client.address,
        clientLabel: this.clientLabel,
        // postscreen greets again unless the pregreet is enforced.
        greet: !(
          this.greeting?.pregreeted === true && config.greetAction === "enforce"
        ),
        rcptReply: options.rcptReply,
        todo:
          options.firstCommandReply === undefined ? this.deepTodo : new Set(),
        ...(options.firstCommandReply === undefined
          ? {}
          : { firstCommandReply: options.firstCommandReply }),
        minTtlMs: this.minTtlMs(),
        onRecipient: this.context.greylist?.engineHook(
          this.client.address,
          this.client.port,
        ),
      },
      (outcome) =>
        this.onEngineDone(outcome, options.firstCommandReply !== undefined),
    );
    this.engine.start();
  }

  private onEngineDone(outcome: EngineOutcome, handoffFailed: boolean): void {
    if (!handoffFailed) {
      this.passes = { ...this.passes, ...outcome.passes };
      if (outcome.failed) this.enforceReply ??= REPLY_PROTOCOL_ERROR_ENFORCE;
      this.recordVerdict();
    }
    this.context.logger.info(`DISCONNECT ${this.clientLabel}`);
    this.end();
  }

  private passToSmtpd(): void {
    const { config, addon, logger } = this.context;
    this.phase = "passing";
    this.summary?.act("handoff");
    this.context.greylist?.remember(this.client.address, {
      dnsblScore: this.dnsblQuery?.current().score,
      pregreeted: this.greeting?.pregreeted === true,
      dnsAllowlisted: this.allowlistedByDns,
    });
    let attributes: Buffer;
    try {
      attributes = encodeAttributes({
        clientAddress: this.client.address,
        clientPort: this.client.port,
        serverAddress: this.server.address,
        serverPort: this.server.port,
      });
    } catch (error) {
      this.context.metrics.handoffFailed("attributes");
      this.summary?.handedOff("failed", (error as Error).message);
      this.context.logger.warning(
        `cannot pass connection to service ${config.smtpdServiceLabel}: ` +
          (error as Error).message,
      );
      this.answerAfterGreeting(REPLY_NO_RESOURCES, REPLY_NO_RESOURCES);
      return;
    }
    this.handoff = new Handoff(
      this.socket,
      attributes,
      {
        addon,
        socketPath: choosePassSocket(config, logger, this.clientLabel, () => ({
          address: this.client.address,
          dnsAllowlisted: this.allowlistedByDns,
          dnsblScore: this.dnsblQuery?.current().score ?? 0,
        })),
        connectTimeoutMs: 1000,
        closeTimeoutMs: 100_000,
      },
      {
        onSent: (failure) => this.onHandoffSent(failure),
        onFinished: (timedOut) => this.onHandoffFinished(timedOut),
        onUnread: () => {
          this.context.metrics.handoffFailed("unread");
          this.summary?.handedOff("failed", "attributes unread");
          this.context.logger.warning(
            `cannot pass connection to service ${config.smtpdServiceLabel}: ` +
              "the connection was reset with the attributes unread",
          );
          this.answerAfterGreeting(REPLY_NO_RESOURCES, REPLY_NO_RESOURCES);
        },
      },
    );
  }

  private onHandoffSent(failure: PassFailure | undefined): void {
    if (failure === undefined) {
      this.summary?.handedOff("ok");
      this.sentAt = performance.now();
      // smtpd has the client now, and limits it itself: it no longer counts
      // as this client's connection in progress here. Waiting for smtpd to
      // close the channel would race with the client's next connection.
      this.releaseCount();
      return;
    }
    this.context.metrics.handoffFailed(failure.stage);
    const service = this.context.config.smtpdServiceLabel;
    const reason = describeError(failure.error);
    this.summary?.handedOff("failed", `${failure.stage}: ${reason}`);
    if (failure.stage === "connect") {
      this.context.logger.warning(
        `cannot connect to service ${service}: ${reason}`,
      );
      this.answerAfterGreeting(REPLY_PORTS_BUSY, REPLY_NO_RESOURCES);
    } else {
      this.context.logger.warning(
        `cannot pass connection to service ${service}: ${reason}`,
      );
      this.answerAfterGreeting(REPLY_NO_RESOURCES, REPLY_NO_RESOURCES);
    }
  }

  private onHandoffFinished(timedOut: boolean): void {
    const { logger, config, load } = this.context;
    if (timedOut) {
      this.context.metrics.handoffFailed("timeout");
      this.summary?.handedOff("timeout");
      logger.warning(
        `timeout sending connection to service ${config.smtpdServiceLabel}`,
      );
    } else {
      // The time smtpd takes to close the pass channel is the load signal:
      // every smtpd busy, or master throttling the service.
      load.recordHandoffTime(performance.now() - this.sentAt);
      this.context.metrics.handoffFinished(performance.now() - this.sentAt);
    }
    this.end();
  }

  /**
   * Replies to a client that cannot be handed off, as postscreen does:
   * before any teaser, `immediateReply` at once; after a "220-" teaser, the
   * dummy engine finishes the greeting and answers the first command with
   * `afterCommandReply`, so that the client reads a well-formed dialogue.
   */
  private answerAfterGreeting(
    immediateReply: string,
    afterCommandReply: string,
  ): void {
    if (!this.teaserSent) {
      this.closeWithReply(immediateReply);
      return;
    }
    this.startEngine({
      rcptReply: afterCommandReply,
      firstCommandReply: afterCommandReply,
    });
  }

  private send(text: string): void {
    const footer = this.context.config.engine.rejectFooter;
    try {
      this.socket.write(Buffer.from(withFooter(text, footer), "latin1"));
    } catch {
      // The client is gone; close() below still releases the descriptor.
    }
  }

  /** Sends an optional final reply, discards pending input and closes. */
  private closeWithReply(
    reply: string | undefined,
    outcome?: "dnsbl_drop" | "denylist_drop",
  ): void {
    if (this.phase === "ended") return;
    this.summary?.closed(reply, outcome !== undefined);
    const tarpit = this.context.config.engine.tarpit;
    if (
      reply !== undefined &&
      outcome !== undefined &&
      tarpit.outcomes.includes(outcome) &&
      this.context.load.tarpitted < tarpit.connectionLimit
    ) {
      this.tarpit(reply);
      return;
    }
    if (reply !== undefined) this.send(reply);
    try {
      this.socket.discard();
    } catch {
      // Nothing left to discard on a dead socket.
    }
    this.socket.close();
    this.context.logger.info(`DISCONNECT ${this.clientLabel}`);
    this.end();
  }

  /**
   * Sends `reply` a byte per tarpit_delay, as spamd does, so that a bot
   * spends its time here; then closes. The number of such connections and
   * the time each may take are capped, so a flood cannot hold every
   * descriptor: past the time limit the rest of the reply goes at once.
   */
  private tarpit(reply: string): void {
    const { load, config } = this.context;
    const { delayMs, timeLimitMs } = config.engine.tarpit;
    load.tarpitted++;
    this.context.metrics.tarpitStarted();
    this.tarpitting = true;
    const deadline = Date.now() + timeLimitMs;
    let offset = 0;
    const finish = (): void => {
      if (offset < reply.length) this.send(reply.slice(offset));
      try {
        this.socket.discard();
      } catch {
        // Nothing left to discard on a dead socket.
      }
      this.socket.close();
      this.context.logger.info(`DISCONNECT ${this.clientLabel}`);
      this.end();
    };
    const step = (): void => {
      if (this.phase === "ended") return;
      if (offset >= reply.length || Date.now() >= deadline) return finish();
      try {
        this.socket.write(
          Buffer.from(reply.slice(offset, offset + 1), "latin1"),
        );
      } catch {
        // The client left: close at once.
        offset = reply.length;
        return finish();
      }
      offset++;
      this.timer = setTimeout(step, delayMs);
    };
    step();
  }

  /** When the hand-off was sent (performance.now() ms). */
  private sentAt = 0;

  /** True while the tarpit sends a reply; end() gives the slot back. */
  private tarpitting = false;

  private releaseCount(): void {
    if (this.counted) {
      this.counted = false;
      this.context.counts.remove(this.key);
    }
  }

  private end(): void {
    if (this.phase === "ended") return;
    this.phase = "ended";
    clearTimeout(this.timer);
    this.context.greetWaits.remove(this);
    if (this.tarpitting) {
      this.tarpitting = false;
      this.context.load.tarpitted--;
    }
    this.releaseCount();
    if (this.summary !== undefined) {
      this.context.logger.summary?.(this.summary.finish(this.outcome()));
    }
    this.context.onEnded(this);
  }

  /** Collects the test results and flags for the connection summary. */
  private outcome(): SessionOutcome {
    const { config, dnsbl } = this.context;
    const now = Date.now();
    const score = this.dnsblQuery?.current().score;
    // NOTE: the engine does not say which deep test failed, so a deep test
    // failed with enforce or drop shows as "incomplete".
    const result = (test: TestName, enabled: boolean, failed = false) =>
      testResult({
        enabled,
        cached: hasPassed(this.record, test, now),
        passed: this.passes[test] !== undefined,
        failed,
      });
    return {
      client: this.client,
      listener: this.server,
      tests: {
        pregreet: result(
          "pregreet",
          GreetingTest.isEnabled(config),
          this.greeting?.pregreeted === true,
        ),
        dnsbl: result(
          "dnsbl",
          dnsbl?.enabled === true,
          score !== undefined && score >= config.dnsbl.threshold,
        ),
        pipelining: result("pipelining", config.engine.pipelining.enabled),
        non_smtp_command: result("nonSmtp", config.engine.nonSmtp.enabled),
        bare_newline: result("bareNewline", config.engine.bareNewline.enabled),
      },
      dnsblScore: score ?? null,
      allPassed: this.allPassed(),
      failed: this.failedIgnored || this.enforceReply !== undefined,
      allowlistedByDns: this.allowlistedByDns,
      vetoed: this.vetoed,
    };
  }
}

/** Formats a system error as Postfix's %m would: the strerror text. */
export function describeError(error: NodeJS.ErrnoException): string {
  const match = /: (.+?)(?: \(.*\))?$/.exec(error.message);
  return match?.[1] ?? error.message;
}
