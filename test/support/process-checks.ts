// Resource and log checks on a running postwarden, read from /proc and
// from its collected log lines, for tests that attack it and then expect
// it to hold no more than before.
import assert from "node:assert/strict";
import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import type { PostwardenProcess } from "./postwarden.js";

export function descriptorCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

export function rssKiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN);
}

/** CPU time (user + system) of a process, in clock ticks. */
export function cpuTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(fields[11]) + Number(fields[12]);
}

/** Waits until the process has at most `baseline` descriptors open. */
export async function expectDescriptorsBack(
  pid: number,
  baseline: number,
  timeoutMs = 5000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (descriptorCount(pid) > baseline && Date.now() < deadline) {
    await sleep(100);
  }
  const names = readdirSync(`/proc/${pid}/fd`).map((fd) => {
    try {
      return readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      return "closed";
    }
  });
  assert.ok(
    names.length <= baseline,
    `postwarden holds ${names.length} descriptors, ${baseline} before the ` +
      `attack: ${names.join(" ")}`,
  );
}

/** Fails when postwarden uses more than 20% of a core for a second. */
export async function expectIdle(pid: number): Promise<void> {
  const start = cpuTicks(pid);
  await sleep(1000);
  const used = cpuTicks(pid) - start;
  // 1 s of spinning would be about 100 ticks at 100 Hz.
  assert.ok(used < 20, `postwarden used ${used} CPU ticks in 1 s while idle`);
}

export const LOG_PREFIX =
  /^[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \S+ postfix\/postwarden\[\d+\]: \S/;

/** Asserts that every line has postscreen's format and no stack trace. */
export function expectWellFormedLog(warden: PostwardenProcess): void {
  for (const line of warden.lines) {
    assert.match(
      line,
      LOG_PREFIX,
      `malformed log line ${JSON.stringify(line)}`,
    );
    assert.match(
      line,
      /^[\x20-\x7e]*$/,
      `unescaped bytes in ${JSON.stringify(line)}`,
    );
    assert.doesNotMatch(line, /^\s+at |Error:|Uncaught/, `stack trace ${line}`);
  }
}
