// A private Postfix instance for tests and the demo: its own config, queue,
// data and log directories under a temporary directory, smtpd as a "pass"
// service, no TCP listener of its own, and mail thrown away by discard(8).
// It needs root and Debian's postfix package; the system's /etc/postfix is
// never touched.
import { execFile } from "node:child_process";
import {
  chmodSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

const MASTER_CF = `
smtpd      pass  -       -      n      -      -       smtpd -o syslog_name=postfix/pass
pickup     unix  n       -      n      60     1       pickup
cleanup    unix  n       -      n      -      0       cleanup
qmgr       unix  n       -      n      300    1       qmgr
rewrite    unix  -       -      n      -      -       trivial-rewrite
bounce     unix  -       -      n      -      0       bounce
defer      unix  -       -      n      -      0       bounce
trace      unix  -       -      n      -      0       bounce
verify     unix  -       -      n      -      1       verify
flush      unix  n       -      n      1000?  0       flush
proxymap   unix  -       -      n      -      -       proxymap
showq      unix  n       -      n      -      -       showq
error      unix  -       -      n      -      -       error
retry      unix  -       -      n      -      -       error
discard    unix  -       -      n      -      -       discard
anvil      unix  -       -      n      -      1       anvil
scache     unix  -       -      n      -      1       scache
postlog    unix-dgram n  -      n      -      1       postlogd
`;

function mainCf(root: string, extra: Record<string, string>): string {
  const settings: Record<string, string> = {
    compatibility_level: "3.6",
    queue_directory: `${root}/spool`,
    data_directory: `${root}/data`,
    maillog_file: `${root}/log/maillog`,
    maillog_file_prefixes: `${root}/log`,
    mail_owner: "postfix",
    setgid_group: "postdrop",
    myhostname: "pass-test.localdomain",
    mydestination: "",
    local_recipient_maps: "",
    alias_maps: "",
    alias_database: "",
    biff: "no",
    inet_interfaces: "loopback-only",
    inet_protocols: "all",
    mynetworks: "127.0.0.0/8 [::1]/128",
    smtpd_relay_restrictions: "permit_mynetworks, reject_unauth_destination",
    default_transport: "discard:pass-test",
    relay_transport: "discard:pass-test",
    smtp_dns_support_level: "disabled",
    smtpd_peername_lookup: "no",
    smtpd_client_port_logging: "yes",
    service_throttle_time: "5s",
    ...extra,
  };
  return (
    Object.entries(settings)
      .map(([name, value]) => `${name} = ${value}`)
      .join("\n") + "\n"
  );
}

export class PostfixInstance {
  private constructor(readonly root: string) {}

  get configDirectory(): string {
    return join(this.root, "etc");
  }
  get queueDirectory(): string {
    return join(this.root, "spool");
  }
  get passSocket(): string {
    return join(this.root, "spool", "private", "smtpd");
  }
  get logFile(): string {
    return join(this.root, "log", "maillog");
  }

  /**
   * Creates the directories and configuration; does not start Postfix.
   * `extra` adds or overrides main.cf settings, and `masterLines` are
   * appended to the standard master.cf.
   */
  static create(
    extra: Record<string, string> = {},
    masterLines: string[] = [],
  ): PostfixInstance {
    const root = mkdtempSync(join(tmpdir(), "postwarden-postfix-"));
    // mkdtemp makes 0700; the postfix user must reach the queue below it.
    chmodSync(root, 0o755);
    for (const name of ["etc", "spool", "log"]) {
      mkdirSync(join(root, name), { mode: 0o755 });
    }
    writeFileSync(join(root, "etc", "main.cf"), mainCf(root, extra));
    writeFileSync(
      join(root, "etc", "master.cf"),
      MASTER_CF + masterLines.map((line) => line + "\n").join(""),
    );
    return new PostfixInstance(root);
  }

  async postfix(command: "start" | "stop" | "check"): Promise<void> {
    try {
      await run("postfix", ["-c", this.configDirectory, command], {
        timeout: 60_000,
      });
    } catch (error) {
      throw new Error(
        `postfix ${command} failed for ${this.configDirectory}: ` +
          `${(error as Error).message}\nmaillog:\n${this.log()}`,
        { cause: error },
      );
    }
  }

  async start(): Promise<void> {
    await this.postfix("start");
    await this.waitFor(() => {
      try {
        return (
          readFileSync(
            join(this.root, "spool", "pid", "master.pid"),
            "utf8",
          ).trim() !== ""
        );
      } catch {
        return false;
      }
    }, "master.pid");
  }

  async stop(): Promise<void> {
    try {
      await this.postfix("stop");
    } catch {
      // Already stopped, or never started.
    }
  }

  /** Stops Postfix and removes the directory. */
  async destroy(): Promise<void> {
    await this.stop();
    rmSync(this.root, { recursive: true, force: true });
  }

  log(): string {
    try {
      return readFileSync(this.logFile, "utf8");
    } catch {
      return "";
    }
  }

  /** Waits until the maillog has a line matching `pattern`; returns it. */
  async waitForLog(pattern: RegExp, timeoutMs = 10_000): Promise<string> {
    let found: string | undefined;
    await this.waitFor(
      () => {
        found = this.log()
          .split("\n")
          .find((line) => pattern.test(line));
        return found !== undefined;
      },
      `maillog line ${String(pattern)}`,
      timeoutMs,
    );
    return found ?? "";
  }

  private async waitFor(
    condition: () => boolean,
    what: string,
    timeoutMs = 10_000,
  ): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!condition()) {
      if (Date.now() > deadline) {
        throw new Error(
          `timed out waiting for ${what}\nmaillog:\n${this.log()}`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}
