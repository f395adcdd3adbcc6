// The dummy SMTP engine, postscreen's "tests after SMTP handshake". It
// talks SMTP to a client that postwarden will not hand off in this session,
// and it never accepts mail. Every recipient gets `rcptReply`: 450 for a
// client under deep tests, so that it comes back, or the 550 of an
// enforced test. It runs the deep tests (command pipelining, non-SMTP
// commands, bare newlines) and the command count, time and length limits,
// and reports how the session ended; the caller owns the verdict and the
// cache. It never announces PIPELINING, AUTH, XCLIENT or XFORWARD. It
// offers STARTTLS when a certificate is configured, and discards any
// plaintext sent after the STARTTLS command (command injection).
import type { Socket } from "node:net";
import { TLSSocket } from "node:tls";
import type { Config, DeepTestConfig, TestAction } from "../config/load.js";
import type { Logger } from "../log/logger.js";
import { escapeBytes, escapeForLog, formatDelay } from "../log/format.js";
import { CommandReader } from "./command-reader.js";
import type { Metrics, VerdictTest } from "../metrics/metrics.js";

export type DeepTest = "pipelining" | "nonSmtp" | "bareNewline";

/** Deep tests as metrics name them, after their parameters. */
const METRIC_NAMES = {
  pipelining: "pipelining",
  nonSmtp: "non_smtp_command",
  bareNewline: "bare_newline",
} as const satisfies Record<DeepTest, VerdictTest>;

export interface EngineSetup {
  config: Config;
  logger: Logger;
  metrics: Metrics;
  clientAddress: string;
  clientLabel: string;
  /** Sends "220 banner" first; false after a pregreet, as postscreen does. */
  greet: boolean;
  /** The reply to RCPT and VRFY, with CRLF. */
  rcptReply: string;
  /** Deep tests to run in this session. */
  todo: ReadonlySet<DeepTest>;
  /** A reply for the first command other than QUIT, then hang up. */
  firstCommandReply?: string;
  /** The shortest TTL, for a deep test failed with action ignore (ms). */
  minTtlMs: number;
  /**
   * Called for each valid recipient (greylisting and spam traps); a
   * returned reply, with CRLF, replaces `rcptReply` for that recipient.
   */
  onRecipient?:
    ((sender: string, recipient: string) => string | undefined) | undefined;
}

export interface EngineOutcome {
  /** Expiry times (ms) of deep tests passed in this session. */
  passes: Partial<Record<DeepTest, number>>;
  /** A deep test failed with action enforce or drop. */
  failed: boolean;
  ending: "quit" | "hangup" | "drop";
}

/**
 * Appends reject_footer to a single-line 4xx or 5xx reply, as more lines
 * of the same reply: "550-5.5.1 Protocol error" then "550 5.5.1 footer".
 * A literal "\n" in the footer starts another line.
 */
export function withFooter(reply: string, footer: string): string {
  const match = /^([45]\d\d) (?:(\d\.\d{1,3}\.\d{1,3}) )?(.*)\r\n$/.exec(reply);
  if (footer === "" || match === null) return reply;
  const [, code = "", enhanced, text = ""] = match;
  const prefix = enhanced === undefined ? "" : `${enhanced} `;
  const lines = [text, ...footer.split("\\n")];
  return lines
    .map((line, index) => {
      const separator = index === lines.length - 1 ? " " : "-";
      return `${code}${separator}${prefix}${line}\r\n`;
    })
    .join("");
}

/** Lines kept after the reply, waiting for the client to close. */
const CLOSE_GRACE_MS = 5000;
/** message_size_limit's Postfix default, announced as SIZE. */
const MESSAGE_SIZE_LIMIT = 10240000;

const COMMANDS = new Set([
  "HELO",
  "EHLO",
  "STARTTLS",
  "XCLIENT",
  "XFORWARD",
  "AUTH",
  "MAIL",
  "RCPT",
  "DATA",
  "BDAT",
  "RSET",
  "NOOP",
  "VRFY",
  "ETRN",
  "QUIT",
]);

