// Benchmark entry (`npm run bench`, as root): starts the front ends of
// bench/targets.ts, drives them from the load client of bench/load.ts in
// rounds with the targets in rotating order, and writes BENCHMARKS.md and
// bench/chart.svg from the measurements. `--smoke` runs tiny sizes into a
// temporary directory instead, for CI. Either way the exit status is 1 if
// any session failed.
import { spawnSync } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  truncateSync,
  writeFileSync,
} from "node:fs";
import { cpus, release, totalmem } from "node:os";
import { join } from "node:path";
import { packageRoot } from "../src/native.js";
import { LoadClient, loopbackAddresses, type SessionKind } from "./load.js";
import {
  MICROS_PER_TICK,
  machineBusyTicks,
  memory,
  openFilesLimit,
  processCpu,
  processCpuSplit,
  treeCpu,
} from "./proc.js";
import { PerfRecording, perfAvailable } from "./perf.js";
import { summarizeProfile } from "./profile.js";
import { writeReport } from "./report.js";
import type {
  BenchResults,
  HoldSample,
  Machine,
  RateSample,
  Sizes,
} from "./results.js";
import {
  BenchEnvironment,
  type PostwardenSpec,
  type Target,
} from "./targets.js";

const OPEN_FILES = 20_000;
const SESSION_TIMEOUT_MS = 30_000;

const FULL: Sizes = {
  rounds: 5,
  quitSessions: 5000,
  msgSessions: 3000,
  concurrencies: [20, 100],
  latencySessions: 2000,
  newSessions: 300,
  newConcurrency: 100,
  holdPostwarden: [1000, 10_000],
  holdPostscreen: [1000, 4000],
  settleMs: 12_000,
  large: [
    { bytes: 10 * 1024, sessions: 1000, concurrency: 20 },
    { bytes: 1024 * 1024, sessions: 100, concurrency: 20 },
  ],
  warmupSessions: 1000,
  cacheSources: 1016,
  profileSessions: 20_000,
};

const SMOKE: Sizes = {
  rounds: 2,
  quitSessions: 100,
  msgSessions: 50,
  concurrencies: [20, 100],
  latencySessions: 50,
  newSessions: 20,
  newConcurrency: 20,
  holdPostwarden: [50, 200],
  holdPostscreen: [50, 200],
  settleMs: 2000,
  large: [
    { bytes: 10 * 1024, sessions: 20, concurrency: 10 },
    { bytes: 1024 * 1024, sessions: 4, concurrency: 2 },
  ],
  warmupSessions: 50,
  cacheSources: 254,
  profileSessions: 300,
};

/** Rate targets, in report order; each round starts one further along. */
const RATE_TARGETS = [
  "direct",
  "proxy",
  "ps-allow",
  "ps-old",
  "pw-allow",
  "pw-old",
  "pw-allow-null",
  "pw-old-null",
];
const CACHE_TARGETS = ["ps-old", "pw-old", "pw-old-null"];
const NEW_TARGETS = ["ps-old", "pw-old", "pw-old-null"];
const LARGE_TARGETS = ["direct", "proxy", "ps-allow", "pw-allow"];

const POSTWARDENS: PostwardenSpec[] = [
  {
    id: "pw-allow",
    label: "postwarden allowlisted",
    logToFile: true,
    args: [],
    preQueueLimit: 5000,
  },
  {
    id: "pw-old",
    label: "postwarden PASS OLD",
    logToFile: true,
    args: ["-o", "access_list=", "--greet-wait", "1s"],
    preQueueLimit: 5000,
  },
  {
    id: "pw-allow-null",
    label: "postwarden allowlisted, log discarded",
    logToFile: false,
    args: [],
    preQueueLimit: 5000,
  },
  {
    id: "pw-old-null",
    label: "postwarden PASS OLD, log discarded",
    logToFile: false,
    args: ["-o", "access_list=", "--greet-wait", "1s"],
    preQueueLimit: 5000,
  },
  {
    id: "pw-hold",
    label: "postwarden, 60 s greet wait",
    logToFile: true,
    args: ["-o", "access_list=", "--greet-wait", "60s"],
    // Above 10,000 held clients, and above the 90% that starts stress mode.
    preQueueLimit: 20_000,
  },
];

/** Hands out loopback addresses never used before in this run. */
class FreshAddresses {
  private next = 0;

