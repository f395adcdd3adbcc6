// Postfix time values: a whole number with an optional one-letter unit
// (s, m, h, d, w), and "ms" for the short Redis deadline, a postwarden
// addition that Postfix does not accept. A bare number takes the parameter's default unit, so
// "greet_wait = 6" means 6 seconds and a parameter whose default unit is
// "d" reads "7" as 7 days.

export type TimeUnit = "ms" | "s" | "m" | "h" | "d" | "w";

const UNIT_SECONDS: Record<TimeUnit, number> = {
  ms: 0.001,
  s: 1,
  m: 60,
  h: 3600,
  d: 86400,
  w: 604800,
};

/** Parses a time value into milliseconds; throws an Error with the reason. */
export function parseTime(text: string, defaultUnit: TimeUnit): number {
  const match = /^(\d+)(ms|[a-zA-Z]?)$/.exec(text.trim());
  if (match === null) {
    throw new Error(
      `invalid time value "${text}": expected a whole number with an ` +
        "optional unit ms, s, m, h, d or w",
    );
  }
  const amount = Number(match[1]);
  const unit = (match[2] || defaultUnit) as TimeUnit;
  const seconds = UNIT_SECONDS[unit];
  if (seconds === undefined) {
    throw new Error(
      `invalid time unit "${match[2]}" in "${text}": use ms, s, m, h, d or w`,
    );
  }
  const total = Math.round(amount * seconds * 1000);
  if (!Number.isSafeInteger(total)) {
    throw new Error(`time value "${text}" is too large`);
  }
  return total;
}
