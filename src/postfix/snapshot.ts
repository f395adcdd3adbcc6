// A Postfix instance's settings as `postwarden import-postfix` needs them:
// every parameter's raw value and default from postconf(1), the names
// main.cf sets, and master.cf's entries. It also rewrites values for a
// postwarden file: references to parameters that postwarden has under the
// same name and meaning stay $name references, and all others are
// replaced by Postfix's values.
import { join } from "node:path";
import { expandValue } from "../config/syntax.js";
import { readMasterCf, type MasterEntry } from "./master-cf.js";
import { readPostconf } from "./postconf-values.js";

export interface PostfixSnapshot {
  configDirectory: string;
  /** Raw values of every parameter, defaults included (`postconf`). */
  raw: Map<string, string>;
  /** Raw default values (`postconf -d`). */
  defaults: Map<string, string>;
  /** Names that main.cf (or a master.cf -o of the service) sets. */
  explicit: Set<string>;
  master: MasterEntry[];
  /** Why master.cf could not be read, if it could not. */
  masterError?: string;
}

/** Reads a snapshot with three postconf runs and master.cf. */
export async function readSnapshot(
  configDirectory: string,
): Promise<PostfixSnapshot> {
  const [raw, defaults, set] = await Promise.all([
    readPostconf(configDirectory),
    readPostconf(configDirectory, ["-d"]),
    readPostconf(configDirectory, ["-n"]),
  ]);
  const snapshot: PostfixSnapshot = {
    configDirectory,
    raw,
    defaults,
    explicit: new Set(set.keys()),
    master: [],
  };
  try {
    snapshot.master = readMasterCf(join(configDirectory, "master.cf"));
  } catch (error) {
    snapshot.masterError = (error as Error).message;
  }
  return snapshot;
}

/**
 * Parameters that postwarden has with Postfix's name and meaning, so a
 * value that refers to them can keep the reference.
 */
export const SHARED_PARAMETERS: ReadonlySet<string> = new Set([
  "myhostname",
  "mail_name",
  "smtpd_banner",
  "mynetworks",
]);

/** Names that a value refers to with $name, ${name...} or $(name...). */
export function referencedNames(value: string): string[] {
  const names: string[] = [];
  for (const match of value.matchAll(/\$(?:\$|[{(]?([A-Za-z0-9_]+))/g)) {
    if (match[1] !== undefined) names.push(match[1]);
  }
  return names;
}

/** Expands a value fully with the given raw values; throws on bad syntax. */
export function expandWith(
  value: string,
  values: ReadonlyMap<string, string>,
): string {
  return expandValue(value, (name) => values.get(name));
}

const MARKER_START = String.fromCharCode(1);
const MARKER_END = String.fromCharCode(2);
const MARKER = new RegExp(`${MARKER_START}([A-Za-z0-9_]+)${MARKER_END}`, "g");

export interface ConvertedValue {
  value: string;
  /** Shared parameters the value still refers to. */
  references: string[];
  /** Set when a ${stress...} form was replaced by its normal value. */
  note?: string;
}

/**
 * Rewrites a Postfix value for a postwarden file. A value that uses
 * postscreen's $stress is copied as written when every other name in it
 * is shared. Otherwise $stress counts as empty, as when not under stress,
 * and the result says so. Throws an Error on invalid $ syntax.
 */
export function convertValue(
  value: string,
  snapshot: PostfixSnapshot,
): ConvertedValue {
  const names = referencedNames(value);
  const usesStress = names.includes("stress");
  if (
    usesStress &&
    names.every((name) => name === "stress" || SHARED_PARAMETERS.has(name))
  ) {
    return {
      value,
      references: names.filter((name) => name !== "stress"),
    };
  }

  // Shared names become markers that survive expansion, then ${name}. The
  // markers use control characters, which main.cf values cannot contain.
  const references = new Set<string>();
  const expanded = expandValue(value, (name) => {
    if (name === "stress") return "";
    if (SHARED_PARAMETERS.has(name)) {
      references.add(name);
      return `${MARKER_START}${name}${MARKER_END}`;
    }
    return snapshot.raw.get(name);
  });
  const text = expanded.replace(/\$/g, "$$$$").replace(MARKER, "$${$1}");
  return {
    value: text,
    references: [...references],
    ...(usesStress
      ? {
          note:
            `"${value}" uses $stress with parameters that postwarden ` +
            "does not have, so the value when not under stress is used",
        }
      : {}),
  };
}
