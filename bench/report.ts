// Writes BENCHMARKS.md and its SVG chart from one run's measurements.
// Every number in them comes from the results object; the text around the
// numbers states only what those numbers show.
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { format } from "prettier";
import {
  roundRatios,
  spread,
  valuesOf,
  type BenchResults,
  type HoldSample,
  type RateSample,
  type Spread,
} from "./results.js";

/** "median (min–max)" with `digits` decimals, or "–" without data. */
function show(value: Spread | undefined, digits = 0): string {
  if (value === undefined) return "–";
  const f = (x: number): string => x.toFixed(digits);
  if (value.count === 1) return f(value.median);
  return `${f(value.median)} (${f(value.min)}–${f(value.max)})`;
}

function table(header: string[], rows: string[][]): string {
  const line = (cells: string[]): string => `| ${cells.join(" | ")} |`;
  return [
    line(header),
    line(header.map(() => "---")),
    ...rows.map((row) => line(row)),
  ].join("\n");
}

/** Settled RSS per held connection: the figure the target compares. */
function perConnectionKiB(sample: HoldSample): number {
  return (
    (sample.settledHeldRssKiB - sample.settledIdleRssKiB) /
    Math.max(1, sample.held)
  );
}

/**
 * RSS per held connection 1 s after the last one opened, above the
 * settled idle RSS: what the connections keep, and the garbage from
 * opening them that has not been collected yet.
 */
function earlyPerConnectionKiB(sample: HoldSample): number {
  return (
    (sample.heldRssKiB - sample.settledIdleRssKiB) / Math.max(1, sample.held)
  );
}

/** Per-round ratios of hold samples of two targets at given sizes. */
function holdRatios(
  samples: HoldSample[],
  numerator: [string, number],
  denominator: [string, number],
): number[] {
  const ratios: number[] = [];
  for (const round of new Set(samples.map((sample) => sample.round))) {
    const find = ([target, connections]: [string, number]) =>
      samples.find(
        (sample) =>
          sample.round === round &&
          sample.target === target &&
          sample.connections === connections,
      );
    const top = find(numerator);
    const bottom = find(denominator);
    if (top === undefined || bottom === undefined) continue;
    const b = perConnectionKiB(bottom);
    if (b > 0) ratios.push(perConnectionKiB(top) / b);
  }
  return ratios;
}

const PATHS: { name: string; postscreen: string; postwardens: string[] }[] = [
  {
    name: "allowlisted",
    postscreen: "ps-allow",
    postwardens: ["pw-allow", "pw-allow-null"],
  },
  {
    name: "PASS OLD",
    postscreen: "ps-old",
    postwardens: ["pw-old", "pw-old-null"],
  },
];

function verdictText(met: boolean | undefined): string {
  if (met === undefined) return "not measured";
  return met ? "met" : "**missed**";
}

interface Verdict {
  target: string;
  met: boolean | undefined;
  detail: string;
}

class Report {
  private readonly targets: string[];

  constructor(private readonly results: BenchResults) {
    this.targets = Object.keys(results.labels).filter(
      (id) => !id.startsWith("profile-") && !id.endsWith("-hold"),
    );
  }

  private label(id: string): string {
    return this.results.labels[id] ?? id;
  }

  private rateTable(key: string, samples: RateSample[]): string {
    const rows = this.targets
      .filter((id) => samples.some((sample) => sample.target === id))
      .map((id) => [
        this.label(id),
        show(spread(valuesOf(samples, id, (s) => s.rate))),
        id === "direct"
          ? "1"
          : show(spread(roundRatios(samples, id, "direct", (s) => s.rate)), 2),
        show(spread(valuesOf(samples, id, (s) => s.frontUs)), 1),
        show(spread(valuesOf(samples, id, (s) => s.serverUs)), 1),
        show(spread(valuesOf(samples, id, (s) => s.postlogdUs)), 1),
      ]);
    return (
      `### ${key}\n\n` +
      table(
        [
          "target",
          "sessions/s",
          "ratio to direct smtpd",
          "front CPU µs/session",
          "server side CPU µs/session",
          "postlogd µs/session",
        ],
        rows,
      )
    );
  }

