import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer, type AddressInfo } from "node:net";
import { buildConfig, ConfigError } from "../../src/config/load.js";
import type { Logger } from "../../src/log/logger.js";
import { openMetrics } from "../../src/metrics/http.js";
import { NO_METRICS } from "../../src/metrics/metrics.js";
import { PrometheusMetrics } from "../../src/metrics/prometheus.js";

function collectingLogger(lines: string[]): Logger {
  return {
    info: (message) => lines.push(message),
    warning: (message) => lines.push(`warning: ${message}`),
    error: (message) => lines.push(`error: ${message}`),
  };
}

function configWith(
  metricsListen: string | undefined,
): ReturnType<typeof buildConfig> {
  const settings = [{ name: "listen", value: "127.0.0.1:25" }];
  if (metricsListen !== undefined) {
    settings.push({ name: "metrics_listen", value: metricsListen });
  }
  return buildConfig(
    settings.map((setting, index) => ({
      ...setting,
      origin: { file: "test.cf", line: index + 1 },
    })),
  );
}

function tcpServerCount(): number {
  return process
    .getActiveResourcesInfo()
    .filter((resource) => resource === "TCPServerWrap").length;
}

test("metrics off by default, no listener", async () => {
  const config = configWith(undefined);
  assert.equal(config.metricsListen, undefined);
  const before = tcpServerCount();
  const lines: string[] = [];
  const opened = await openMetrics(
    config.metricsListen,
    collectingLogger(lines),
  );
  assert.equal(opened.metrics, NO_METRICS);
  assert.equal(opened.bound, undefined);
  assert.equal(tcpServerCount(), before);
  assert.deepEqual(lines, []);
  await opened.close();
});

test("metrics_listen accepts one address", () => {
  assert.deepEqual(configWith("127.0.0.1:9425").metricsListen, {
    host: "127.0.0.1",
    port: 9425,
    proxy: false,
  });
  assert.deepEqual(configWith("[::1]:0").metricsListen, {
    host: "::1",
    port: 0,
    proxy: false,
  });
  assert.equal(configWith("").metricsListen, undefined);
  for (const invalid of [
    "localhost:9425",
    "127.0.0.1",
    "127.0.0.1:9425 127.0.0.1:9426",
    "127.0.0.1:9425/haproxy",
    "127.0.0.1:70000",
  ]) {
    assert.throws(
      () => configWith(invalid),
      (error: unknown) =>
        error instanceof ConfigError &&
        error.problems.some((problem) => problem.includes("metrics_listen")),
      invalid,
    );
  }
});

test("endpoint serves GET /metrics only", async () => {
  const lines: string[] = [];
  const opened = await openMetrics(
    { host: "127.0.0.1", port: 0, proxy: false },
    collectingLogger(lines),
  );
  try {
    const port = opened.bound?.port;
    assert.ok(port !== undefined);
    assert.ok(port > 0);
    assert.ok(
      lines.includes(`serving metrics at http://127.0.0.1:${port}/metrics`),
      lines.join("\n"),
    );
    const base = `http://127.0.0.1:${port}`;
    const response = await fetch(`${base}/metrics`);
    assert.equal(response.status, 200);
    assert.match(response.headers.get("content-type") ?? "", /^text\/plain/);
    const text = await response.text();
    assert.match(text, /^# HELP postwarden_verdicts_total /m);
    assert.match(text, /^process_cpu_seconds_total /m);
    for (const [path, method] of [
      ["/", "GET"],
      ["/metrics/x", "GET"],
      ["/metrics", "POST"],
    ] as const) {
      const other = await fetch(`${base}${path}`, { method });
      assert.equal(other.status, 404, `${method} ${path}`);
      await other.text();
    }
  } finally {
    await opened.close();
  }
});

test("busy metrics address logged, not thrown", async () => {
  const blocker = createServer();
  await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", resolve));
  const port = (blocker.address() as AddressInfo).port;
  const lines: string[] = [];
  try {
    const opened = await openMetrics(
      { host: "127.0.0.1", port, proxy: false },
      collectingLogger(lines),
    );
    assert.equal(opened.bound, undefined);
    assert.ok(
      lines.some((line) =>
        line.startsWith(
          `error: metrics: cannot listen on 127.0.0.1:${port}: listen EADDRINUSE`,
        ),
      ),
      lines.join("\n"),
    );
    await opened.close();
  } finally {
    blocker.close();
  }
});

test("counters and logger drop total", async () => {
  const logger = Object.assign(collectingLogger([]), { droppedLines: 7 });
  const metrics = new PrometheusMetrics(logger);
  metrics.verdict("pregreet", "fail");
  metrics.verdict("pregreet", "fail");
  metrics.verdict("non_smtp_command", "pass");
  metrics.cacheLookup("shared", "unavailable");
  metrics.handoffFailed("connect");
  metrics.dnsblQuery("bl.example", 0.003, "ESERVFAIL");
  const text = await metrics.scrape();
  const lines = text.split("\n");
  for (const expected of [
    'postwarden_verdicts_total{test="pregreet",result="fail"} 2',
    'postwarden_verdicts_total{test="pregreet",result="pass"} 0',
    'postwarden_verdicts_total{test="non_smtp_command",result="pass"} 1',
    'postwarden_cache_lookups_total{store="shared",result="unavailable"} 1',
    'postwarden_cache_lookups_total{store="local",result="hit"} 0',
    'postwarden_handoff_failures_total{reason="connect"} 1',
    'postwarden_handoff_failures_total{reason="timeout"} 0',
    'postwarden_dnsbl_query_errors_total{list="bl.example",error="ESERVFAIL"} 1',
    'postwarden_dnsbl_query_duration_seconds_bucket{le="0.005",list="bl.example"} 1',
    'postwarden_dnsbl_query_duration_seconds_bucket{le="0.002",list="bl.example"} 0',
    "postwarden_log_dropped_lines_total 7",
    // No state attached yet: gauges read zero.
    "postwarden_active_connections 0",
    "postwarden_stress 0",
  ]) {
    assert.ok(lines.includes(expected), `missing: ${expected}`);
  }
});

test("logger without drop total reads zero", async () => {
  const metrics = new PrometheusMetrics(collectingLogger([]));
  const text = await metrics.scrape();
  assert.ok(text.split("\n").includes("postwarden_log_dropped_lines_total 0"));
});
