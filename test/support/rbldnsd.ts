// A private rbldnsd serving DNSBL zones on 127.0.0.1 for tests: zone files
// in a temporary directory, the daemon in the foreground on a free UDP port.
// It needs Debian's rbldnsd package (/usr/sbin/rbldnsd). rbldnsd refuses to
// run as root, so under root it runs as the package's rbldns user, or as
// nobody if that user is missing. rbldnsd serves UDP only, and the zone
// files are loaded once at start because automatic reloads are off.
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { randomInt } from "node:crypto";
import { Resolver } from "node:dns/promises";
import {
  chmodSync,
  existsSync,
  mkdtempSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

const RBLDNSD = "/usr/sbin/rbldnsd";
// Ports below Linux's default ephemeral range (32768-60999), so that client
// sockets, such as the resolver's own, rarely use the port rbldnsd wants.
const FIRST_PORT = 20_000;
const LAST_PORT = 32_767;
const MAX_BIND_ATTEMPTS = 10;
const START_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 5_000;
const PROBE_TIMEOUT_MS = 250;
const POLL_INTERVAL_MS = 50;
const MAX_OUTPUT_CHARS = 64 * 1024;
// Printed once the zones are loaded, just before rbldnsd serves queries.
const STARTED_LINE = /^rbldnsd: .* started \(/m;
// rbldnsd 1.0pre skips a line it cannot parse, warns "file NAME(LINE):
// REASON" and serves the zone without it. start() rejects instead, so that
// a typo in test data cannot pass as "not listed".
const REJECTED_LINE = /^rbldnsd: file \S+\(\d+\): .*$/gm;

// node:dns error codes that carry a DNS response code: the server replied.
const REPLY_ERROR_CODES = new Set([
  "ENODATA",
  "ENOTFOUND",
  "ESERVFAIL",
  "EREFUSED",
  "EFORMERR",
  "ENOTIMP",
  "EBADRESP",
]);

export interface RbldnsdZone {
  /** Zone name such as "bl.test", without a final dot. */
  name: string;
  /** rbldnsd dataset type; see rbldnsd(8) for each file format. */
  type: "ip4set" | "ip6trie" | "ip4trie" | "generic";
  /** Content of the dataset file, one entry per line. */
  lines: string[];
}

export interface RbldnsdOptions {
  /** TTL in seconds for records whose dataset sets no $TTL (rbldnsd -t). rbldnsd's default is 35 minutes. */
  defaultTtl?: number;
  /**
   * A command prefix that runs rbldnsd, such as ["ip", "netns", "exec",
   * NAME]. It must exec the command in place, so that the child's PID stays
   * the daemon's. start() runs its readiness probe through the same prefix,
   * and `server` is then reachable only where the prefix runs commands.
   */
  wrapper?: string[];
}

export class Rbldnsd {
  readonly port: number;
  readonly server: string;
  private readonly daemon: Daemon;
  private readonly exitListener = (): void => {
    // Last resort when a test process ends without stop(): the daemon and
    // its files must not outlive it. Only synchronous calls work here.
    this.daemon.child.kill("SIGKILL");
    rmSync(this.daemon.directory, { recursive: true, force: true });
  };

  private constructor(port: number, daemon: Daemon) {
    this.port = port;
    this.server = `127.0.0.1:${port}`;
    this.daemon = daemon;
    process.on("exit", this.exitListener);
  }

  /**
   * Writes the zone files and starts rbldnsd on a free port, trying other
   * ports while the chosen one is in use. Resolves once it replies to DNS
   * queries. Several zones with the same name form one zone.
   */
  static async start(
    zones: RbldnsdZone[],
    options: RbldnsdOptions = {},
  ): Promise<Rbldnsd> {
    if (!existsSync(RBLDNSD)) {
      throw new Error(
        `${RBLDNSD} not found: install the rbldnsd package (scripts/setup does)`,
      );
    }
    checkZones(zones);
    const ttlArguments: string[] = [];
    if (options.defaultTtl !== undefined) {
      if (!Number.isInteger(options.defaultTtl) || options.defaultTtl < 0) {
        throw new Error(
          `invalid defaultTtl ${options.defaultTtl}: expected whole seconds, 0 or more`,
        );
      }
      ttlArguments.push("-t", String(options.defaultTtl));
    }
    const userArguments =
      process.getuid?.() === 0 ? ["-u", await unprivilegedUser()] : [];
    const wrapper = options.wrapper ?? [];

    const directory = writeZoneFiles(zones);
    const zoneSpecs = zones.map(
      (zone, index) => `${zone.name}:${zone.type}:${zoneFileName(zone, index)}`,
    );
    let lastOutput = "";
    try {
      for (let attempt = 1; attempt <= MAX_BIND_ATTEMPTS; attempt++) {
        const port = randomInt(FIRST_PORT, LAST_PORT + 1);
        const args = [
          "-n", // stay in the foreground, so the PID is the daemon's
          "-4",
          "-b",
          `127.0.0.1/${port}`,
          "-w",
          directory,
          "-c",
          "0", // never check the files for changes
          ...ttlArguments,
          ...userArguments,
          ...zoneSpecs,
        ];
        const command = [...wrapper, RBLDNSD, ...args].join(" ");
        const daemon = spawnDaemon(wrapper, args, directory);
        const state = await waitUntilAnswering(
          daemon,
          port,
          zones[0]!.name,
          wrapper,
        );
        const rejectedLines = daemon.output.text().match(REJECTED_LINE);
        if (state === "answering" && rejectedLines !== null) {
          await stopDaemon(daemon);
          throw new Error(
            `rbldnsd skipped invalid lines in the zone files, which are ` +
              `named INDEX-ZONE.TYPE with lines counted from 1; fix them:\n` +
              `${rejectedLines.join("\n")}\ncommand: ${command}`,
          );
        }
        if (state === "answering") {
          return new Rbldnsd(port, daemon);
        }
        if (state === "timed out") {
          await stopDaemon(daemon);
          throw new Error(
            `timed out after ${START_TIMEOUT_MS} ms waiting for rbldnsd ` +
              `to reply on 127.0.0.1/${port}: ${command}\n` +
              `output:\n${daemon.output.text()}`,
          );
        }
        await daemon.closed;
        lastOutput = daemon.output.text();
        if (!lastOutput.includes("Address already in use")) {
          throw new Error(
            `rbldnsd exited during start (${describeExit(daemon)}): ` +
              `${command}\noutput:\n${lastOutput}`,
          );
        }
      }
      throw new Error(
        `rbldnsd found no free UDP port on 127.0.0.1 in ` +
          `${MAX_BIND_ATTEMPTS} attempts between ${FIRST_PORT} and ${LAST_PORT}\n` +
          `last output:\n${lastOutput}`,
      );
    } catch (error) {
      rmSync(directory, { recursive: true, force: true });
      throw error;
    }
  }

  /** Stops rbldnsd (SIGTERM, then SIGKILL after 5 s) and removes the zone files. */
  async stop(): Promise<void> {
    await stopDaemon(this.daemon);
    process.off("exit", this.exitListener);
    rmSync(this.daemon.directory, { recursive: true, force: true });
  }

  /** rbldnsd's standard output and error so far, at most the last 64 KiB. */
  log(): string {
    return this.daemon.output.text();
  }
}

/** One rbldnsd process that this module started. */
interface Daemon {
  child: ChildProcess;
  directory: string;
  output: OutputBuffer;
  /** Resolves once the process has exited and its output pipes are closed. */
  closed: Promise<void>;
  /** Set when the process could not be started. */
  spawnError?: Error;
}

function spawnDaemon(
  wrapper: string[],
  args: string[],
  directory: string,
): Daemon {
  // rbldnsd 1.0pre prints progress to standard output and warnings about
  // skipped lines to standard error. One pipe for both keeps them in the order
  // written, so a warning arrives before the "started" line. The shell
  // execs the wrapper, if any, which execs rbldnsd, so the child's PID is
  // the daemon's.
  const child = spawn(
    "/bin/sh",
    ["-c", 'exec "$0" "$@" 2>&1', ...wrapper, RBLDNSD, ...args],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  const output = new OutputBuffer();
  child.stdout?.on("data", (chunk: Buffer) => output.append(chunk));
  // Only the shell writes here, for example when it cannot run rbldnsd.
  child.stderr?.on("data", (chunk: Buffer) => output.append(chunk));
  // "close" comes after "exit" once the pipes are drained, so the output
  // is complete. It also follows a failed spawn.
  const closed = new Promise<void>((resolve) =>
    child.once("close", () => resolve()),
  );
  const daemon: Daemon = { child, directory, output, closed };
  child.on("error", (error) => {
    daemon.spawnError ??= error;
    output.append(Buffer.from(`${error.message}\n`));
  });
  return daemon;
}

function hasExited(daemon: Daemon): boolean {
  const child = daemon.child;
  return (
    child.exitCode !== null ||
    child.signalCode !== null ||
    daemon.spawnError !== undefined
  );
}

function describeExit(daemon: Daemon): string {
  const child = daemon.child;
  if (daemon.spawnError !== undefined) {
    return `spawn failed: ${daemon.spawnError.message}`;
  }
  return child.signalCode !== null
    ? `signal ${child.signalCode}`
    : `exit code ${child.exitCode}`;
}

/**
 * Sends SIGTERM to the daemon's PID, then SIGKILL if it has not exited
 * within STOP_TIMEOUT_MS.
 */
async function stopDaemon(daemon: Daemon): Promise<void> {
  for (const signal of ["SIGTERM", "SIGKILL"] as const) {
    if (hasExited(daemon)) {
      return;
    }
    daemon.child.kill(signal);
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, STOP_TIMEOUT_MS);
    });
    await Promise.race([daemon.closed, timedOut]);
    clearTimeout(timer);
  }
  if (!hasExited(daemon)) {
    throw new Error(
      `rbldnsd (PID ${daemon.child.pid}) did not exit after SIGKILL within ${STOP_TIMEOUT_MS} ms`,
    );
  }
}