  take(count: number): string[] {
    const result: string[] = [];
    while (result.length < count) {
      const index = this.next++;
      const c = (index % 254) + 1;
      const rest = Math.floor(index / 254);
      result.push(`127.${64 + Math.floor(rest / 256)}.${rest % 256}.${c}`);
    }
    return result;
  }
}

/**
 * Returns the share of the machine's CPU capacity that processes outside
 * the benchmark (`ownTicks`: Postfix's tree and this process's tree) used
 * while the machine was `busyTicks` busy for `elapsedMs`.
 */
function otherShare(
  busyTicks: number,
  ownTicks: number,
  elapsedMs: number,
): number {
  const ticksPerSecond = 1_000_000 / MICROS_PER_TICK;
  const capacity = (elapsedMs / 1000) * ticksPerSecond * cpus().length;
  return Math.max(0, busyTicks - ownTicks) / capacity;
}

function rotate<T>(items: T[], by: number): T[] {
  const shift = by % items.length;
  return [...items.slice(shift), ...items.slice(0, shift)];
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function describeMachine(): Machine {
  const cpuinfo = readFileSync("/proc/cpuinfo", "utf8");
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1] ?? "unknown";
  const postconf = spawnSync("postconf", ["-d", "-h", "mail_version"], {
    encoding: "utf8",
  });
  const git = (args: string[]): string =>
    spawnSync("git", args, {
      cwd: packageRoot(),
      encoding: "utf8",
    }).stdout.trim();
  const commit = git(["rev-parse", "--short", "HEAD"]) || "unknown commit";
  const dirty = git(["status", "--porcelain", "--", "src", "native"]) !== "";
  return {
    postwarden:
      `commit ${commit}` +
      (dirty ? " with uncommitted changes in src/ or native/" : ""),
    cores: cpus().length,
    cpuModel: model.trim(),
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    kernel: release(),
    node: process.version,
    postfix: postconf.stdout.trim() || "unknown",
  };
}

interface Options {
  smoke: boolean;
  rounds: number | undefined;
  profileOnly: boolean;
}

const USAGE = "usage: run.js [--smoke] [--rounds N] [--profile-only]";

function parseOptions(argv: string[]): Options {
  const options: Options = {
    smoke: false,
    rounds: undefined,
    profileOnly: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--smoke") options.smoke = true;
    else if (arg === "--profile-only") options.profileOnly = true;
    else if (arg === "--rounds") {
      const value = Number(argv[++i]);
      if (!Number.isInteger(value) || value < 1) {
        throw new Error(`--rounds: expected a positive integer; ${USAGE}`);
      }
      options.rounds = value;
    } else {
      throw new Error(`unknown argument ${arg}; ${USAGE}`);
    }
  }
  return options;
}

/** Re-runs this program under `ulimit -n 20000` when the limit is lower. */
function ensureOpenFilesLimit(): void {
  if (openFilesLimit() >= OPEN_FILES) return;
  const result = spawnSync(
    "bash",
    [
      "-c",
      `ulimit -n ${OPEN_FILES} && exec "$0" "$@"`,
      process.execPath,
      ...process.argv.slice(1),
    ],
    { stdio: "inherit" },
  );
  process.exit(result.status ?? 1);
}

class Bench {
  private readonly env = new BenchEnvironment();
  private readonly load = LoadClient.start();
  private readonly fresh = new FreshAddresses();
  private readonly rateSources: string[];
  private readonly holdSources = loopbackAddresses(48, 10_160);
  /** postscreen processes stopped on purpose, whose exit master logs. */
  private readonly stoppedPostscreens = new Set<number>();
  readonly results: BenchResults;

  constructor(
    private readonly sizes: Sizes,
    smoke: boolean,
    command: string,
  ) {
    this.rateSources = loopbackAddresses(32, sizes.cacheSources);
    this.results = {
      smoke,
      command,
      startedAt: new Date().toISOString(),
      durationSeconds: 0,
      machine: describeMachine(),
      sizes,
      labels: {},
      rate: {},
      latency: [],
      passNew: [],
      large: {},
      hold: [],
      profiles: [],
      perfProfiles: [],
      failures: [],
      logWarnings: [],
      notes: [],
    };
  }

  private log(message: string): void {
    process.stdout.write(
      `${new Date().toISOString().slice(11, 19)} ${message}\n`,
    );
  }