  /** postwarden against postscreen on the same path, round by round. */
  private comparisonTable(): string {
    const rows: string[][] = [];
    for (const [key, samples] of Object.entries(this.results.rate)) {
      for (const path of PATHS) {
        for (const postwarden of path.postwardens) {
          rows.push([
            key,
            this.label(postwarden),
            show(
              spread(
                roundRatios(
                  samples,
                  postwarden,
                  path.postscreen,
                  (s) => s.rate,
                ),
              ),
              2,
            ),
            show(
              spread(
                roundRatios(
                  samples,
                  postwarden,
                  path.postscreen,
                  (s) => s.frontUs,
                ),
              ),
              2,
            ),
            show(
              spread(
                roundRatios(
                  samples,
                  postwarden,
                  path.postscreen,
                  (s) => s.serverUs,
                ),
              ),
              2,
            ),
          ]);
        }
      }
    }
    return table(
      [
        "test",
        "postwarden",
        "sessions/s ratio",
        "front CPU ratio",
        "server side CPU ratio",
      ],
      rows,
    );
  }

  private verdicts(): Verdict[] {
    const verdicts: Verdict[] = [];
    const rate = this.results.rate;

    for (const path of PATHS) {
      const postwarden = path.postwardens[0] ?? "";
      const ratios = Object.entries(rate).map(([key, samples]) => ({
        key,
        ratio: spread(
          roundRatios(samples, postwarden, path.postscreen, (s) => s.frontUs),
        ),
      }));
      const worst = ratios.reduce<(typeof ratios)[number] | undefined>(
        (a, b) =>
          a === undefined || (b.ratio?.median ?? 0) > (a.ratio?.median ?? 0)
            ? b
            : a,
        undefined,
      );
      verdicts.push({
        target: `Front CPU per session ≤ postscreen's (${path.name}, logging to a file)`,
        met: ratios.every((entry) => (entry.ratio?.median ?? Infinity) <= 1),
        detail:
          ratios
            .map(
              (entry) => `${entry.key}: ${show(entry.ratio, 2)} × postscreen's`,
            )
            .join("; ") +
          (worst === undefined
            ? ""
            : `. Worst: ${worst.key}, ${show(worst.ratio, 2)}.`),
      });
    }

    for (const path of PATHS) {
      const postwarden = path.postwardens[0] ?? "";
      const keys = Object.keys(rate).filter((key) => key.endsWith("C=100"));
      const ratios = keys.map((key) => ({
        key,
        ratio: spread(
          roundRatios(
            rate[key] ?? [],
            postwarden,
            path.postscreen,
            (s) => s.rate,
          ),
        ),
      }));
      verdicts.push({
        target: `Sessions/s ≥ postscreen's at C=100 (${path.name}, logging to a file)`,
        met: ratios.every((entry) => (entry.ratio?.median ?? 0) >= 1),
        detail: ratios
          .map(
            (entry) => `${entry.key}: ${show(entry.ratio, 2)} × postscreen's`,
          )
          .join("; "),
      });
    }

    const hold = this.results.hold;
    const pwCounts = [
      ...new Set(
        hold.filter((s) => s.target === "pw-hold").map((s) => s.connections),
      ),
    ].sort((a, b) => a - b);
    const psCounts = [
      ...new Set(
        hold.filter((s) => s.target === "ps-hold").map((s) => s.connections),
      ),
    ].sort((a, b) => a - b);
    const pairs: [number, number][] = [];
    if (pwCounts[0] !== undefined && psCounts[0] !== undefined) {
      pairs.push([pwCounts[0], psCounts[0]]);
    }
    const pwLast = pwCounts[pwCounts.length - 1];
    const psLast = psCounts[psCounts.length - 1];
    if (pwLast !== undefined && psLast !== undefined && pwCounts.length > 1) {
      pairs.push([pwLast, psLast]);
    }
    const memoryRatios = pairs.map(([pw, ps]) => ({
      pw,
      ps,
      ratio: spread(holdRatios(hold, ["pw-hold", pw], ["ps-hold", ps])),
    }));
    verdicts.push({
      target: "RSS per held connection ≤ postscreen's (settled)",
      met:
        memoryRatios.length > 0 &&
        memoryRatios.every((entry) => (entry.ratio?.median ?? Infinity) <= 1),
      detail: memoryRatios
        .map(
          (entry) =>
            `postwarden at K=${entry.pw} against postscreen at K=${entry.ps}: ` +
            `${show(entry.ratio, 2)} × postscreen's`,
        )
        .join("; "),
    });

    const most = pwLast ?? 0;
    const largest = hold.filter(
      (s) => s.target === "pw-hold" && s.connections === most,
    );
    const clean = largest.every(
      (s) => s.held === s.connections && s.failed === 0 && s.closedEarly === 0,
    );
    const descriptors = spread(largest.map((s) => s.heldDescriptors));
    verdicts.push({
      target: `${most.toLocaleString("en")} held connections with no error`,
      met: most >= 10_000 ? largest.length > 0 && clean : undefined,
      detail:
        `${largest.filter((s) => s.held === s.connections).length} of ` +
        `${largest.length} rounds held all ${most} connections; ` +
        `${largest.reduce((n, s) => n + s.failed, 0)} connections failed ` +
        `and ${largest.reduce((n, s) => n + s.closedEarly, 0)} were ` +
        `closed by the server in all rounds; ${show(descriptors)} ` +
        "descriptors open in postwarden while holding" +
        (most < 10_000 ? " (smoke size; the target needs 10,000)" : ""),
    });
    return verdicts;
  }

