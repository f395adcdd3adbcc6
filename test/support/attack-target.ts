// A postwarden in front of a private Postfix, set up for attacks: a 1 s
// greet wait, every client screened and tested as on first contact, and
// no load limits. Also the checks that smtpd took every hand-off cleanly.
import assert from "node:assert/strict";
import type { PostfixInstance } from "./postfix.js";
import { PostwardenProcess } from "./postwarden.js";

export async function startAttackTarget(
  postfix: PostfixInstance,
  ...extra: string[]
): Promise<{ warden: PostwardenProcess; port: number }> {
  const warden = PostwardenProcess.startInFrontOf(postfix, [
    "-o",
    "access_list=",
    // With the verdict cache a client's second connection skips the
    // tests ("PASS OLD"), but every attack here needs first-contact clients.
    "-o",
    "cache_map=",
    // The attacks come from few addresses in large numbers; the load
    // limits have tests of their own.
    "-o",
    "client_connection_count_limit=0",
    "-o",
    "pre_queue_limit=100000",
    "-o",
    "post_queue_limit=100000",
    ...extra,
  ]);
  const port = await warden.listeningPort();
  // Startup opens more descriptors after the listeners (the verdict cache,
  // the hand-off epoll set): tests that count them start from here.
  await warden.waitForLog(/postwarden started/);
  return { warden, port };
}

export async function stopPostwarden(warden: PostwardenProcess): Promise<void> {
  if (warden.exited) return;
  assert.equal(await warden.stop(), 0, "postwarden did not exit with 0");
}

export function expectPostfixLogClean(instance: PostfixInstance): void {
  const bad = instance
    .log()
    .split("\n")
    .filter((line) =>
      /fatal:|panic:|bad command startup|cannot receive|throttling/.test(line),
    );
  assert.deepEqual(bad, [], "smtpd logged errors");
}