  async run(): Promise<void> {
    const begin = Date.now();
    try {
      this.log(`starting the front ends in ${this.env.workDirectory}`);
      await this.env.start(POSTWARDENS);
      for (const [id, target] of this.env.targets) {
        this.results.labels[id] = target.label;
      }
      if (this.sizes.rounds > 0) await this.warmUp();
      for (let round = 0; round < this.sizes.rounds; round++) {
        this.log(`round ${round + 1} of ${this.sizes.rounds}`);
        await this.rateRound(round);
        await this.latencyRound(round);
        await this.passNewRound(round);
        await this.largeRound(round);
        await this.holdRound(round);
        this.collectLogWarnings();
      }
      await this.profile();
      this.collectLogWarnings();
    } finally {
      this.load.stop();
      await this.env.stop();
      this.results.durationSeconds = (Date.now() - begin) / 1000;
    }
  }

  /** Stops every process the run started; for an interrupted run. */
  async stop(): Promise<void> {
    this.load.stop();
    await this.env.stop();
  }

  /** Fills the verdict caches, then runs every target unmeasured. */
  private async warmUp(): Promise<void> {
    for (const id of CACHE_TARGETS) {
      this.log(`warming the cache of ${id}`);
      const target = this.env.target(id);
      await this.sessions(target, "quit", {
        sessions: this.rateSources.length,
        concurrency: 254,
        sources: this.rateSources,
      });
    }
    for (const id of RATE_TARGETS) {
      const target = this.env.target(id);
      this.log(`warm-up of ${id}`);
      const result = await this.sessions(target, "quit", {
        sessions: this.sizes.warmupSessions,
        concurrency: 100,
        sources: this.rateSources,
      });
      await this.sessions(target, "msg", {
        sessions: Math.ceil(this.sizes.warmupSessions / 4),
        concurrency: 20,
        sources: this.rateSources,
      });
      if (CACHE_TARGETS.includes(id) && result.slowGreetings > 0) {
        this.results.notes.push(
          `${id}: ${result.slowGreetings} warm-up sessions still waited for ` +
            "the greeting test after the cache was filled",
        );
      }
    }
  }

  /** Runs a sessions job unmeasured; session failures still count. */
  private async sessions(
    target: Target,
    kind: SessionKind,
    job: { sessions: number; concurrency: number; sources: string[] },
    bodyBytes = 0,
  ): Promise<{ slowGreetings: number }> {
    const result = await this.load.sessions({
      port: target.port,
      kind,
      bodyBytes,
      timeoutMs: SESSION_TIMEOUT_MS,
      ...job,
    });
    this.recordFailures(
      `unmeasured ${kind} ${target.id}`,
      result.failures,
      result.failed,
    );
    return result;
  }

  /** Records the first failures of a job, and how many more there were. */
  private recordFailures(
    context: string,
    failures: string[],
    failed: number,
  ): void {
    for (const failure of failures) {
      this.results.failures.push(`${context}: ${failure}`);
    }
    if (failed > failures.length) {
      this.results.failures.push(
        `${context}: ${failed - failures.length} more failed sessions`,
      );
    }
  }

