// One client connection from accept to its end: logs CONNECT, runs the
// pregreet test, then either hands the descriptor to smtpd or replies and
// closes. The session owns the client socket until the hand-off has sent
// it; after that the Handoff closes our copy. Replies are short lines
// written without blocking; a rejected client's pending input is discarded
// before close(), so the reply is not lost to a TCP reset.
import type { Config } from "../config/load.js";
import type { Addon, NativeSocket } from "../native.js";
import { READABLE } from "../native.js";
import type { Logger } from "../log/logger.js";
import { formatDelay, formatEndpoint } from "../log/format.js";
import type { AddressFamilies } from "../postfix/inet-protocols.js";
import { encodeAttributes } from "../handoff/attributes.js";
import { Handoff, type PassFailure } from "../handoff/pass.js";
import { GreetingTest, type GreetingOutcome } from "./greeting.js";

export const REPLY_PROTOCOL_ERROR_DROP = "521 5.5.1 Protocol error\r\n";
export const REPLY_PORTS_BUSY = "421 4.3.2 All server ports are busy\r\n";
export const REPLY_NO_RESOURCES = "421 4.3.2 No system resources\r\n";
export const REPLY_UNAVAILABLE = "421 4.3.2 Service currently unavailable\r\n";

/** Time a client has to send its first command after a completed greeting. */
const FIRST_COMMAND_TIMEOUT_MS = 10_000;
const MAX_COMMAND_LINE = 2048;

export interface SessionContext {
  config: Config;
  addon: Addon;
  logger: Logger;
  families: AddressFamilies;
  /** Called once, when the session no longer owns the client socket. */
  onEnded(session: Session): void;
}

export interface Endpoint {
  address: string;
  port: number;
}

type Phase = "testing" | "passing" | "replying" | "ended";