  private holdTable(): string {
    const hold = this.results.hold;
    const keys = [...new Set(hold.map((s) => `${s.target} ${s.connections}`))];
    const rows = keys.map((key) => {
      const [target = "", count = "0"] = key.split(" ");
      const samples = hold.filter(
        (s) => s.target === target && s.connections === Number(count),
      );
      return [
        this.label(target),
        Number(count).toLocaleString("en"),
        show(spread(samples.map((s) => s.settledIdleRssKiB / 1024)), 1),
        show(spread(samples.map((s) => s.settledHeldRssKiB / 1024)), 1),
        show(spread(samples.map(perConnectionKiB)), 2),
        show(spread(samples.map(earlyPerConnectionKiB)), 2),
        show(spread(samples.map((s) => s.connectSeconds)), 1),
        `${samples.reduce((n, s) => n + s.failed + s.closedEarly, 0)}`,
      ];
    });
    return table(
      [
        "front end",
        "K",
        "idle RSS MiB, settled",
        "RSS holding K, MiB, settled",
        "RSS KiB per connection, settled",
        "RSS KiB per connection after 1 s",
        "seconds to open K",
        "errors",
      ],
      rows,
    );
  }

  private latencyTable(): string {
    const samples = this.results.latency;
    const rows = this.targets
      .filter((id) => samples.some((s) => s.target === id))
      .map((id) => [
        this.label(id),
        show(spread(valuesOf(samples, id, (s) => s.greetingP50Ms)), 3),
        show(spread(valuesOf(samples, id, (s) => s.greetingP99Ms)), 3),
        show(spread(valuesOf(samples, id, (s) => s.frontUs)), 1),
      ]);
    return table(["target", "p50 ms", "p99 ms", "front CPU µs/session"], rows);
  }

  private passNewTable(): string {
    const samples = this.results.passNew;
    const rows = [...new Set(samples.map((s) => s.target))].map((id) => [
      this.label(id).replace("PASS OLD", "PASS NEW"),
      show(spread(valuesOf(samples, id, (s) => s.rate)), 1),
      show(spread(valuesOf(samples, id, (s) => s.frontUs)), 1),
      show(spread(valuesOf(samples, id, (s) => s.serverUs)), 1),
      show(spread(valuesOf(samples, id, (s) => s.greetingP50Ms)), 0),
    ]);
    return table(
      [
        "target",
        "sessions/s",
        "front CPU µs/session",
        "server side CPU µs/session",
        "connect to 220 p50 ms",
      ],
      rows,
    );
  }

  private largeTables(): string {
    return Object.entries(this.results.large)
      .map(([key, samples]) => this.rateTable(`${key} messages`, samples))
      .join("\n\n");
  }