/** Commands in postscreen's table that it does not offer. */
const DISABLED = new Set(["XCLIENT", "XFORWARD", "AUTH"]);

const PROTOCOL_ERROR_DROP = "521 5.5.1 Protocol error\r\n";
const PROTOCOL_ERROR_ENFORCE = "550 5.5.1 Protocol error\r\n";
const NON_SMTP_DROP = "521 5.7.0 Error: I can break rules, too. Goodbye.\r\n";

/** Tests for a "word:" line, as in a mail header (Postfix's is_header). */
function isHeader(command: string): boolean {
  return /^[\x21-\x39\x3b-\x7e]+:/.test(command);
}

/** Extracts an address from "<addr>" or "addr" after a colon. */
function extractAddress(text: string): string | undefined {
  const trimmed = text.trim();
  if (trimmed.startsWith("<")) {
    const end = trimmed.indexOf(">");
    if (end < 0) return undefined;
    return trimmed.slice(1, end);
  }
  const [address] = trimmed.split(/\s+/);
  if (address === undefined || address.includes("<") || address.includes(">")) {
    return undefined;
  }
  return address;
}

export class DummyEngine {
  private readonly reader: CommandReader;
  private readonly startedAt = performance.now();
  private where = "CONNECT";
  private commandCount = 0;
  private helo: string | undefined;
  private sender: string | undefined;
  private protocol = "SMTP";
  private rcptReply: string;
  private timer: NodeJS.Timeout | undefined;
  private done = false;
  private failed = false;
  /** Deep tests decided in this session (passed or failed). */
  private readonly decided = new Set<DeepTest>();
  private readonly passes: Partial<Record<DeepTest, number>> = {};
  private tlsActive = false;

  constructor(
    private socket: Socket,
    private readonly setup: EngineSetup,
    private readonly onDone: (outcome: EngineOutcome) => void,
  ) {
    this.reader = new CommandReader(setup.config.engine.lineLengthLimit);
    this.rcptReply = setup.rcptReply;
  }

  start(): void {
    const { config } = this.setup;
    this.listen(this.socket);
    if (this.setup.greet) this.send(`220 ${config.smtpdBanner}\r\n`);
    this.armTimer();
  }

  private listen(socket: Socket): void {
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("end", () => this.hangup());
    socket.on("close", () => this.hangup());
    socket.on("error", () => this.hangup());
  }

  /**
   * Starts TLS on the connection. Bytes the client sent after STARTTLS and
   * before the handshake are dropped, never executed inside TLS.
   */
  private startTls(): void {
    const context = this.setup.config.engine.tls;
    if (context === undefined) return;
    this.send("220 2.0.0 Ready to start TLS\r\n");
    this.reader.discard();
    const plain = this.socket;
    plain.removeAllListeners("data");
    plain.removeAllListeners("end");
    plain.removeAllListeners("close");
    plain.removeAllListeners("error");
    plain.on("error", () => this.hangup());
    const secure = new TLSSocket(plain, {
      isServer: true,
      secureContext: context,
    });
    this.socket = secure;
    this.listen(secure);
    secure.once("secure", () => {
      // RFC 3207: the client starts over after the handshake.
      this.tlsActive = true;
      this.helo = undefined;
      this.sender = undefined;
      this.protocol = "SMTP";
    });
  }

  /** Ends the session at once with a final reply (shutdown). */
  stop(reply: string): void {
    if (!this.done) this.drop(reply);
  }

  private get label(): string {
    return this.setup.clientLabel;
  }

  private armTimer(): void {
    clearTimeout(this.timer);
    const { config, logger } = this.setup;
    this.timer = setTimeout(() => {
      logger.info(`COMMAND TIME LIMIT from ${this.label} after ${this.where}`);
      this.drop(`421 4.4.2 ${config.myhostname} Error: timeout exceeded\r\n`);
    }, config.engine.commandTimeLimitMs);
  }

