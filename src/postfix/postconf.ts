// Reads the settings postwarden takes from the Postfix behind it, with
// postconf(1): inet_protocols, because smtpd in a Postfix with
// inet_protocols = ipv4 exits on an IPv6 client address in the pass
// attributes (and master then throttles the whole service); and
// myhostname and mynetworks, which postscreen shares with smtpd and which
// postwarden uses as its own defaults, so that its teaser names the same
// host as smtpd's greeting and permit_mynetworks means what it does there.
import { execFile } from "node:child_process";

export interface AddressFamilies {
  ipv4: boolean;
  ipv6: boolean;
  /** Reason the families are assumed rather than read, if they are. */
  assumedBecause?: string;
}

export interface PostfixSettings {
  families: AddressFamilies;
  /** Postfix's values, expanded; absent when postconf failed. */
  myhostname?: string;
  mynetworks?: string;
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
 * Runs `postconf -c DIR -x -h inet_protocols myhostname mynetworks`. When
 * postconf is missing or fails, both address families are assumed and
 * `assumedBecause` gives the reason, so the caller can warn once.
 */
export function readPostfixSettings(
  configDirectory: string,
  postconf = "postconf",
): Promise<PostfixSettings> {
  return new Promise((resolve) => {
    execFile(
      postconf,
      [
        "-c",
        configDirectory,
        "-x",
        "-h",
        "inet_protocols",
        "myhostname",
        "mynetworks",
      ],
      { timeout: 10_000 },
      (error, stdout, stderr) => {
        if (error !== null) {
          const detail = stderr.trim() || error.message;
          resolve({
            families: {
              ipv4: true,
              ipv6: true,
              assumedBecause: `cannot run ${postconf} -c ${configDirectory}: ${detail}`,
            },
          });
          return;
        }
        const [protocols = "", myhostname = "", mynetworks = ""] = stdout
          .split("\n")
          .map((line) => line.trim());
        resolve({
          families: parseInetProtocols(protocols),
          ...(myhostname === "" ? {} : { myhostname }),
          ...(mynetworks === "" ? {} : { mynetworks }),
        });
      },
    );
  });
}
