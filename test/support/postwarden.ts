// Runs the postwarden CLI as a child process for end-to-end tests and
// collects its log lines from stderr and stdout (JSON records). The log
// goes to stderr unless a test sets logDestination: tests never write to
// the machine's syslog socket.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { packageRoot } from "../../src/native.js";

export interface RunOptions {
  /** Command-line arguments after "run". */
  args: string[];
  /** A shell prefix such as "ulimit -n 64;" run before exec. */
  shellPrefix?: string;
  /**
   * A command prefix that runs node, such as ["ip", "netns", "exec", NAME].
   * It must exec the command in place, so that the child's PID stays
   * postwarden's and stop() signals postwarden.
   */
  wrapper?: string[];
  /** data_directory to use, to share a verdict cache between runs. */
  dataDirectory?: string;
  /** log_destination; "stderr" unless given. */
  logDestination?: "stderr" | "json" | "syslog";
  /**
   * Keeps postwarden running as root (`-o user=root -o allow_root=yes`,
   * before `args`), which is the default: table files that tests write to
   * their own temporary directories are readable by root only.
   */
  asRoot?: boolean;
}

/** Options that let postwarden keep running as root. */
export const ROOT_OPTIONS = ["-o", "user=root", "-o", "allow_root=yes"];

function shellQuote(arg: string): string {
  return `'${arg.replace(/'/g, "'\\''")}'`;
}

export class PostwardenProcess {
  readonly lines: string[] = [];
  private exitCode: number | null | undefined = undefined;
  private waiters: (() => void)[] = [];

  private constructor(readonly child: ChildProcess) {
    for (const stream of [child.stderr, child.stdout]) {
      let partial = "";
      stream?.setEncoding("utf8");
      stream?.on("data", (chunk: string) => {
        partial += chunk;
        const parts = partial.split("\n");
        partial = parts.pop() ?? "";
        this.lines.push(...parts);
        this.wake();
      });
    }
    child.on("exit", (code) => {
      this.exitCode = code;
      this.wake();
    });
  }

  static start(options: RunOptions): PostwardenProcess {
    const cli = join(packageRoot(), "dist", "src", "cli.js");
    // Each process gets its own verdict cache unless the test shares one,
    // and an explicit -o data_directory in args still wins.
    const dataDirectory =
      options.dataDirectory ?? mkdtempSync(join(tmpdir(), "postwarden-data-"));
    const quoted = [
      cli,
      "run",
      "-o",
      `data_directory=${dataDirectory}`,
      "-o",
      `log_destination=${options.logDestination ?? "stderr"}`,
      ...(options.asRoot === false ? [] : ROOT_OPTIONS),
      ...options.args,
    ]
      .map(shellQuote)
      .join(" ");
    const wrapper = (options.wrapper ?? [])
      .map((arg) => `${shellQuote(arg)} `)
      .join("");
    const child = spawn(
      "bash",
      ["-c", `${options.shellPrefix ?? ""} exec ${wrapper}node ${quoted}`],
      {
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    const process = new PostwardenProcess(child);
    process.dataDirectory = dataDirectory;
    if (options.dataDirectory === undefined) {
      // A directory made here is removed once the process has exited.
      child.once("exit", () =>
        rmSync(dataDirectory, { recursive: true, force: true }),
      );
    }
    return process;
  }

  /**
   * Starts postwarden on a free port of 127.0.0.1 in front of `postfix`,
   * with no configuration file, a 1 s greeting wait and the teaser host
   * name warden.example.com. `args` come after those and may override them.
   */
  static startInFrontOf(
    postfix: { queueDirectory: string; configDirectory: string },
    args: string[],
  ): PostwardenProcess {
    return PostwardenProcess.start({
      args: [
        "--config",
        "/dev/null",
        "--listen",
        "127.0.0.1:0",
        "--queue-directory",
        postfix.queueDirectory,
        "--postfix-config-directory",
        postfix.configDirectory,
        "--greet-wait",
        "1s",
        "-o",
        "myhostname=warden.example.com",
        ...args,
      ],
    });
  }

  /** The data directory (verdict cache) this process uses. */
  dataDirectory = "";

  get pid(): number {
    return this.child.pid ?? -1;
  }

  get exited(): boolean {
    return this.exitCode !== undefined;
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const waiter of waiters) waiter();
  }

  private async until<T>(
    produce: () => T | undefined,
    what: string,
    timeoutMs: number,
  ): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const value = produce();
      if (value !== undefined) return value;
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        throw new Error(
          `timed out waiting for ${what}; postwarden log:\n${this.lines.join("\n")}`,
        );
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(remaining, 100));
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** Waits for a log line matching `pattern`; returns the line. */
  waitForLog(pattern: RegExp, timeoutMs = 10_000): Promise<string> {
    return this.until(
      () => this.lines.find((line) => pattern.test(line)),
      String(pattern),
      timeoutMs,
    );
  }

  /**
   * Waits until `count` log lines match `pattern`; returns the last of
   * them. For events that repeat, such as reloads.
   */
  waitForLogCount(
    pattern: RegExp,
    count: number,
    timeoutMs = 10_000,
  ): Promise<string> {
    return this.until(
      () => {
        const matching = this.grep(pattern);
        return matching.length >= count ? matching[count - 1] : undefined;
      },
      `${count} lines matching ${String(pattern)}`,
      timeoutMs,
    );
  }

  /** Lines matching `pattern`. */
  grep(pattern: RegExp): string[] {
    return this.lines.filter((line) => pattern.test(line));
  }

  /** Waits for the "listening on" line of the first listener; returns the port. */
  async listeningPort(timeoutMs = 10_000): Promise<number> {
    const line = await this.waitForLog(
      /listening on \[[^\]]+\]:\d+/,
      timeoutMs,
    );
    const match = /listening on \[[^\]]+\]:(\d+)/.exec(line);
    return Number(match?.[1]);
  }

  /** Waits for the process to exit; returns its exit code. */
  waitForExit(timeoutMs = 10_000): Promise<number | null> {
    return this.until(
      () => (this.exitCode === undefined ? undefined : { code: this.exitCode }),
      "exit",
      timeoutMs,
    ).then((result) => result.code);
  }

  /** Sends SIGTERM and waits for the exit code. */
  async stop(timeoutMs = 10_000): Promise<number | null> {
    if (this.exitCode === undefined) this.child.kill("SIGTERM");
    try {
      return await this.waitForExit(timeoutMs);
    } catch (error) {
      this.child.kill("SIGKILL");
      throw error;
    }
  }
}
