// The load client. It runs in a process of its own, forked by bench/run.ts,
// so that its CPU time is never counted as a front end's. It takes jobs over
// the IPC channel: run N SMTP sessions with C in flight, or hold K idle
// connections in the greet wait until a release job closes them. Source
// addresses rotate over the list a job gives, all on loopback.
import { fork, type ChildProcess } from "node:child_process";
import { connect, type Socket } from "node:net";
import { fileURLToPath } from "node:url";

export type SessionKind = "quit" | "msg";

/** Lists `count` loopback addresses 127.a.B.C, with C from 1 to 254 and B from 0 up. */
export function loopbackAddresses(a: number, count: number): string[] {
  const result: string[] = [];
  for (let b = 0; result.length < count; b++) {
    for (let c = 1; c <= 254 && result.length < count; c++) {
      result.push(`127.${a}.${b}.${c}`);
    }
  }
  return result;
}

export interface SessionsJob {
  type: "sessions";
  port: number;
  kind: SessionKind;
  sessions: number;
  concurrency: number;
  sources: string[];
  /** Size of the message body in bytes, for "msg"; 0 for a 3-line body. */
  bodyBytes: number;
  /** Deadline for one whole session, in ms. */
  timeoutMs: number;
}

export interface SessionsResult {
  completed: number;
  failed: number;
  /** Descriptions of the first failures. */
  failures: string[];
  /** From the first connect to the last session's end, in ms. */
  elapsedMs: number;
  /** Connect to final "220 " line, in ms: percentiles over the job. */
  greetingP50Ms: number;
  greetingP99Ms: number;
  greetingMaxMs: number;
  /** Sessions whose final "220 " line took more than 500 ms. */
  slowGreetings: number;
}

export interface HoldJob {
  type: "hold";
  port: number;
  connections: number;
  /** Connections being opened at once. */
  concurrency: number;
  sources: string[];
  timeoutMs: number;
}

export interface HoldResult {
  /** Connections that received the "220-" teaser line and stay open. */
  held: number;
  failed: number;
  failures: string[];
  elapsedMs: number;
}

export interface ReleaseResult {
  /** Held connections that the server closed before the release. */
  closedEarly: number;
}

type Job = SessionsJob | HoldJob | { type: "release" };
type Request = { id: number; job: Job };
type Response = {
  id: number;
  result?: SessionsResult | HoldResult | ReleaseResult;
  error?: string;
};

const MAX_FAILURES_KEPT = 5;
const SLOW_GREETING_MS = 500;

/** Builds the message text sent after DATA, ending with the "." line. */
function messageBody(bytes: number): Buffer {
  const header =
    "From: <bench@example.com>\r\nTo: <sink@example.net>\r\n" +
    "Subject: benchmark\r\n\r\n";
  if (bytes <= 0) {
    return Buffer.from(
      header + "line one\r\nline two\r\nline three\r\n.\r\n",
      "latin1",
    );
  }
  const line = "x".repeat(76) + "\r\n";
  const count = Math.max(1, Math.ceil((bytes - header.length) / line.length));
  return Buffer.from(header + line.repeat(count) + ".\r\n", "latin1");
}

/** Replies expected in turn, and what is sent after each. */
function script(kind: SessionKind, body: Buffer): (string | Buffer)[][] {
  if (kind === "quit") {
    return [
      ["220", "QUIT\r\n"],
      ["221", ""],
    ];
  }
  return [
    ["220", "EHLO bench.example.com\r\n"],
    ["250", "MAIL FROM:<bench@example.com>\r\n"],
    ["250", "RCPT TO:<sink@example.net>\r\n"],
    ["250", "DATA\r\n"],
    ["354", body],
    ["250", "QUIT\r\n"],
    ["221", ""],
  ];
}

/** One SMTP session in lockstep; `finish` calls `done` at most once. */
class Session {
  private pending = "";
  private step = 0;
  private finished = false;
  readonly startedAt = performance.now();
  greetingMs = -1;
  private readonly socket: Socket;