  /** Runs a sessions job and measures the CPU it costs on the server. */
  private async measure(
    target: Target,
    context: string,
    round: number,
    kind: SessionKind,
    job: { sessions: number; concurrency: number; sources: string[] },
    bodyBytes = 0,
  ): Promise<RateSample> {
    // postscreen starts on the first connection; this one is not measured.
    if (target.frontPid() === undefined) {
      await this.sessions(target, "quit", {
        sessions: 1,
        concurrency: 1,
        sources: job.sources,
      });
    }
    const front = target.frontPid();
    const master = this.env.masterPid;
    const postlogd = this.env.postlogdPid();
    const frontBefore =
      front === undefined ? undefined : processCpuSplit(front);
    const treeBefore = treeCpu(master);
    const logBefore = postlogd === undefined ? 0 : processCpu(postlogd);
    const ownBefore = treeCpu(process.pid);
    const machineBefore = machineBusyTicks();

    const result = await this.load.sessions({
      port: target.port,
      kind,
      bodyBytes,
      timeoutMs: SESSION_TIMEOUT_MS,
      ...job,
    });

    const frontAfter = front === undefined ? undefined : processCpuSplit(front);
    const treeAfter = treeCpu(master);
    const logAfter = postlogd === undefined ? 0 : processCpu(postlogd);
    const ownAfter = treeCpu(process.pid);
    const machineAfter = machineBusyTicks();
    if (front !== undefined && target.frontPid() !== front) {
      this.results.notes.push(
        `${context} ${target.id} round ${round + 1}: the front process ` +
          "changed during the measurement",
      );
    }
    this.recordFailures(
      `${context} ${target.id} round ${round + 1}`,
      result.failures,
      result.failed,
    );

    const perSession = (ticks: number): number =>
      (ticks * MICROS_PER_TICK) / Math.max(1, job.sessions);
    const frontUser =
      frontBefore && frontAfter ? frontAfter.user - frontBefore.user : 0;
    const frontSystem =
      frontBefore && frontAfter ? frontAfter.system - frontBefore.system : 0;
    const frontTicks = frontUser + frontSystem;
    const serverTicks =
      treeAfter - treeBefore + (target.frontInPostfixTree ? 0 : frontTicks);
    return {
      round,
      target: target.id,
      sessions: result.completed,
      failed: result.failed,
      rate: result.completed / (result.elapsedMs / 1000),
      ...(front === undefined
        ? {}
        : {
            frontUs: perSession(frontTicks),
            frontUserUs: perSession(frontUser),
            frontSystemUs: perSession(frontSystem),
          }),
      serverUs: perSession(serverTicks),
      ...(postlogd === undefined
        ? {}
        : { postlogdUs: perSession(logAfter - logBefore) }),
      greetingP50Ms: result.greetingP50Ms,
      greetingP99Ms: result.greetingP99Ms,
      slowGreetings: result.slowGreetings,
      otherCpuShare: otherShare(
        machineAfter - machineBefore,
        treeAfter - treeBefore + (ownAfter - ownBefore),
        result.elapsedMs,
      ),
    };
  }

  private async rateRound(round: number): Promise<void> {
    for (const kind of ["quit", "msg"] as const) {
      for (const concurrency of this.sizes.concurrencies) {
        const key = `${kind} C=${concurrency}`;
        const samples = (this.results.rate[key] ??= []);
        for (const id of rotate(RATE_TARGETS, round)) {
          const sample = await this.measure(
            this.env.target(id),
            key,
            round,
            kind,
            {
              sessions:
                kind === "quit"
                  ? this.sizes.quitSessions
                  : this.sizes.msgSessions,
              concurrency,
              sources: this.rateSources,
            },
          );
          samples.push(sample);
          this.log(
            `  ${key} ${id}: ${sample.rate.toFixed(0)}/s` +
              (sample.frontUs === undefined
                ? ""
                : `, front ${sample.frontUs.toFixed(0)} us`) +
              `, server ${sample.serverUs.toFixed(0)} us` +
              (sample.failed > 0 ? `, ${sample.failed} FAILED` : ""),
          );
        }
      }
    }
  }

  private async latencyRound(round: number): Promise<void> {
    for (const id of rotate(RATE_TARGETS, round)) {
      const sample = await this.measure(
        this.env.target(id),
        "latency",
        round,
        "quit",
        {
          sessions: this.sizes.latencySessions,
          concurrency: 1,
          sources: this.rateSources,
        },
      );
      this.results.latency.push(sample);
    }
    this.log("  latency done");
  }

  private async passNewRound(round: number): Promise<void> {
    for (const id of rotate(NEW_TARGETS, round)) {
      const sample = await this.measure(
        this.env.target(id),
        "PASS NEW",
        round,
        "quit",
        {
          sessions: this.sizes.newSessions,
          concurrency: this.sizes.newConcurrency,
          sources: this.fresh.take(this.sizes.newSessions),
        },
      );
      this.results.passNew.push(sample);
      this.log(`  PASS NEW ${id}: ${sample.rate.toFixed(1)}/s`);
    }
  }

  private async largeRound(round: number): Promise<void> {
    for (const { bytes, sessions, concurrency } of this.sizes.large) {
      const key = bytes >= 1024 * 1024 ? "1 MiB" : `${bytes / 1024} KiB`;
      const samples = (this.results.large[key] ??= []);
      for (const id of rotate(LARGE_TARGETS, round)) {
        const sample = await this.measure(
          this.env.target(id),
          `msg ${key}`,
          round,
          "msg",
          { sessions, concurrency, sources: this.rateSources },
          bytes,
        );
        samples.push(sample);
      }
      this.log(`  ${key} messages done`);
    }
  }

