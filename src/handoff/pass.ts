// Hands a client's descriptor to smtpd over Postfix's pass protocol. The
// addon connects to the pass socket without blocking, sends one 0x00 byte
// carrying the descriptor, writes the attr0 attribute list, and waits for
// smtpd to close the channel, all in native code with one epoll set for
// every channel. This side retries EAGAIN from a full backlog until the
// connect deadline. smtpd sends no reply, so end of stream means only
// "done", not "succeeded". Our copy of the client descriptor is then closed
// with close() only, because shutdown() would end the session that smtpd
// now owns. The one exception is a hand-off that smtpd did not take by the
// deadline: its connection is shut down so that the client is not left
// waiting.
import { constants } from "node:os";
import { getSystemErrorName } from "node:util";
import type { Addon, NativeHandoffs, NativeSocket } from "../native.js";

export interface PassOptions {
  addon: Addon;
  socketPath: string;
  /** Deadline to connect and to send everything, in ms (postscreen: 1 s). */
  connectTimeoutMs: number;
  /** Deadline for smtpd to close the channel, in ms (postscreen: 100 s). */
  closeTimeoutMs: number;
}

export type PassFailure = {
  stage: "connect" | "send";
  error: NodeJS.ErrnoException;
};

export interface PassCallbacks {
  /** The descriptor and attributes are sent, or sending failed. */
  onSent(failure: PassFailure | undefined): void;
  /** smtpd closed the channel (timedOut false) or the wait ended. */
  onFinished(timedOut: boolean): void;
  /**
   * smtpd reset the channel with our bytes unread, so it may not have taken
   * the client: the client socket is left open for the caller to answer.
   */
  onUnread(): void;
}

// Result kinds that the addon's Handoffs report (native/handoffs.cc).
const SENT = 1;
const SEND_FAILED = 2;
const FINISHED = 3;
const TIMED_OUT = 4;
const UNREAD = 5;
/** Numbers per result in the shared array: id, kind, errno, sent. */
const EVENT_SLOTS = 4;
/** Results per batch; the addon calls back again when more are ready. */
const EVENT_CAPACITY = 256;

const { ETIMEDOUT } = constants.errno;

/** Builds an Error like the addon's from a positive errno value. */
function systemError(errno: number, syscall: string): NodeJS.ErrnoException {
  const code = getSystemErrorName(-errno);
  const error: NodeJS.ErrnoException = new Error(
    errno === ETIMEDOUT ? `${syscall} timed out` : `${syscall} ${code}`,
  );
  error.code = code;
  error.errno = -errno;
  error.syscall = syscall;
  return error;
}

/** The addon's Handoffs object of one addon, and the hand-offs in flight. */
class Dispatcher {
  readonly native: NativeHandoffs;
  readonly inFlight = new Map<number, Handoff>();
  private readonly events = new Float64Array(EVENT_CAPACITY * EVENT_SLOTS);

  constructor(addon: Addon) {
    this.native = new addon.Handoffs(this.events, (count) =>
      this.dispatch(count),
    );
  }

  private dispatch(count: number): void {
    const events = this.events;
    for (let i = 0; i < count; i++) {
      const base = i * EVENT_SLOTS;
      const id = events[base] ?? 0;
      const handoff = this.inFlight.get(id);
      if (handoff === undefined) continue;
      const kind = events[base + 1];
      if (kind !== SENT) this.inFlight.delete(id);
      handoff.onResult(
        kind ?? 0,
        events[base + 2] ?? 0,
        events[base + 3] === 1,
      );
    }
  }
}

const dispatchers = new WeakMap<Addon, Dispatcher>();

/**
 * Creates the addon's epoll set for hand-offs if it does not exist yet.
 * The daemon calls this at startup, so that the descriptor it holds is
 * open from the start and a failure to create it stops startup.
 */
export function prepareHandoffs(addon: Addon): void {
  dispatcherFor(addon);
}

function dispatcherFor(addon: Addon): Dispatcher {
  let dispatcher = dispatchers.get(addon);
  if (dispatcher === undefined) {
    dispatcher = new Dispatcher(addon);
    dispatchers.set(addon, dispatcher);
  }
  return dispatcher;
}

