// Reads Postfix's inet_protocols with postconf(1). smtpd in a Postfix with
// inet_protocols = ipv4 exits on an IPv6 client address in the pass
// attributes, and master then throttles the whole service, so postwarden
// must know which address families the smtpd behind it accepts.
import { execFile } from "node:child_process";

export interface AddressFamilies {
  ipv4: boolean;
  ipv6: boolean;
  /** Why the families are assumed rather than read, if they are. */
  assumedBecause?: string;
}

/** Parses an inet_protocols value ("all", "ipv4", "ipv4, ipv6", ...). */
export function parseInetProtocols(value: string): AddressFamilies {
  const items = value
    .toLowerCase()
    .split(/[\s,]+/)
    .filter((item) => item !== "");
  if (items.includes("all")) return { ipv4: true, ipv6: true };
  return { ipv4: items.includes("ipv4"), ipv6: items.includes("ipv6") };
}

/**
 * Runs `postconf -c DIR -h inet_protocols`. When postconf is missing or
 * fails, both families are assumed and `assumedBecause` says why, so the
 * caller can warn once.
 */
export function readInetProtocols(
  configDirectory: string,
  postconf = "postconf",
): Promise<AddressFamilies> {
  return new Promise((resolve) => {
    execFile(
      postconf,
      ["-c", configDirectory, "-h", "inet_protocols"],
      { timeout: 10_000 },
      (error, stdout, stderr) => {
        if (error !== null) {
          const detail = stderr.trim() || error.message;
          resolve({
            ipv4: true,
            ipv6: true,
            assumedBecause: `cannot run ${postconf} -c ${configDirectory}: ${detail}`,
          });
          return;
        }
        resolve(parseInetProtocols(stdout.trim()));
      },
    );
  });
}
