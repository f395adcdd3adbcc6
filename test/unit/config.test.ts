import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  buildConfig,
  ConfigError,
  loadConfig,
  parseListen,
} from "../../src/config/load.js";
import type { Setting } from "../../src/config/syntax.js";

function settings(entries: Record<string, string>): Setting[] {
  return Object.entries(entries).map(([name, value], index) => ({
    name,
    value,
    origin: { file: "test.cf", line: index + 1 },
  }));
}

function problemsOf(entries: Record<string, string>): string[] {
  try {
    buildConfig(settings(entries));
  } catch (error) {
    assert.ok(error instanceof ConfigError);
    return error.problems;
  }
  assert.fail("expected a ConfigError");
}

test("config defaults mirror postscreen", () => {
  const config = buildConfig(
    settings({ listen: "127.0.0.1:25", myhostname: "mx.example.com" }),
  );
  assert.equal(config.greetWaitMs, 6000);
  assert.equal(config.greetAction, "ignore");
  assert.equal(config.greetMode, "teaser");
  assert.equal(config.greetBanner, "mx.example.com ESMTP Postfix");
  assert.equal(config.smtpdBanner, "mx.example.com ESMTP Postfix");
  assert.equal(config.smtpdPassSocket, "/var/spool/postfix/private/smtpd");
  assert.equal(config.smtpdServiceLabel, "private/smtpd");
  assert.equal(config.postfixConfigDirectory, "/etc/postfix");
});

test("config default hostname needs no DNS", () => {
  const config = buildConfig(settings({ listen: "127.0.0.1:25" }));
  assert.ok(config.myhostname.includes("."), config.myhostname);
});

test("config accepts postscreen names", () => {
  const config = buildConfig(
    settings({
      listen: "127.0.0.1:25",
      postscreen_greet_wait: "${stress?{2}:{6}}s",
      postscreen_greet_action: "drop",
      postscreen_greet_banner: "$mail_name screening",
    }),
  );
  assert.equal(config.greetWaitMs, 6000);
  assert.equal(config.greetAction, "drop");
  assert.equal(config.greetBanner, "Postfix screening");
});

test("config pass socket and service name", () => {
  const byName = buildConfig(
    settings({
      listen: "127.0.0.1:25",
      queue_directory: "/q",
      smtpd_service_name: "pass1",
    }),
  );
  assert.equal(byName.smtpdPassSocket, "/q/private/pass1");
  assert.equal(byName.smtpdServiceLabel, "private/pass1");
  const byPath = buildConfig(
    settings({ listen: "127.0.0.1:25", smtpd_pass_socket: "/q/public/p" }),
  );
  assert.equal(byPath.smtpdPassSocket, "/q/public/p");
  assert.equal(byPath.smtpdServiceLabel, "/q/public/p");
});

test("config empty banner keeps value", () => {
  const config = buildConfig(
    settings({ listen: "127.0.0.1:25", greet_banner: "" }),
  );
  assert.equal(config.greetBanner, "");
});

test("config rejects unknown parameter", () => {
  const problems = problemsOf({ listen: "127.0.0.1:25", greet_wiat: "1s" });
  assert.deepEqual(problems, ["test.cf:2: greet_wiat: unknown parameter"]);
});

test("config rejects unsupported postscreen parameter", () => {
  const problems = problemsOf({
    listen: "127.0.0.1:25",
    postscreen_tls_security_level: "may",
  });
  assert.equal(problems.length, 1);
  assert.match(
    problems[0] ?? "",
    /^test\.cf:2: postscreen_tls_security_level: .*not supported/,
  );
});

test("config accepts enforce actions", () => {
  const config = buildConfig(
    settings({
      listen: "127.0.0.1:25",
      postscreen_greet_action: "enforce",
      postscreen_dnsbl_action: "enforce",
      postscreen_blacklist_action: "enforce",
      postscreen_pipelining_enable: "yes",
    }),
  );
  assert.equal(config.greetAction, "enforce");
  assert.equal(config.dnsbl.action, "enforce");
  assert.equal(config.denylistAction, "enforce");
  assert.equal(config.engine.pipelining.enabled, true);
  assert.equal(config.engine.pipelining.action, "enforce");
  assert.equal(config.engine.nonSmtp.action, "drop");
  assert.equal(config.engine.bareNewline.action, "ignore");
  assert.equal(config.engine.pipelining.ttlMs, 30 * 86_400_000);
});

