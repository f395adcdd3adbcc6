// Summarizes a V8 CPU profile (the .cpuprofile file that node --cpu-prof
// writes at exit): self time per function and per category, from the
// sample timeline. Time spent inside a native call, system calls included,
// is the self time of the JavaScript-visible native function.
import { readFileSync } from "node:fs";
import type { ProfileEntry } from "./results.js";

interface ProfileNode {
  id: number;
  callFrame: {
    functionName: string;
    url: string;
    lineNumber: number;
  };
}

interface CpuProfile {
  nodes: ProfileNode[];
  /** Monotonic clock, in µs (CLOCK_MONOTONIC on Linux, as process.hrtime). */
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

function category(node: ProfileNode): string {
  const { functionName, url } = node.callFrame;
  if (functionName === "(garbage collector)") return "garbage collector";
  if (functionName === "(program)") return "V8 and libuv outside JavaScript";
  if (url === "") return "native functions (addon and Node built-ins)";
  if (url.startsWith("node:")) return "Node's JavaScript library";
  if (url.includes("/node_modules/")) return "npm dependencies";
  if (url.includes("/dist/src/")) return "postwarden's JavaScript";
  return "other JavaScript";
}

function location(node: ProfileNode): string {
  const { url, lineNumber } = node.callFrame;
  if (url === "") return "";
  const short = url
    .replace(/^file:\/\/.*\/dist\//, "dist/")
    .replace(/^file:\/\/.*\/node_modules\//, "node_modules/");
  return `${short}:${lineNumber + 1}`;
}

export interface ProfileBreakdown {
  /** False when the window was outside the profile and all samples count. */
  windowed: boolean;
  busyMs: number;
  top: ProfileEntry[];
  categories: { category: string; selfMs: number; share: number }[];
}

/**
 * Self time per function and category, from the busy (non-idle) samples
 * taken between `fromMicros` and `toMicros` on the monotonic clock, so
 * that start-up and shutdown are left out.
 */
export function summarizeProfile(
  path: string,
  fromMicros: number,
  toMicros: number,
  topCount = 15,
): ProfileBreakdown {
  const profile = JSON.parse(readFileSync(path, "utf8")) as CpuProfile;
  const nodes = new Map(profile.nodes.map((node) => [node.id, node]));
  const windowed =
    fromMicros >= profile.startTime && toMicros <= profile.endTime;
  const selfMicros = new Map<number, number>();
  let time = profile.startTime;
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i] ?? 0;
    // A sample's delta is the time since the previous sample; attribute
    // the interval to the sample that ends it, as Chrome's tools do.
    const delta = profile.timeDeltas[i] ?? 0;
    time += delta;
    if (windowed && (time < fromMicros || time > toMicros)) continue;
    selfMicros.set(id, (selfMicros.get(id) ?? 0) + Math.max(0, delta));
  }

  const byFunction = new Map<string, ProfileEntry>();
  const byCategory = new Map<string, number>();
  let busyMicros = 0;
  for (const [id, micros] of selfMicros) {
    const node = nodes.get(id);
    if (node === undefined || node.callFrame.functionName === "(idle)") {
      continue;
    }
    busyMicros += micros;
    const name = node.callFrame.functionName || "(anonymous)";
    const where = location(node);
    const kind = category(node);
    const key = `${name} ${where}`;
    const entry = byFunction.get(key) ?? {
      name,
      location: where,
      category: kind,
      selfMs: 0,
      share: 0,
    };
    entry.selfMs += micros / 1000;
    byFunction.set(key, entry);
    byCategory.set(kind, (byCategory.get(kind) ?? 0) + micros / 1000);
  }

  const busyMs = busyMicros / 1000;
  const top = [...byFunction.values()]
    .sort((a, b) => b.selfMs - a.selfMs)
    .slice(0, topCount)
    .map((entry) => ({ ...entry, share: entry.selfMs / busyMs }));
  const categories = [...byCategory.entries()]
    .sort((a, b) => b[1] - a[1])
    .map(([name, selfMs]) => ({
      category: name,
      selfMs,
      share: selfMs / busyMs,
    }));
  return { windowed, busyMs, top, categories };
}
