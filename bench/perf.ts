// On-CPU sampling of one process with Linux perf, using the cpu-clock
// software event because virtual machines often lack hardware counters.
// The summary reports where the CPU time went, per binary (kernel, V8's
// generated code, the node binary, the addon, libc) and per symbol.
// JavaScript names come from the /tmp/perf-PID.map file that node
// --perf-basic-prof writes.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { rmSync } from "node:fs";

export interface PerfShare {
  name: string;
  share: number;
}

export interface PerfSummary {
  samples: number;
  binaries: PerfShare[];
  /** The node binary's share split by what its symbols belong to. */
  nodeParts: PerfShare[];
  symbols: { binary: string; symbol: string; share: number }[];
}

/** Checks that perf is installed and can count the cpu-clock event. */
export function perfAvailable(): boolean {
  const result = spawnSync("perf", ["stat", "-e", "cpu-clock", "true"], {
    encoding: "utf8",
  });
  return result.status === 0;
}

/** Names a binary the way the report shows it. */
function binaryName(dso: string): string {
  if (dso === "[kernel.kallsyms]") return "Linux kernel";
  if (dso.startsWith("[JIT]") || /^perf-\d+\.map$/.test(dso)) {
    return "JavaScript (V8 generated code)";
  }
  if (dso === "node") return "node binary (V8, libuv, N-API)";
  if (dso === "postwarden.node") return "postwarden's addon";
  if (dso.startsWith("libc")) return "libc";
  return dso;
}

/** Groups a symbol of the node binary by the part of Node it belongs to. */
function nodePart(symbol: string): string {
  if (/^Builtins_/.test(symbol))
    return "V8 builtins (interpreter, ICs, runtime stubs)";
  if (/Heap|Scaveng|Mark|Sweep|GC|Evacuat|Compact/.test(symbol)) {
    return "V8 garbage collector";
  }
  if (/^(v8impl|napi_)|Napi/.test(symbol)) return "N-API";
  if (/^uv_|^uv__/.test(symbol)) return "libuv";
  if (/^node::/.test(symbol)) return "Node core (C++)";
  if (/^v8::/.test(symbol)) return "V8 runtime (C++)";
  return "other symbols of the node binary";
}

/** A `perf record` attached to a running process until stop() is called. */
export class PerfRecording {
  private readonly child: ChildProcess;
  private readonly exited: Promise<void>;

  constructor(
    private readonly pid: number,
    private readonly file: string,
  ) {
    this.child = spawn(
      "perf",
      [
        "record",
        "-e",
        "cpu-clock",
        "-F",
        "1999",
        "-g",
        "-p",
        String(pid),
      ].concat(["-o", file]),
      { stdio: "ignore" },
    );
    this.exited = new Promise((resolve) =>
      this.child.once("exit", () => resolve()),
    );
  }

  /** Stops recording (SIGINT, as Ctrl-C) and waits for perf to write. */
  async stop(): Promise<void> {
    this.child.kill("SIGINT");
    await this.exited;
  }

  /** Reads the recording with perf report. */
  summarize(topCount = 20): PerfSummary {
    const report = (sort: string, percentLimit: string): string[] => {
      const result = spawnSync(
        "perf",
        [
          "report",
          "-i",
          this.file,
          "--stdio",
          "--no-children",
          "-g",
          "none",
          "--percent-limit",
          percentLimit,
          "--sort",
          sort,
        ],
        { encoding: "utf8", maxBuffer: 64 * 1024 * 1024 },
      );
      return result.stdout.split("\n");
    };

    let samples = 0;
    const binaries = new Map<string, number>();
    for (const line of report("dso", "0.2")) {
      // "# Samples: 4K of event 'cpu-clock'": perf rounds to K and M.
      const count = /^# Samples: ([\d.]+)([KM]?)/.exec(line);
      if (count) {
        const scale = { "": 1, K: 1000, M: 1_000_000 }[count[2] ?? ""] ?? 1;
        samples = Number(count[1]) * scale;
      }
      const match = /^\s+([\d.]+)%\s+(.+?)\s*$/.exec(line);
      if (!match || line.startsWith("#")) continue;
      const name = binaryName(match[2] ?? "");
      binaries.set(name, (binaries.get(name) ?? 0) + Number(match[1]) / 100);
    }

    const symbols: PerfSummary["symbols"] = [];
    const nodeParts = new Map<string, number>();
    for (const line of report("dso,sym", "0")) {
      const match = /^\s+([\d.]+)%\s+(.+?)\s+\[[.k]\]\s+(.+?)\s*$/.exec(line);
      if (!match || line.startsWith("#")) continue;
      const binary = binaryName(match[2] ?? "");
      const symbol = match[3] ?? "";
      const share = Number(match[1]) / 100;
      if (match[2] === "node") {
        const part = nodePart(symbol);
        nodeParts.set(part, (nodeParts.get(part) ?? 0) + share);
      }
      if (symbols.length < topCount) symbols.push({ binary, symbol, share });
    }
    return {
      samples,
      binaries: [...binaries.entries()]
        .map(([name, share]) => ({ name, share }))
        .sort((a, b) => b.share - a.share),
      nodeParts: [...nodeParts.entries()]
        .map(([name, share]) => ({ name, share }))
        .sort((a, b) => b.share - a.share),
      symbols,
    };
  }

  /** Removes the recording and the process's JIT symbol map. */
  remove(): void {
    rmSync(this.file, { force: true });
    rmSync(`/tmp/perf-${this.pid}.map`, { force: true });
  }
}