  private async holdRound(round: number): Promise<void> {
    const plan: [string, number[]][] = [
      ["ps-hold", this.sizes.holdPostscreen],
      ["pw-hold", this.sizes.holdPostwarden],
    ];
    for (const [id, counts] of rotate(plan, round)) {
      for (const count of counts) {
        await this.restartHoldFront(id);
        const sample = await this.measureHold(
          this.env.target(id),
          count,
          round,
        );
        this.results.hold.push(sample);
        const perConnection = (held: number, idle: number): string =>
          ((held - idle) / Math.max(1, count)).toFixed(2);
        this.log(
          `  hold ${id} K=${count}: ${sample.held} held, ` +
            `${perConnection(sample.settledHeldRssKiB, sample.settledIdleRssKiB)} ` +
            `KiB each settled, ` +
            `${perConnection(sample.heldRssKiB, sample.settledIdleRssKiB)} ` +
            "after 1 s" +
            (sample.failed + sample.closedEarly > 0
              ? `, ${sample.failed} failed, ${sample.closedEarly} closed early`
              : ""),
        );
      }
    }
  }

  /**
   * Gives the next hold measurement a fresh front process, because a
   * process that held connections before reuses the memory it freed and
   * would show almost no growth. postwarden is restarted; postscreen is
   * stopped with SIGTERM, and master starts a new one on the next
   * connection.
   */
  private async restartHoldFront(id: string): Promise<void> {
    const spec = POSTWARDENS.find((candidate) => candidate.id === id);
    if (spec !== undefined) {
      await this.env.stopPostwarden(id);
      await this.env.addPostwarden(spec);
      return;
    }
    const pid = this.env.target(id).frontPid();
    if (pid === undefined) return;
    this.stoppedPostscreens.add(pid);
    process.kill(pid, "SIGTERM");
    const deadline = Date.now() + 10_000;
    while (this.env.target(id).frontPid() === pid && Date.now() < deadline) {
      await sleep(100);
    }
  }

  /** Holds K idle connections in the greet wait and reads the front's RSS. */
  private async measureHold(
    target: Target,
    connections: number,
    round: number,
  ): Promise<HoldSample> {
    const job = {
      port: target.port,
      concurrency: 200,
      sources: this.holdSources,
      timeoutMs: SESSION_TIMEOUT_MS,
    };
    if (target.frontPid() === undefined) {
      await this.load.hold({ ...job, connections: 1 });
      await this.load.release();
    }
    const pid = target.frontPid();
    if (pid === undefined) throw new Error(`${target.id}: no front process`);
    const idleDescriptors = await this.waitForDescriptors(pid, undefined);
    await sleep(500);
    const idle = memory(pid);
    await sleep(this.sizes.settleMs);
    const settledIdle = memory(pid);

    const result = await this.load.hold({ ...job, connections });
    await sleep(1000);
    const held = memory(pid);
    await sleep(this.sizes.settleMs);
    const settledHeld = memory(pid);
    const heldDescriptors = readdirSync(`/proc/${pid}/fd`).length;
    const released = await this.load.release();
    await this.waitForDescriptors(pid, idleDescriptors);

    const context = `hold ${target.id} K=${connections} round ${round + 1}`;
    this.recordFailures(context, result.failures, result.failed);
    if (released.closedEarly > 0) {
      this.results.failures.push(
        `${context}: ${released.closedEarly} held connections were closed ` +
          "by the server",
      );
    }
    if (heldDescriptors - idleDescriptors < result.held) {
      this.results.notes.push(
        `${context}: only ${heldDescriptors - idleDescriptors} more ` +
          `descriptors open for ${result.held} held connections`,
      );
    }
    return {
      round,
      target: target.id,
      connections,
      held: result.held,
      failed: result.failed,
      closedEarly: released.closedEarly,
      idleRssKiB: idle.rssKiB,
      heldRssKiB: held.rssKiB,
      idleAnonKiB: idle.anonKiB,
      heldAnonKiB: held.anonKiB,
      settledIdleRssKiB: settledIdle.rssKiB,
      settledHeldRssKiB: settledHeld.rssKiB,
      heldDescriptors,
      connectSeconds: result.elapsedMs / 1000,
    };
  }

