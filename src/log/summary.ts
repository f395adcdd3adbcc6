// The per-connection summary record of the JSON log: one record with fixed
// keys when a session ends, filled in as the session goes.

/** Result of one test in a connection. */
export type TestResult =
  /** Disabled in the configuration. */
  | "off"
  /** Passed before, and the verdict cache still contains the pass. */
  | "cached"
  | "pass"
  | "fail"
  /** Enabled but without a result: the session ended or skipped it. */
  | "incomplete";

/** Test names as the summary writes them (postscreen's parameter names). */
export type SummaryTestName =
  "pregreet" | "dnsbl" | "pipelining" | "non_smtp_command" | "bare_newline";

/**
 * The session's conclusion about the client. "pass": every test to do
 * passed. "fail": a test failed, with any action. "allowlisted": the
 * access list or a DNS allowlist score permitted it. "veto":
 * `allowlist_interfaces` vetoed its hand-off. "none": no verdict, after a
 * hang-up, a limit or a shutdown.
 */
export type Verdict = "pass" | "fail" | "allowlisted" | "veto" | "none";

/**
 * The session's handling of the connection: a hand-off to smtpd, the
 * dummy SMTP engine, a reply and close, a close without a reply, or the
 * client's hang-up first.
 */
export type SessionAction =
  "handoff" | "engine" | "reject" | "close" | "hangup";

export type HandoffResult = "ok" | "failed" | "timeout";

/**
 * A connection's summary; the JSON sink writes it with the keys type,
 * time, level, program and pid in front. Every key is always present.
 */
export interface ConnectionSummary {
  client_address: string;
  client_port: number;
  /** The server address and port the client connected to. */
  listener_address: string;
  listener_port: number;
  /** ISO 8601 times, UTC. */
  start_time: string;
  end_time: string;
  duration_seconds: number;
  tests: Record<SummaryTestName, TestResult>;
  /** The DNS list score at the end of greet_wait; null when not queried. */
  dnsbl_score: number | null;
  verdict: Verdict;
  action: SessionAction;
  /** The last reply postwarden sent or prepared (without CRLF), or null. */
  reply: string | null;
  /** Null when no hand-off was tried. */
  handoff: HandoffResult | null;
  handoff_error: string | null;
}

/** The parts of a summary that only the session has at its end. */
export interface SessionOutcome {
  client: { address: string; port: number };
  listener: { address: string; port: number };
  tests: Record<SummaryTestName, TestResult>;
  dnsblScore: number | null;
  /** Every test to do in this session passed. */
  allPassed: boolean;
  /** A test failed, also with action ignore or enforce. */
  failed: boolean;
  allowlistedByDns: boolean;
  vetoed: boolean;
}

/** Collects a session's actions and hand-off result as they happen. */
export class SessionSummary {
  /** The access list permitted the client. */
  allowlisted = false;
  /** When the connection was accepted, in ms since the epoch. */
  private readonly startedAt = Date.now();
  private action: SessionAction | undefined;
  private reply: string | null = null;
  private testFailed = false;
  private handoff: HandoffResult | null = null;
  private handoffError: string | null = null;

  /**
   * Records the first action; a later one, such as the engine's 421 after
   * a failed hand-off, does not replace it.
   */
  act(action: SessionAction): void {
    this.action ??= action;
  }

  /** Records a reply sent or prepared for the client. */
  replied(reply: string): void {
    this.reply = reply.split("\r\n")[0] ?? reply;
  }

  /** Records a final reply and close; `testFailed` for a test's drop reply. */
  closed(reply: string | undefined, testFailed: boolean): void {
    this.act(reply === undefined ? "close" : "reject");
    if (reply !== undefined) this.replied(reply);
    if (testFailed) this.testFailed = true;
  }

  handedOff(result: HandoffResult, error?: string): void {
    this.handoff = result;
    this.handoffError = error ?? null;
  }

  /** Builds the summary at the end of the session. */
  finish(outcome: SessionOutcome, end = new Date()): ConnectionSummary {
    const action = this.action ?? "close";
    return {
      client_address: outcome.client.address,
      client_port: outcome.client.port,
      listener_address: outcome.listener.address,
      listener_port: outcome.listener.port,
      start_time: new Date(this.startedAt).toISOString(),
      end_time: end.toISOString(),
      duration_seconds: (end.getTime() - this.startedAt) / 1000,
      tests: outcome.tests,
      dnsbl_score: outcome.dnsblScore,
      verdict: this.verdict(outcome, action),
      action,
      reply: this.reply,
      handoff: this.handoff,
      handoff_error: this.handoffError,
    };
  }

  private verdict(outcome: SessionOutcome, action: SessionAction): Verdict {
    if (this.allowlisted || outcome.allowlistedByDns) return "allowlisted";
    const anyFailed = Object.values(outcome.tests).includes("fail");
    if (outcome.failed || this.testFailed || anyFailed) return "fail";
    if (outcome.vetoed) return "veto";
    if (outcome.allPassed && (action === "handoff" || action === "engine")) {
      return "pass";
    }
    return "none";
  }
}

/** Derives one test's result from what the session recorded about it. */
export function testResult(test: {
  enabled: boolean;
  /** The verdict cache held a pass, so the test did not run. */
  cached: boolean;
  passed: boolean;
  failed: boolean;
}): TestResult {
  if (!test.enabled) return "off";
  if (test.failed) return "fail";
  if (test.passed) return "pass";
  return test.cached ? "cached" : "incomplete";
}
