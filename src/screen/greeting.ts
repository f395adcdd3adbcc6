// The pregreet test's client side. In teaser mode it sends the first line
// of a multi-line greeting ("220-" + greet_banner); in stutter mode
// (OpenBSD spamd's stuttering) it sends that line a word at a time with
// greet_stutter_delay between words, all within greet_wait; in silent mode
// (Sendmail's greet_pause) it sends nothing. A client that sends anything
// before the final "220 " line, which smtpd sends after the hand-off, is
// reported at once. Bytes are peeked, never consumed, so smtpd still
// reads them when the action is ignore. The wait itself, and what happens
// to the client, belong to the session.
import type { Config } from "../config/load.js";
import { READABLE, type NativeSocket } from "../native.js";
import type { Logger } from "../log/logger.js";
import { escapeForLog, formatDelay } from "../log/format.js";

/** Bytes peeked to detect and log a pregreet: postscreen peeks 1023. */
const PEEK_SIZE = 1023;

export interface GreetingEvents {
  /** The client spoke before its turn (logged already). */
  onPregreet(): void;
  /** The client closed or reset the connection. */
  onHangup(): void;
  /** Seconds since the connection was accepted, for the log. */
  elapsedSeconds(): number;
}

export class GreetingTest {
  private watching = false;
  private stutterTimer: NodeJS.Timeout | undefined;
  /** The stuttered teaser's pieces still to send (stutter mode only). */
  private pendingPieces: string[] | undefined;
  /** The readiness callback, made once for every watch of this test. */
  private readonly onReady = this.onReadable.bind(this);
  private stopped = false;
  private spoke = false;

  constructor(
    private readonly socket: NativeSocket,
    private readonly config: Config,
    private readonly logger: Logger,
    private readonly clientLabel: string,
    private readonly events: GreetingEvents,
  ) {}

  /** Whether the test runs at all: an empty teaser banner turns it off. */
  static isEnabled(config: Config): boolean {
    return config.greetMode === "silent" || config.greetBanner !== "";
  }

  /** Whether a "220-" line is (being) sent; a reply must then finish it. */
  get sendsTeaser(): boolean {
    return this.config.greetMode !== "silent";
  }

  /** True when the client sent bytes before its turn. */
  get pregreeted(): boolean {
    return this.spoke;
  }

  start(): void {
    const teaser = `220-${this.config.greetBanner}`;
    if (this.config.greetMode === "teaser") {
      this.send(teaser + "\r\n");
    } else if (this.config.greetMode === "stutter") {
      const words = teaser.split(" ");
      this.pendingPieces = [
        ...words.map((word, index) => (index === 0 ? word : " " + word)),
        "\r\n",
      ];
      // Every piece after the first waits one delay, and the whole line
      // must end within the greet wait.
      const delay = Math.min(
        this.config.greetStutterDelayMs,
        Math.floor(this.config.greetWaitMs / this.pendingPieces.length),
      );
      this.sendNextPiece(delay);
    }
    this.watch();
  }

  /** Stops sending and watching; pending client bytes stay unread. */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.stutterTimer);
    if (this.watching) {
      this.watching = false;
      this.socket.unwatch();
    }
  }

  /**
   * Ends a stuttered line that is still being sent, so that a reply that
   * follows starts on a line of its own.
   */
  finishLine(): void {
    clearTimeout(this.stutterTimer);
    if (this.pendingPieces !== undefined && this.pendingPieces.length > 0) {
      this.pendingPieces = undefined;
      this.send("\r\n");
    }
  }

  private sendNextPiece(delay: number): void {
    const piece = this.pendingPieces?.shift();
    if (piece === undefined || this.stopped) return;
    this.send(piece);
    if (this.pendingPieces !== undefined && this.pendingPieces.length > 0) {
      this.stutterTimer = setTimeout(() => this.sendNextPiece(delay), delay);
    }
  }

  private send(text: string): void {
    try {
      // NOTE: a short write would drop the rest of the line unnoticed. A
      // new connection's send buffer takes far more than a teaser line,
      // so this has not been seen, but nothing retries the rest.
      this.socket.write(Buffer.from(text, "latin1"));
    } catch {
      // The client is gone; the watch reports the hangup.
    }
  }

  private watch(): void {
    this.watching = true;
    this.socket.watch(READABLE, this.onReady);
  }

  private onReadable(status: number): void {
    this.watching = false;
    if (this.stopped) return;
    // A reset may arrive with data still peekable: the client is gone.
    if (status < 0) {
      this.events.onHangup();
      return;
    }
    let data: Buffer | null;
    try {
      data = this.socket.peek(PEEK_SIZE);
    } catch {
      this.events.onHangup();
      return;
    }
    if (data === null) {
      this.watch();
      return;
    }
    if (data.length === 0) {
      this.events.onHangup();
      return;
    }

    this.spoke = true;
    this.logger.info(
      `PREGREET ${data.length} after ${formatDelay(this.events.elapsedSeconds())} ` +
        `from ${this.clientLabel}: ${escapeForLog(data)}`,
    );
    // The socket is no longer watched: the pending bytes stay for smtpd.
    this.events.onPregreet();
  }
}