  private onData(chunk: Buffer): void {
    if (this.done) return;
    this.reader.push(chunk);
    while (!this.done) {
      const result = this.reader.next();
      if (result === undefined) return;
      if (result.kind === "too long") {
        this.setup.logger.info(
          `COMMAND LENGTH LIMIT from ${this.label} after ${this.where}`,
        );
        this.drop(this.serviceUnavailable());
        return;
      }
      this.handleLine(result.text, result.bareNewline);
      if (!this.done) this.armTimer();
    }
  }

  private serviceUnavailable(): string {
    return `421 ${this.setup.config.myhostname} Service unavailable - try again later\r\n`;
  }

  /**
   * Applies a deep test's action; returns false when the session ended.
   * A failure with ignore counts as a pass for the shortest TTL.
   */
  private fail(
    test: DeepTest,
    settings: DeepTestConfig,
    dropReply: string,
  ): boolean {
    this.decided.add(test);
    this.setup.metrics.verdict(METRIC_NAMES[test], "fail");
    const action: TestAction = settings.action;
    if (action === "drop") {
      this.failed = true;
      this.drop(dropReply);
      return false;
    }
    if (action === "enforce") {
      this.failed = true;
      this.rcptReply = PROTOCOL_ERROR_ENFORCE;
      return true;
    }
    this.passes[test] = Date.now() + this.setup.minTtlMs;
    return true;
  }

  private pending(test: DeepTest): boolean {
    return this.setup.todo.has(test) && !this.decided.has(test);
  }

  private handleLine(line: string, bareNewline: boolean): void {
    const { config, logger } = this.setup;
    const engine = config.engine;

    if (bareNewline && this.pending("bareNewline")) {
      logger.info(
        `BARE NEWLINE from ${this.label} after ` +
          escapeForLog(Buffer.from(line, "latin1")),
      );
      if (!this.fail("bareNewline", engine.bareNewline, PROTOCOL_ERROR_DROP))
        return;
    }

    const trimmed = line.replace(/^ +/, "");
    const space = trimmed.indexOf(" ");
    const word = space < 0 ? trimmed : trimmed.slice(0, space);
    const rest = space < 0 ? "" : trimmed.slice(space + 1).replace(/^ +/, "");
    const command = word.toUpperCase();
    const known = COMMANDS.has(command);
    const savedWhere = this.where;
    this.where = known ? command : "UNIMPLEMENTED";

    if (this.setup.firstCommandReply !== undefined && command !== "QUIT") {
      this.drop(this.setup.firstCommandReply);
      return;
    }

    if (
      this.pending("nonSmtp") &&
      !known &&
      word !== "" &&
      (isHeader(word) ||
        /^[^A-Za-z]/.test(word) ||
        /[\x80-\xff]/.test(word) ||
        engine.forbiddenCommands.includes(command))
    ) {
      const printable = word.replace(/[^\x20-\x7e]/g, "?");
      logger.info(
        `NON-SMTP COMMAND from ${this.label} after ${savedWhere}: ` +
          `${printable.slice(0, 100)} ` +
          escapeForLog(Buffer.from(rest, "latin1")),
      );
      if (!this.fail("nonSmtp", engine.nonSmtp, NON_SMTP_DROP)) return;
    }

    if (
      this.pending("pipelining") &&
      command !== "BDAT" &&
      this.reader.buffered > 0
    ) {
      const printable = word.replace(/[^\x20-\x7e]/g, "?");
      logger.info(
        `COMMAND PIPELINING from ${this.label} after ${printable.slice(0, 100)}: ` +
          escapeBytes(this.reader.peekBuffered(100)).slice(0, 100),
      );
      if (!this.fail("pipelining", engine.pipelining, PROTOCOL_ERROR_DROP))
        return;
    }

    if (command === "RCPT") {
      const now = Date.now();
      const ttls: Record<DeepTest, number> = {
        pipelining: engine.pipelining.ttlMs,
        nonSmtp: engine.nonSmtp.ttlMs,
        bareNewline: engine.bareNewline.ttlMs,
      };
      for (const test of this.setup.todo) {
        if (!this.decided.has(test)) {
          this.decided.add(test);
          this.setup.metrics.verdict(METRIC_NAMES[test], "pass");
          this.passes[test] = now + ttls[test];
        }
      }
    }

    if (++this.commandCount > engine.commandCountLimit && command !== "QUIT") {
      logger.info(`COMMAND COUNT LIMIT from ${this.label} after ${savedWhere}`);
      this.drop(this.serviceUnavailable());
      return;
    }

    if (!known || DISABLED.has(command)) {
      this.send("502 5.5.2 Error: command not recognized\r\n");
      return;
    }
    this.runCommand(command, rest);
  }

