// Health checks for DNS lists with the RFC 5782 test points: 127.0.0.2
// must be listed and 127.0.0.1 must not (for IPv6 queries, ::ffff:7f00:2
// and ::ffff:7f00:1). They run at start and then periodically, before any
// entry's filter applies. A list that fails (not listing the test point,
// listing everything, error answers or no answer) is disabled for that
// address family until a later check passes; each change is logged once.
import type { Logger } from "../log/logger.js";
import { isLoopbackAnswer, type DnsblList } from "./lists.js";
import { queryName, type DnsClient } from "./resolver.js";

type Family = 4 | 6;

const TEST_POINTS: Record<Family, { listed: string; unlisted: string }> = {
  4: { listed: "127.0.0.2", unlisted: "127.0.0.1" },
  6: { listed: "::ffff:7f00:2", unlisted: "::ffff:7f00:1" },
};

/** The first few answers and a count, to keep a log line short. */
function summarize(answers: readonly string[]): string {
  const shown = answers.slice(0, 3).join(" ");
  return answers.length > 3 ? `${shown} and ${answers.length - 3} more` : shown;
}

const FAMILY_NAMES: Record<Family, string> = { 4: "IPv4", 6: "IPv6" };

export class DnsblHealth {
  /** Reason a list is disabled, by "domain family"; absent when enabled. */
  private readonly disabled = new Map<string, string>();
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    private readonly lists: readonly DnsblList[],
    private readonly client: DnsClient,
    private readonly logger: Logger,
    private readonly intervalMs: number,
    /** Check interval while a list is disabled. */
    private readonly retryMs = Math.min(intervalMs, 60_000),
  ) {}

  isEnabled(domain: string, family: Family): boolean {
    return !this.disabled.has(`${domain} ${family}`);
  }

  /** Returns each list's health per address family, by public name. */
  states(): { list: string; family: Family; healthy: boolean }[] {
    return this.lists.flatMap((list) =>
      ([4, 6] as const).map((family) => ({
        list: list.publicName,
        family,
        healthy: this.isEnabled(list.domain, family),
      })),
    );
  }

  /** Runs the first checks and schedules the next ones. */
  async start(): Promise<void> {
    await this.checkAll();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  async checkAll(): Promise<void> {
    const checks: Promise<void>[] = [];
    for (const list of this.lists) {
      for (const family of [4, 6] as const) {
        checks.push(this.check(list, family));
      }
    }
    await Promise.all(checks);
    if (this.stopped) return;
    const delay = this.disabled.size > 0 ? this.retryMs : this.intervalMs;
    this.timer = setTimeout(() => void this.checkAll(), delay);
    this.timer.unref();
  }

  private async check(list: DnsblList, family: Family): Promise<void> {
    const problem = await this.findProblem(list, family);
    const key = `${list.domain} ${family}`;
    const wasDisabled = this.disabled.has(key);
    const where = `DNS list ${list.publicName} for ${FAMILY_NAMES[family]} clients`;
    if (problem !== undefined && !wasDisabled) {
      this.disabled.set(key, problem);
      this.logger.warning(`${where} disabled: ${problem}`);
    } else if (problem === undefined && wasDisabled) {
      this.disabled.delete(key);
      this.logger.info(`${where} enabled again: health check passed`);
    } else if (problem !== undefined) {
      this.disabled.set(key, problem);
    }
  }

  /** Returns why the list is unhealthy for `family`, or undefined. */
  private async findProblem(
    list: DnsblList,
    family: Family,
  ): Promise<string | undefined> {
    const points = TEST_POINTS[family];
    const [listed, unlisted] = await Promise.all([
      this.client.queryA(queryName(points.listed, list.domain)),
      this.client.queryA(queryName(points.unlisted, list.domain)),
    ]);
    if (listed.kind === "error") {
      return `test point ${points.listed} lookup failed (${listed.code})`;
    }
    if (listed.kind === "clean") {
      return `test point ${points.listed} is not listed`;
    }
    const valid = listed.answers.filter(
      (answer) => isLoopbackAnswer(answer) && !list.isErrorAnswer(answer),
    );
    if (valid.length === 0) {
      return (
        `test point ${points.listed} answered ${summarize(listed.answers)}, ` +
        "not a listing (an error code or an answer outside 127.0.0.0/8)"
      );
    }
    if (unlisted.kind === "listed") {
      return (
        `test point ${points.unlisted} is listed ` +
        `(${summarize(unlisted.answers)}): the list answers for everything`
      );
    }
    if (unlisted.kind === "error") {
      return `test point ${points.unlisted} lookup failed (${unlisted.code})`;
    }
    return undefined;
  }
}
