// Reads a Postfix instance's main.cf parameters through postconf(1), which
// applies Postfix's own defaults and $name expansion, and finds the line
// where main.cf sets a parameter, for messages that point at it.
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";

export class PostconfError extends Error {}

/** Time limit for one postconf run; it reads local files only. */
const POSTCONF_TIMEOUT_MS = 10_000;

/**
 * Runs `postconf -c DIR FLAGS...` and returns its "name = value" lines as
 * a map. Flags such as -n (set in main.cf only), -d (defaults) and -x
 * (expand $name) are passed through. Throws PostconfError with postconf's
 * message when it fails.
 */
export function readPostconf(
  configDirectory: string,
  flags: string[] = [],
  postconf = "postconf",
): Promise<Map<string, string>> {
  return new Promise((resolve, reject) => {
    execFile(
      postconf,
      ["-c", configDirectory, ...flags],
      { timeout: POSTCONF_TIMEOUT_MS, maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) => {
        if (error !== null) {
          const detail = stderr.trim() || error.message;
          reject(
            new PostconfError(
              `${[postconf, "-c", configDirectory, ...flags].join(" ")} failed: ${detail}`,
              { cause: error },
            ),
          );
          return;
        }
        resolve(parsePostconfOutput(stdout));
      },
    );
  });
}

/** Parses postconf's output: one "name = value" (or "name =") per line. */
export function parsePostconfOutput(text: string): Map<string, string> {
  const values = new Map<string, string>();
  for (const line of text.split("\n")) {
    const match = /^([A-Za-z0-9_.-]+) =(?: (.*))?$/.exec(line);
    if (match === null) continue;
    values.set(match[1] ?? "", match[2] ?? "");
  }
  return values;
}

/**
 * Returns the 1-based line of the last `name = ...` in DIR/main.cf, or 0
 * when main.cf does not set it (or cannot be read).
 */
export function mainCfLine(configDirectory: string, name: string): number {
  let text: string;
  try {
    text = readFileSync(join(configDirectory, "main.cf"), "utf8");
  } catch {
    return 0;
  }
  let found = 0;
  text.split(/\r?\n/).forEach((line, index) => {
    const equals = line.indexOf("=");
    if (/^\S/.test(line) && equals > 0 && line.slice(0, equals).trim() === name)
      found = index + 1;
  });
  return found;
}