  constructor(
    port: number,
    source: string,
    private readonly steps: (string | Buffer)[][],
    private readonly done: (failure: string | undefined) => void,
  ) {
    this.socket = connect({ host: "127.0.0.1", port, localAddress: source });
    this.socket.setNoDelay(true);
    this.socket.on("data", (chunk: Buffer) => this.onData(chunk));
    this.socket.on("error", (error) => this.finish(`error: ${error.message}`));
    this.socket.on("close", () => {
      if (this.step < this.steps.length) {
        this.finish(
          `closed after ${this.step} of ${this.steps.length} replies` +
            (this.pending === "" ? "" : `: ${JSON.stringify(this.pending)}`),
        );
      } else {
        this.finish(undefined);
      }
    });
  }

  private onData(chunk: Buffer): void {
    this.pending += chunk.toString("latin1");
    for (;;) {
      const end = this.pending.indexOf("\n");
      if (end < 0) return;
      const line = this.pending.slice(0, end);
      this.pending = this.pending.slice(end + 1);
      this.onLine(line);
      if (this.finished) return;
    }
  }

  private onLine(line: string): void {
    const expected = this.steps[this.step];
    if (expected === undefined) {
      this.fail(
        `unexpected line after the last reply: ${JSON.stringify(line)}`,
      );
      return;
    }
    const [code, next] = expected;
    if (!line.startsWith(code as string)) {
      this.fail(`expected ${code as string}, got ${JSON.stringify(line)}`);
      return;
    }
    if (line[3] === "-") return;
    if (this.step === 0) this.greetingMs = performance.now() - this.startedAt;
    this.step++;
    if (next !== undefined && next !== "") this.socket.write(next);
  }

  fail(reason: string): void {
    this.finish(reason);
    this.socket.destroy();
  }

  private finish(failure: string | undefined): void {
    if (this.finished) return;
    this.finished = true;
    this.done(failure);
  }
}

function percentile(sorted: Float64Array, fraction: number): number {
  if (sorted.length === 0) return 0;
  const index = Math.min(
    sorted.length - 1,
    Math.max(0, Math.ceil(fraction * sorted.length) - 1),
  );
  return sorted[index] ?? 0;
}

/** Runs `job.sessions` sessions with `job.concurrency` in flight. */
function runSessions(job: SessionsJob): Promise<SessionsResult> {
  const steps = script(job.kind, messageBody(job.bodyBytes));
  const greetings = new Float64Array(job.sessions);
  const failures: string[] = [];
  const live = new Set<Session>();
  let started = 0;
  let completed = 0;
  let failed = 0;
  let greeted = 0;
  const begin = performance.now();

  return new Promise((resolve) => {
    // One sweep per second ends sessions past their deadline, instead of
    // a timer per session.
    const sweep = setInterval(() => {
      const limit = performance.now() - job.timeoutMs;
      for (const session of live) {
        if (session.startedAt < limit) {
          session.fail(`timed out after ${job.timeoutMs} ms`);
        }
      }
    }, 1000);

    const startNext = (): void => {
      if (started >= job.sessions) {
        if (live.size === 0) {
          clearInterval(sweep);
          const sorted = greetings.subarray(0, greeted).sort();
          resolve({
            completed,
            failed,
            failures,
            elapsedMs: performance.now() - begin,
            greetingP50Ms: percentile(sorted, 0.5),
            greetingP99Ms: percentile(sorted, 0.99),
            greetingMaxMs: sorted[sorted.length - 1] ?? 0,
            slowGreetings: sorted.filter((ms) => ms > SLOW_GREETING_MS).length,
          });
        }
        return;
      }
      const source = job.sources[started % job.sources.length] ?? "127.0.0.1";
      started++;
      const session: Session = new Session(
        job.port,
        source,
        steps,
        (failure) => {
          live.delete(session);
          if (session.greetingMs >= 0)
            greetings[greeted++] = session.greetingMs;
          if (failure === undefined) {
            completed++;
          } else {
            failed++;
            if (failures.length < MAX_FAILURES_KEPT) {
              failures.push(`from ${source}: ${failure}`);
            }
          }
          startNext();
        },
      );
      live.add(session);
    };
    for (let i = 0; i < Math.min(job.concurrency, job.sessions); i++) {
      startNext();
    }
    if (job.sessions === 0) startNext();
  });
}

/** Connections held by the last hold job, until released. */
let heldConnections: { socket: Socket; closed: boolean }[] = [];