  private profileSection(): string {
    if (this.results.profiles.length === 0) return "No profile was taken.";
    return this.results.profiles
      .map((profile) => {
        const categories = table(
          ["category", "self ms", "share"],
          profile.categories.map((c) => [
            c.category,
            c.selfMs.toFixed(0),
            `${(c.share * 100).toFixed(1)}%`,
          ]),
        );
        const top = table(
          ["function", "where", "self ms", "share", "µs/session"],
          profile.top.map((entry) => [
            `\`${entry.name}\``,
            entry.location === "" ? "native" : `\`${entry.location}\``,
            entry.selfMs.toFixed(0),
            `${(entry.share * 100).toFixed(1)}%`,
            ((entry.selfMs * 1000) / Math.max(1, profile.sessions)).toFixed(1),
          ]),
        );
        return (
          `### ${profile.label}, ${profile.sessions.toLocaleString("en")} quit sessions at C=100\n\n` +
          `Front CPU from /proc during the profiled run: ` +
          `${profile.frontUs.toFixed(1)} µs per session (all threads, with ` +
          `the profiler's own cost). Main-thread samples not idle: ` +
          `${profile.busyMs.toFixed(0)} ms, ` +
          `${((profile.busyMs * 1000) / Math.max(1, profile.sessions)).toFixed(1)} µs per session.\n\n` +
          categories +
          "\n\n" +
          top
        );
      })
      .join("\n\n");
  }

  private perfSection(): string {
    if (this.results.perfProfiles.length === 0)
      return "No perf profile was taken.";
    return this.results.perfProfiles
      .map((profile) => {
        const perSession = (share: number): string =>
          (share * profile.frontUs).toFixed(1);
        const binaries = table(
          ["binary", "share of samples", "µs/session"],
          profile.binaries.map((b) => [
            b.name,
            `${(b.share * 100).toFixed(1)}%`,
            perSession(b.share),
          ]),
        );
        const nodeParts = table(
          ["part of the node binary", "share of samples", "µs/session"],
          profile.nodeParts.map((part) => [
            part.name,
            `${(part.share * 100).toFixed(1)}%`,
            perSession(part.share),
          ]),
        );
        const symbols = table(
          ["binary", "symbol", "share", "µs/session"],
          profile.symbols.map((entry) => [
            entry.binary,
            `\`${cleanSymbol(entry.symbol)}\``,
            `${(entry.share * 100).toFixed(1)}%`,
            perSession(entry.share),
          ]),
        );
        return (
          `### ${profile.label}, ${profile.sessions.toLocaleString("en")} quit sessions at C=100, perf\n\n` +
          `${profile.samples.toLocaleString("en")} samples of all threads. ` +
          `Front CPU from /proc during the run: ${profile.frontUs.toFixed(1)} µs ` +
          `per session (user ${profile.frontUserUs.toFixed(1)}, system ` +
          `${profile.frontSystemUs.toFixed(1)}); µs/session below is that ` +
          "figure times the share of samples.\n\n" +
          binaries +
          "\n\n" +
          nodeParts +
          "\n\n" +
          symbols
        );
      })
      .join("\n\n");
  }

  private userSystemTable(): string {
    const rows: string[][] = [];
    for (const [key, samples] of Object.entries(this.results.rate)) {
      for (const id of this.targets) {
        const user = spread(valuesOf(samples, id, (s) => s.frontUserUs));
        const system = spread(valuesOf(samples, id, (s) => s.frontSystemUs));
        if (user === undefined || system === undefined) continue;
        rows.push([key, this.label(id), show(user, 1), show(system, 1)]);
      }
    }
    return table(
      ["test", "front end", "user µs/session", "system µs/session"],
      rows,
    );
  }

