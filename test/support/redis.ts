// A private redis-server for tests: 127.0.0.1 on a free port, no
// persistence, started in the foreground and stopped by its PID. It can be
// stopped and started again on the same port, to test a Redis outage.
import { spawn, type ChildProcess } from "node:child_process";
import { createServer } from "node:net";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port =
        typeof address === "object" && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

export class RedisServer {
  private child: ChildProcess | undefined;
  private output = "";

  private constructor(
    readonly port: number,
    private readonly directory: string,
  ) {}

  get url(): string {
    return `redis://127.0.0.1:${this.port}/0`;
  }

  static async start(): Promise<RedisServer> {
    const server = new RedisServer(
      await freePort(),
      mkdtempSync(join(tmpdir(), "postwarden-redis-")),
    );
    await server.resume();
    return server;
  }

  /** Starts redis-server (again) on the same port; waits until it answers. */
  async resume(): Promise<void> {
    this.child = spawn(
      "redis-server",
      [
        "--port",
        String(this.port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        this.directory,
        "--daemonize",
        "no",
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    this.child.stdout?.on(
      "data",
      (chunk: Buffer) => (this.output += chunk.toString()),
    );
    this.child.stderr?.on(
      "data",
      (chunk: Buffer) => (this.output += chunk.toString()),
    );
    const deadline = Date.now() + 10_000;
    for (;;) {
      const client = new Redis({
        port: this.port,
        host: "127.0.0.1",
        lazyConnect: true,
        maxRetriesPerRequest: 0,
        retryStrategy: () => null,
      });
      client.on("error", () => undefined);
      try {
        await client.connect();
        await client.ping();
        client.disconnect();
        return;
      } catch {
        client.disconnect();
      }
      if (Date.now() > deadline)
        throw new Error(
          `redis-server did not start on port ${this.port}:\n${this.output}`,
        );
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  /** Kills redis-server (SIGKILL, as a crash would); waits for the exit. */
  async kill(): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (child === undefined || child.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      child.once("exit", () => resolve());
      child.kill("SIGKILL");
    });
  }

  /** A client for tests to read or corrupt keys directly. */
  client(): Redis {
    const client = new Redis({
      port: this.port,
      host: "127.0.0.1",
      maxRetriesPerRequest: 0,
    });
    client.on("error", () => undefined);
    return client;
  }

  async stop(): Promise<void> {
    await this.kill();
    rmSync(this.directory, { recursive: true, force: true });
  }
}
