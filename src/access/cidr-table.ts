// Postfix cidr_table(5) files for postscreen-style access lists: parses
// "pattern result" lines, "!pattern result" lines, nested "if pattern" or
// "if !pattern" ... "endif" blocks, "#" comment lines, blank lines and
// continuation lines, and looks up client addresses with first match wins.
//
// Results are limited to permit, reject and dunno, in any letter case.
// Postfix 3.12's postscreen also accepts a result that is itself an access
// list (such as "permit_mynetworks"), but this parser rejects it. Postfix
// logs a bad line and skips it, but this parser stops at the first bad line
// and reports its file and line number. It does not watch the file for
// changes.
import { readFileSync } from "node:fs";
import { formatOrigin } from "../config/syntax.js";
import {
  formatNetwork,
  networkContainsAddress,
  parseAddress,
  parseNetwork,
  type IpAddress,
  type Network,
} from "./network.js";

export type AccessResult = "permit" | "reject" | "dunno";

const RESULTS: readonly string[] = ["permit", "reject", "dunno"];
const EXPECTED_RESULTS = "expected permit, reject or dunno";

/** White space as C's isspace() in the "C" locale, which Postfix uses. */
const SPACE_CHARACTERS = " \t\n\v\f\r";
const FIRST_SPACE = /[ \t\n\v\f\r]/;

/** "if" or "endif" when no letter or digit follows, in any letter case. */
const KEYWORD = /^(if|endif)(?![A-Za-z0-9])/i;

/**
 * A problem in a table. The message is "FILE:LINE: REASON", or
 * "FILE: REASON" when `line` is 0 because the file could not be read.
 */
export class CidrTableError extends Error {
  constructor(
    readonly file: string,
    readonly line: number,
    readonly reason: string,
  ) {
    super(`${formatOrigin({ file, line })}: ${reason}`);
  }
}

/** A network test, inverted by "!". */
interface Condition {
  network: Network;
  negated: boolean;
}

type Rule =
  | { kind: "entry"; condition: Condition; result: AccessResult }
  /** `endIndex` is the index of the matching endif in the rule list. */
  | { kind: "if"; condition: Condition; endIndex: number }
  | { kind: "endif" };

interface LogicalLine {
  /** 1-based number of the line where the logical line starts. */
  line: number;
  text: string;
}

export class CidrTable {
  /** The number of "pattern result" entries, not counting if and endif. */
  readonly size: number;

  private constructor(private readonly rules: readonly Rule[]) {
    this.size = rules.filter((rule) => rule.kind === "entry").length;
  }

  /**
   * Parses the text of a table, where `file` is the name for errors. Throws
   * CidrTableError for the first invalid line, an endif without an if, or
   * an if without an endif.
   */
  static parse(text: string, file: string): CidrTable {
    const rules: Rule[] = [];
    const openIfs: { index: number; line: number }[] = [];

    for (const { line, text: ruleText } of readLogicalLines(text, file)) {
      let rule: Rule;
      try {
        rule = parseRule(ruleText);
      } catch (error) {
        throw new CidrTableError(file, line, (error as Error).message);
      }

      if (rule.kind === "if") {
        openIfs.push({ index: rules.length, line });
      } else if (rule.kind === "endif") {
        const opening = openIfs.pop();
        if (opening === undefined) {
          throw new CidrTableError(file, line, "endif without a matching if");
        }
        const ifRule = rules[opening.index];
        if (ifRule?.kind === "if") ifRule.endIndex = rules.length;
      }
      rules.push(rule);
    }

    // Like Postfix, report the innermost unclosed if.
    const unclosed = openIfs.pop();
    if (unclosed !== undefined) {
      throw new CidrTableError(
        file,
        unclosed.line,
        "if without a matching endif",
      );
    }
    return new CidrTable(rules);
  }

  /**
   * Reads and parses a table file. Throws CidrTableError with line 0 and
   * the operating system's reason when the file cannot be read.
   */
  static load(path: string): CidrTable {
    let text: string;
    try {
      text = readFileSync(path, "utf8");
    } catch (error) {
      throw new CidrTableError(
        path,
        0,
        `cannot read file: ${(error as Error).message}`,
      );
    }
    return CidrTable.parse(text, path);
  }

  /**
   * Returns the result of the first entry that matches the client address,
   * or undefined when none does. An entry or if of the other address
   * family never matches, even with "!", as in Postfix. Throws an Error for
   * an invalid address.
   */
  lookup(address: string): AccessResult | undefined {
    return this.lookupAddress(parseAddress(address));
  }

