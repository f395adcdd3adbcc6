// Postfix's SMTPD policy delegation protocol (SMTPD_POLICY_README, Postfix
// 2.1 and later): a request is "name=value" lines, each ending in a
// newline, and an empty line ends it; the reply is "action=..." and an
// empty line. The parser takes bytes as they arrive, bounds line length
// and attribute count, and reports the first protocol error, after which
// the connection is closed.

/** Longest line accepted, in bytes, newline excluded. */
export const MAX_LINE_BYTES = 8192;
/** Most attributes in one request; Postfix 3.7 sends about 30. */
export const MAX_ATTRIBUTES = 128;

export type ParseResult =
  | { kind: "request"; attributes: Map<string, string> }
  | { kind: "error"; reason: string };

export class PolicyRequestParser {
  private buffer: Buffer = Buffer.alloc(0);
  private attributes = new Map<string, string>();
  private failed = false;

  /** Adds received bytes. */
  push(chunk: Buffer): void {
    this.buffer =
      this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
  }

  /**
   * Returns the next complete request, an error, or undefined when more
   * bytes are needed. After an error, every call returns that error.
   */
  next(): ParseResult | undefined {
    for (;;) {
      if (this.failed) return this.fail("earlier protocol error");
      const end = this.buffer.indexOf(0x0a);
      if (end < 0) {
        if (this.buffer.length > MAX_LINE_BYTES) {
          return this.fail(`line longer than ${MAX_LINE_BYTES} bytes`);
        }
        return undefined;
      }
      if (end > MAX_LINE_BYTES) {
        return this.fail(`line longer than ${MAX_LINE_BYTES} bytes`);
      }
      let line = this.buffer.subarray(0, end);
      this.buffer = this.buffer.subarray(end + 1);
      if (line.at(-1) === 0x0d) line = line.subarray(0, -1);
      if (line.length === 0) {
        if (this.attributes.size === 0) {
          return this.fail("empty request");
        }
        const attributes = this.attributes;
        this.attributes = new Map();
        return { kind: "request", attributes };
      }
      const error = this.addLine(line);
      if (error !== undefined) return this.fail(error);
    }
  }

  private addLine(line: Buffer): string | undefined {
    if (line.includes(0)) return "NUL byte in a line";
    const text = line.toString("utf8");
    const equals = text.indexOf("=");
    if (equals < 1) {
      return `line without name=value: "${printable(text)}"`;
    }
    const name = text.slice(0, equals);
    if (!/^[A-Za-z0-9_.-]+$/.test(name)) {
      return `invalid attribute name "${printable(name)}"`;
    }
    if (this.attributes.size >= MAX_ATTRIBUTES && !this.attributes.has(name)) {
      return `more than ${MAX_ATTRIBUTES} attributes`;
    }
    this.attributes.set(name, text.slice(equals + 1));
    return undefined;
  }

  private fail(reason: string): ParseResult {
    this.failed = true;
    this.buffer = Buffer.alloc(0);
    return { kind: "error", reason };
  }
}

/** Formats a reply; `action` must not contain a newline. */
export function formatReply(action: string): string {
  if (/[\r\n]/.test(action)) {
    throw new Error(`invalid policy action: contains a line break`);
  }
  return `action=${action}\n\n`;
}

/** Clips text to 100 printable ASCII characters for a log line. */
function printable(text: string): string {
  return text.slice(0, 100).replace(/[^\x20-\x7e]/g, "?");
}
