import { test } from "node:test";
import assert from "node:assert/strict";
import {
  buildConfig,
  ConfigError,
  type Config,
} from "../../src/config/load.js";
import type { Setting } from "../../src/config/syntax.js";
import {
  changedParameters,
  keepRunningValues,
  Reloader,
  type LoadedConfig,
} from "../../src/reload.js";
import { Runtime } from "../../src/runtime.js";
import { NO_METRICS } from "../../src/metrics/metrics.js";
import type { Server } from "../../src/server.js";
import type { Logger } from "../../src/log/logger.js";
import type { AddressFamilies } from "../../src/postfix/postconf.js";

const silentLogger: Logger = {
  info: () => undefined,
  warning: () => undefined,
  error: () => undefined,
};

function configOf(entries: Record<string, string>): Config {
  const settings: Setting[] = Object.entries(entries).map(
    ([name, value], index) => ({
      name,
      value,
      origin: { file: "test.cf", line: index + 1 },
    }),
  );
  return buildConfig(settings);
}

const BASE = {
  listen: "127.0.0.1:2525",
  data_directory: "/var/lib/one",
  cache_map: "lmdb:/var/lib/one/cache",
};

test("changed parameters listed by name", () => {
  const running = configOf(BASE);
  const next = configOf({ ...BASE, greet_action: "drop", greet_wait: "2s" });
  assert.deepEqual(changedParameters(running, next).sort(), [
    "greet_action",
    "greet_wait",
  ]);
  assert.deepEqual(changedParameters(running, configOf(BASE)), []);
});

test("restart-only values kept", () => {
  const running = configOf(BASE);
  const next = configOf({
    listen: "127.0.0.1:25",
    data_directory: "/var/lib/two",
    cache_map: "lmdb:/var/lib/two/cache",
    cache_redis_timeout: "2s",
    cache_local_ttl: "5m",
    cache_retention_time: "3d",
    greet_action: "drop",
  });
  keepRunningValues(running, next);
  assert.deepEqual(next.listen, running.listen);
  assert.equal(next.dataDirectory, "/var/lib/one");
  assert.equal(next.parameters.listen, "127.0.0.1:2525");
  assert.equal(next.parameters.cache_map, "lmdb:/var/lib/one/cache");
  assert.equal(next.parameters.cache_redis_timeout, "50ms");
  assert.equal(next.cache.settings?.localPath, "/var/lib/one/cache.lmdb");
  assert.equal(next.cache.settings?.redisTimeoutMs, 50);
  assert.equal(next.cache.settings?.localTtlMs, 300_000);
  assert.equal(next.cache.settings?.retentionMs, 3 * 86_400_000);
  assert.equal(next.greetAction, "drop");
  assert.deepEqual(changedParameters(running, next).sort(), [
    "cache_local_ttl",
    "cache_retention_time",
    "greet_action",
  ]);
});

test("cache stays off until restart", () => {
  const running = configOf({ ...BASE, cache_map: "" });
  const next = configOf(BASE);
  keepRunningValues(running, next);
  assert.equal(next.cache.settings, undefined);
  assert.equal(next.parameters.cache_map, "");
});

/** Builds a Server stand-in that records the runtimes it receives. */
function fakeServer(config: Config): {
  server: Server;
  replaced: Runtime[];
} {
  const replaced: Runtime[] = [];
  const fake = {
    runtime: { config, families: { ipv4: true, ipv6: true } },
    sessionCount: 3,
    newRuntime: (next: Config, stress: Config, families: AddressFamilies) =>
      new Runtime(next, stress, families, silentLogger, NO_METRICS),
    replaceRuntime: (next: Runtime) => {
      replaced.push(next);
    },
  };
  return { server: fake as unknown as Server, replaced };
}

function recordingLogger(): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  return {
    lines,
    logger: {
      info: (message) => lines.push(message),
      warning: (message) => lines.push(`warning: ${message}`),
      error: (message) => lines.push(`error: ${message}`),
    },
  };
}

function loaded(config: Config): LoadedConfig {
  return {
    config,
    stressConfig: config,
    families: { ipv4: true, ipv6: true },
    warnings: [],
  };
}

test("reloader applies valid configuration", async () => {
  const { server, replaced } = fakeServer(configOf(BASE));
  const { logger, lines } = recordingLogger();
  const reloader = new Reloader(
    server,
    () => Promise.resolve(loaded(configOf({ ...BASE, greet_mode: "silent" }))),
    logger,
  );
  assert.equal(await reloader.reload(), true);
  assert.equal(replaced.length, 1);
  assert.equal(replaced[0]?.config.greetMode, "silent");
  assert.deepEqual(lines, [
    "reloading the configuration",
    "configuration reloaded: changed greet_mode; table files reread; " +
      "3 connections in progress finish under the previous configuration",
  ]);
});

test("reloader rejects invalid configuration", async () => {
  const { server, replaced } = fakeServer(configOf(BASE));
  const { logger, lines } = recordingLogger();
  const reloader = new Reloader(
    server,
    () =>
      Promise.reject(
        new ConfigError([
          "main.cf:3: greet_action: invalid value",
          "main.cf:4: bogus: unknown parameter",
        ]),
      ),
    logger,
  );
  assert.equal(await reloader.reload(), false);
  assert.equal(replaced.length, 0);
  assert.deepEqual(lines, [
    "reloading the configuration",
    "error: reload: invalid configuration: main.cf:3: greet_action: invalid value",
    "error: reload: invalid configuration: main.cf:4: bogus: unknown parameter",
    "error: reload failed; the running configuration stays in force",
  ]);
});

test("reloader keeps runtime when build fails", async () => {
  const { server, replaced } = fakeServer(configOf(BASE));
  const { logger, lines } = recordingLogger();
  const broken = configOf({ ...BASE, dnsbl_sites: "bl.example" });
  // Bypasses validation, so that the DNS resolver rejects the server.
  broken.dnsServers = ["not an address"];
  const reloader = new Reloader(
    server,
    () => Promise.resolve(loaded(broken)),
    logger,
  );
  assert.equal(await reloader.reload(), false);
  assert.equal(replaced.length, 0);
  assert.equal(lines.length, 3);
  assert.match(lines[1] ?? "", /^error: reload: .*not an address/);
  assert.equal(
    lines[2],
    "error: reload failed; the running configuration stays in force",
  );
});

test("reloader runs requests one at a time", async () => {
  const { server, replaced } = fakeServer(configOf(BASE));
  const { logger } = recordingLogger();
  let reads = 0;
  let concurrent = 0;
  let maxConcurrent = 0;
  const reloader = new Reloader(
    server,
    async () => {
      reads++;
      concurrent++;
      maxConcurrent = Math.max(maxConcurrent, concurrent);
      await new Promise((resolve) => setTimeout(resolve, 20));
      concurrent--;
      return loaded(configOf(BASE));
    },
    logger,
  );
  // Three requests during one reload queue exactly one more.
  reloader.request();
  reloader.request();
  reloader.request();
  reloader.request();
  await reloader.idle();
  assert.equal(reads, 2);
  assert.equal(maxConcurrent, 1);
  assert.equal(replaced.length, 2);
});