  /** Looks up an address parsed already; see lookup(). */
  lookupAddress(client: IpAddress): AccessResult | undefined {
    let index = 0;
    // Every step moves forward, because an if's endIndex is after it.
    while (index < this.rules.length) {
      const rule = this.rules[index] as Rule;
      if (rule.kind === "entry") {
        if (matches(rule.condition, client)) return rule.result;
        index++;
      } else if (rule.kind === "if") {
        index = matches(rule.condition, client) ? index + 1 : rule.endIndex + 1;
      } else {
        index++;
      }
    }
    return undefined;
  }

  /**
   * Formats the table as cidr_table text, one rule a line, with networks
   * in canonical form. Parsing the text gives a table with the same
   * lookups.
   */
  format(): string {
    const lines = this.rules.map((rule) => {
      if (rule.kind === "endif") return "endif";
      const pattern = formatCondition(rule.condition);
      return rule.kind === "if" ? `if ${pattern}` : `${pattern} ${rule.result}`;
    });
    return lines.map((line) => `${line}\n`).join("");
  }
}

/**
 * Joins physical lines into logical lines: a line that starts with white
 * space continues the one before. Comment lines (first non-space "#") and
 * blank lines are skipped and do not end a logical line, as in Postfix.
 */
function readLogicalLines(text: string, file: string): LogicalLine[] {
  const logicalLines: LogicalLine[] = [];
  let current: LogicalLine | undefined;
  for (const [index, raw] of text.split("\n").entries()) {
    const trimmed = trimSpace(raw);
    if (trimmed === "" || trimmed.startsWith("#")) continue;
    if (isSpace(raw.charAt(0))) {
      if (current === undefined) {
        throw new CidrTableError(
          file,
          index + 1,
          "continuation line without a rule before it: " +
            "remove the leading white space",
        );
      }
      current.text += raw;
      continue;
    }
    current = { line: index + 1, text: raw };
    logicalLines.push(current);
  }
  return logicalLines.map(({ line, text: joined }) => ({
    line,
    text: trimSpace(joined),
  }));
}

/** Parses one logical line. Throws an Error whose message is the reason. */
function parseRule(text: string): Rule {
  const keyword = KEYWORD.exec(text)?.[1]?.toLowerCase();

  if (keyword === "endif") {
    const rest = trimSpace(text.slice("endif".length));
    if (rest !== "") throw new Error(`unexpected text "${rest}" after endif`);
    return { kind: "endif" };
  }

  if (keyword === "if") {
    const { negated, rest } = stripNegation(text.slice("if".length));
    const { first: pattern, rest: extra } = splitFirstWord(rest);
    if (pattern === "") throw new Error("missing pattern after if");
    if (extra !== "") {
      throw new Error(
        `unexpected text "${extra}" after the if pattern "${pattern}"`,
      );
    }
    const condition = { network: parseNetwork(pattern), negated };
    return { kind: "if", condition, endIndex: -1 };
  }

  const { negated, rest } = stripNegation(text);
  const { first: pattern, rest: value } = splitFirstWord(rest);
  if (pattern === "") throw new Error("missing pattern before the result");
  const condition = { network: parseNetwork(pattern), negated };
  if (value === "") {
    throw new Error(`missing result after "${pattern}": ${EXPECTED_RESULTS}`);
  }
  const result = value.toLowerCase();
  if (!RESULTS.includes(result)) {
    throw new Error(`invalid result "${value}": ${EXPECTED_RESULTS}`);
  }
  return { kind: "entry", condition, result: result as AccessResult };
}

/**
 * Removes leading "!" and white space. Each "!" inverts the match, so
 * "!!" cancels out, as in Postfix.
 */
function stripNegation(text: string): { negated: boolean; rest: string } {
  const prefix = /^[! \t\n\v\f\r]*/.exec(text)?.[0] ?? "";
  const count = prefix.split("").filter((ch) => ch === "!").length;
  return { negated: count % 2 === 1, rest: text.slice(prefix.length) };
}

/** Splits text that starts with a non-space into its first word and the rest. */
function splitFirstWord(text: string): { first: string; rest: string } {
  const space = FIRST_SPACE.exec(text);
  if (space === null) return { first: text, rest: "" };
  return {
    first: text.slice(0, space.index),
    rest: trimSpace(text.slice(space.index)),
  };
}

function isSpace(ch: string): boolean {
  return ch !== "" && SPACE_CHARACTERS.includes(ch);
}

/** Trims C white space. A loop, because /\s+$/ is quadratic in V8. */
function trimSpace(text: string): string {
  let start = 0;
  let end = text.length;
  while (start < end && isSpace(text.charAt(start))) start++;
  while (end > start && isSpace(text.charAt(end - 1))) end--;
  return text.slice(start, end);
}

function matches(condition: Condition, client: IpAddress): boolean {
  if (client.family !== condition.network.family) return false;
  return (
    networkContainsAddress(condition.network, client) !== condition.negated
  );
}

function formatCondition(condition: Condition): string {
  const network = formatNetwork(condition.network);
  return condition.negated ? `!${network}` : network;
}