  /**
   * Waits until the process has at most `limit` + 20 descriptors open, so
   * that the released connections are closed. Without a limit, waits for
   * a count that stays the same for 1 s. Returns the count.
   */
  private async waitForDescriptors(
    pid: number,
    limit: number | undefined,
  ): Promise<number> {
    const deadline = Date.now() + 60_000;
    let previous = -1;
    for (;;) {
      const count = readdirSync(`/proc/${pid}/fd`).length;
      if (limit === undefined ? count === previous : count <= limit + 20) {
        return count;
      }
      if (Date.now() > deadline) {
        this.results.notes.push(
          `process ${pid} still had ${count} descriptors open 60 s after ` +
            "the held connections were released",
        );
        return count;
      }
      previous = count;
      await sleep(limit === undefined ? 1000 : 200);
    }
  }

  /**
   * Profiles postwarden on both paths, logging to a file, with quit
   * sessions at C=100: once under node --cpu-prof (where the main thread's
   * time goes, by JavaScript function) and once under perf record (on-CPU
   * time of all threads, kernel included).
   */
  private async profile(): Promise<void> {
    const directory = join(this.env.workDirectory, "profiles");
    mkdirSync(directory);
    const specs: PostwardenSpec[] = [
      {
        id: "profile-allow",
        label: "postwarden allowlisted",
        logToFile: true,
        args: [],
        preQueueLimit: 5000,
      },
      {
        id: "profile-old",
        label: "postwarden PASS OLD",
        logToFile: true,
        args: ["-o", "access_list=", "--greet-wait", "1s"],
        preQueueLimit: 5000,
      },
    ];
    const withPerf = perfAvailable();
    if (!withPerf) {
      this.results.notes.push(
        "perf is not installed or cannot sample cpu-clock here, so there " +
          "is no on-CPU profile",
      );
    }
    for (const spec of specs) {
      await this.cpuProfile(spec, join(directory, spec.id));
      if (withPerf) await this.perfProfile(spec, join(directory, spec.id));
    }
  }

  /**
   * Starts a postwarden for profiling, fills its cache on the cache path,
   * and warms it up with unmeasured sessions, so that the profile shows
   * steady state and not V8 compiling the code.
   */
  private async startProfiled(
    spec: PostwardenSpec,
    nodeArgs: string[],
  ): Promise<Target> {
    await this.env.addPostwarden({ ...spec, nodeArgs });
    const target = this.env.target(spec.id);
    if (spec.id === "profile-old") {
      await this.sessions(target, "quit", {
        sessions: this.rateSources.length,
        concurrency: 254,
        sources: this.rateSources,
      });
    }
    await this.sessions(target, "quit", {
      sessions: this.sizes.warmupSessions * 2,
      concurrency: 100,
      sources: this.rateSources,
    });
    return target;
  }

  private profileJob(): {
    sessions: number;
    concurrency: number;
    sources: string[];
  } {
    return {
      sessions: this.sizes.profileSessions,
      concurrency: 100,
      sources: this.rateSources,
    };
  }

  private async cpuProfile(
    spec: PostwardenSpec,
    directory: string,
  ): Promise<void> {
    const target = await this.startProfiled(spec, [
      "--cpu-prof",
      `--cpu-prof-dir=${directory}`,
    ]);
    const from = Number(process.hrtime.bigint() / 1000n);
    const sample = await this.measure(
      target,
      "profile",
      0,
      "quit",
      this.profileJob(),
    );
    const to = Number(process.hrtime.bigint() / 1000n);
    await this.env.stopPostwarden(spec.id);
    const file = readdirSync(directory).find((name) =>
      name.endsWith(".cpuprofile"),
    );
    if (file === undefined) {
      this.results.notes.push(`${spec.id}: node wrote no CPU profile`);
      return;
    }
    const breakdown = summarizeProfile(join(directory, file), from, to);
    if (!breakdown.windowed) {
      this.results.notes.push(
        `${spec.id}: the measured window is outside the CPU profile's ` +
          "time range, so start-up is included in its figures",
      );
    }
    this.results.profiles.push({
      target: spec.id,
      label: spec.label,
      sessions: sample.sessions,
      frontUs: sample.frontUs ?? 0,
      ...breakdown,
    });
    this.log(`  profiled ${spec.id}: ${breakdown.busyMs.toFixed(0)} ms busy`);
  }

