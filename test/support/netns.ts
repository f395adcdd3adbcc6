// A private Linux network namespace for end-to-end tests that need client
// addresses other than 127.0.0.1 and ::1. Inside it, loopback is up, all of
// 2001:db8::/32 (the IPv6 documentation prefix) is routed to lo as local,
// and non-local bind is on, so a client may bind any source address in
// 2001:db8::/32 or 127.0.0.0/8. Processes run inside it through
// `ip netns exec NAME`, which execs the command in place, so a child's PID
// is the command's own. Paths on the file system, such as Postfix's UNIX
// pass socket, stay reachable from inside. It needs root and iproute2.
import { execFile, spawnSync } from "node:child_process";

const IP = "ip";
const NAME_PREFIX = "pwtest-";
const COMMAND_TIMEOUT_MS = 30_000;
const MAX_OUTPUT_BYTES = 1024 * 1024;

export interface CommandResult {
  stdout: string;
  stderr: string;
  /** Exit code, or null when a signal ended the command. */
  code: number | null;
}

/** Namespaces created by this process and not yet deleted. */
const liveNames = new Set<string>();
let counter = 0;
let exitHandlerInstalled = false;

/**
 * Deletes this process's leftover namespaces when it exits without
 * destroy(). Only synchronous calls work in an exit handler.
 */
function installExitHandler(): void {
  if (exitHandlerInstalled) {
    return;
  }
  exitHandlerInstalled = true;
  process.on("exit", () => {
    for (const name of liveNames) {
      spawnSync(IP, ["netns", "delete", name], {
        stdio: "ignore",
        timeout: 5_000,
      });
    }
    liveNames.clear();
  });
}

/**
 * Runs a command with a timeout and returns its output and exit code. It
 * rejects only when the command cannot be started or times out.
 */
function runCommand(command: string, args: string[]): Promise<CommandResult> {
  const commandLine = [command, ...args].join(" ");
  return new Promise((resolve, reject) => {
    execFile(
      command,
      args,
      {
        encoding: "utf8",
        timeout: COMMAND_TIMEOUT_MS,
        killSignal: "SIGKILL",
        maxBuffer: MAX_OUTPUT_BYTES,
      },
      (error, stdout, stderr) => {
        if (error === null) {
          resolve({ stdout, stderr, code: 0 });
          return;
        }
        const failure = error as NodeJS.ErrnoException & {
          code?: number | string;
          killed?: boolean;
          signal?: NodeJS.Signals | null;
        };
        if (typeof failure.code === "string") {
          reject(
            new Error(`failed to run ${commandLine}: ${failure.message}`, {
              cause: error,
            }),
          );
          return;
        }
        if (failure.killed === true) {
          reject(
            new Error(
              `timed out after ${COMMAND_TIMEOUT_MS} ms: ${commandLine}\n` +
                `stdout:\n${stdout}\nstderr:\n${stderr}`,
              { cause: error },
            ),
          );
          return;
        }
        resolve({
          stdout,
          stderr,
          code: typeof failure.code === "number" ? failure.code : null,
        });
      },
    );
  });
}

/** Runs a command and rejects, with its output, unless it exits with 0. */
async function runChecked(
  command: string,
  args: string[],
): Promise<CommandResult> {
  const result = await runCommand(command, args);
  if (result.code !== 0) {
    const status =
      result.code === null ? "ended by a signal" : `exit code ${result.code}`;
    throw new Error(
      `${[command, ...args].join(" ")} failed (${status}):\n` +
        `${result.stderr.trim() || result.stdout.trim()}`,
    );
  }
  return result;
}

/**
 * Checks that `ip netns` works here, so a failure names the cause.
 * NOTE: scripts/setup does not install iproute2 yet, so a machine without
 * it fails here.
 */
async function checkIpNetns(): Promise<void> {
  if (process.getuid?.() !== 0) {
    throw new Error(
      "network namespaces need root: run the test as root (ip netns add requires CAP_SYS_ADMIN)",
    );
  }
  try {
    await runChecked(IP, ["netns", "list"]);
  } catch (error) {
    throw new Error(
      `ip netns is unavailable, so no network namespace can be created; ` +
        `install Debian's iproute2 package: ${(error as Error).message}`,
      { cause: error },
    );
  }
}

export class NetworkNamespace {
  private destroyed = false;

  private constructor(readonly name: string) {}

  /**
   * Creates a namespace with a unique name and sets it up: lo up,
   * non-local bind on for IPv4 and IPv6, and a local route for
   * 2001:db8::/32 on lo. Deletes the namespace again if a step fails.
   */
  static async create(): Promise<NetworkNamespace> {
    await checkIpNetns();
    counter += 1;
    const name = `${NAME_PREFIX}${process.pid}-${counter}`;
    installExitHandler();
    await runChecked(IP, ["netns", "add", name]);
    liveNames.add(name);
    const namespace = new NetworkNamespace(name);
    try {
      await namespace.runChecked("ip", ["link", "set", "lo", "up"]);
      await namespace.runChecked("sysctl", [
        "-qw",
        "net.ipv6.ip_nonlocal_bind=1",
      ]);
      await namespace.runChecked("sysctl", [
        "-qw",
        "net.ipv4.ip_nonlocal_bind=1",
      ]);
      await namespace.runChecked("ip", [
        "-6",
        "route",
        "add",
        "local",
        "2001:db8::/32",
        "dev",
        "lo",
      ]);
    } catch (error) {
      await namespace.destroy();
      throw new Error(
        `failed to set up network namespace ${name}: ${(error as Error).message}`,
        { cause: error },
      );
    }
    return namespace;
  }

  /** Returns the command prefix that runs a program inside this namespace. */
  wrapper(): string[] {
    return [IP, "netns", "exec", this.name];
  }

  /**
   * Runs `command` inside the namespace, waits at most 30 s, and returns
   * its output and exit code. A non-zero exit code does not reject.
   */
  run(command: string, args: string[]): Promise<CommandResult> {
    if (this.destroyed) {
      return Promise.reject(
        new Error(`network namespace ${this.name} is already destroyed`),
      );
    }
    const [program, ...prefix] = this.wrapper();
    return runCommand(program!, [...prefix, command, ...args]);
  }

  private async runChecked(
    command: string,
    args: string[],
  ): Promise<CommandResult> {
    const result = await this.run(command, args);
    if (result.code !== 0) {
      throw new Error(
        `${command} ${args.join(" ")} in namespace ${this.name} exited with ` +
          `${result.code ?? "a signal"}: ${result.stderr.trim()}`,
      );
    }
    return result;
  }

  /**
   * Deletes the namespace. Calls after a successful one do nothing. It
   * also rejects if processes still ran inside, because the namespace then
   * lives on until they exit, so stop them first.
   */
  async destroy(): Promise<void> {
    if (this.destroyed) {
      return;
    }
    const pids = await runCommand(IP, ["netns", "pids", this.name]);
    await runChecked(IP, ["netns", "delete", this.name]);
    this.destroyed = true;
    liveNames.delete(this.name);
    const remaining = pids.stdout.split("\n").filter((pid) => pid !== "");
    if (remaining.length > 0) {
      throw new Error(
        `network namespace ${this.name} was deleted while processes ` +
          `${remaining.join(", ")} still ran in it; stop them before destroy()`,
      );
    }
  }
}