  private runCommand(command: string, args: string): void {
    const { config, logger } = this.setup;
    const engine = config.engine;
    const firstArgument = args.split(" ")[0] ?? "";
    switch (command) {
      case "HELO":
        if (firstArgument === "")
          return this.send("501 Syntax: HELO hostname\r\n");
        this.helo = firstArgument;
        this.sender = undefined;
        return this.send(`250 ${config.myhostname}\r\n`);
      case "EHLO":
        if (firstArgument === "")
          return this.send("501 Syntax: EHLO hostname\r\n");
        this.helo = firstArgument;
        this.sender = undefined;
        this.protocol = "ESMTP";
        return this.send(this.ehloReply());
      case "STARTTLS":
        if (engine.tls === undefined) {
          return this.send("502 5.5.1 Error: command not implemented\r\n");
        }
        if (args !== "") return this.send("501 5.5.4 Syntax: STARTTLS\r\n");
        if (this.tlsActive) {
          return this.send("554 5.5.1 Error: TLS already active\r\n");
        }
        return this.startTls();
      case "MAIL": {
        if (engine.heloRequired && this.helo === undefined) {
          return this.send("503 5.5.1 Error: send HELO/EHLO first\r\n");
        }
        if (this.sender !== undefined) {
          return this.send("503 5.5.1 Error: nested MAIL command\r\n");
        }
        const colon = args.indexOf(":");
        if (colon < 0)
          return this.send("501 5.5.4 Syntax: MAIL FROM:<address>\r\n");
        const address = extractAddress(args.slice(colon + 1));
        if (address === undefined) {
          return this.send("501 5.1.7 Bad sender address syntax\r\n");
        }
        this.sender = address;
        return this.send("250 2.1.0 Ok\r\n");
      }
      case "RCPT": {
        if (this.sender === undefined) {
          return this.send("503 5.5.1 Error: need MAIL command\r\n");
        }
        const colon = args.indexOf(":");
        if (colon < 0)
          return this.send("501 5.5.4 Syntax: RCPT TO:<address>\r\n");
        const address = extractAddress(args.slice(colon + 1));
        if (address === undefined) {
          return this.send("501 5.1.3 Bad recipient address syntax\r\n");
        }
        const rcptReply =
          this.setup.onRecipient?.(this.sender, address) ?? this.rcptReply;
        const reply = this.soften(rcptReply);
        logger.info(
          `NOQUEUE: reject: RCPT from ${this.label}: ${reply.slice(0, -2)}; ` +
            `from=<${this.sender}>, to=<${address}>, proto=${this.protocol}, ` +
            `helo=<${this.helo ?? ""}>`,
        );
        return this.send(rcptReply);
      }
      case "DATA":
        logger.info(`DATA without valid RCPT from ${this.label}`);
        if (args !== "") return this.drop("501 5.5.4 Syntax: DATA\r\n");
        if (this.sender === undefined) {
          return this.drop("503 5.5.1 Error: need RCPT command\r\n");
        }
        return this.drop("554 5.5.1 Error: no valid recipients\r\n");
      case "BDAT":
        logger.info(`BDAT without valid RCPT from ${this.label}`);
        if (engine.discardEhloKeywords.includes("CHUNKING")) {
          return this.drop("502 5.5.1 Error: command not implemented\r\n");
        }
        if (firstArgument === "")
          return this.drop("501 5.5.4 Syntax: BDAT count [LAST]\r\n");
        if (this.sender === undefined) {
          return this.drop("554 5.5.1 Error: need MAIL command\r\n");
        }
        return this.drop("554 5.5.1 Error: no valid recipients\r\n");
      case "RSET":
        this.sender = undefined;
        return this.send("250 2.0.0 Ok\r\n");
      case "NOOP":
        return this.send("250 2.0.0 Ok\r\n");
      case "VRFY":
        if (firstArgument === "")
          return this.send("501 5.5.4 Syntax: VRFY address\r\n");
        if (engine.disableVrfy)
          return this.send("502 5.5.1 VRFY command is disabled\r\n");
        return this.send(this.rcptReply);
      case "ETRN":
        if (engine.heloRequired && this.helo === undefined) {
          return this.send("503 5.5.1 Error: send HELO/EHLO first\r\n");
        }
        if (firstArgument === "")
          return this.send("500 Syntax: ETRN domain\r\n");
        return this.send("458 Unable to queue messages\r\n");
      case "QUIT":
        return this.drop("221 2.0.0 Bye\r\n", "quit");
    }
  }

