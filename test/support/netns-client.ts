// A scripted SMTP client for end-to-end tests that runs inside a network
// namespace, where it may bind any source address the namespace routes
// locally. Run as a program, it takes one JSON argument (ClientOptions),
// connects from localAddress to host:port, performs the steps in order
// within one total timeout, and prints one JSON line (ClientReport). It
// exits with 0 when every step succeeded, 1 when a step failed or timed
// out, and 2 when the argument is invalid. runClientInNamespace() starts it
// with `ip netns exec NAME node netns-client.js JSON` and parses the line.
import { spawn } from "node:child_process";
import { realpathSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { fileURLToPath } from "node:url";
import type { NetworkNamespace } from "./netns.js";

/**
 * One step of the exchange. `read: "reply"` reads one whole SMTP reply: lines
 * up to one whose fourth character is not "-". `read: "line"` reads one
 * line. `send` writes the text as is, so it must carry its own CRLF.
 * `expectEnd` waits until the server closes the connection.
 */
export type ClientStep =
  { read: "reply" | "line" } | { send: string } | { expectEnd: true };

export interface ClientOptions {
  host: string;
  port: number;
  /** Source address to bind, such as 2001:db8:7::77 or 127.0.0.20. */
  localAddress: string;
  steps: ClientStep[];
  /** Time limit for the whole exchange, connect included, in milliseconds. */
  timeoutMs?: number;
}

export interface ClientResult {
  /** The client's TCP port, or 0 if the connection failed. */
  localPort: number;
  /**
   * Every line received, without its CRLF, including lines that no step
   * read. A final fragment without CRLF comes last.
   */
  lines: string[];
  /** Whether the server closed the connection (FIN or reset) by the end. */
  closed: boolean;
}

/** The line the program prints: the result, and why it failed if it did. */
export interface ClientReport extends ClientResult {
  error: string | null;
}

const DEFAULT_TIMEOUT_MS = 15_000;
// Time on top of the exchange's own timeout for `ip netns exec` and Node.js
// to start and the report to arrive.
const STARTUP_ALLOWANCE_MS = 10_000;
const MAX_OUTPUT_CHARS = 64 * 1024;

/** Reads lines from the socket as they arrive and wakes waiting steps. */
class Connection {
  readonly lines: string[] = [];
  closed = false;
  closeReason = "";
  private fragment = "";
  private nextLine = 0;
  private waiters: (() => void)[] = [];

  constructor(readonly socket: Socket) {
    socket.setEncoding("latin1");
    socket.on("data", (chunk: string) => {
      const parts = (this.fragment + chunk).split("\r\n");
      this.fragment = parts.pop() ?? "";
      this.lines.push(...parts);
      this.wake();
    });
    socket.on("end", () => this.markClosed("closed by the server"));
    socket.on("error", (error) => this.markClosed(error.message));
    socket.on("close", () => this.markClosed("closed"));
  }

  /** Returns every line received, then the final fragment without CRLF, if any. */
  allLines(): string[] {
    return this.fragment === ""
      ? [...this.lines]
      : [...this.lines, this.fragment];
  }

  async readLine(): Promise<string> {
    for (;;) {
      const line = this.lines[this.nextLine];
      if (line !== undefined) {
        this.nextLine += 1;
        return line;
      }
      if (this.closed) {
        throw new Error(`connection ${this.closeReason} before a whole line`);
      }
      await this.change();
    }
  }

  async readReply(): Promise<void> {
    for (;;) {
      const line = await this.readLine();
      if (line[3] !== "-") {
        return;
      }
    }
  }

  send(text: string): void {
    if (this.closed) {
      throw new Error(`cannot send: connection ${this.closeReason}`);
    }
    this.socket.write(text, "latin1");
  }

  async waitForEnd(): Promise<void> {
    while (!this.closed) {
      await this.change();
    }
  }

  private markClosed(reason: string): void {
    if (!this.closed) {
      this.closed = true;
      this.closeReason = reason;
    }
    this.wake();
  }

  private change(): Promise<void> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const waiter of waiters) waiter();
  }
}

