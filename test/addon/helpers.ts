// Shared pieces of the addon tests: bounded waits, a native listener that
// queues what it accepts, and a Node TCP client that records what it
// receives. Every wait has a deadline, so a broken addon fails a test
// instead of hanging the run.
import net from "node:net";
import { once } from "node:events";
import {
  loadAddon,
  READABLE,
  type ListenerError,
  type NativeListener,
  type NativeSocket,
} from "../../src/native.js";
import { socketSet } from "../../src/native-socket.js";

export const addon = loadAddon();
export const sockets = socketSet(addon);

/** Default deadline of a single wait, in ms. */
export const WAIT_MS = 2000;

/** Resolves with `promise`, or rejects when it takes longer than `ms`. */
export async function within<T>(
  promise: Promise<T>,
  ms: number,
  description: string,
): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      reject(new Error(`${description} timed out after ${ms} ms`));
    }, ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `condition` every 5 ms and rejects if it is still false after `ms`. */
export async function waitUntil(
  condition: () => boolean,
  description: string,
  ms = WAIT_MS,
): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() >= deadline) {
      throw new Error(`${description} timed out after ${ms} ms`);
    }
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

export interface WatchResult {
  status: number;
  events: number;
}

/**
 * Arms a one-shot watch and resolves when it fires. On timeout it removes
 * the watch and rejects.
 */
export async function watchOnce(
  socket: NativeSocket,
  events = READABLE,
  ms = WAIT_MS,
): Promise<WatchResult> {
  const fired = new Promise<WatchResult>((resolve) => {
    socket.watch(events, (status, reported) => {
      resolve({ status, events: reported });
    });
  });
  try {
    return await within(fired, ms, `watch(${events}) on fd ${socket.fd}`);
  } catch (error) {
    socket.unwatch();
    throw error;
  }
}

/** One connection as the listener's onConnection callback reported it. */
export interface Accepted {
  socket: NativeSocket;
  clientAddress: string;
  clientPort: number;
  serverAddress: string;
  serverPort: number;
}

/**
 * A native listener that queues accepted connections for next(). close()
 * closes the listener and every socket it accepted.
 */
export class AcceptQueue {
  readonly listener: NativeListener;
  readonly errors: ListenerError[] = [];
  /** Every connection accepted so far, taken by next() or not. */
  readonly accepted: Accepted[] = [];
  private nextIndex = 0;

  constructor(
    host: string,
    port = 0,
    acceptLimit = 8,
    onAccepted?: (accepted: Accepted) => void,
  ) {
    this.listener = new addon.Listener(
      host,
      port,
      16,
      acceptLimit,
      (fd, clientAddress, clientPort, serverAddress, serverPort) => {
        const accepted = {
          socket: sockets.adopt(fd),
          clientAddress,
          clientPort,
          serverAddress,
          serverPort,
        };
        this.accepted.push(accepted);
        onAccepted?.(accepted);
      },
      (error) => this.errors.push(error),
    );
  }

  get port(): number {
    return this.listener.address().port;
  }

  /** Returns the next accepted connection not yet taken. */
  async next(ms = WAIT_MS): Promise<Accepted> {
    await waitUntil(() => this.accepted.length > this.nextIndex, "accept", ms);
    const accepted = this.accepted[this.nextIndex];
    this.nextIndex++;
    if (accepted === undefined) throw new Error("accept queue is empty");
    return accepted;
  }

  close(): void {
    this.listener.close();
    for (const { socket } of this.accepted) socket.close();
  }
}

/** A Node TCP client that records the bytes it receives and its end. */
export class Client {
  received = Buffer.alloc(0);
  ended = false;
  closed = false;
  error: NodeJS.ErrnoException | undefined;

  private constructor(readonly socket: net.Socket) {
    socket.on("data", (chunk: Buffer) => {
      this.received = Buffer.concat([this.received, chunk]);
    });
    socket.on("end", () => {
      this.ended = true;
    });
    socket.on("close", () => {
      this.closed = true;
    });
    socket.on("error", (error) => {
      this.error = error;
    });
  }

  /**
   * Connects to `host` and `port`. Pass `family` 6 to reach an IPv4-mapped
   * host through an IPv6 socket.
   */
  static async connect(
    host: string,
    port: number,
    family?: 4 | 6,
  ): Promise<Client> {
    const socket = net.connect({ host, port, ...(family ? { family } : {}) });
    const client = new Client(socket);
    try {
      await within(once(socket, "connect"), WAIT_MS, `connect to ${host}`);
    } catch (error) {
      socket.destroy();
      throw error;
    }
    return client;
  }

  /** Waits until at least `length` bytes have arrived and returns them all. */
  async receive(length: number, ms = WAIT_MS): Promise<string> {
    await waitUntil(
      () => this.received.length >= length,
      `receive ${length} bytes`,
      ms,
    );
    return this.received.toString("latin1");
  }

  async waitForEnd(ms = WAIT_MS): Promise<void> {
    await waitUntil(() => this.ended || this.closed, "end of stream", ms);
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/** Resolves after `ms`, for checks that something did not happen. */
export function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