  /**
   * Sentences that compare postwarden with postscreen where the time and
   * memory go, each computed from this run's medians.
   */
  private findings(): string[] {
    const lines: string[] = [];
    const concurrency = Math.max(...this.results.sizes.concurrencies);
    const key = `quit C=${concurrency}`;
    const samples = this.results.rate[key] ?? [];
    const median = (id: string, pick: (s: RateSample) => number | undefined) =>
      spread(valuesOf(samples, id, pick))?.median;
    for (const path of PATHS) {
      const pw = path.postwardens[0] ?? "";
      const ps = path.postscreen;
      const pwUser = median(pw, (s) => s.frontUserUs);
      const pwSystem = median(pw, (s) => s.frontSystemUs);
      const psUser = median(ps, (s) => s.frontUserUs);
      const psSystem = median(ps, (s) => s.frontSystemUs);
      if (
        pwUser === undefined ||
        pwSystem === undefined ||
        psUser === undefined ||
        psSystem === undefined
      ) {
        continue;
      }
      const signed = (x: number): string =>
        `${x >= 0 ? "+" : "−"}${Math.abs(x).toFixed(0)}`;
      lines.push(
        `${key}, ${path.name}: postwarden's front process used ` +
          `${pwUser.toFixed(0)} µs user and ${pwSystem.toFixed(0)} µs ` +
          `system time per session, postscreen ${psUser.toFixed(0)} µs ` +
          `user and ${psSystem.toFixed(0)} µs system ` +
          `(${signed(pwUser - psUser)} µs user, ` +
          `${signed(pwSystem - psSystem)} µs system).`,
      );
    }

    for (const profile of this.results.perfProfiles) {
      const share = (name: string): string =>
        `${((profile.binaries.find((b) => b.name === name)?.share ?? 0) * 100).toFixed(0)}%`;
      lines.push(
        `perf, ${profile.label}: ${share("Linux kernel")} of postwarden's ` +
          `samples are in the kernel, ` +
          `${share("node binary (V8, libuv, N-API)")} in the node binary ` +
          `(V8's runtime and builtins, libuv, N-API), ` +
          `${share("JavaScript (V8 generated code)")} in JavaScript ` +
          `compiled by V8, ${share("libc")} in libc and ` +
          `${share("postwarden's addon")} in the addon.`,
      );
    }

    const hold = this.results.hold;
    const idle = (target: string) =>
      spread(
        hold
          .filter((s) => s.target === target)
          .map((s) => s.settledIdleRssKiB / 1024),
      )?.median;
    const pwIdle = idle("pw-hold");
    const psIdle = idle("ps-hold");
    if (pwIdle !== undefined && psIdle !== undefined) {
      lines.push(
        `Memory: an idle postwarden is ${pwIdle.toFixed(0)} MiB resident ` +
          `against postscreen's ${psIdle.toFixed(0)} MiB, before any ` +
          "connection is held.",
      );
    }
    return lines;
  }

  /** Formats the share of the machine that other processes used. */
  private otherLoad(): string {
    const r = this.results;
    const samples = [
      ...Object.values(r.rate).flat(),
      ...Object.values(r.large).flat(),
      ...r.latency,
      ...r.passNew,
    ];
    const shares = spread(
      samples
        .map((sample) => sample.otherCpuShare)
        .filter((share): share is number => share !== undefined)
        .map((share) => share * 100),
    );
    if (shares === undefined) return "not measured";
    return `${show(shares, 0)} % of all cores (median over every measurement, with min–max)`;
  }