export class Session {
  private readonly startedAt = performance.now();
  private readonly clientLabel: string;
  private phase: Phase = "testing";
  private greeting: GreetingTest | undefined;
  private handoff: Handoff | undefined;
  private teaserSent = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly context: SessionContext,
    private readonly socket: NativeSocket,
    private readonly client: Endpoint,
    private readonly server: Endpoint,
  ) {
    this.clientLabel = formatEndpoint(client.address, client.port);
  }

  start(): void {
    const { logger, config, families } = this.context;
    logger.info(
      `CONNECT from ${this.clientLabel} to ` +
        formatEndpoint(this.server.address, this.server.port),
    );

    const isIPv6 = this.client.address.includes(":");
    if ((isIPv6 && !families.ipv6) || (!isIPv6 && !families.ipv4)) {
      logger.warning(
        `cannot hand off ${this.clientLabel}: Postfix inet_protocols in ` +
          `${config.postfixConfigDirectory} does not include ` +
          (isIPv6 ? "ipv6" : "ipv4"),
      );
      this.closeWithReply(REPLY_UNAVAILABLE);
      return;
    }

    if (!GreetingTest.isEnabled(config)) {
      this.passToSmtpd();
      return;
    }
    this.greeting = new GreetingTest(
      this.socket,
      config,
      logger,
      this.clientLabel,
      () => this.elapsedSeconds(),
      (outcome) => this.onGreetingDone(outcome),
    );
    this.teaserSent = this.greeting.teaserSent;
    this.greeting.start();
  }

  /**
   * Ends the session for a shutdown: a client still under test gets 421; a
   * hand-off whose descriptor is sent stops waiting for smtpd. A hand-off
   * still connecting finishes on its own, within its connect deadline.
   */
  shutdown(): void {
    if (this.phase === "testing" || this.phase === "replying") {
      this.greeting?.cancel();
      this.closeWithReply(REPLY_UNAVAILABLE);
    } else if (this.phase === "passing" && this.handoff?.sent === true) {
      this.handoff.finishNow();
    }
  }

  /** True when the session no longer needs time to end cleanly. */
  get settled(): boolean {
    return (
      this.phase === "ended" ||
      (this.phase === "passing" && this.handoff?.sent === true)
    );
  }

  private elapsedSeconds(): number {
    return (performance.now() - this.startedAt) / 1000;
  }

  private onGreetingDone(outcome: GreetingOutcome): void {
    switch (outcome) {
      case "passed":
        this.context.logger.info(`PASS NEW ${this.clientLabel}`);
        this.passToSmtpd();
        return;
      case "failed":
        // Action ignore: logged already; hand off, and test again next time.
        this.passToSmtpd();
        return;
      case "drop":
        this.closeWithReply(REPLY_PROTOCOL_ERROR_DROP);
        return;
      case "hangup":
        this.context.logger.info(
          `HANGUP after ${formatDelay(this.elapsedSeconds())} from ` +
            `${this.clientLabel} in tests before SMTP handshake`,
        );
        this.closeWithReply(undefined);
        return;
    }
  }

  private passToSmtpd(): void {
    const { config, addon } = this.context;
    this.phase = "passing";
    let attributes: Buffer;
    try {
      attributes = encodeAttributes({
        clientAddress: this.client.address,
        clientPort: this.client.port,
        serverAddress: this.server.address,
        serverPort: this.server.port,
      });
    } catch (error) {
      this.context.logger.warning(
        `cannot pass connection to service ${config.smtpdServiceLabel}: ` +
          (error as Error).message,
      );
      this.answerHandoffFailure(REPLY_NO_RESOURCES);
      return;
    }
    this.handoff = new Handoff(
      this.socket,
      attributes,
      {
        addon,
        socketPath: config.smtpdPassSocket,
        connectTimeoutMs: 1000,
        closeTimeoutMs: 100_000,
      },
      {
        onSent: (failure) => this.onHandoffSent(failure),
        onFinished: (timedOut) => this.onHandoffFinished(timedOut),
      },
    );
  }

  private onHandoffSent(failure: PassFailure | undefined): void {
    if (failure === undefined) return;
    const service = this.context.config.smtpdServiceLabel;
    const reason = describeError(failure.error);
    if (failure.stage === "connect") {
      this.context.logger.warning(
        `cannot connect to service ${service}: ${reason}`,
      );
      this.answerHandoffFailure(REPLY_PORTS_BUSY);
    } else {
      this.context.logger.warning(
        `cannot pass connection to service ${service}: ${reason}`,
      );
      this.answerHandoffFailure(REPLY_NO_RESOURCES);
    }
  }

  private onHandoffFinished(timedOut: boolean): void {
    if (timedOut) {
      this.context.logger.warning(
        "timeout sending connection to service " +
          this.context.config.smtpdServiceLabel,
      );
    }
    this.end();
  }

  /**
   * Answers a client that could not be handed off, as postscreen does:
   * before any teaser, `reply` at once; after a "220-" teaser, finish the
   * greeting and send "421 4.3.2 No system resources" after the first
   * command, so the client reads a well-formed dialogue.
   */
  private answerHandoffFailure(reply: string): void {
    if (!this.teaserSent) {
      this.closeWithReply(reply);
      return;
    }
    this.phase = "replying";
    this.send(`220 ${this.context.config.smtpdBanner}\r\n`);
    this.timer = setTimeout(
      () => this.closeWithReply(REPLY_NO_RESOURCES),
      FIRST_COMMAND_TIMEOUT_MS,
    );
    this.awaitFirstCommand(0);
  }

  private awaitFirstCommand(received: number): void {
    this.socket.watch(READABLE, (status) => {
      if (this.phase !== "replying") return;
      let data: Buffer | null;
      try {
        data = status < 0 ? Buffer.alloc(0) : this.socket.read(4096);
      } catch {
        data = Buffer.alloc(0);
      }
      if (data === null) {
        this.awaitFirstCommand(received);
        return;
      }
      const total = received + data.length;
      if (data.length === 0) {
        this.closeWithReply(undefined);
      } else if (data.includes(0x0a) || total >= MAX_COMMAND_LINE) {
        this.closeWithReply(REPLY_NO_RESOURCES);
      } else {
        this.awaitFirstCommand(total);
      }
    });
  }

  private send(text: string): void {
    try {
      this.socket.write(Buffer.from(text, "latin1"));
    } catch {
      // The client is gone; close() below still releases the descriptor.
    }
  }

  /** Sends an optional final reply, discards pending input and closes. */
  private closeWithReply(reply: string | undefined): void {
    if (this.phase === "ended") return;
    if (reply !== undefined) this.send(reply);
    try {
      this.socket.discard();
    } catch {
      // Nothing left to discard on a dead socket.
    }
    this.socket.close();
    this.context.logger.info(`DISCONNECT ${this.clientLabel}`);
    this.end();
  }

  private end(): void {
    if (this.phase === "ended") return;
    this.phase = "ended";
    clearTimeout(this.timer);
    this.context.onEnded(this);
  }
}

/** Formats a system error as Postfix's %m would: the strerror text. */
export function describeError(error: NodeJS.ErrnoException): string {
  const match = /: (.+?)(?: \(.*\))?$/.exec(error.message);
  return match?.[1] ?? error.message;
}
