// The shape of one benchmark run's measurements, shared by the runner and
// the report, and the statistics taken over rounds.

/** One target measured once, in one round, with a sessions job. */
export interface RateSample {
  round: number;
  target: string;
  sessions: number;
  failed: number;
  /** Completed sessions per second of the job's wall time. */
  rate: number;
  /** Front process CPU per session in µs (user + system); none for smtpd. */
  frontUs?: number;
  frontUserUs?: number;
  frontSystemUs?: number;
  /** Postfix process tree plus a front outside it, per session, in µs. */
  serverUs: number;
  /** postlogd (Postfix's maillog writer) per session, in µs. */
  postlogdUs?: number;
  /** Connect to final "220 " line, percentiles over the job, in ms. */
  greetingP50Ms: number;
  greetingP99Ms: number;
  /** Sessions whose final "220 " line took over 500 ms (a greet wait). */
  slowGreetings: number;
  /**
   * Share of the machine's CPU time (all cores) used by processes outside
   * the benchmark during the job: other users of a shared machine.
   */
  otherCpuShare?: number;
}

/** One target holding K idle connections in its greet wait, once. */
export interface HoldSample {
  round: number;
  target: string;
  connections: number;
  held: number;
  failed: number;
  closedEarly: number;
  idleRssKiB: number;
  heldRssKiB: number;
  idleAnonKiB: number;
  heldAnonKiB: number;
  /**
   * VmRSS idle and holding, read again once the front has been idle for
   * Sizes.settleMs, so that garbage left from start-up and from opening
   * the connections no longer counts.
   */
  settledIdleRssKiB: number;
  settledHeldRssKiB: number;
  /** Descriptors open in the front process while holding. */
  heldDescriptors: number;
  /** Seconds from the first connect to the last teaser. */
  connectSeconds: number;
}

export interface ProfileEntry {
  name: string;
  location: string;
  category: string;
  selfMs: number;
  share: number;
}

export interface ProfileSummary {
  target: string;
  label: string;
  sessions: number;
  /** Front CPU per session from /proc while profiling, in µs. */
  frontUs: number;
  /** Whether only the measured window was counted. */
  windowed: boolean;
  /** Main-thread samples that were not idle, in ms. */
  busyMs: number;
  top: ProfileEntry[];
  categories: { category: string; selfMs: number; share: number }[];
}

/** Where one postwarden process spent its CPU time, from perf record. */
export interface PerfProfile {
  target: string;
  label: string;
  sessions: number;
  frontUs: number;
  frontUserUs: number;
  frontSystemUs: number;
  samples: number;
  /** Shares of the samples per binary: kernel, JIT code, node, addon. */
  binaries: { name: string; share: number }[];
  nodeParts: { name: string; share: number }[];
  symbols: { binary: string; symbol: string; share: number }[];
}

export interface Machine {
  cores: number;
  cpuModel: string;
  memoryGiB: number;
  kernel: string;
  node: string;
  postfix: string;
  /** The commit measured, and whether src/ or native/ had changes. */
  postwarden: string;
}

export interface Sizes {
  rounds: number;
  quitSessions: number;
  msgSessions: number;
  concurrencies: number[];
  latencySessions: number;
  newSessions: number;
  newConcurrency: number;
  holdPostwarden: number[];
  holdPostscreen: number[];
  /**
   * Wait before reading the settled RSS, idle and holding, in ms: longer
   * than the 8 s of inactivity after which V8 collects garbage by itself.
   */
  settleMs: number;
  large: { bytes: number; sessions: number; concurrency: number }[];
  warmupSessions: number;
  cacheSources: number;
  profileSessions: number;
}

export interface BenchResults {
  /** A smoke or profile-only run, whose numbers are not a benchmark. */
  smoke: boolean;
  command: string;
  startedAt: string;
  durationSeconds: number;
  machine: Machine;
  sizes: Sizes;
  /** Target ids and labels, in the order of the report. */
  labels: Record<string, string>;
  /** Keyed by test, such as "quit C=100". */
  rate: Record<string, RateSample[]>;
  latency: RateSample[];
  passNew: RateSample[];
  /** Keyed by message size, such as "10 KiB". */
  large: Record<string, RateSample[]>;
  hold: HoldSample[];
  profiles: ProfileSummary[];
  perfProfiles: PerfProfile[];
  failures: string[];
  logWarnings: string[];
  notes: string[];
}

export interface Spread {
  median: number;
  min: number;
  max: number;
  count: number;
}

export function spread(values: number[]): Spread | undefined {
  const sorted = values
    .filter((value) => Number.isFinite(value))
    .sort((a, b) => a - b);
  if (sorted.length === 0) return undefined;
  const middle = Math.floor(sorted.length / 2);
  const median =
    sorted.length % 2 === 1
      ? (sorted[middle] ?? 0)
      : ((sorted[middle - 1] ?? 0) + (sorted[middle] ?? 0)) / 2;
  return {
    median,
    min: sorted[0] ?? 0,
    max: sorted[sorted.length - 1] ?? 0,
    count: sorted.length,
  };
}

/** Values of `pick` for one target, over rounds. */
export function valuesOf<T extends { target: string }>(
  samples: T[],
  target: string,
  pick: (sample: T) => number | undefined,
): number[] {
  return samples
    .filter((sample) => sample.target === target)
    .map(pick)
    .filter((value): value is number => value !== undefined);
}

/**
 * Ratios of `pick` between two targets taken round by round, so that the
 * machine's drift between rounds cancels out.
 */
export function roundRatios(
  samples: RateSample[],
  numerator: string,
  denominator: string,
  pick: (sample: RateSample) => number | undefined,
): number[] {
  const ratios: number[] = [];
  const rounds = new Set(samples.map((sample) => sample.round));
  for (const round of rounds) {
    const top = samples.find(
      (sample) => sample.round === round && sample.target === numerator,
    );
    const bottom = samples.find(
      (sample) => sample.round === round && sample.target === denominator,
    );
    const a = top === undefined ? undefined : pick(top);
    const b = bottom === undefined ? undefined : pick(bottom);
    if (a !== undefined && b !== undefined && b > 0) ratios.push(a / b);
  }
  return ratios;
}
