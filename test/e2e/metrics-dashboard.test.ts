// The Grafana dashboard in contrib/ against a real scrape: every metric
// name its PromQL expressions use must be a series that postwarden
// exports, and every postwarden_ metric must have a panel.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { packageRoot } from "../../src/native.js";
import { PostfixInstance } from "../support/postfix.js";
import { SmtpClient } from "../support/smtp-client.js";
import { requireRootAndPostfix } from "../support/requirements.js";
import { DnsResponder } from "../support/dns-responder.js";
import { metricsUrl, scrapeText, startPostwarden } from "../support/metrics.js";

requireRootAndPostfix();

let postfix: PostfixInstance;
let responder: DnsResponder;

before(async () => {
  postfix = PostfixInstance.create();
  await postfix.start();
  // A healthy list (RFC 5782 test points) that fails every client query,
  // so that the error counter has a series too.
  responder = await DnsResponder.start((name, type) => {
    if (type === "SOA") return { kind: "soa", minimum: 300, ttl: 300 };
    if (name.startsWith("2.0.0.127.")) {
      return { kind: "answer", addresses: ["127.0.0.2"], ttl: 300 };
    }
    if (name.startsWith("1.0.0.127.")) return { kind: "nxdomain" };
    return { kind: "servfail" };
  });
});

after(async () => {
  await responder?.stop();
  await postfix?.destroy();
});

/** Words in PromQL that are neither functions nor metric names. */
const KEYWORDS = new Set([
  "and",
  "or",
  "unless",
  "bool",
  "offset",
  "by",
  "without",
  "on",
  "ignoring",
  "group_left",
  "group_right",
  "inf",
  "nan",
]);

/** Returns the metric names a PromQL expression selects. */
function metricNames(expression: string): string[] {
  const labelValues = /^\s*label_values\(\s*([^,)]+)/.exec(expression);
  if (labelValues !== null) return metricNames(labelValues[1] ?? "");
  const stripped = expression
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/g, '""')
    .replace(/\{[^}]*\}/g, " ")
    .replace(/\[[^\]]*\]/g, " ")
    .replace(
      /\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g,
      " ",
    )
    .replace(/\$\w+/g, " ")
    // Numbers and durations, such as 0.95 and the 5m of "offset 5m".
    .replace(/\b\d[\w.]*/g, " ");
  const names: string[] = [];
  for (const match of stripped.matchAll(/[A-Za-z_:][A-Za-z0-9_:]*(\s*\()?/g)) {
    const word = match[0].replace(/\s*\($/, "");
    const isCall = match[1] !== undefined;
    if (!isCall && !KEYWORDS.has(word.toLowerCase())) names.push(word);
  }
  return names;
}

interface Dashboard {
  panels: { title: string; targets?: { expr: string }[] }[];
  templating: { list: { query?: string | { query: string } }[] };
}

function dashboardExpressions(): string[] {
  const path = join(packageRoot(), "contrib", "grafana-dashboard.json");
  const dashboard = JSON.parse(readFileSync(path, "utf8")) as Dashboard;
  const expressions = dashboard.panels.flatMap(
    (panel) => panel.targets?.map((target) => target.expr) ?? [],
  );
  for (const variable of dashboard.templating.list) {
    const query = variable.query;
    if (typeof query === "object") expressions.push(query.query);
    else if (query !== undefined && query.includes("(")) {
      expressions.push(query);
    }
  }
  return expressions;
}

test("PromQL name extraction", () => {
  assert.deepEqual(
    metricNames(
      'sum by (le, list) (rate(a_bucket{x="y{z}",i=~"$instance"}[$__rate_interval])) / on (list) b_total offset 5m',
    ),
    ["a_bucket", "b_total"],
  );
  assert.deepEqual(metricNames("label_values(c_total, instance)"), ["c_total"]);
  assert.deepEqual(metricNames("histogram_quantile(0.9, d)"), ["d"]);
});

test("dashboard metrics exist in scrape", async () => {
  const warden = startPostwarden(postfix, [
    "-o",
    "access_list=",
    "-o",
    "dnsbl_sites=fail.test",
    "-o",
    `dns_servers=${responder.server}`,
  ]);
  try {
    const port = await warden.listeningPort();
    const url = await metricsUrl(warden);
    await warden.waitForLog(/postwarden started/);
    // One client: its DNS list query fails, and it is handed off anyway.
    const client = await SmtpClient.open(port, "127.0.0.1", "127.0.4.71");
    assert.equal((await client.readReply(5000)).at(-1)?.slice(0, 4), "220 ");
    assert.match((await client.command("QUIT"))[0] ?? "", /^221 /);
    await client.waitForEnd();
    await warden.waitForLog(/dnsblog_query: lookup error for DNS list/);

    const text = await scrapeText(url);
    const series = new Set(
      text
        .split("\n")
        .filter((line) => line !== "" && !line.startsWith("#"))
        .map((line) => /^[A-Za-z_:][A-Za-z0-9_:]*/.exec(line)?.[0]),
    );
    const used = new Set(dashboardExpressions().flatMap(metricNames));
    assert.ok(used.size >= 10, `only ${used.size} names found`);
    for (const name of used) {
      assert.ok(series.has(name), `dashboard uses ${name}, not in the scrape`);
    }

    // Each postwarden_ metric family appears in at least one panel.
    const families = [...text.matchAll(/^# TYPE (postwarden_\w+) (\w+)$/gm)];
    assert.ok(families.length > 0);
    for (const [, family = "", type] of families) {
      const names = type === "histogram" ? [`${family}_bucket`] : [family];
      assert.ok(
        names.some((name) => used.has(name)),
        `no panel uses ${family}`,
      );
    }
  } finally {
    assert.equal(await warden.stop(), 0);
  }
});
