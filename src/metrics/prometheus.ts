// Metrics kept with prom-client in a registry of their own. Counters and
// histograms change when screening reports an event. Gauges are read from
// the daemon's state when /metrics is scraped, so they cost nothing
// between scrapes.
import {
  collectDefaultMetrics,
  Counter,
  Gauge,
  Histogram,
  Registry,
} from "prom-client";
import type { Logger } from "../log/logger.js";
import type { DnsblScore } from "../dnsbl/checker.js";
import {
  CACHE_RESULTS,
  dnsblVerdict,
  HANDOFF_FAILURES,
  VERDICT_RESULTS,
  type CacheResult,
  type CacheStore,
  type HandoffFailure,
  type Metrics,
  type StateSource,
  type VerdictResult,
  type VerdictTest,
} from "./metrics.js";

/** Phases of a session, as the queue label of postwarden_queue_depth. */
const QUEUES = {
  testing: "greeting",
  engine: "engine",
  passing: "handoff",
} as const;

/** Up to 2.5 s; slower queries, up to dnsbl_timeout, fall in +Inf. */
const DNSBL_BUCKETS = [0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];
/** From 1 ms to 10 s: seconds mean every smtpd process was busy. */
const HANDOFF_BUCKETS = [
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10,
];

export class PrometheusMetrics implements Metrics {
  readonly registry = new Registry();
  private state: StateSource | undefined;

  private readonly connections = new Counter({
    name: "postwarden_connections_total",
    help: "Connections accepted, by listen address",
    labelNames: ["listener"] as const,
    registers: [this.registry],
  });
  private readonly verdicts = new Counter({
    name: "postwarden_verdicts_total",
    help: "Test verdicts, by test and result",
    labelNames: ["test", "result"] as const,
    registers: [this.registry],
  });
  private readonly dnsblDuration = new Histogram({
    name: "postwarden_dnsbl_query_duration_seconds",
    help: "Time for one DNS list query to answer or fail, by list",
    labelNames: ["list"] as const,
    buckets: DNSBL_BUCKETS,
    registers: [this.registry],
  });
  private readonly dnsblErrors = new Counter({
    name: "postwarden_dnsbl_query_errors_total",
    help:
      "DNS list queries that failed (SERVFAIL, REFUSED, timeout) or " +
      "returned only error answers, by list and error",
    labelNames: ["list", "error"] as const,
    registers: [this.registry],
  });
  private readonly cacheLookups = new Counter({
    name: "postwarden_cache_lookups_total",
    help: "Verdict cache lookups, by store (local or shared Redis) and result",
    labelNames: ["store", "result"] as const,
    registers: [this.registry],
  });
  private readonly handoffDuration = new Histogram({
    name: "postwarden_handoff_duration_seconds",
    help:
      "Time from sending a client's descriptor until smtpd closed the " +
      "pass channel, that is until an smtpd process took the client",
    buckets: HANDOFF_BUCKETS,
    registers: [this.registry],
  });
  private readonly handoffFailures = new Counter({
    name: "postwarden_handoff_failures_total",
    help: "Hand-offs to smtpd that failed, by reason",
    labelNames: ["reason"] as const,
    registers: [this.registry],
  });
  private readonly tarpits = new Counter({
    name: "postwarden_tarpitted_connections_total",
    help: "Connections whose reply the tarpit sent slowly",
    registers: [this.registry],
  });

  constructor(logger: Logger) {
    for (const [test, results] of Object.entries(VERDICT_RESULTS)) {
      for (const result of results) this.verdicts.inc({ test, result }, 0);
    }
    for (const [store, results] of Object.entries(CACHE_RESULTS)) {
      for (const result of results) this.cacheLookups.inc({ store, result }, 0);
    }
    for (const reason of HANDOFF_FAILURES) {
      this.handoffFailures.inc({ reason }, 0);
    }
    this.defineGauges(logger);
    collectDefaultMetrics({ register: this.registry });
  }