function describeStep(step: ClientStep): string {
  return JSON.stringify(step);
}

/** Checks the parsed argument and describes the first problem, if any. */
function findProblem(value: unknown): string | undefined {
  if (typeof value !== "object" || value === null) {
    return "expected a JSON object";
  }
  const options = value as Partial<Record<keyof ClientOptions, unknown>>;
  if (typeof options.host !== "string" || options.host === "") {
    return "missing host";
  }
  if (
    typeof options.port !== "number" ||
    !Number.isInteger(options.port) ||
    options.port < 1 ||
    options.port > 65_535
  ) {
    return `invalid port ${JSON.stringify(options.port)}: expected 1 to 65535`;
  }
  if (typeof options.localAddress !== "string" || options.localAddress === "") {
    return "missing localAddress";
  }
  if (
    options.timeoutMs !== undefined &&
    (typeof options.timeoutMs !== "number" || !(options.timeoutMs > 0))
  ) {
    return `invalid timeoutMs ${JSON.stringify(options.timeoutMs)}: expected a positive number`;
  }
  if (!Array.isArray(options.steps)) {
    return "missing steps: expected an array";
  }
  for (const step of options.steps as unknown[]) {
    const fields = step as Record<string, unknown> | null;
    const valid =
      fields !== null &&
      typeof fields === "object" &&
      Object.keys(fields).length === 1 &&
      (fields.read === "reply" ||
        fields.read === "line" ||
        typeof fields.send === "string" ||
        fields.expectEnd === true);
    if (!valid) {
      return (
        `invalid step ${JSON.stringify(step)}: expected {"read": "reply"}, ` +
        `{"read": "line"}, {"send": TEXT} or {"expectEnd": true}`
      );
    }
  }
  return undefined;
}

/** Waits until the socket connects, and rejects with the reason if it cannot. */
function waitForConnect(socket: Socket, options: ClientOptions): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (error: Error): void => {
      reject(
        new Error(
          `connect from ${options.localAddress} to ${options.host} port ` +
            `${options.port} failed: ${error.message}`,
          { cause: error },
        ),
      );
    };
    socket.once("error", onError);
    socket.once("connect", () => {
      socket.off("error", onError);
      resolve();
    });
  });
}

/** Runs the exchange and returns the report. It never rejects. */
async function exchange(options: ClientOptions): Promise<ClientReport> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const socket = connect({
    host: options.host,
    port: options.port,
    localAddress: options.localAddress,
  });
  const connection = new Connection(socket);
  let connected = false;
  let stage = "connect";
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`timed out after ${timeoutMs} ms at ${stage}`)),
      timeoutMs,
    );
  });

  const steps = async (): Promise<void> => {
    await waitForConnect(socket, options);
    connected = true;
    for (const [index, step] of options.steps.entries()) {
      stage = `step ${index + 1} ${describeStep(step)}`;
      try {
        if ("read" in step) {
          if (step.read === "reply") {
            await connection.readReply();
          } else {
            await connection.readLine();
          }
        } else if ("send" in step) {
          connection.send(step.send);
        } else {
          await connection.waitForEnd();
        }
      } catch (error) {
        throw new Error(`${stage} failed: ${(error as Error).message}`, {
          cause: error,
        });
      }
    }
  };

  // After a timeout the steps are abandoned, and destroy() below makes a
  // waiting step reject, so that rejection needs a handler.
  const running = steps();
  running.catch(() => {});
  let error: string | null = null;
  try {
    await Promise.race([running, timedOut]);
  } catch (failure) {
    error = (failure as Error).message;
  } finally {
    clearTimeout(timer);
  }
  // Read before destroy(), whose "close" event would count as the server's.
  const result: ClientReport = {
    localPort: connected ? (socket.localPort ?? 0) : 0,
    lines: connection.allLines(),
    closed: connected && connection.closed,
    error,
  };
  socket.destroy();
  return result;
}

