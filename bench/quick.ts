// A quick A/B check of the hot path (`node dist/bench/quick.js`, as root):
// postwarden against postscreen on quit sessions at C=100, allowlisted and
// PASS OLD, and RSS per connection held in the greet wait. It measures the
// same way as bench/run.ts but writes no report, so a change can be judged
// in a few minutes. postwarden's log goes to /dev/null here. Options for
// node itself, such as --max-semi-space-size=1, go in the environment
// variable POSTWARDEN_NODE_ARGS (separated by spaces).
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { summarizeProfile } from "./profile.js";
import { LoadClient, loopbackAddresses } from "./load.js";
import { MICROS_PER_TICK, memory, processCpuSplit } from "./proc.js";
import { BenchEnvironment, type Target } from "./targets.js";

const USAGE =
  "usage: quick.js [--sessions N] [--rounds N] [--hold K] [--no-rate] " +
  "[--profile DIRECTORY]";

interface Options {
  sessions: number;
  rounds: number;
  hold: number;
  rate: boolean;
  /** Where node --cpu-prof writes the rate targets' profiles, if set. */
  profileDirectory: string | undefined;
}

function parseOptions(argv: string[]): Options {
  const options: Options = {
    sessions: 5000,
    rounds: 3,
    hold: 2000,
    rate: true,
    profileDirectory: undefined,
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--no-rate") {
      options.rate = false;
      continue;
    }
    if (arg === "--profile") {
      options.profileDirectory = argv[++i];
      continue;
    }
    const value = Number(argv[++i]);
    if (!Number.isInteger(value) || value < 0) {
      throw new Error(`${arg}: expected a non-negative integer; ${USAGE}`);
    }
    if (arg === "--sessions") options.sessions = value;
    else if (arg === "--rounds") options.rounds = value;
    else if (arg === "--hold") options.hold = value;
    else throw new Error(`unknown argument ${arg}; ${USAGE}`);
  }
  return options;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

const RATE_TARGETS = ["ps-allow", "pw-allow", "ps-old", "pw-old"];

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2));
  const env = new BenchEnvironment();
  const load = LoadClient.start();
  const sources = loopbackAddresses(32, 1016);
  const timeoutMs = 30_000;
  const run = (target: Target, sessions: number, concurrency: number) =>
    load.sessions({
      port: target.port,
      kind: "quit",
      bodyBytes: 0,
      timeoutMs,
      sessions,
      concurrency,
      sources,
    });
  const extraArgs = (process.env.POSTWARDEN_NODE_ARGS ?? "")
    .split(" ")
    .filter((arg) => arg !== "");
  const nodeArgs =
    options.profileDirectory === undefined
      ? extraArgs
      : [
          ...extraArgs,
          "--cpu-prof",
          `--cpu-prof-dir=${options.profileDirectory}`,
        ];
  try {
    await env.start([
      {
        id: "pw-allow",
        label: "postwarden allowlisted",
        logToFile: false,
        args: [],
        preQueueLimit: 5000,
        nodeArgs,
      },
      {
        id: "pw-old",
        label: "postwarden PASS OLD",
        logToFile: false,
        args: ["-o", "access_list=", "--greet-wait", "1s"],
        preQueueLimit: 5000,
        nodeArgs,
      },
      {
        id: "pw-hold",
        label: "postwarden, 60 s greet wait",
        logToFile: false,
        args: ["-o", "access_list=", "--greet-wait", "60s"],
        preQueueLimit: 20_000,
        nodeArgs: extraArgs,
      },
    ]);
    if (options.rate) {
      for (const id of ["ps-old", "pw-old"]) {
        await run(env.target(id), sources.length, 254);
      }
      for (const id of RATE_TARGETS) await run(env.target(id), 1000, 100);
      for (let round = 0; round < options.rounds; round++) {
        for (const id of RATE_TARGETS) {
          const target = env.target(id);
          const pid = target.frontPid();
          if (pid === undefined) throw new Error(`${id}: no front process`);
          const before = processCpuSplit(pid);
          const result = await run(target, options.sessions, 100);
          const after = processCpuSplit(pid);
          const perSession = (ticks: number): string =>
            ((ticks * MICROS_PER_TICK) / options.sessions).toFixed(1);
          console.log(
            `round ${round + 1} ${id.padEnd(8)} ` +
              `${(result.completed / (result.elapsedMs / 1000)).toFixed(0)}/s ` +
              `user ${perSession(after.user - before.user)} ` +
              `system ${perSession(after.system - before.system)} us/session` +
              (result.failed > 0 ? ` ${result.failed} FAILED` : ""),
          );
        }
      }
    }
    if (options.hold > 0) {
      const holdSources = loopbackAddresses(48, options.hold + 100);
      for (const id of ["ps-hold", "pw-hold"]) {
        const target = env.target(id);
        const job = {
          port: target.port,
          concurrency: 200,
          sources: holdSources,
          timeoutMs,
        };
        if (target.frontPid() === undefined) {
          await load.hold({ ...job, connections: 1 });
          await load.release();
          await sleep(1000);
        }
        const pid = target.frontPid();
        if (pid === undefined) throw new Error(`${id}: no front process`);
        await sleep(500);
        const idle = memory(pid);
        const result = await load.hold({ ...job, connections: options.hold });
        await sleep(1000);
        const held = memory(pid);
        await load.release();
        console.log(
          `hold ${id} K=${options.hold}: ${result.held} held, ` +
            `${result.failed} failed, idle ${(idle.rssKiB / 1024).toFixed(1)} MiB, ` +
            `${((held.rssKiB - idle.rssKiB) / options.hold).toFixed(2)} KiB ` +
            `RSS, ${((held.anonKiB - idle.anonKiB) / options.hold).toFixed(2)} ` +
            "KiB anon per connection",
        );
      }
    }
  } finally {
    load.stop();
    await env.stop();
  }
  if (options.profileDirectory !== undefined) {
    printProfiles(options.profileDirectory);
  }
}

/** Prints the functions with the most self time in each profile. */
function printProfiles(directory: string): void {
  for (const name of readdirSync(directory)) {
    if (!name.endsWith(".cpuprofile")) continue;
    const summary = summarizeProfile(join(directory, name), 0, 0, 30);
    console.log(`${name}: ${summary.busyMs.toFixed(0)} ms busy`);
    for (const entry of summary.top) {
      console.log(
        `  ${entry.selfMs.toFixed(0).padStart(6)} ms ` +
          `${(entry.share * 100).toFixed(1).padStart(5)}% ` +
          `${entry.name} ${entry.location}`,
      );
    }
  }
}

await main();
