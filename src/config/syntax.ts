// Postfix main.cf syntax: "name = value" lines, "#" comment lines, lines
// that start with white space continue the previous line, and $name
// expansion with Postfix's forms ($name, ${name}, $(name), ${name?text},
// ${name:text}, ${name?{text}:{text}} and $$). It does not know which
// names exist or what their values mean; parameters.ts does.

/** Where a value came from, for error messages. */
export interface Origin {
  file: string;
  /** 1-based line number; 0 for values that do not come from a file. */
  line: number;
}

export interface Setting {
  name: string;
  value: string;
  origin: Origin;
}

export class SyntaxError extends Error {
  constructor(
    readonly origin: Origin,
    reason: string,
  ) {
    super(`${formatOrigin(origin)}: ${reason}`);
  }
}

export function formatOrigin(origin: Origin): string {
  return origin.line > 0 ? `${origin.file}:${origin.line}` : origin.file;
}

const NAME = /^[A-Za-z0-9_.-]+$/;

/**
 * Parses main.cf text into settings, in file order. A later setting of the
 * same name replaces an earlier one, as in Postfix; callers keep the last.
 */
export function parseMainCf(text: string, file: string): Setting[] {
  const settings: Setting[] = [];
  const lines = text.split(/\r?\n/);
  let current: { start: number; text: string } | undefined;

  const finish = (): void => {
    if (current === undefined) return;
    const origin = { file, line: current.start };
    const equals = current.text.indexOf("=");
    if (equals < 0) {
      throw new SyntaxError(origin, `missing '=' after "${current.text}"`);
    }
    const name = current.text.slice(0, equals).trim();
    if (!NAME.test(name)) {
      throw new SyntaxError(origin, `invalid parameter name "${name}"`);
    }
    const value = current.text.slice(equals + 1).trim();
    settings.push({ name, value, origin });
    current = undefined;
  };

  lines.forEach((line, index) => {
    const trimmed = line.trim();
    if (trimmed === "" || trimmed.startsWith("#")) return;
    if (/^\s/.test(line)) {
      if (current === undefined) {
        throw new SyntaxError(
          { file, line: index + 1 },
          "continuation line without a parameter before it",
        );
      }
      current.text += " " + trimmed;
      return;
    }
    finish();
    current = { start: index + 1, text: trimmed };
  });
  finish();
  return settings;
}

const MAX_EXPANSION_DEPTH = 100;

/**
 * Expands $name references in `value`. `lookup` returns the raw value of a
 * name, or undefined when it has none; undefined names expand to the empty
 * string. Throws an Error naming the parameter on recursion or bad syntax.
 */
export function expandValue(
  value: string,
  lookup: (name: string) => string | undefined,
  depth = 0,
): string {
  if (depth > MAX_EXPANSION_DEPTH) {
    throw new Error("recursive $name expansion");
  }
  const expandName = (name: string): string => {
    const raw = lookup(name);
    return raw === undefined ? "" : expandValue(raw, lookup, depth + 1);
  };

  let result = "";
  let i = 0;
  while (i < value.length) {
    const ch = value[i];
    if (ch !== "$") {
      result += ch;
      i++;
      continue;
    }
    const next = value[i + 1];
    if (next === "$") {
      result += "$";
      i += 2;
      continue;
    }
    if (next === "{" || next === "(") {
      const close = next === "{" ? "}" : ")";
      const end = findClosing(value, i + 1, next, close);
      if (end < 0) throw new Error(`unbalanced "${next}" in "${value}"`);
      result += expandBraced(value.slice(i + 2, end), expandName, (text) =>
        expandValue(text, lookup, depth + 1),
      );
      i = end + 1;
      continue;
    }
    const match = /^[A-Za-z0-9_]+/.exec(value.slice(i + 1));
    if (match === null) {
      throw new Error(`"$" not followed by a parameter name in "${value}"`);
    }
    result += expandName(match[0]);
    i += 1 + match[0].length;
  }
  return result;
}

function findClosing(
  text: string,
  openIndex: number,
  open: string,
  close: string,
): number {
  let level = 0;
  for (let i = openIndex; i < text.length; i++) {
    if (text[i] === open) level++;
    else if (text[i] === close && --level === 0) return i;
  }
  return -1;
}

/** Expands the inside of ${...}: name, name?text, name:text, or both. */
function expandBraced(
  inner: string,
  expandName: (name: string) => string,
  expandText: (text: string) => string,
): string {
  const match = /^([A-Za-z0-9_]+)(.*)$/s.exec(inner);
  if (match === null) throw new Error(`invalid expression "\${${inner}}"`);
  const name = match[1] ?? "";
  const rest = match[2] ?? "";
  if (rest === "") return expandName(name);

  const isSet = expandName(name) !== "";
  const twoWay = /^\?\{(.*)\}\s*:\s*\{(.*)\}$/s.exec(rest);
  if (twoWay !== null) {
    return expandText(isSet ? (twoWay[1] ?? "") : (twoWay[2] ?? ""));
  }
  const text = unwrapBraces(rest.slice(1));
  if (rest.startsWith("?")) return isSet ? expandText(text) : "";
  if (rest.startsWith(":")) return isSet ? "" : expandText(text);
  throw new Error(`invalid expression "\${${inner}}"`);
}

function unwrapBraces(text: string): string {
  const trimmed = text.trim();
  return trimmed.startsWith("{") && trimmed.endsWith("}")
    ? trimmed.slice(1, -1)
    : text;
}
