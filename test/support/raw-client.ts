// A raw TCP client for attacks: it runs callbacks on connect and on every
// chunk received, resolves with everything received when the connection
// closes, and gives up after a deadline, so that no attack can hang a test.
import { connect, type Socket, type SocketConnectOpts } from "node:net";

export interface RawOptions {
  host?: string;
  localAddress?: string;
  /** Runs once connected. */
  onConnect?: (socket: Socket) => void;
  /** Runs on every chunk, with everything received so far. */
  onData?: (socket: Socket, received: string) => void;
  timeoutMs?: number;
}

/** What a raw client received, and whether the connection ended. */
export interface RawResult {
  received: string;
  ended: boolean;
}

/** Connects and runs the callbacks. Gives up after `timeoutMs`. */
export function rawClient(
  port: number,
  options: RawOptions = {},
): Promise<RawResult> {
  return new Promise((resolve) => {
    const target: SocketConnectOpts = {
      port,
      host: options.host ?? "127.0.0.1",
      ...(options.localAddress === undefined
        ? {}
        : { localAddress: options.localAddress }),
    };
    const socket = connect(target);
    let received = "";
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ received, ended: false });
    }, options.timeoutMs ?? 15_000);
    socket.setEncoding("latin1");
    socket.on("error", () => {
      // Resets are part of the attacks, and "close" follows.
    });
    socket.on("connect", () => options.onConnect?.(socket));
    socket.on("data", (chunk: string) => {
      received += chunk;
      options.onData?.(socket, received);
    });
    socket.on("close", () => {
      clearTimeout(timer);
      resolve({ received, ended: true });
    });
  });
}

/** Sends a TCP reset (SO_LINGER 0) unless the socket is gone already. */
export function reset(socket: Socket): void {
  if (!socket.destroyed) socket.resetAndDestroy();
}