function checkZones(zones: RbldnsdZone[]): void {
  if (zones.length === 0) {
    throw new Error("missing zones: Rbldnsd.start needs at least one");
  }
  for (const zone of zones) {
    // rbldnsd splits each zone spec at ":" and ",", so neither may appear.
    if (!/^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/.test(zone.name)) {
      throw new Error(
        `invalid zone name ${JSON.stringify(zone.name)}: expected dotted ` +
          "labels of letters, digits, '-' or '_', without a final dot",
      );
    }
    for (const line of zone.lines) {
      if (/[\r\n]/.test(line)) {
        throw new Error(
          `invalid line ${JSON.stringify(line)} in zone ${zone.name}: ` +
            "a line must not contain a line break",
        );
      }
    }
  }
}

function zoneFileName(zone: RbldnsdZone, index: number): string {
  return `${index}-${zone.name}.${zone.type}`;
}

function writeZoneFiles(zones: RbldnsdZone[]): string {
  const directory = mkdtempSync(join(tmpdir(), "postwarden-rbldnsd-"));
  // rbldnsd reads the files after it switches to its own user, and
  // mkdtemp makes the directory 0700.
  chmodSync(directory, 0o755);
  zones.forEach((zone, index) => {
    const path = join(directory, zoneFileName(zone, index));
    writeFileSync(path, zone.lines.join("\n") + "\n");
    chmodSync(path, 0o644);
  });
  return directory;
}