  markdown(chartPath: string): string {
    const r = this.results;
    const m = r.machine;
    const s = r.sizes;
    const verdicts = this.verdicts();
    const verdictRows = verdicts.map((v) => [
      v.target,
      verdictText(v.met),
      v.detail,
    ]);
    const failures =
      r.failures.length === 0
        ? "No session failed."
        : `${r.failures.length} failure records:\n\n` +
          r.failures
            .slice(0, 30)
            .map((f) => `- ${f}`)
            .join("\n");
    const warnings =
      r.logWarnings.length === 0
        ? "No warning, error, fatal or panic line in Postfix's maillog or postwarden's logs."
        : "Warning and error lines seen in the logs (each once):\n\n" +
          r.logWarnings.map((w) => `- \`${w}\``).join("\n");
    const notes =
      r.notes.length === 0
        ? ""
        : "\n\n" + r.notes.map((n) => `- ${n}`).join("\n");

    return `# Benchmarks

postwarden against Postfix's postscreen, a direct smtpd and a naive Node
proxy, all on loopback on one machine. ${
      r.smoke
        ? "**This is a trial run (smoke or profile only): its numbers are not a benchmark.**"
        : ""
    } Generated by \`${r.command}\` (as root) on ${r.startedAt.slice(0, 10)}; the run took ${(r.durationSeconds / 60).toFixed(1)} minutes. Every number below is from that run: medians over ${s.rounds} rounds, with the minimum and maximum in brackets, and ratios taken round by round.

## Machine

| | |
| --- | --- |
| CPU | ${m.cores} × ${m.cpuModel} |
| memory | ${m.memoryGiB} GiB |
| kernel | Linux ${m.kernel} |
| Node.js | ${m.node} |
| Postfix | ${m.postfix} |
| postwarden | ${m.postwarden} |
| CPU used by other processes during the measurements | ${this.otherLoad()} |

## Targets

${table(["target", "result", "measured"], verdictRows)}

Where the difference comes from, from the tables below:

${this.findings()
  .map((line) => `- ${line}`)
  .join("\n")}

What has been changed to close the gap, what each change gained, and why
the rest remains are in [docs/performance.md](docs/performance.md).

![Sessions per second, CPU per session and memory per held connection](${chartPath})

## postwarden against postscreen, round by round

The ratio of postwarden's value to postscreen's on the same path, taken
within each round. A sessions/s ratio above 1 and CPU ratios below 1 favour
postwarden.

${this.comparisonTable()}

## Throughput and CPU per session

"front CPU" is the utime + stime of the front process (postscreen,
postwarden or the proxy) from \`/proc/PID/stat\`, divided by the sessions
of the job. "server side" is the whole Postfix process tree (master, its
live children and the children it reaped) plus the front process when it
is not a child of master (postwarden, the proxy); postscreen's logging
happens in postlogd, which is in the tree and also shown apart. The load
client runs in a process of its own on the same two cores, so every rate
test shares the machine with it. /proc counts CPU time in ticks of 10 ms,
so a per-session figure moves in steps of 10 ms divided by the sessions
of the job: 2 µs for 5000 sessions, 100 µs for 100.

${Object.entries(r.rate)
  .map(([key, samples]) => this.rateTable(key, samples))
  .join("\n\n")}

### Front CPU split into user and system time

${this.userSystemTable()}

## Latency at C=1

Quit sessions one at a time (${s.latencySessions} per round): connect to
the final \`220 \` line.

${this.latencyTable()}

## PASS NEW

Quit sessions from addresses never seen before (${s.newSessions} per round
at C=${s.newConcurrency}), so each one waits the whole 1 s greet wait.

${this.passNewTable()}

## Proxy against descriptor passing, large messages

Message sessions with a body of the given size: the proxy copies every
byte through Node, while postscreen and postwarden hand the connection to
smtpd and are out of the data path.

${this.largeTables()}

## Memory per held connection

K idle clients held in a 60 s greet wait, then released. RSS per
connection is (VmRSS holding K − VmRSS idle) / K from
\`/proc/PID/status\`. The idle value is read once the fresh front has
been idle for ${this.results.sizes.settleMs / 1000} s, and the value
holding K twice: 1 s after the last connection opened, and again after
${this.results.sizes.settleMs / 1000} s. V8 collects garbage by itself
after about 8 s without allocation, so the settled value counts what the
connections keep, and the early one also the garbage left from opening
them. postscreen has no garbage collector, so its two values are the
same. The target compares the settled values. Each measurement starts
from a fresh front process (postwarden restarted, postscreen stopped so
that master starts a new one), because a process that held connections
before reuses the memory it freed.

${this.holdTable()}

## Where postwarden's time goes

postwarden run under \`node --cpu-prof\` (its main thread; the profiler
adds its own cost), logging to a file, counting only the samples taken
while the sessions ran. Self time per category and the functions with the
most self time. Time inside a call into the addon, with the system calls
it makes, counts as self time of the JavaScript function that made it.

${this.profileSection()}

## On-CPU profile with perf

The same two paths under \`perf record -e cpu-clock -g\` (all of the
process's threads, kernel included), with node's \`--perf-basic-prof\`
naming the JavaScript functions. This shows what the sampling profile
above cannot: how much of the time is system calls in the kernel, and how
much is V8, N-API and the addon.

${this.perfSection()}

## Errors

${failures}

${warnings}${notes}

## Method

One private Postfix instance (own configuration, queue, data and log
directories, chroot off, \`smtpd_peername_lookup = no\`) with mail thrown
away before the queue: \`smtpd_proxy_filter\` points at Postfix's
\`smtp-sink\` on a loopback port. \`default_process_limit = 1000\`,
\`max_use = 1000\`, connection count and rate limits 0, postscreen queue
limits 5000, open files 20000. smtpd runs as a \`pass\` service behind
postscreen and postwarden.

- **direct smtpd**: an \`inet\` smtpd service.
- **postscreen allowlisted**: \`postscreen_access_list = permit_mynetworks\`,
  so each client is handed to smtpd at once.
- **postscreen PASS OLD**: an empty access list, a 1 s greet wait and a
  btree cache filled before the rounds, so each session is \`PASS OLD\`.
- **postwarden**: \`node dist/src/cli.js run --config /dev/null\` with its
  own data directory, allowlisted through its default access list
  (\`permit_mynetworks\`), or with \`-o access_list=\`, a 1 s greet wait and
  a filled cache for PASS OLD. Each runs twice: with its log (stderr) going
  to a file, and to \`/dev/null\` ("log discarded"), since postwarden has
  no switch to turn logging off.
- **Node proxy + smtpd**: a byte-copying proxy in Node in front of the
  direct smtpd.

Sessions come from ${s.cacheSources} source addresses (127.32.0.1 and up),
because postscreen and postwarden read the cache only for a client's first
concurrent connection; the caches were filled for each of them first. A
quit session connects, reads through the final \`220 \` line, sends QUIT and
reads 221 until the server closes; a msg session adds EHLO, MAIL, RCPT and
DATA with a three-line body. Sizes per round: quit ${s.quitSessions} and
msg ${s.msgSessions} sessions at C=${s.concurrencies.join(" and C=")};
${s.latencySessions} sessions at C=1 for latency; ${s.newSessions} PASS NEW
sessions; held connections K=${s.holdPostwarden.join(", ")} for postwarden
and K=${s.holdPostscreen.join(", ")} for postscreen;
${s.large.map((l) => `${l.sessions} messages of ${l.bytes / 1024} KiB at C=${l.concurrency}`).join(" and ")}.
Every target had an unmeasured warm-up, and each round starts the list of
targets one further along. Postfix's \`smtp-source\` test is not part of
this benchmark.
`;
  }
}

