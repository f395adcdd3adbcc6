// Typed surface of the C++ addon (build/Release/postwarden.node). Every
// method is synchronous and non-blocking. Failures throw an Error with
// `code` (such as "ENOENT"), `errno` (negative, as in Node) and `syscall`.

/**
 * Operations on socket descriptors that JavaScript owns (see
 * src/native-socket.ts), and one-shot readiness watches in one epoll set.
 * Watch results are written into the Float64Array given at construction,
 * four numbers each (descriptor, generation, status, events), and
 * announced with onEvents(count). `status` is 0, or -EIO when the socket
 * is in error; the error itself is left for the next operation to report.
 * Operations on a descriptor below 0 throw with code EBADF.
 */
export interface NativeSockets {
  /** Arms a one-shot watch for `events`; returns its generation. */
  watch(this: void, fd: number, events: number): number;
  unwatch(this: void, fd: number): void;
  /** Pending bytes, unconsumed; null if none, empty at end of stream. */
  peek(this: void, fd: number, max: number): Buffer | null;
  /** Pending bytes, consumed; null if none, empty at end of stream. */
  read(this: void, fd: number, max: number): Buffer | null;
  /** Drops pending bytes; returns their count, or -1 at end of stream. */
  discard(this: void, fd: number): number;
  /** Sends without blocking; returns the bytes sent (0 if buffer full). */
  write(this: void, fd: number, data: Buffer): number;
  /** Sends one 0x00 byte carrying `other`; false on EAGAIN. */
  sendFd(this: void, fd: number, other: number): boolean;
  /** Receives one byte with one descriptor; null if nothing is pending. */
  receiveFd(this: void, fd: number): number | null;
  /** Stops watching a descriptor that gets a new owner. */
  release(this: void, fd: number): void;
  /** Stops watching and closes with close(); never shutdown(). */
  closeFd(this: void, fd: number): void;
  /** shutdown(SHUT_RDWR): only for a hand-off smtpd never took. */
  shutdown(this: void, fd: number): void;
  /** Stops every watch; the descriptors stay open. */
  close(this: void): void;
}

export interface NativeListener {
  start(this: void): void;
  pause(this: void): void;
  close(this: void): void;
  address(this: void): { address: string; port: number };
}

export type ConnectionCallback = (
  fd: number,
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
  Sockets: new (
    events: Float64Array,
    onEvents: (count: number) => void,
  ) => NativeSockets;
  /** A non-blocking stream socket connected to a UNIX-domain path. */
  connectUnix(this: void, path: string): number;
  /** Two connected UNIX-domain stream sockets, for tests. */
  socketPair(this: void): [number, number];
}