/** Returns rbldns, the user Debian's package creates, or nobody if it is missing. */
async function unprivilegedUser(): Promise<string> {
  try {
    await run("id", ["-u", "rbldns"], { timeout: 5_000 });
    return "rbldns";
  } catch {
    return "nobody";
  }
}

/**
 * Waits until rbldnsd has bound its port and loaded its zones, and then
 * replies to an SOA query for `zone` with any response code. Stops waiting
 * when it exits or START_TIMEOUT_MS passes. Requiring its own "listening
 * on ADDRESS" line keeps a reply from another server on the port from
 * counting.
 */
async function waitUntilAnswering(
  daemon: Daemon,
  port: number,
  zone: string,
  wrapper: string[],
): Promise<"answering" | "exited" | "timed out"> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  const listening = `listening on 127.0.0.1/${port}`;
  for (;;) {
    if (hasExited(daemon)) {
      return "exited";
    }
    const output = daemon.output.text();
    if (
      output.includes(listening) &&
      STARTED_LINE.test(output) &&
      (await answers(`127.0.0.1:${port}`, zone, wrapper))
    ) {
      return "answering";
    }
    if (Date.now() > deadline) {
      return "timed out";
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_INTERVAL_MS));
  }
}

/**
 * Sends one SOA query for `zone` to `server`, through `wrapper` when it is
 * not empty, and returns whether any reply arrived.
 */
async function answers(
  server: string,
  zone: string,
  wrapper: string[],
): Promise<boolean> {
  if (wrapper.length > 0) {
    return answersThroughWrapper(server, zone, wrapper);
  }
  const resolver = new Resolver({ timeout: PROBE_TIMEOUT_MS, tries: 1 });
  resolver.setServers([server]);
  try {
    await resolver.resolveSoa(zone);
    return true;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? "";
    return REPLY_ERROR_CODES.has(code);
  } finally {
    resolver.cancel();
  }
}

// The probe for a wrapped rbldnsd: a separate Node.js process, so that it
// runs where the wrapper runs rbldnsd, for example in a network namespace.
// It exits with 0 when a reply arrived. Arguments: server, zone, timeout in
// milliseconds, and the reply error codes as JSON.
const PROBE_SCRIPT = `
import { Resolver } from "node:dns/promises";
const [server, zone, timeout, codes] = process.argv.slice(1);
const resolver = new Resolver({ timeout: Number(timeout), tries: 1 });
resolver.setServers([server]);
try {
  await resolver.resolveSoa(zone);
} catch (error) {
  process.exitCode = JSON.parse(codes).includes(error.code) ? 0 : 1;
}
`;
// Time for the wrapper and Node.js to start, on top of the query timeout.
const PROBE_STARTUP_MS = 10_000;

async function answersThroughWrapper(
  server: string,
  zone: string,
  wrapper: string[],
): Promise<boolean> {
  const [program, ...prefix] = wrapper;
  try {
    await run(
      program!,
      [
        ...prefix,
        process.execPath,
        "--input-type=module",
        "--eval",
        PROBE_SCRIPT,
        server,
        zone,
        String(PROBE_TIMEOUT_MS),
        JSON.stringify([...REPLY_ERROR_CODES]),
      ],
      { timeout: PROBE_TIMEOUT_MS + PROBE_STARTUP_MS, killSignal: "SIGKILL" },
    );
    return true;
  } catch {
    return false;
  }
}

/** Keeps the last MAX_OUTPUT_CHARS characters of a process's output. */
class OutputBuffer {
  private content = "";

  append(chunk: Buffer): void {
    this.content = (this.content + chunk.toString("utf8")).slice(
      -MAX_OUTPUT_CHARS,
    );
  }

  text(): string {
    return this.content;
  }
}
