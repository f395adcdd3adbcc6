// Scrapes postwarden's /metrics endpoint in end-to-end tests and parses
// the Prometheus text format into samples keyed by series, such as
// 'postwarden_verdicts_total{test="dnsbl",result="fail"}'.
import assert from "node:assert/strict";
import type { PostfixInstance } from "./postfix.js";
import { PostwardenProcess } from "./postwarden.js";

/**
 * Starts postwarden in front of `postfix` on a free port, with a 1 s
 * greeting wait, and with metrics on a free port unless `metrics` is false.
 */
export function startPostwarden(
  postfix: PostfixInstance,
  extra: string[],
  options: { dataDirectory?: string; metrics?: boolean } = {},
): PostwardenProcess {
  const metrics = options.metrics ?? true;
  return PostwardenProcess.start({
    ...(options.dataDirectory === undefined
      ? {}
      : { dataDirectory: options.dataDirectory }),
    args: [
      "--config",
      "/dev/null",
      "--listen",
      "127.0.0.1:0",
      "--queue-directory",
      postfix.queueDirectory,
      "--postfix-config-directory",
      postfix.configDirectory,
      "--greet-wait",
      "1s",
      "-o",
      "myhostname=warden.example.com",
      ...(metrics ? ["-o", "metrics_listen=127.0.0.1:0"] : []),
      ...extra,
    ],
  });
}

/** Waits for the "serving metrics at URL" line; returns the URL. */
export async function metricsUrl(warden: PostwardenProcess): Promise<string> {
  const line = await warden.waitForLog(/serving metrics at http:\/\/\S+$/);
  const match = /serving metrics at (http:\/\/\S+)$/.exec(line);
  return match?.[1] ?? "";
}

/** Fetches the endpoint; returns the exposition text. */
export async function scrapeText(url: string): Promise<string> {
  const response = await fetch(url, { signal: AbortSignal.timeout(10_000) });
  const text = await response.text();
  assert.equal(response.status, 200, text);
  return text;
}

/** Parses sample lines; comment lines are skipped. */
export function parseSamples(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const space = line.lastIndexOf(" ");
    samples.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return samples;
}

export async function scrape(url: string): Promise<Map<string, number>> {
  return parseSamples(await scrapeText(url));
}

/**
 * Returns the series of metric `name` whose value is not 0, as an object
 * from the label text (such as 'test="dnsbl",result="fail"') to the value.
 */
export function nonzero(
  samples: Map<string, number>,
  name: string,
): Record<string, number> {
  const result: Record<string, number> = {};
  for (const [series, value] of samples) {
    const brace = series.indexOf("{");
    const seriesName = brace < 0 ? series : series.slice(0, brace);
    if (seriesName !== name || value === 0) continue;
    result[brace < 0 ? "" : series.slice(brace + 1, -1)] = value;
  }
  return result;
}
