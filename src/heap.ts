// The size of V8's young generation. V8 starts it at 1 MiB per semi-space
// and doubles it, up to 16 MiB, whenever objects are allocated fast, as
// they are while thousands of clients connect at once, and it may stay
// grown long after. A daemon that holds many idle connections then carries
// up to 32 MiB of young generation for them (measured on Node 20). postwarden's per-connection
// objects are small and short-lived, so it keeps the young generation at
// its starting size: more frequent but smaller scavenges, and a resident
// size that grows with the connections held, not with the peak rate.
import { setFlagsFromString } from "node:v8";

/**
 * Stops the young generation from growing, unless node was started with
 * a semi-space size of its own (on its command line or in NODE_OPTIONS),
 * which then wins. Call before the daemon allocates much.
 */
export function limitYoungGeneration(
  nodeArguments: readonly string[] = [
    ...process.execArgv,
    ...(process.env.NODE_OPTIONS ?? "").split(/\s+/),
  ],
): boolean {
  if (nodeArguments.some((argument) => argument.includes("semi-space"))) {
    return false;
  }
  // Read each time the young generation would grow: a factor of 1 keeps
  // it at the size it has.
  setFlagsFromString("--semi-space-growth-factor=1");
  return true;
}