  private ehloReply(): string {
    const { config } = this.setup;
    const discard = new Set(config.engine.discardEhloKeywords);
    const keywords = [
      `SIZE ${MESSAGE_SIZE_LIMIT}`,
      "VRFY",
      "ETRN",
      ...(config.engine.tls !== undefined && !this.tlsActive
        ? ["STARTTLS"]
        : []),
      "ENHANCEDSTATUSCODES",
      "8BITMIME",
      "DSN",
      "SMTPUTF8",
      "CHUNKING",
    ].filter((keyword) => {
      const name = keyword.split(" ")[0] ?? keyword;
      if (name === "VRFY" && config.engine.disableVrfy) return false;
      return !discard.has(name);
    });
    const lines = [config.myhostname, ...keywords];
    return lines
      .map(
        (text, index) =>
          `250${index === lines.length - 1 ? " " : "-"}${text}\r\n`,
      )
      .join("");
  }

  /** soft_bounce: 5xx replies become 4xx, in replies and in logs. */
  private soften(reply: string): string {
    if (!this.setup.config.engine.softBounce || reply[0] !== "5") return reply;
    const enhanced = reply[4] === "5" ? "4" : reply[4];
    return "4" + reply.slice(1, 4) + (enhanced ?? "") + reply.slice(5);
  }

  private send(reply: string): void {
    if (this.done) return;
    const footer = this.setup.config.engine.rejectFooter;
    this.socket.write(withFooter(this.soften(reply), footer));
  }

  private drop(reply: string, ending: EngineOutcome["ending"] = "drop"): void {
    if (this.done) return;
    this.send(reply);
    this.finish(ending);
    // The session ends here; close() follows the reply, and a client that
    // does not close its side is cut off after a grace period.
    this.socket.end();
    const timer = setTimeout(() => this.socket.destroy(), CLOSE_GRACE_MS);
    timer.unref();
    this.socket.once("close", () => clearTimeout(timer));
  }

  private hangup(): void {
    if (this.done) return;
    const elapsed = (performance.now() - this.startedAt) / 1000;
    this.setup.logger.info(
      `HANGUP after ${formatDelay(elapsed)} from ${this.label} ` +
        "in tests after SMTP handshake",
    );
    this.finish("hangup");
    this.socket.destroy();
  }

  private finish(ending: EngineOutcome["ending"]): void {
    this.done = true;
    clearTimeout(this.timer);
    this.onDone({ passes: this.passes, failed: this.failed, ending });
  }
}
