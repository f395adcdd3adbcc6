// Typed surface of the C++ addon (build/Release/postwarden.node). Every
// method is synchronous and non-blocking. Failures throw an Error with
// `code` (such as "ENOENT"), `errno` (negative, as in Node) and `syscall`.

/** A non-blocking socket descriptor owned by the addon. */
export interface NativeSocket {
  /** The descriptor number, or -1 once closed or released. */
  readonly fd: number;
  /**
   * Calls `callback` once when the socket is ready for `events` or in
   * error. `status` is 0 or a negative libuv error. Arming a new watch
   * replaces the pending one.
   */
  watch(
    this: void,
    events: number,
    callback: (status: number, events: number) => void,
  ): void;
  unwatch(this: void): void;
  /** Pending bytes, unconsumed; null if none, empty at end of stream. */
  peek(this: void, max: number): Buffer | null;
  /** Pending bytes, consumed; null if none, empty at end of stream. */
  read(this: void, max: number): Buffer | null;
  /** Drops pending bytes; returns their count, or -1 at end of stream. */
  discard(this: void): number;
  /** Sends without blocking; returns the bytes sent (0 if buffer full). */
  write(this: void, data: Buffer): number;
  /** Sends one 0x00 byte carrying `other`'s descriptor; false on EAGAIN. */
  sendFd(this: void, other: NativeSocket): boolean;
  /** Receives one byte with one descriptor; null if nothing is pending. */
  receiveFd(this: void): NativeSocket | null;
  /** Forgets the descriptor and returns it, for a new owner. */
  release(this: void): number;
  /** Closes with close(); never shutdown(). Safe to call twice. */
  close(this: void): void;
  /** shutdown(SHUT_RDWR): only for a hand-off smtpd never took. */
  shutdown(this: void): void;
}

export interface NativeListener {
  start(this: void): void;
  pause(this: void): void;
  close(this: void): void;
  address(this: void): { address: string; port: number };
}

export type ConnectionCallback = (
  socket: NativeSocket,
  clientAddress: string,
  clientPort: number,
  serverAddress: string,
  serverPort: number,
) => void;

/** An accept() error; `paused` means the listener needs start() again. */
export type ListenerError = NodeJS.ErrnoException & { paused: boolean };

/**
 * Hand-offs to smtpd done in the addon, with their channels in one epoll
 * set. Results are written into the Float64Array given at construction,
 * four numbers each (id, kind, errno, descriptor sent as 0 or 1), and
 * announced with onEvents(count).
 */
export interface NativeHandoffs {
  /**
   * Connects to the pass socket, sends the descriptor and the attributes.
   * Returns the id, negated while the rest waits for a writable channel.
   * Throws with syscall "socket" or "connect" when connecting failed.
   */
  pass(
    this: void,
    clientFd: number,
    path: string,
    attributes: Buffer,
    sendTimeoutMs: number,
    closeTimeoutMs: number,
  ): number;
  /** Closes a hand-off's channel without a result; false if none. */
  finish(this: void, id: number): boolean;
  /** Closes every channel. */
  close(this: void): void;
}

export interface Addon {
  Handoffs: new (
    events: Float64Array,
    onEvents: (count: number) => void,
  ) => NativeHandoffs;
  Listener: new (
    host: string,
    port: number,
    backlog: number,
    acceptLimit: number,
    onConnection: ConnectionCallback,
    onError: (error: ListenerError) => void,
  ) => NativeListener;
  connectUnix(this: void, path: string): NativeSocket;
  socketPair(this: void): [NativeSocket, NativeSocket];
}
