// The front ends under test, all on 127.0.0.1 ports. One private Postfix
// instance runs a direct smtpd and three postscreen services, with
// smtp-sink behind smtpd_proxy_filter so that mail never reaches the
// queue. The Node proxy sits in front of the direct smtpd, and there is a
// postwarden process for each path and logging mode. stop() stops
// everything started here.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import {
  closeSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
} from "node:fs";
import { createServer, connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PostfixInstance } from "../test/support/postfix.js";
import { ROOT_OPTIONS } from "../test/support/postwarden.js";
import { packageRoot } from "../src/native.js";
import { childrenNamed } from "./proc.js";

export type TargetKind = "direct" | "proxy" | "postscreen" | "postwarden";

export interface Target {
  /** Short id used in results, such as "pw-old". */
  id: string;
  /** Name in the report. */
  label: string;
  kind: TargetKind;
  port: number;
  /**
   * The front-end process, looked up when asked: postscreen is started by
   * master on the first connection. undefined for the direct smtpd.
   */
  frontPid(): number | undefined;
  /** Whether the front process is a child of Postfix's master. */
  frontInPostfixTree: boolean;
  /** postwarden's log file, when it logs to a file. */
  logFile?: string;
}

/** Finds a free TCP port on 127.0.0.1 by binding port 0. */
async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** Waits until something accepts connections on the port. */
async function waitForPort(port: number, what: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const accepted = await new Promise<boolean>((resolve) => {
      const socket = connect({ host: "127.0.0.1", port });
      socket.once("connect", () => {
        socket.destroy();
        resolve(true);
      });
      socket.once("error", () => resolve(false));
    });
    if (accepted) return;
    if (Date.now() > deadline) {
      throw new Error(`${what} did not accept connections on port ${port}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Sends SIGTERM, then SIGKILL after 10 s, and waits for the exit. */
async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once("exit", resolve));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
  await exited;
  clearTimeout(timer);
}

export interface PostwardenSpec {
  id: string;
  label: string;
  /** Log to a file (normal) or to /dev/null (logging discarded). */
  logToFile: boolean;
  /** Extra command-line arguments after the common ones. */
  args: string[];
  /**
   * Clients under test before postwarden replies "busy", if this build has
   * that limit. It must stay above the clients a test keeps open at once.
   */
  preQueueLimit: number;
  /** Options for node itself, such as --cpu-prof. */
  nodeArgs?: string[];
}

/**
 * Builds `-o` arguments that raise the connection limits postscreen also
 * has, as they are raised for postscreen, so that no limit is hit. Only
 * parameters that this build of postwarden accepts are set, as listed by
 * `postwarden check`. `preQueueLimit` is the number of clients under test
 * before postwarden replies "busy".
 */
function limitArguments(
  postfixConfigDirectory: string,
  preQueueLimit: number,
): string[] {
  const cli = join(packageRoot(), "dist", "src", "cli.js");
  const check = spawnSync(
    process.execPath,
    [
      cli,
      "check",
      "--config",
      "/dev/null",
      "--listen",
      "127.0.0.1:1",
      "--postfix-config-directory",
      postfixConfigDirectory,
    ],
    { encoding: "utf8" },
  );
  // check prints the values in effect whenever the configuration loads,
  // and exits 1 for problems on the Postfix side, which do not matter here.
  if (check.stdout.trim() === "") {
    throw new Error(`postwarden check failed: ${check.stderr.trim()}`);
  }
  const known = new Set(
    check.stdout.split("\n").map((line) => line.split(" = ")[0]),
  );
  const limits: Record<string, string> = {
    pre_queue_limit: String(preQueueLimit),
    post_queue_limit: String(preQueueLimit),
    client_connection_count_limit: "0",
    client_connection_rate_limit: "0",
  };
  return Object.entries(limits)
    .filter(([name]) => known.has(name))
    .flatMap(([name, value]) => ["-o", `${name}=${value}`]);
}

export class BenchEnvironment {
  readonly targets = new Map<string, Target>();
  private readonly children: ChildProcess[] = [];
  private readonly postwardenChildren = new Map<string, ChildProcess>();
  private postfix: PostfixInstance | undefined;
  private sink: ChildProcess | undefined;
  readonly workDirectory = mkdtempSync(join(tmpdir(), "postwarden-bench-"));

  get postfixInstance(): PostfixInstance {
    if (this.postfix === undefined) throw new Error("Postfix is not started");
    return this.postfix;
  }

  get masterPid(): number {
    const path = join(this.postfixInstance.queueDirectory, "pid", "master.pid");
    return Number(readFileSync(path, "utf8").trim());
  }

  get sinkPid(): number {
    return this.sink?.pid ?? -1;
  }

  /** postlogd, which writes Postfix's maillog_file; undefined if not running. */
  postlogdPid(): number | undefined {
    return childrenNamed(this.masterPid, "postlogd")[0]?.pid;
  }

  target(id: string): Target {
    const target = this.targets.get(id);
    if (target === undefined) throw new Error(`no target ${id}`);
    return target;
  }

  /** Starts Postfix, smtp-sink, the proxy and the postwarden processes. */
  async start(postwardens: PostwardenSpec[]): Promise<void> {
    const sinkPort = await freePort();
    const directPort = await freePort();
    const postscreenPorts = {
      allow: await freePort(),
      old: await freePort(),
      hold: await freePort(),
    };

    // smtp-sink accepts every message and discards it; -u drops root.
    this.sink = spawn(
      "smtp-sink",
      ["-u", "postfix", "-m", "2000", `127.0.0.1:${sinkPort}`, "1000"],
      { stdio: "ignore" },
    );
    this.children.push(this.sink);
    await waitForPort(sinkPort, "smtp-sink");

    this.postfix = PostfixInstance.create(
      {
        inet_interfaces: "127.0.0.1",
        inet_protocols: "ipv4",
        smtpd_proxy_filter: `127.0.0.1:${sinkPort}`,
        default_process_limit: "1000",
        max_use: "1000",
        // Idle services stay up between rounds, so that a front end's
        // process is the same one from round to round.
        max_idle: "3600s",
        smtpd_client_connection_count_limit: "0",
        smtpd_client_connection_rate_limit: "0",
        postscreen_client_connection_count_limit: "0",
        postscreen_pre_queue_limit: "5000",
        postscreen_post_queue_limit: "5000",
        postscreen_access_list: "permit_mynetworks",
      },
      [
        `127.0.0.1:${directPort} inet n - n - - smtpd`,
        `127.0.0.1:${postscreenPorts.allow} inet n - n - 1 postscreen`,
        `127.0.0.1:${postscreenPorts.old} inet n - n - 1 postscreen` +
          " -o postscreen_access_list= -o postscreen_greet_wait=1s" +
          " -o postscreen_cache_map=btree:$data_directory/postscreen_old",
        `127.0.0.1:${postscreenPorts.hold} inet n - n - 1 postscreen` +
          " -o postscreen_access_list= -o postscreen_greet_wait=60s" +
          " -o postscreen_cache_map=btree:$data_directory/postscreen_hold",
        "dnsblog unix - - n - 0 dnsblog",
        "tlsproxy unix - - n - 0 tlsproxy",
      ],
    );
    await this.postfix.start();
    await waitForPort(directPort, "smtpd");

    const postscreen = (port: number) => (): number | undefined =>
      childrenNamed(this.masterPid, "postscreen").find(({ cmdline }) =>
        cmdline.includes(`127.0.0.1:${port}`),
      )?.pid;
    this.add({
      id: "direct",
      label: "direct smtpd",
      kind: "direct",
      port: directPort,
      frontPid: () => undefined,
      frontInPostfixTree: false,
    });
    this.add({
      id: "ps-allow",
      label: "postscreen allowlisted",
      kind: "postscreen",
      port: postscreenPorts.allow,
      frontPid: postscreen(postscreenPorts.allow),
      frontInPostfixTree: true,
    });
    this.add({
      id: "ps-old",
      label: "postscreen PASS OLD",
      kind: "postscreen",
      port: postscreenPorts.old,
      frontPid: postscreen(postscreenPorts.old),
      frontInPostfixTree: true,
    });
    this.add({
      id: "ps-hold",
      label: "postscreen, 60 s greet wait",
      kind: "postscreen",
      port: postscreenPorts.hold,
      frontPid: postscreen(postscreenPorts.hold),
      frontInPostfixTree: true,
    });

    await this.startProxy(directPort);
    for (const spec of postwardens) await this.startPostwarden(spec);
  }

  private add(target: Target): void {
    this.targets.set(target.id, target);
  }

  private async startProxy(directPort: number): Promise<void> {
    const port = await freePort();
    const script = join(packageRoot(), "dist", "bench", "proxy.js");
    const child = spawn(
      process.execPath,
      [script, String(port), String(directPort)],
      {
        stdio: ["ignore", "ignore", "inherit"],
      },
    );
    this.children.push(child);
    await waitForPort(port, "the Node proxy");
    this.add({
      id: "proxy",
      label: "Node proxy + smtpd",
      kind: "proxy",
      port,
      frontPid: () => child.pid,
      frontInPostfixTree: false,
    });
  }

  private async startPostwarden(spec: PostwardenSpec): Promise<void> {
    const postfix = this.postfixInstance;
    const port = await freePort();
    const directory = join(this.workDirectory, spec.id);
    mkdirSync(directory, { recursive: true });
    // The log goes to stderr, into a file or /dev/null: postwarden has no
    // switch to turn logging off.
    const logFile = spec.logToFile ? join(directory, "postwarden.log") : "";
    const stderr = openSync(spec.logToFile ? logFile : "/dev/null", "a");

    const cli = join(packageRoot(), "dist", "src", "cli.js");
    const child = spawn(
      process.execPath,
      [
        ...(spec.nodeArgs ?? []),
        cli,
        "run",
        "--config",
        "/dev/null",
        "--listen",
        `127.0.0.1:${port}`,
        "--queue-directory",
        postfix.queueDirectory,
        "--postfix-config-directory",
        postfix.configDirectory,
        "-o",
        `data_directory=${directory}`,
        "-o",
        "log_destination=stderr",
        ...ROOT_OPTIONS,
        ...limitArguments(postfix.configDirectory, spec.preQueueLimit),
        ...spec.args,
      ],
      { stdio: ["ignore", "ignore", stderr] },
    );
    closeSync(stderr);
    this.children.push(child);
    this.postwardenChildren.set(spec.id, child);

    await waitForPort(port, `postwarden ${spec.id}`);
    this.add({
      id: spec.id,
      label: spec.label,
      kind: "postwarden",
      port,
      frontPid: () => child.pid,
      frontInPostfixTree: false,
      ...(spec.logToFile ? { logFile } : {}),
    });
  }

  /** Starts one more postwarden, such as a profiled one. */
  addPostwarden(spec: PostwardenSpec): Promise<void> {
    return this.startPostwarden(spec);
  }

  /** Stops one postwarden with SIGTERM and waits for it to exit. */
  async stopPostwarden(id: string): Promise<void> {
    const child = this.postwardenChildren.get(id);
    if (child !== undefined) await stopChild(child);
    this.targets.delete(id);
  }

  /**
   * Stops everything started, Postfix and smtp-sink last, and removes the
   * work directory. Safe to call twice.
   */
  async stop(): Promise<void> {
    for (const child of [...this.children].reverse()) {
      if (child !== this.sink) await stopChild(child);
    }
    await this.postfix?.destroy();
    this.postfix = undefined;
    if (this.sink !== undefined) await stopChild(this.sink);
    rmSync(this.workDirectory, { recursive: true, force: true });
  }
}