  private async perfProfile(
    spec: PostwardenSpec,
    directory: string,
  ): Promise<void> {
    const target = await this.startProfiled(spec, [
      "--perf-basic-prof",
      "--interpreted-frames-native-stack",
    ]);
    const pid = target.frontPid();
    if (pid === undefined) throw new Error(`${spec.id}: no process`);
    const recording = new PerfRecording(pid, join(directory, "perf.data"));
    // perf needs a moment to attach before the sessions start.
    await sleep(1000);
    const sample = await this.measure(
      target,
      "perf",
      0,
      "quit",
      this.profileJob(),
    );
    await recording.stop();
    await this.env.stopPostwarden(spec.id);
    const summary = recording.summarize();
    recording.remove();
    this.results.perfProfiles.push({
      target: spec.id,
      label: spec.label,
      sessions: sample.sessions,
      frontUs: sample.frontUs ?? 0,
      frontUserUs: sample.frontUserUs ?? 0,
      frontSystemUs: sample.frontSystemUs ?? 0,
      ...summary,
    });
    this.log(`  perf ${spec.id}: ${summary.samples} samples`);
  }

  /**
   * Collects warning, error, fatal and panic lines from Postfix's maillog
   * and postwarden's log files, then empties the files so that they stay
   * small. Lines are kept once each, without time stamps and process ids.
   */
  private collectLogWarnings(): void {
    const files = [this.env.postfixInstance.logFile];
    for (const target of this.env.targets.values()) {
      if (target.logFile !== undefined) files.push(target.logFile);
    }
    const seen = new Set(this.results.logWarnings);
    for (const file of files) {
      if (!existsSync(file)) continue;
      const text = readFileSync(file, "latin1");
      for (const line of text.split("\n")) {
        if (!/: (warning|error|fatal|panic): /.test(line)) continue;
        const stopped = / pid (\d+) killed by signal 15$/.exec(line);
        if (stopped && this.stoppedPostscreens.has(Number(stopped[1]))) {
          continue;
        }
        const message = line
          .replace(/^\w{3} [ \d]\d \d\d:\d\d:\d\d \S+ /, "")
          .replace(/\[\d+\]/, "");
        if (seen.size < 40 && !seen.has(message)) {
          seen.add(message);
          this.results.logWarnings.push(message);
        }
      }
      truncateSync(file, 0);
    }
  }
}

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2));
  if (process.getuid?.() !== 0) {
    throw new Error(
      "the benchmark must run as root: it starts a private Postfix instance",
    );
  }
  ensureOpenFilesLimit();
  const sizes = { ...(options.smoke ? SMOKE : FULL) };
  if (options.rounds !== undefined) sizes.rounds = options.rounds;
  if (options.profileOnly) sizes.rounds = 0;
  // Only a full run replaces BENCHMARKS.md and bench/chart.svg.
  const trial = options.smoke || options.profileOnly;
  const command =
    "npm run bench" +
    (trial || options.rounds !== undefined ? " --" : "") +
    (options.smoke ? " --smoke" : "") +
    (options.profileOnly ? " --profile-only" : "") +
    (options.rounds !== undefined ? ` --rounds ${options.rounds}` : "");

  const bench = new Bench(sizes, trial, command);
  // Postfix's master runs as a daemon of its own, so an interrupted run
  // must stop it here; the other processes get the terminal's signal too.
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.once(signal, () => {
      process.stderr.write(`bench: stopping on ${signal}\n`);
      void bench.stop().finally(() => process.exit(130));
    });
  }
  await bench.run();
  const root = packageRoot();
  const outputDirectory = trial ? join(root, "dist", "bench", "trial") : root;
  mkdirSync(outputDirectory, { recursive: true });
  writeFileSync(
    join(root, "dist", "bench", trial ? "trial.json" : "results.json"),
    JSON.stringify(bench.results, null, 2) + "\n",
  );
  const written = await writeReport(bench.results, outputDirectory);
  process.stdout.write(`wrote ${written.join(", ")}\n`);

  const failures = bench.results.failures;
  if (failures.length > 0) {
    process.stderr.write(
      `${failures.length} failures:\n  ${failures.slice(0, 20).join("\n  ")}\n`,
    );
    process.exit(1);
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`bench: ${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