  private defineGauges(logger: Logger): void {
    const read = <T>(get: (state: StateSource) => T, fallback: T): T =>
      this.state === undefined ? fallback : get(this.state);
    const registers = [this.registry];
    new Gauge({
      name: "postwarden_queue_depth",
      help:
        "Sessions by what they wait for: greeting (PROXY header, cache " +
        "lookup, greeting wait and DNS lists, and tarpitted replies), " +
        "engine (dummy SMTP engine), handoff (smtpd has not taken the " +
        "client yet)",
      labelNames: ["queue"] as const,
      registers,
      collect() {
        const phases = read((state) => state.phases(), undefined);
        for (const [phase, queue] of Object.entries(QUEUES)) {
          const depth = phases?.[phase as keyof typeof QUEUES] ?? 0;
          this.set({ queue }, depth);
        }
      },
    });
    new Gauge({
      name: "postwarden_active_connections",
      help: "Connections in progress: under test, being answered or handed off",
      registers,
      collect() {
        this.set(read((state) => state.activeConnections(), 0));
      },
    });
    new Gauge({
      name: "postwarden_stress",
      help: "1 while stress mode is on (90% of pre_queue_limit), else 0",
      registers,
      collect() {
        this.set(read((state) => (state.stress() ? 1 : 0), 0));
      },
    });
    new Gauge({
      name: "postwarden_tarpit_active_connections",
      help: "Connections the tarpit is answering now",
      registers,
      collect() {
        this.set(read((state) => state.tarpitted(), 0));
      },
    });
    new Gauge({
      name: "postwarden_dnsbl_healthy",
      help:
        "1 while a DNS list passes its health check for the address " +
        "family, 0 while it is disabled",
      labelNames: ["list", "family"] as const,
      registers,
      collect() {
        for (const { list, family, healthy } of read(
          (state) => state.dnsblHealth(),
          [],
        )) {
          this.set({ list, family: `ipv${family}` }, healthy ? 1 : 0);
        }
      },
    });
    new Counter({
      name: "postwarden_greylist_decisions_total",
      help:
        "Greylist decisions: defer (a 4xx for a new or early triplet) and " +
        "pass (a retry after greylist_min_delay, or a key already passed)",
      labelNames: ["result"] as const,
      registers,
      collect() {
        const counts = read((state) => state.greylist(), undefined);
        this.reset();
        this.inc({ result: "defer" }, counts?.deferred ?? 0);
        this.inc({ result: "pass" }, counts?.passed ?? 0);
      },
    });
    new Counter({
      name: "postwarden_trap_hits_total",
      help: "Recipients in trap_recipients seen from a client",
      registers,
      collect() {
        this.reset();
        this.inc(read((state) => state.greylist()?.trapHits ?? 0, 0));
      },
    });
    new Counter({
      name: "postwarden_trapped_connections_total",
      help: "Connections refused because their client had hit a spam trap",
      registers,
      collect() {
        this.reset();
        this.inc(read((state) => state.greylist()?.trappedConnections ?? 0, 0));
      },
    });
    new Counter({
      name: "postwarden_log_dropped_lines_total",
      help: "Log lines dropped because the log destination could not take them",
      registers,
      collect() {
        // A running total kept by the logger; a logger without it reads 0.
        const dropped = (logger as { droppedLines?: number }).droppedLines ?? 0;
        this.reset();
        this.inc(dropped);
      },
    });
  }

  connectionAccepted(listener: string): void {
    this.connections.inc({ listener });
  }

  verdict<T extends VerdictTest>(test: T, result: VerdictResult<T>): void {
    this.verdicts.inc({ test, result });
  }

  dnsblQuery(list: string, seconds: number, error: string | undefined): void {
    this.dnsblDuration.observe({ list }, seconds);
    if (error !== undefined) this.dnsblErrors.inc({ list, error });
  }

  cacheLookup<S extends CacheStore>(store: S, result: CacheResult<S>): void {
    this.cacheLookups.inc({ store, result });
  }

  dnsbl(score: DnsblScore, threshold: number, allowlisted: boolean): void {
    const result = dnsblVerdict(score, threshold, allowlisted);
    this.verdicts.inc({ test: "dnsbl", result });
  }

  handoffFinished(milliseconds: number): void {
    this.handoffDuration.observe(milliseconds / 1000);
  }

  handoffFailed(reason: HandoffFailure): void {
    this.handoffFailures.inc({ reason });
  }

  tarpitStarted(): void {
    this.tarpits.inc();
  }

  attachState(source: StateSource): void {
    this.state = source;
    // Every listener and list shows up from the first scrape on.
    for (const listener of source.listeners()) {
      this.connections.inc({ listener }, 0);
    }
    for (const { list } of source.dnsblHealth()) {
      this.dnsblDuration.zero({ list });
    }
  }

  /** Returns the exposition text for a scrape. */
  scrape(): Promise<string> {
    return this.registry.metrics();
  }
}
