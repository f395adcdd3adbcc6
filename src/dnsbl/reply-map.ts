// dnsbl_reply_map: the name shown to clients and written to logs in place
// of a DNS list's query domain, which may contain a secret access key.
// Supports Postfix's inline:{ key=value, ... } and texthash:/path tables
// (one "key value" pair per line, # comments). Keys are query domains.
import { readFileSync } from "node:fs";

export type ReplyMap = ReadonlyMap<string, string>;

/** Parses a reply map setting; an empty setting is an empty map. */
export function loadReplyMap(setting: string): ReplyMap {
  const map = new Map<string, string>();
  const value = setting.trim();
  if (value === "") return map;

  if (value.startsWith("inline:")) {
    const body = value.slice("inline:".length).trim();
    if (!body.startsWith("{") || !body.endsWith("}")) {
      throw new Error(
        `invalid inline table "${value}": expected inline:{ key=value }`,
      );
    }
    for (const item of body.slice(1, -1).split(/[\s,]+/)) {
      if (item === "") continue;
      const equals = item.indexOf("=");
      if (equals < 1 || equals === item.length - 1) {
        throw new Error(
          `invalid inline table entry "${item}": expected key=value`,
        );
      }
      map.set(item.slice(0, equals).toLowerCase(), item.slice(equals + 1));
    }
    return map;
  }

  if (value.startsWith("texthash:")) {
    const path = value.slice("texthash:".length);
    let text: string;
    try {
      text = readFileSync(path, "utf8");
    } catch (error) {
      throw new Error(`cannot read ${path}: ${(error as Error).message}`, {
        cause: error,
      });
    }
    text.split("\n").forEach((line, index) => {
      const trimmed = line.trim();
      if (trimmed === "" || trimmed.startsWith("#")) return;
      const match = /^(\S+)\s+(\S.*)$/.exec(trimmed);
      if (match === null) {
        throw new Error(`${path}:${index + 1}: expected "key value"`);
      }
      map.set((match[1] ?? "").toLowerCase(), (match[2] ?? "").trim());
    });
    return map;
  }
  throw new Error(
    `unsupported table "${value}": use inline:{ key=value } or texthash:/path`,
  );
}
