// End-to-end tests need root (a private Postfix instance) and Debian's
// postfix package; fail with a clear message instead of skipping.
import { existsSync } from "node:fs";

export function requireRootAndPostfix(): void {
  if (process.getuid?.() !== 0) {
    throw new Error(
      "end-to-end tests must run as root (they start a private Postfix instance); run scripts/setup first",
    );
  }
  if (!existsSync("/usr/sbin/postfix")) {
    throw new Error(
      "/usr/sbin/postfix not found: install the postfix package (scripts/setup does)",
    );
  }
}