/**
 * One hand-off in progress. On failure the client socket is left open for
 * the caller to answer; on success this object closes it.
 */
export class Handoff {
  private readonly dispatcher: Dispatcher;
  private id = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly deadline: number;
  private retryDelayMs = 2;
  private state: "connecting" | "sending" | "waiting" | "done" = "connecting";

  constructor(
    private readonly client: NativeSocket,
    private readonly attributes: Buffer,
    private readonly options: PassOptions,
    private readonly callbacks: PassCallbacks,
  ) {
    this.dispatcher = dispatcherFor(options.addon);
    this.deadline = Date.now() + options.connectTimeoutMs;
    this.connect();
  }

  /** True once the descriptor is sent (or the hand-off has ended). */
  get sent(): boolean {
    return this.state === "waiting" || this.state === "done";
  }

  /** Stops waiting for smtpd to close the channel and closes our copies. */
  finishNow(): void {
    if (this.state !== "waiting") return;
    this.dispatcher.native.finish(this.id);
    this.dispatcher.inFlight.delete(this.id);
    this.finish(false);
  }

  private connect(): void {
    const { connectTimeoutMs, closeTimeoutMs, socketPath } = this.options;
    let result: number;
    try {
      result = this.dispatcher.native.pass(
        this.client.fd,
        socketPath,
        this.attributes,
        // Sending gets a deadline of its own, as long as the connect one.
        connectTimeoutMs,
        closeTimeoutMs,
      );
    } catch (error) {
      const failure = error as NodeJS.ErrnoException;
      const connecting =
        failure.syscall === "connect" || failure.syscall === "socket";
      const remaining = this.deadline - Date.now();
      if (connecting && failure.code === "EAGAIN" && remaining > 0) {
        // The pass service's backlog is full: smtpd is busy. Retry with a
        // growing delay until the connect deadline.
        const delay = Math.min(this.retryDelayMs, remaining);
        this.retryDelayMs = Math.min(this.retryDelayMs * 2, 50);
        this.timer = setTimeout(() => this.connect(), delay);
        return;
      }
      this.fail(connecting ? "connect" : "send", failure);
      return;
    }
    this.id = Math.abs(result);
    this.dispatcher.inFlight.set(this.id, this);
    if (result > 0) {
      this.state = "waiting";
      this.callbacks.onSent(undefined);
    } else {
      this.state = "sending";
    }
  }

  /** Takes one result from the addon for this hand-off. */
  onResult(kind: number, errno: number, descriptorSent: boolean): void {
    if (this.state === "done") return;
    switch (kind) {
      case SENT:
        this.state = "waiting";
        this.callbacks.onSent(undefined);
        break;
      case SEND_FAILED:
        this.fail(
          "send",
          systemError(errno, descriptorSent ? "write" : "sendmsg"),
        );
        break;
      case TIMED_OUT:
        this.finish(true);
        break;
      case FINISHED:
        this.finish(false);
        break;
      case UNREAD:
        // smtpd reads everything it is sent before it closes, so a reset
        // means our bytes were not read, and perhaps not the descriptor.
        this.state = "done";
        this.callbacks.onUnread();
        break;
      default:
        throw new Error(`unknown hand-off result kind ${kind}`);
    }
  }

  private fail(
    stage: PassFailure["stage"],
    error: NodeJS.ErrnoException,
  ): void {
    if (this.state === "done" || this.state === "waiting") return;
    this.state = "done";
    clearTimeout(this.timer);
    this.callbacks.onSent({ stage, error });
  }

  private finish(timedOut: boolean): void {
    if (this.state === "done") return;
    this.state = "done";
    if (timedOut) {
      // smtpd never took the descriptor: end the connection for everyone
      // that may hold it, so the client does not wait forever.
      try {
        this.client.shutdown();
      } catch {
        // Already gone.
      }
    }
    this.client.close();
    this.callbacks.onFinished(timedOut);
  }
}