test("config rejects invalid values", () => {
  const problems = problemsOf({
    listen: "127.0.0.1:25",
    greet_wait: "0s",
    greet_mode: "loud",
    queue_directory: "relative/dir",
  });
  assert.equal(problems.length, 3);
  const find = (pattern: RegExp): string | undefined =>
    problems.find((problem) => pattern.test(problem));
  assert.ok(find(/^test\.cf:2: greet_wait: .*at least 1s/), "greet_wait");
  assert.ok(find(/^test\.cf:3: greet_mode: .*teaser, silent/), "greet_mode");
  assert.ok(
    find(/^test\.cf:4: queue_directory: .*absolute/),
    "queue_directory",
  );
});

test("config requires listen", () => {
  const problems = problemsOf({});
  assert.match(problems[0] ?? "", /listen: missing value/);
});

test("listen addresses", () => {
  assert.deepEqual(parseListen("127.0.0.1:25, [::1]:2525 0.0.0.0:0"), [
    { host: "127.0.0.1", port: 25, proxy: false },
    { host: "::1", port: 2525, proxy: false },
    { host: "0.0.0.0", port: 0, proxy: false },
  ]);
  for (const bad of [
    "mx.example.com:25",
    "::1:25",
    "[127.0.0.1]:25",
    "127.0.0.1",
    "127.0.0.1:70000",
  ]) {
    assert.throws(() => parseListen(bad), /invalid/, bad);
  }
});

test("config file with line numbers", () => {
  const directory = mkdtempSync(join(tmpdir(), "postwarden-config-"));
  const file = join(directory, "main.cf");
  writeFileSync(file, "listen = 127.0.0.1:25\n\n# x\ngreet_action = maybe\n");
  assert.throws(
    () => loadConfig(file),
    (error: unknown) =>
      error instanceof ConfigError &&
      error.problems[0] ===
        `${file}:4: greet_action: invalid value "maybe": expected one of ignore, enforce, drop`,
  );
});

test("config missing file", () => {
  assert.throws(
    () => loadConfig("/nonexistent/postwarden.cf"),
    /cannot read configuration file/,
  );
});

test("config rejects unknown references", () => {
  const problems = problemsOf({
    listen: "127.0.0.1:25",
    greet_banner: "$mail_nmae here",
  });
  assert.deepEqual(problems, [
    "test.cf:2: greet_banner: unknown parameter $mail_nmae in the value",
  ]);
});

test("config accepts stress expansion", () => {
  const config = buildConfig(
    settings({ listen: "127.0.0.1:25", greet_wait: "${stress?{2}:{6}}s" }),
  );
  assert.equal(config.greetWaitMs, 6000);
});

test("config rejects timers past 24 days", () => {
  const problems = problemsOf({
    listen: "127.0.0.1:25",
    greet_wait: "25d",
    dnsbl_health_check_interval: "4w",
  });
  assert.equal(problems.length, 2);
  assert.ok(problems.every((problem) => /must be at most 24d/.test(problem)));
  // Not a timer: a TTL may be long.
  const config = buildConfig(
    settings({ listen: "127.0.0.1:25", greet_ttl: "30d" }),
  );
  assert.equal(config.cache.greetTtlMs, 30 * 86_400_000);
});

test("config lists expanded parameters", () => {
  const config = buildConfig(
    settings({ listen: "127.0.0.1:25", myhostname: "mx.example.com" }),
  );
  assert.equal(config.parameters.greet_banner, "mx.example.com ESMTP Postfix");
  assert.equal(
    config.parameters.cache_map,
    "lmdb:/var/lib/postwarden/verdict_cache",
  );
});

test("listen marks PROXY listeners", () => {
  assert.deepEqual(parseListen("127.0.0.1:2525/haproxy [::1]:25"), [
    { host: "127.0.0.1", port: 2525, proxy: true },
    { host: "::1", port: 25, proxy: false },
  ]);
  const config = buildConfig(
    settings({
      listen: "127.0.0.1:25",
      postscreen_upstream_proxy_protocol: "haproxy",
    }),
  );
  assert.equal(config.listen[0]?.proxy, true);
  assert.equal(config.upstreamProxyTimeoutMs, 5000);
});