async function main(): Promise<void> {
  const argument = process.argv[2] ?? "";
  let parsed: unknown;
  try {
    parsed = JSON.parse(argument);
  } catch (error) {
    printReport(
      {
        localPort: 0,
        lines: [],
        closed: false,
        error: `invalid JSON argument: ${(error as Error).message}`,
      },
      2,
    );
    return;
  }
  const problem = findProblem(parsed);
  if (problem !== undefined) {
    printReport(
      {
        localPort: 0,
        lines: [],
        closed: false,
        error: `invalid argument: ${problem}`,
      },
      2,
    );
    return;
  }
  const report = await exchange(parsed as ClientOptions);
  printReport(report, report.error === null ? 0 : 1);
}

function printReport(report: ClientReport, exitCode: number): void {
  process.exitCode = exitCode;
  process.stdout.write(JSON.stringify(report) + "\n");
}

/** Path of this module's compiled file, which is also the program. */
const PROGRAM = fileURLToPath(import.meta.url);

/**
 * Runs the client program inside `namespace` and returns its result. It
 * rejects with the report's error and the lines received when a step
 * fails. When the program has not exited within the exchange's timeout
 * plus 10 s, it kills the program by its PID and rejects.
 */
export function runClientInNamespace(
  namespace: NetworkNamespace,
  options: ClientOptions,
): Promise<ClientResult> {
  const [program, ...prefix] = namespace.wrapper();
  const args = [...prefix, process.execPath, PROGRAM, JSON.stringify(options)];
  const limitMs =
    (options.timeoutMs ?? DEFAULT_TIMEOUT_MS) + STARTUP_ALLOWANCE_MS;
  const label = `netns client from ${options.localAddress} to ${options.host} port ${options.port}`;

  return new Promise((resolve, reject) => {
    const child = spawn(program!, args, { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8");
    child.stderr.setEncoding("utf8");
    child.stdout.on("data", (chunk: string) => {
      stdout = (stdout + chunk).slice(-MAX_OUTPUT_CHARS);
    });
    child.stderr.on("data", (chunk: string) => {
      stderr = (stderr + chunk).slice(-MAX_OUTPUT_CHARS);
    });
    let killedAfterTimeout = false;
    const timer = setTimeout(() => {
      killedAfterTimeout = true;
      child.kill("SIGKILL");
    }, limitMs);
    child.on("error", (error) => {
      clearTimeout(timer);
      reject(
        new Error(`failed to start ${label}: ${error.message}`, {
          cause: error,
        }),
      );
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      const status = signal !== null ? `signal ${signal}` : `exit code ${code}`;
      if (killedAfterTimeout) {
        reject(
          new Error(
            `${label} did not exit within ${limitMs} ms and was killed\n` +
              `stdout:\n${stdout}\nstderr:\n${stderr}`,
          ),
        );
        return;
      }
      const lastLine = stdout.trimEnd().split("\n").at(-1) ?? "";
      let report: ClientReport;
      try {
        report = JSON.parse(lastLine) as ClientReport;
      } catch {
        reject(
          new Error(
            `${label} printed no report (${status})\n` +
              `stdout:\n${stdout}\nstderr:\n${stderr}`,
          ),
        );
        return;
      }
      if (report.error !== null) {
        reject(
          new Error(
            `${label} failed: ${report.error}\n` +
              `local port: ${report.localPort}, server closed: ${report.closed}\n` +
              `lines received: ${JSON.stringify(report.lines)}` +
              (stderr === "" ? "" : `\nstderr:\n${stderr}`),
          ),
        );
        return;
      }
      resolve({
        localPort: report.localPort,
        lines: report.lines,
        closed: report.closed,
      });
    });
  });
}

/** True when Node.js runs this file as the program, not as an import. */
function isProgram(): boolean {
  const script = process.argv[1];
  if (script === undefined) {
    return false;
  }
  try {
    return realpathSync(script) === PROGRAM;
  } catch {
    return false;
  }
}

if (isProgram()) {
  await main();
}
