// Socket descriptors as JavaScript objects. A NativeSocket is a small
// object that owns a descriptor number. The addon's Sockets object does
// the system calls and keeps every readiness watch in one epoll set. The
// addon keeps nothing per socket, so a connection held in the greet wait
// costs a few dozen bytes here instead of a wrapped native object, a
// libuv handle and two persistent references. A socket that is dropped
// without close() or release() is closed after garbage collection, so a
// forgotten client cannot leak its descriptor.
import type { Addon, NativeSockets } from "../native/addon.js";

/** A non-blocking socket descriptor, closed with close() only. */
export interface NativeSocket {
  /** The descriptor number, or -1 once closed or released. */
  readonly fd: number;
  /**
   * Calls `callback` once when the socket is ready for `events` (READABLE,
   * WRITABLE) or in error. `status` is 0, or negative when the socket is in
   * error. A reset may come with data that can still be peeked, so treat a
   * negative status as a dead connection. Arming a new watch replaces the pending one.
   */
  watch(events: number, callback: ReadyCallback): void;
  unwatch(): void;
  /** Pending bytes, unconsumed; null if none, empty at end of stream. */
  peek(max: number): Buffer | null;
  /** Pending bytes, consumed; null if none, empty at end of stream. */
  read(max: number): Buffer | null;
  /** Drops pending bytes; returns their count, or -1 at end of stream. */
  discard(): number;
  /** Sends without blocking; returns the bytes sent (0 if buffer full). */
  write(data: Buffer): number;
  /** Sends one 0x00 byte carrying `other`'s descriptor; false on EAGAIN. */
  sendFd(other: NativeSocket): boolean;
  /** Receives one byte with one descriptor; null if nothing is pending. */
  receiveFd(): NativeSocket | null;
  /** Stops watching and returns the descriptor, for a new owner. */
  release(): number;
  /** Closes with close(); never shutdown(). Safe to call twice. */
  close(): void;
  /** shutdown(SHUT_RDWR): only for a hand-off smtpd never took. */
  shutdown(): void;
}

export type ReadyCallback = (status: number, events: number) => void;

/** Numbers per watch result: descriptor, generation, status, events. */
const EVENT_SLOTS = 4;
/** Results per batch; the addon calls back again when more are ready. */
const EVENT_CAPACITY = 256;

/** The addon's Sockets object and the sockets with a watch pending. */
export class SocketSet {
  readonly native: NativeSockets;
  /** Closes the descriptor of a socket collected while still open. */
  readonly collected = new FinalizationRegistry<number>((fd) => {
    this.native.closeFd(fd);
  });
  /** The socket watching each descriptor number. */
  readonly watching: (AddonSocket | undefined)[] = [];
  private readonly events = new Float64Array(EVENT_CAPACITY * EVENT_SLOTS);

  constructor(addon: Addon) {
    this.native = new addon.Sockets(this.events, (count) =>
      this.dispatch(count),
    );
  }

  /** Takes ownership of a descriptor. */
  adopt(fd: number): NativeSocket {
    return new AddonSocket(this, fd);
  }

  private dispatch(count: number): void {
    const events = this.events;
    // One callback that throws must not cost the others their results:
    // the first error is thrown again once every callback has run.
    let failure: { error: unknown } | undefined;
    for (let i = 0; i < count; i++) {
      const base = i * EVENT_SLOTS;
      const fd = events[base] ?? -1;
      const socket = this.watching[fd];
      if (socket === undefined) continue;
      const callback = socket.take(events[base + 1] ?? 0);
      if (callback === undefined) continue;
      try {
        callback(events[base + 2] ?? 0, events[base + 3] ?? 0);
      } catch (error) {
        failure ??= { error };
      }
    }
    if (failure !== undefined) throw failure.error;
  }
}

class AddonSocket implements NativeSocket {
  private callback: ReadyCallback | undefined = undefined;
  private generation = 0;

  constructor(
    private readonly set: SocketSet,
    public fd: number,
  ) {
    set.collected.register(this, fd, this);
  }

  /** Hands over the pending callback of watch `generation`, once. */
  take(generation: number): ReadyCallback | undefined {
    if (generation !== this.generation) return undefined;
    const callback = this.callback;
    this.forgetWatch();
    return callback;
  }

  private forgetWatch(): void {
    this.callback = undefined;
    if (this.set.watching[this.fd] === this) {
      this.set.watching[this.fd] = undefined;
    }
  }

  watch(events: number, callback: ReadyCallback): void {
    if (typeof callback !== "function") {
      throw new TypeError("watch: callback must be a function");
    }
    this.generation = this.set.native.watch(this.fd, events);
    this.callback = callback;
    this.set.watching[this.fd] = this;
  }

  unwatch(): void {
    if (this.callback === undefined) return;
    this.forgetWatch();
    this.set.native.unwatch(this.fd);
  }

  peek(max: number): Buffer | null {
    return this.set.native.peek(this.fd, max);
  }

  read(max: number): Buffer | null {
    return this.set.native.read(this.fd, max);
  }

  discard(): number {
    return this.set.native.discard(this.fd);
  }

  write(data: Buffer): number {
    return this.set.native.write(this.fd, data);
  }

  sendFd(other: NativeSocket): boolean {
    return this.set.native.sendFd(this.fd, other.fd);
  }

  receiveFd(): NativeSocket | null {
    const fd = this.set.native.receiveFd(this.fd);
    return fd === null ? null : new AddonSocket(this.set, fd);
  }

  release(): number {
    const fd = this.fd;
    if (fd < 0) throw closedError("release");
    this.forgetWatch();
    this.set.native.release(fd);
    this.set.collected.unregister(this);
    this.fd = -1;
    return fd;
  }

  close(): void {
    const fd = this.fd;
    if (fd < 0) return;
    this.forgetWatch();
    this.set.collected.unregister(this);
    this.fd = -1;
    this.set.native.closeFd(fd);
  }

  shutdown(): void {
    this.set.native.shutdown(this.fd);
  }
}

/** Builds the error of an operation on a closed socket, as the addon does. */
function closedError(syscall: string): NodeJS.ErrnoException {
  const error: NodeJS.ErrnoException = new Error(
    `${syscall} EBADF: Bad file descriptor (socket is closed)`,
  );
  error.code = "EBADF";
  error.errno = -9;
  error.syscall = syscall;
  return error;
}

const sets = new WeakMap<Addon, SocketSet>();

/**
 * Returns the socket set of an addon, made on first use. The daemon calls
 * this at startup, so that a failure to create the epoll set stops startup.
 */
export function socketSet(addon: Addon): SocketSet {
  let set = sets.get(addon);
  if (set === undefined) {
    set = new SocketSet(addon);
    sets.set(addon, set);
  }
  return set;
}

/** Connects a non-blocking stream socket to a UNIX-domain path. */
export function connectUnix(addon: Addon, path: string): NativeSocket {
  return socketSet(addon).adopt(addon.connectUnix(path));
}

/** Two connected UNIX-domain stream sockets, for tests. */
export function socketPair(addon: Addon): [NativeSocket, NativeSocket] {
  const set = socketSet(addon);
  const [first, second] = addon.socketPair();
  return [set.adopt(first), set.adopt(second)];
}