/** Opens `job.connections` connections and waits for each one's teaser. */
function hold(job: HoldJob): Promise<HoldResult> {
  const failures: string[] = [];
  let started = 0;
  let settled = 0;
  let failed = 0;
  const begin = performance.now();

  return new Promise((resolve) => {
    const openNext = (): void => {
      if (started >= job.connections) {
        if (settled === job.connections) {
          resolve({
            held: heldConnections.filter((entry) => !entry.closed).length,
            failed,
            failures,
            elapsedMs: performance.now() - begin,
          });
        }
        return;
      }
      const source = job.sources[started % job.sources.length] ?? "127.0.0.1";
      started++;
      const socket = connect({
        host: "127.0.0.1",
        port: job.port,
        localAddress: source,
      });
      const entry = { socket, closed: false };
      let text = "";
      let done = false;
      const settle = (failure: string | undefined): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        settled++;
        if (failure === undefined) {
          heldConnections.push(entry);
        } else {
          failed++;
          if (failures.length < MAX_FAILURES_KEPT) {
            failures.push(`from ${source}: ${failure}`);
          }
          socket.destroy();
        }
        openNext();
      };
      const timer = setTimeout(
        () => settle(`no teaser within ${job.timeoutMs} ms`),
        job.timeoutMs,
      );
      socket.on("data", (chunk: Buffer) => {
        text += chunk.toString("latin1");
        if (!done && text.includes("\n")) {
          if (text.startsWith("220-")) settle(undefined);
          else settle(`expected a "220-" teaser, got ${JSON.stringify(text)}`);
        }
      });
      socket.on("error", (error) => settle(`error: ${error.message}`));
      socket.on("close", () => {
        entry.closed = true;
        settle("closed before the teaser");
      });
    };
    for (let i = 0; i < Math.min(job.concurrency, job.connections); i++) {
      openNext();
    }
    if (job.connections === 0) openNext();
  });
}

function release(): ReleaseResult {
  const closedEarly = heldConnections.filter((entry) => entry.closed).length;
  for (const entry of heldConnections) entry.socket.destroy();
  heldConnections = [];
  return { closedEarly };
}

async function serve(request: Request): Promise<Response> {
  try {
    switch (request.job.type) {
      case "sessions":
        return { id: request.id, result: await runSessions(request.job) };
      case "hold":
        return { id: request.id, result: await hold(request.job) };
      case "release":
        return { id: request.id, result: release() };
    }
  } catch (error) {
    return { id: request.id, error: (error as Error).message };
  }
}

/** The parent's handle on a load client process. */
export class LoadClient {
  private nextId = 1;
  private readonly waiting = new Map<number, (response: Response) => void>();

  private constructor(private readonly child: ChildProcess) {
    child.on("message", (message: Response) => {
      const resolve = this.waiting.get(message.id);
      this.waiting.delete(message.id);
      resolve?.(message);
    });
    child.on("exit", (code, signal) => {
      for (const resolve of this.waiting.values()) {
        resolve({ id: 0, error: `load client exited (${code ?? signal})` });
      }
      this.waiting.clear();
    });
  }

  static start(): LoadClient {
    const path = fileURLToPath(import.meta.url);
    return new LoadClient(fork(path, ["--serve"], { stdio: "inherit" }));
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  private async request<T>(job: Job): Promise<T> {
    const id = this.nextId++;
    const response = await new Promise<Response>((resolve) => {
      this.waiting.set(id, resolve);
      this.child.send({ id, job } satisfies Request);
    });
    if (response.error !== undefined) throw new Error(response.error);
    return response.result as T;
  }

  sessions(job: Omit<SessionsJob, "type">): Promise<SessionsResult> {
    return this.request({ type: "sessions", ...job });
  }

  hold(job: Omit<HoldJob, "type">): Promise<HoldResult> {
    return this.request({ type: "hold", ...job });
  }

  release(): Promise<ReleaseResult> {
    return this.request({ type: "release" });
  }

  stop(): void {
    if (this.child.connected) this.child.disconnect();
  }
}

if (process.argv.includes("--serve") && process.send !== undefined) {
  process.on("message", (request: Request) => {
    void serve(request).then((response) => process.send?.(response));
  });
  process.on("disconnect", () => {
    release();
    process.exit(0);
  });
}
