// Hands a client's descriptor to smtpd over Postfix's pass protocol. It
// connects to the pass socket without blocking, and retries EAGAIN from a
// full backlog until the connect deadline. It sends one 0x00 byte carrying
// the descriptor, writes the attr0 attribute list, and waits for smtpd to
// close the channel. smtpd sends no reply, so end of stream means only
// "done", not "succeeded". Our copy of the client descriptor is then closed
// with close() only, because shutdown() would end the session that smtpd
// now owns. The one exception is a hand-off that smtpd did not take by the
// deadline: its connection is shut down so that the client is not left
// waiting.
import {
  READABLE,
  WRITABLE,
  type Addon,
  type NativeSocket,
} from "../native.js";

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

function timeoutError(syscall: string): NodeJS.ErrnoException {
  const error: NodeJS.ErrnoException = new Error(`${syscall} timed out`);
  error.code = "ETIMEDOUT";
  error.syscall = syscall;
  return error;
}

/**
 * One hand-off in progress. On failure the client socket is left open for
 * the caller to answer; on success this object closes it.
 */
export class Handoff {
  private channel: NativeSocket | undefined;
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
    this.deadline = Date.now() + options.connectTimeoutMs;
    this.connect();
  }

  /** True once the descriptor is sent (or the hand-off has ended). */
  get sent(): boolean {
    return this.state === "waiting" || this.state === "done";
  }

  /** Stops waiting for smtpd to close the channel and closes our copies. */
  finishNow(): void {
    if (this.state === "waiting") this.finish(false);
  }

  private connect(): void {
    try {
      this.channel = this.options.addon.connectUnix(this.options.socketPath);
    } catch (error) {
      const failure = error as NodeJS.ErrnoException;
      const remaining = this.deadline - Date.now();
      if (failure.code === "EAGAIN" && remaining > 0) {
        // The pass service's backlog is full: smtpd is busy. Retry with a
        // growing delay until the connect deadline.
        const delay = Math.min(this.retryDelayMs, remaining);
        this.retryDelayMs = Math.min(this.retryDelayMs * 2, 50);
        this.timer = setTimeout(() => this.connect(), delay);
        return;
      }
      this.fail("connect", failure);
      return;
    }
    this.state = "sending";
    // Sending gets a deadline of its own, as long as the connect deadline.
    this.timer = setTimeout(
      () => this.fail("send", timeoutError("sendmsg")),
      this.options.connectTimeoutMs,
    );
    this.sendDescriptor();
  }

  private sendDescriptor(): void {
    const channel = this.channel;
    if (channel === undefined || this.state !== "sending") return;
    let sent: boolean;
    try {
      sent = channel.sendFd(this.client);
    } catch (error) {
      this.fail("send", error as NodeJS.ErrnoException);
      return;
    }
    if (!sent) {
      // Too many descriptors in flight (EAGAIN or ETOOMANYREFS).
      channel.watch(WRITABLE, (status) => {
        if (status < 0) {
          this.fail("send", this.statusError(status, "sendmsg"));
        } else {
          this.sendDescriptor();
        }
      });
      return;
    }
    this.writeAttributes(0);
  }

  private writeAttributes(offset: number): void {
    const channel = this.channel;
    if (channel === undefined || this.state !== "sending") return;
    let position = offset;
    try {
      while (position < this.attributes.length) {
        const written = channel.write(this.attributes.subarray(position));
        if (written === 0) break;
        position += written;
      }
    } catch (error) {
      this.fail("send", error as NodeJS.ErrnoException);
      return;
    }
    if (position < this.attributes.length) {
      channel.watch(WRITABLE, (status) => {
        if (status < 0) {
          this.fail("send", this.statusError(status, "write"));
        } else {
          this.writeAttributes(position);
        }
      });
      return;
    }

    clearTimeout(this.timer);
    this.state = "waiting";
    this.timer = setTimeout(
      () => this.finish(true),
      this.options.closeTimeoutMs,
    );
    this.callbacks.onSent(undefined);
    this.waitForClose();
  }

  private waitForClose(): void {
    const channel = this.channel;
    if (channel === undefined || this.state !== "waiting") return;
    channel.watch(READABLE, (status) => {
      if (this.state !== "waiting") return;
      try {
        const data = channel.read(4096);
        if (status < 0 || (data !== null && data.length === 0)) {
          this.finish(false);
          return;
        }
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "ECONNRESET") {
          // smtpd reads everything it is sent before it closes, so a reset
          // means our bytes were not read, and perhaps not the descriptor.
          this.state = "done";
          clearTimeout(this.timer);
          channel.close();
          this.channel = undefined;
          this.callbacks.onUnread();
          return;
        }
        this.finish(false);
        return;
      }
      // smtpd never writes on this channel; ignore stray bytes and wait on.
      this.waitForClose();
    });
  }

  private statusError(status: number, syscall: string): NodeJS.ErrnoException {
    const error: NodeJS.ErrnoException = new Error(
      `${syscall} failed with status ${status}`,
    );
    error.errno = status;
    error.syscall = syscall;
    return error;
  }

  private fail(
    stage: PassFailure["stage"],
    error: NodeJS.ErrnoException,
  ): void {
    if (this.state === "done" || this.state === "waiting") return;
    this.state = "done";
    clearTimeout(this.timer);
    this.channel?.close();
    this.channel = undefined;
    this.callbacks.onSent({ stage, error });
  }

  private finish(timedOut: boolean): void {
    if (this.state === "done") return;
    this.state = "done";
    clearTimeout(this.timer);
    this.channel?.close();
    this.channel = undefined;
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
