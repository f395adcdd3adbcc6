// Text formats shared by postscreen-compatible log lines: client bytes
// escaped as Postfix's escape() does, delays with two significant digits,
// and the [addr]:port form. Log parsers (fail2ban, postfix_exporter, grok
// patterns) depend on these exact forms.

/** Maximum characters of escaped client text in one log line (%.100s). */
export const MAX_LOGGED_TEXT = 100;

const NAMED_ESCAPES: Record<number, string> = {
  0x07: "\\a",
  0x08: "\\b",
  0x0c: "\\f",
  0x0a: "\\n",
  0x0d: "\\r",
  0x09: "\\t",
  0x0b: "\\v",
};

/**
 * Escapes bytes the way Postfix logs client input: printable ASCII as is
 * (a backslash doubled), C escapes for the usual control characters, and
 * three-digit octal for every other byte.
 */
export function escapeBytes(data: Uint8Array): string {
  let text = "";
  for (const byte of data) {
    if (byte >= 0x20 && byte < 0x7f) {
      text += byte === 0x5c ? "\\\\" : String.fromCharCode(byte);
    } else {
      text += NAMED_ESCAPES[byte] ?? "\\" + byte.toString(8).padStart(3, "0");
    }
  }
  return text;
}

/** Escapes client bytes and clips the result for a log line. */
export function escapeForLog(data: Uint8Array): string {
  return escapeBytes(data).slice(0, MAX_LOGGED_TEXT);
}

const MILLION = 1_000_000;
const POW10 = [1, 10, 100, 1000, 10000, 100000, 1000000];

/**
 * Formats a delay in seconds as postscreen does (Postfix's format_tv with
 * 2 significant digits and at most `maxDecimals` decimals, the default of
 * delay_logging_resolution_limit): "0.31", "1.2", "16", "0".
 */
export function formatDelay(seconds: number, maxDecimals = 2): string {
  const significant = 2;
  let micros = Math.max(0, Math.round(seconds * MILLION));
  let sec = Math.floor(micros / MILLION);
  let usec = micros - sec * MILLION;
  let resolution = MILLION / (POW10[maxDecimals] ?? 100);
  const width = POW10[significant] ?? 100;

  // Coarsen the resolution so that only significant digits remain.
  if (resolution < MILLION) {
    if (sec > 0) {
      let n = 1;
      while (sec >= n && n <= width / 10) n *= 10;
      resolution = (MILLION / width) * n;
    } else {
      while (usec >= width * resolution) resolution *= 10;
    }
  }

  // Round half up at the resolution; digits below it are cut.
  if (resolution > 1) {
    usec += Math.floor(resolution / 2);
    if (usec >= MILLION) {
      sec += 1;
      usec -= MILLION;
    }
  }
  micros = usec;

  let text = String(sec);
  if (micros >= resolution) {
    text += ".";
    let remainder = micros;
    let n = MILLION / 10;
    while (remainder >= resolution && n > 0) {
      text += String(Math.floor(remainder / n));
      remainder %= n;
      n = Math.floor(n / 10);
    }
  }
  return text;
}

/** Formats a client or server endpoint as postscreen logs it. */
export function formatEndpoint(address: string, port: number): string {
  return `[${address}]:${port}`;
}