interface Bar {
  label: string;
  value: Spread | undefined;
  color: string;
}

interface Panel {
  title: string;
  unit: string;
  bars: Bar[];
}

function colorOf(id: string): string {
  if (id.startsWith("pw-")) return id.endsWith("-null") ? "#6baed6" : "#2171b5";
  if (id.startsWith("ps-")) return "#e6550d";
  if (id === "proxy") return "#969696";
  return "#31a354";
}

/** Shortens a perf symbol for a table cell: no file URL prefix, no "|". */
function cleanSymbol(symbol: string): string {
  return symbol
    .replace(/file:\/\/\S*\/dist\//g, "dist/")
    .replace(/file:\/\/\S*\/node_modules\//g, "node_modules/")
    .replace(/\|/g, "/")
    .replace(/`/g, "'");
}

function escapeXml(text: string): string {
  return text
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;");
}

/** Horizontal bar panels stacked vertically, with min–max whiskers. */
function svgChart(panels: Panel[]): string {
  const width = 760;
  const labelWidth = 250;
  const plotWidth = width - labelWidth - 90;
  const rowHeight = 20;
  const parts: string[] = [];
  let y = 10;
  for (const panel of panels) {
    parts.push(
      `<text x="10" y="${y + 14}" font-weight="bold">${escapeXml(panel.title)}</text>`,
    );
    y += 26;
    const top = Math.max(1, ...panel.bars.map((bar) => bar.value?.max ?? 0));
    for (const bar of panel.bars) {
      const scale = (value: number): number =>
        labelWidth + (value / top) * plotWidth;
      parts.push(
        `<text x="${labelWidth - 8}" y="${y + 14}" text-anchor="end">${escapeXml(bar.label)}</text>`,
      );
      if (bar.value !== undefined) {
        const end = scale(bar.value.median);
        parts.push(
          `<rect x="${labelWidth}" y="${y + 3}" width="${(end - labelWidth).toFixed(1)}" height="${rowHeight - 6}" fill="${bar.color}"/>`,
          `<line x1="${scale(bar.value.min).toFixed(1)}" x2="${scale(bar.value.max).toFixed(1)}" y1="${y + rowHeight / 2}" y2="${y + rowHeight / 2}" stroke="#000"/>`,
          `<text x="${(scale(bar.value.max) + 6).toFixed(1)}" y="${y + 14}">${bar.value.median.toFixed(bar.value.median < 10 ? 2 : 0)} ${escapeXml(panel.unit)}</text>`,
        );
      } else {
        parts.push(`<text x="${labelWidth + 4}" y="${y + 14}">no data</text>`);
      }
      y += rowHeight;
    }
    y += 14;
  }
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${y}" ` +
    `viewBox="0 0 ${width} ${y}" font-family="sans-serif" font-size="12">\n` +
    `<rect width="100%" height="100%" fill="#fff"/>\n` +
    parts.join("\n") +
    "\n</svg>\n"
  );
}

function chartPanels(results: BenchResults): Panel[] {
  const label = (id: string): string => results.labels[id] ?? id;
  const targets = Object.keys(results.labels).filter(
    (id) => !id.startsWith("profile-") && !id.endsWith("-hold"),
  );
  const panels: Panel[] = [];
  const concurrency = Math.max(...results.sizes.concurrencies);
  for (const kind of ["quit", "msg"]) {
    const samples = results.rate[`${kind} C=${concurrency}`] ?? [];
    panels.push({
      title: `${kind} sessions per second at C=${concurrency} (median, min–max)`,
      unit: "/s",
      bars: targets.map((id) => ({
        label: label(id),
        value: spread(valuesOf(samples, id, (s) => s.rate)),
        color: colorOf(id),
      })),
    });
  }
  const quit = results.rate[`quit C=${concurrency}`] ?? [];
  panels.push({
    title: `Front process CPU per quit session at C=${concurrency}`,
    unit: "µs",
    bars: targets
      .filter((id) => id !== "direct")
      .map((id) => ({
        label: label(id),
        value: spread(valuesOf(quit, id, (s) => s.frontUs)),
        color: colorOf(id),
      })),
  });
  const holdKeys = [
    ...new Set(results.hold.map((s) => `${s.target} ${s.connections}`)),
  ];
  panels.push({
    title: "RSS per connection held in the greet wait",
    unit: "KiB",
    bars: holdKeys.map((key) => {
      const [target = "", count = "0"] = key.split(" ");
      const samples = results.hold.filter(
        (s) => s.target === target && s.connections === Number(count),
      );
      return {
        label: `${target.startsWith("pw") ? "postwarden" : "postscreen"}, K=${Number(count).toLocaleString("en")}`,
        value: spread(samples.map(perConnectionKiB)),
        color: colorOf(target),
      };
    }),
  });
  return panels;
}

/** Writes BENCHMARKS.md and the chart; returns the paths written. */
export async function writeReport(
  results: BenchResults,
  directory: string,
): Promise<string[]> {
  const chart = results.smoke
    ? join(directory, "chart.svg")
    : join(directory, "bench", "chart.svg");
  mkdirSync(dirname(chart), { recursive: true });
  writeFileSync(chart, svgChart(chartPanels(results)));
  const markdownPath = join(directory, "BENCHMARKS.md");
  const text = new Report(results).markdown(relative(directory, chart));
  writeFileSync(
    markdownPath,
    await format(text, { parser: "markdown", proseWrap: "preserve" }),
  );
  return [markdownPath, chart];
}
