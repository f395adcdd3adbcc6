// Readings from /proc: CPU time of one process or of a whole process tree,
// resident memory, and finding Postfix's children by name. CPU times are in
// clock ticks of USER_HZ, which Linux fixes at 100 per second for /proc.
import { readdirSync, readFileSync } from "node:fs";

/** Microseconds in one clock tick of /proc/PID/stat (USER_HZ = 100). */
export const MICROS_PER_TICK = 10_000;

interface StatFields {
  pid: number;
  comm: string;
  ppid: number;
  /** utime + stime, in ticks. */
  cpu: number;
  /** cutime + cstime of reaped children, in ticks. */
  childCpu: number;
}

function parseStat(text: string): StatFields {
  // comm may contain spaces and parentheses; it ends at the last ")".
  const open = text.indexOf("(");
  const close = text.lastIndexOf(")");
  const fields = text.slice(close + 2).split(" ");
  const field = (index: number): number => Number(fields[index]);
  return {
    pid: Number(text.slice(0, open).trim()),
    comm: text.slice(open + 1, close),
    ppid: field(1),
    cpu: field(11) + field(12),
    childCpu: field(13) + field(14),
  };
}

function readStat(pid: number): StatFields | undefined {
  try {
    return parseStat(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return undefined;
  }
}

/** utime + stime of one process in ticks; throws if it is gone. */
export function processCpu(pid: number): number {
  const stat = readStat(pid);
  if (stat === undefined) throw new Error(`process ${pid} is gone`);
  return stat.cpu;
}

/** utime and stime of one process in ticks, apart; throws if it is gone. */
export function processCpuSplit(pid: number): { user: number; system: number } {
  const text = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return { user: Number(fields[11]), system: Number(fields[12]) };
}

function allProcesses(): StatFields[] {
  const result: StatFields[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const stat = readStat(Number(name));
    if (stat !== undefined) result.push(stat);
  }
  return result;
}

/** Lists the live descendants of `root`, not including it. */
export function descendants(root: number): StatFields[] {
  const processes = allProcesses();
  const children = new Map<number, StatFields[]>();
  for (const stat of processes) {
    const list = children.get(stat.ppid) ?? [];
    list.push(stat);
    children.set(stat.ppid, list);
  }
  const result: StatFields[] = [];
  const pending = [root];
  while (pending.length > 0) {
    const pid = pending.pop() ?? 0;
    for (const child of children.get(pid) ?? []) {
      result.push(child);
      pending.push(child.pid);
    }
  }
  return result;
}

/**
 * CPU ticks of a process tree: the root, its live descendants and the
 * children it has reaped (cutime + cstime). A child that exits between
 * the two reads may be counted twice or missed, an error of a few ticks.
 */
export function treeCpu(root: number): number {
  const rootStat = readStat(root);
  if (rootStat === undefined) throw new Error(`process ${root} is gone`);
  let total = rootStat.cpu + rootStat.childCpu;
  for (const child of descendants(root)) total += child.cpu;
  return total;
}

/**
 * Busy CPU ticks of the whole machine, all cores added up, from the first
 * line of /proc/stat: user, nice, system, irq, softirq and steal.
 */
export function machineBusyTicks(): number {
  const line = readFileSync("/proc/stat", "utf8").split("\n", 1)[0] ?? "";
  const [, user, nice, system, , , irq, softirq, steal] = line
    .trim()
    .split(/\s+/)
    .map(Number);
  return (
    (user ?? 0) +
    (nice ?? 0) +
    (system ?? 0) +
    (irq ?? 0) +
    (softirq ?? 0) +
    (steal ?? 0)
  );
}

/** Live children of `parent` whose command is `comm`, with their cmdline. */
export function childrenNamed(
  parent: number,
  comm: string,
): { pid: number; cmdline: string[] }[] {
  return descendants(parent)
    .filter((stat) => stat.ppid === parent && stat.comm === comm)
    .map((stat) => {
      let cmdline: string[] = [];
      try {
        cmdline = readFileSync(`/proc/${stat.pid}/cmdline`, "utf8")
          .split("\0")
          .filter((part) => part !== "");
      } catch {
        // Exited meanwhile.
      }
      return { pid: stat.pid, cmdline };
    });
}

export interface Memory {
  /** VmRSS, in KiB. */
  rssKiB: number;
  /** RssAnon, in KiB. */
  anonKiB: number;
}

/** Resident memory of a process from /proc/PID/status. */
export function memory(pid: number): Memory {
  const text = readFileSync(`/proc/${pid}/status`, "utf8");
  const value = (name: string): number => {
    const match = new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(text);
    if (match === null) throw new Error(`no ${name} in /proc/${pid}/status`);
    return Number(match[1]);
  };
  return { rssKiB: value("VmRSS"), anonKiB: value("RssAnon") };
}

/** Reads the soft limit on open files of this process. */
export function openFilesLimit(): number {
  const text = readFileSync("/proc/self/limits", "utf8");
  const match = /^Max open files\s+(\S+)/m.exec(text);
  const value = match?.[1] ?? "0";
  return value === "unlimited" ? Infinity : Number(value);
}
