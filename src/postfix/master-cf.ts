// Reads Postfix's master.cf into service entries with their line numbers,
// for `postwarden check` and `postwarden import-postfix`. A logical line
// starts in the first column, and lines that start with white space
// continue it. Blank lines and lines whose first non-blank character is
// "#" are skipped. Fields are those of master(5): service, type, private,
// unpriv, chroot, wakeup, maxproc, then the command and its arguments.
// An argument in braces, such as "{ name = value }", is one argument
// without its braces (Postfix 3.0 and later). This reader does not expand
// $name in the fields, and it does not know Postfix's defaults for "-".
import { readFileSync } from "node:fs";

export interface MasterOverride {
  name: string;
  value: string;
}

export interface MasterEntry {
  /** 1-based number of the line where the entry starts. */
  line: number;
  service: string;
  type: string;
  /** The private column as written: "y", "n" or "-" (which means y). */
  private: string;
  command: string;
  args: string[];
  /** The `-o name=value` settings, in order; a later one wins. */
  overrides: MasterOverride[];
}

export class MasterCfError extends Error {}

/** Parses master.cf text; `file` names it in errors. */
export function parseMasterCf(text: string, file: string): MasterEntry[] {
  const logical: { line: number; text: string }[] = [];
  text.split(/\r?\n/).forEach((raw, index) => {
    const trimmed = raw.trim();
    if (trimmed === "" || trimmed.startsWith("#")) return;
    const last = logical[logical.length - 1];
    if (/^\s/.test(raw) && last !== undefined) {
      last.text += " " + trimmed;
    } else {
      logical.push({ line: index + 1, text: trimmed });
    }
  });
  return logical.map(({ line, text: entryText }) =>
    parseEntry(entryText, file, line),
  );
}

/** Reads and parses a master.cf file; throws MasterCfError if unreadable. */
export function readMasterCf(path: string): MasterEntry[] {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    throw new MasterCfError(
      `${path}: cannot read file: ${(error as Error).message}`,
      { cause: error },
    );
  }
  return parseMasterCf(text, path);
}

function parseEntry(text: string, file: string, line: number): MasterEntry {
  const words = splitArguments(text, file, line);
  if (words.length < 8) {
    throw new MasterCfError(
      `${file}:${line}: invalid entry "${text}": expected 8 or more fields ` +
        "(service type private unpriv chroot wakeup maxproc command)",
    );
  }
  const [service, type, privateField] = words as [string, string, string];
  const command = words[7] ?? "";
  const args = words.slice(8);
  return {
    line,
    service,
    type,
    private: privateField,
    command,
    args,
    overrides: readOverrides(args, file, line),
  };
}

/** Splits on white space, keeping "{ ... }" groups as one argument. */
function splitArguments(text: string, file: string, line: number): string[] {
  const words: string[] = [];
  let index = 0;
  while (index < text.length) {
    if (/\s/.test(text[index] ?? "")) {
      index++;
      continue;
    }
    if (text[index] === "{") {
      const end = findGroupEnd(text, index);
      if (end < 0) {
        throw new MasterCfError(
          `${file}:${line}: missing "}" after "${text.slice(index)}"`,
        );
      }
      words.push(text.slice(index + 1, end).trim());
      index = end + 1;
      continue;
    }
    const start = index;
    while (index < text.length && !/\s/.test(text[index] ?? "")) index++;
    words.push(text.slice(start, index));
  }
  return words;
}

function findGroupEnd(text: string, openIndex: number): number {
  let level = 0;
  for (let i = openIndex; i < text.length; i++) {
    if (text[i] === "{") level++;
    else if (text[i] === "}" && --level === 0) return i;
  }
  return -1;
}

function readOverrides(
  args: string[],
  file: string,
  line: number,
): MasterOverride[] {
  const overrides: MasterOverride[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] ?? "";
    let setting: string | undefined;
    if (arg === "-o") {
      setting = args[i + 1];
      i++;
    } else if (arg.startsWith("-o")) {
      setting = arg.slice(2);
    } else {
      continue;
    }
    const equals = setting?.indexOf("=") ?? -1;
    if (setting === undefined || equals < 1) {
      throw new MasterCfError(
        `${file}:${line}: invalid -o "${setting ?? ""}": expected name=value`,
      );
    }
    overrides.push({
      name: setting.slice(0, equals).trim(),
      value: setting.slice(equals + 1).trim(),
    });
  }
  return overrides;
}

/** The socket directory of a unix or pass service: private or public. */
export function socketDirectory(entry: MasterEntry): "private" | "public" {
  return entry.private === "n" ? "public" : "private";
}

/** Returns the last -o value for `name`, or undefined. */
export function overrideOf(
  entry: MasterEntry,
  name: string,
): string | undefined {
  let value: string | undefined;
  for (const override of entry.overrides) {
    if (override.name === name) value = override.value;
  }
  return value;
}
