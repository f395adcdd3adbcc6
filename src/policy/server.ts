// The policy service for Postfix smtpd's check_policy_service: it listens
// on a UNIX-domain socket or a loopback TCP address, reads requests with
// PolicyRequestParser, and replies to RCPT-stage requests with the greylist's
// decision. Other stages get DUNNO. Each connection handles one request at
// a time (the socket is paused meanwhile), so a client cannot queue work;
// connections are capped and idle ones closed. A protocol error closes the
// connection with a warning, and smtpd then applies
// smtpd_policy_service_default_action.
import { createServer, type Server, type Socket } from "node:net";
import { chmodSync, rmSync, statSync } from "node:fs";
import type { Logger } from "../log/logger.js";
import { RateLimitedWarning } from "../log/logger.js";
import type { PolicyListen } from "../greylist/settings.js";
import {
  TRAP_REPLY,
  type Greylist,
  type RecipientDecision,
} from "../greylist/greylist.js";
import { formatReply, PolicyRequestParser } from "./protocol.js";

/** Most policy connections at once; smtpd keeps one per process. */
const MAX_CONNECTIONS = 1000;
/** Idle connections are closed after this; smtpd reconnects when needed. */
const IDLE_TIMEOUT_MS = 600_000;
/** A reader this far behind is not reading its replies: disconnect it. */
const MAX_PENDING_REPLY_BYTES = 65536;

export class PolicyServer {
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private readonly warning: RateLimitedWarning;

  constructor(
    private readonly listen: PolicyListen,
    private readonly greylist: Greylist,
    private readonly logger: Logger,
  ) {
    this.warning = new RateLimitedWarning(logger, 10_000);
    this.server = createServer((socket) => this.accept(socket));
    this.server.maxConnections = MAX_CONNECTIONS;
    this.server.on("drop", () =>
      this.warning.report(
        `policy service: connection dropped: more than ${MAX_CONNECTIONS} ` +
          "connections",
      ),
    );
  }

  /** Listens; resolves with a label such as "127.0.0.1:10023". */
  async start(): Promise<string> {
    const { listen } = this;
    if (listen.kind === "unix") removeStaleSocket(listen.path);
    await new Promise<void>((resolve, reject) => {
      this.server.once("error", reject);
      const done = (): void => {
        this.server.off("error", reject);
        resolve();
      };
      if (listen.kind === "unix") this.server.listen(listen.path, done);
      else this.server.listen(listen.port, listen.host, done);
    });
    this.server.on("error", (error) =>
      this.warning.report(`policy service: ${error.message}`),
    );
    if (listen.kind === "unix") {
      // smtpd runs as the mail owner, which may differ from this process's
      // user. Access is then governed by the directory: put the socket in
      // one only Postfix can enter, such as the queue's private/.
      chmodSync(listen.path, 0o666);
      return `unix:${listen.path}`;
    }
    const address = this.server.address();
    const port = typeof address === "object" && address ? address.port : 0;
    const host = listen.host.includes(":") ? `[${listen.host}]` : listen.host;
    return `${host}:${port}`;
  }

  async stop(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(socket: Socket): void {
    this.sockets.add(socket);
    socket.setTimeout(IDLE_TIMEOUT_MS, () => socket.destroy());
    socket.on("close", () => this.sockets.delete(socket));
    socket.on("error", () => socket.destroy());
    const parser = new PolicyRequestParser();
    let busy = false;

    const drain = (): void => {
      while (!busy && !socket.destroyed) {
        const result = parser.next();
        if (result === undefined) return;
        if (result.kind === "error") {
          this.warning.report(
            `policy service: protocol error: ${result.reason}; ` +
              "closing the connection",
          );
          socket.destroy();
          return;
        }
        busy = true;
        socket.pause();
        void this.answer(result.attributes).then((action) => {
          busy = false;
          if (socket.destroyed) return;
          if (socket.writableLength > MAX_PENDING_REPLY_BYTES) {
            socket.destroy();
            return;
          }
          socket.write(formatReply(action));
          socket.resume();
          drain();
        });
      }
    };
    socket.on("data", (chunk: Buffer) => {
      parser.push(chunk);
      drain();
    });
  }

  /** Returns the action for one request; never rejects. */
  private async answer(attributes: Map<string, string>): Promise<string> {
    const request = attributes.get("request");
    if (request !== "smtpd_access_policy") {
      this.warning.report(
        `policy service: unsupported request "${request ?? ""}"; ` +
          "replied DUNNO",
      );
      return "DUNNO";
    }
    if (attributes.get("protocol_state")?.toUpperCase() !== "RCPT") {
      return "DUNNO";
    }
    const clientAddress = attributes.get("client_address") ?? "";
    const recipient = attributes.get("recipient") ?? "";
    if (clientAddress === "" || recipient === "") {
      this.warning.report(
        "policy service: RCPT request without client_address or " +
          "recipient; replied DUNNO",
      );
      return "DUNNO";
    }
    const port = Number(attributes.get("client_port"));
    try {
      const decision = await this.greylist.checkRecipient({
        clientAddress,
        clientPort: Number.isInteger(port) && port > 0 ? port : undefined,
        sender: attributes.get("sender") ?? "",
        recipient,
        names: {
          name: attributes.get("client_name"),
          reverseName: attributes.get("reverse_client_name"),
        },
      });
      return actionFor(decision);
    } catch (error) {
      this.warning.report(
        `policy service: check for [${clientAddress}] failed: ` +
          `${(error as Error).message}; replied DUNNO`,
      );
      return "DUNNO";
    }
  }
}

/**
 * Maps a decision to a policy action. A greylisted recipient gets
 * DEFER_IF_PERMIT, as postgrey does, so that a later restriction that
 * rejects the recipient outright (an unknown user) still wins with its 5xx.
 */
export function actionFor(decision: RecipientDecision): string {
  switch (decision.kind) {
    case "dunno":
      return "DUNNO";
    case "greylist": {
      const seconds = Math.max(1, decision.retrySeconds);
      const unit = seconds === 1 ? "second" : "seconds";
      return `DEFER_IF_PERMIT Greylisted, try again in ${seconds} ${unit}`;
    }
    case "trap":
      return TRAP_REPLY;
  }
}

/** Removes a socket file left by an earlier run; never a regular file. */
function removeStaleSocket(path: string): void {
  try {
    if (statSync(path).isSocket()) rmSync(path);
  } catch {
    // Nothing there.
  }
}
