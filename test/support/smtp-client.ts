// A minimal SMTP client for end-to-end tests: reads whole replies
// (multi-line replies end at a line whose fourth character is a space),
// sends raw bytes, and reports end of stream. Every wait has a deadline.
import { connect, type Socket } from "node:net";

export class SmtpClient {
  private buffer = "";
  private ended = false;
  private waiters: (() => void)[] = [];

  private constructor(readonly socket: Socket) {
    this.localPort = socket.localPort ?? 0;
    socket.setEncoding("latin1");
    socket.on("data", (chunk: string) => {
      this.buffer += chunk;
      this.wake();
    });
    socket.on("end", () => {
      this.ended = true;
      this.wake();
    });
    socket.on("close", () => {
      this.ended = true;
      this.wake();
    });
    socket.on("error", () => {
      this.ended = true;
      this.wake();
    });
  }

  static open(
    port: number,
    host = "127.0.0.1",
    localAddress?: string,
  ): Promise<SmtpClient> {
    return new Promise((resolve, reject) => {
      const socket = connect({
        port,
        host,
        ...(localAddress ? { localAddress } : {}),
      });
      socket.once("connect", () => resolve(new SmtpClient(socket)));
      socket.once("error", reject);
    });
  }

  /** The client's port, kept after the socket is destroyed. */
  readonly localPort: number;

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const waiter of waiters) waiter();
  }

  private async waitUntil<T>(
    produce: () => T | undefined,
    what: string,
    timeoutMs: number,
  ): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const value = produce();
      if (value !== undefined) return value;
      const remaining = deadline - Date.now();
      if (remaining <= 0 || this.ended) {
        throw new Error(
          `${what}: ${this.ended ? "connection closed" : "timed out"}; received so far: ${JSON.stringify(this.buffer)}`,
        );
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, remaining);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** Reads one line, without its CRLF. */
  readLine(timeoutMs = 10_000): Promise<string> {
    return this.waitUntil(
      () => {
        const end = this.buffer.indexOf("\r\n");
        if (end < 0) return undefined;
        const line = this.buffer.slice(0, end);
        this.buffer = this.buffer.slice(end + 2);
        return line;
      },
      "reading a line",
      timeoutMs,
    );
  }

  /** Reads one whole reply; returns its lines. */
  async readReply(timeoutMs = 10_000): Promise<string[]> {
    const lines: string[] = [];
    for (;;) {
      const line = await this.readLine(timeoutMs);
      lines.push(line);
      if (line[3] !== "-") return lines;
    }
  }

  send(text: string): void {
    this.socket.write(text, "latin1");
  }

  /** Sends a command and returns the reply lines. */
  async command(line: string, timeoutMs = 10_000): Promise<string[]> {
    this.send(line + "\r\n");
    return this.readReply(timeoutMs);
  }

  /** Waits for end of stream; returns what arrived unread before it. */
  async waitForEnd(timeoutMs = 10_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    while (!this.ended) {
      const remaining = deadline - Date.now();
      if (remaining <= 0)
        throw new Error(
          `no end of stream; received: ${JSON.stringify(this.buffer)}`,
        );
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, remaining);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return this.buffer;
  }

  get isEnded(): boolean {
    return this.ended;
  }

  destroy(): void {
    this.socket.destroy();
  }
}
