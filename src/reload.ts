// Configuration reload on SIGHUP. The configuration file, the command-line
// overrides, Postfix's settings and every table file are read again, the
// same way as at startup. An invalid result is logged with its file and
// line, and the running configuration stays in force. A valid one becomes
// a new Runtime for new connections, while connections in progress finish
// under the configuration they started with. Settings bound to open
// sockets or files keep their running value until a restart, with a
// warning naming each one.
import { ConfigError, type Config } from "./config/load.js";
import type { Logger } from "./log/logger.js";
import type { AddressFamilies } from "./postfix/postconf.js";
import type { Server } from "./server.js";

/**
 * Parameters that take effect only at startup: the listening sockets, and
 * the verdict cache's store file and Redis connection.
 */
export const RESTART_PARAMETERS: readonly string[] = [
  "listen",
  "upstream_proxy_protocol",
  "data_directory",
  "cache_map",
  "cache_redis_timeout",
  "log_destination",
  "syslog_socket",
  "syslog_facility",
  "syslog_name",
  "metrics_listen",
  "greylist_mode",
  "greylist_min_delay",
  "greylist_expire",
  "greylist_pass_ttl",
  "greylist_ipv4_prefix_length",
  "greylist_suspicious_criteria",
  "greylist_dynamic_name_patterns",
  "trap_recipients",
  "trap_ttl",
  "policy_listen",
  "infrastructure_allowlist_domains",
  "infrastructure_allowlist_refresh",
  "infrastructure_allowlist_timeout",
  "user",
  "group",
  "supplementary_groups",
  "allow_root",
];

/** A configuration as read at startup or on reload. */
export interface LoadedConfig {
  config: Config;
  stressConfig: Config;
  families: AddressFamilies;
  /** Problems that do not stop startup, to log as warnings. */
  warnings: string[];
}

/** Names of the parameters whose values differ between `a` and `b`. */
export function changedParameters(a: Config, b: Config): string[] {
  const names = new Set([
    ...Object.keys(a.parameters),
    ...Object.keys(b.parameters),
  ]);
  return [...names].filter((name) => a.parameters[name] !== b.parameters[name]);
}

/**
 * Puts the running values of the restart-only parameters into `next`, so
 * that the new configuration describes the listeners and the cache store
 * that stay open.
 */
export function keepRunningValues(running: Config, next: Config): void {
  for (const name of RESTART_PARAMETERS) {
    const value = running.parameters[name];
    if (value === undefined) delete next.parameters[name];
    else next.parameters[name] = value;
  }
  next.listen = running.listen;
  next.dataDirectory = running.dataDirectory;
  next.log = running.log;
  next.metricsListen = running.metricsListen;
  next.greylist = running.greylist;
  next.infrastructureAllowlist = running.infrastructureAllowlist;
  next.privilege = running.privilege;
  const runningCache = running.cache.settings;
  const nextCache = next.cache.settings;
  if (runningCache === undefined || nextCache === undefined) {
    next.cache.settings = runningCache;
  } else {
    next.cache.settings = {
      ...nextCache,
      localPath: runningCache.localPath,
      mapName: runningCache.mapName,
      redisUrl: runningCache.redisUrl,
      redisTimeoutMs: runningCache.redisTimeoutMs,
    };
  }
}

/**
 * Runs reloads one at a time. A request during a reload runs one more
 * reload after it, so the last edit before the last signal is always read.
 */
export class Reloader {
  private running: Promise<void> | undefined;
  private requestedAgain = false;

  constructor(
    private readonly server: Server,
    private readonly readConfig: () => Promise<LoadedConfig>,
    private readonly logger: Logger,
  ) {}

  /** Starts a reload, or queues one if a reload is in progress. */
  request(): void {
    if (this.running !== undefined) {
      this.requestedAgain = true;
      return;
    }
    this.running = this.runRequested().finally(() => {
      this.running = undefined;
    });
  }

  /** Completes when no reload is running or queued. */
  async idle(): Promise<void> {
    await this.running;
  }

  private async runRequested(): Promise<void> {
    do {
      this.requestedAgain = false;
      await this.reload();
    } while (this.requestedAgain);
  }

  /** Reads the configuration and applies it. Returns true on success. */
  async reload(): Promise<boolean> {
    this.logger.info("reloading the configuration");
    try {
      this.apply(await this.readConfig());
      return true;
    } catch (error) {
      if (error instanceof ConfigError) {
        for (const problem of error.problems) {
          this.logger.error(`reload: invalid configuration: ${problem}`);
        }
      } else {
        const message = error instanceof Error ? error.message : String(error);
        this.logger.error(`reload: ${message}`);
      }
      this.logger.error(
        "reload failed; the running configuration stays in force",
      );
      return false;
    }
  }

  /**
   * Makes `loaded` the configuration for new connections. It throws before
   * changing anything when the new Runtime cannot be built.
   */
  private apply(loaded: LoadedConfig): void {
    for (const warning of loaded.warnings) this.logger.warning(warning);

    const running = this.server.runtime.config;
    const { config, stressConfig, families } = loaded;
    for (const name of changedParameters(running, config)) {
      if (!RESTART_PARAMETERS.includes(name)) continue;
      this.logger.warning(
        `reload: ${name} changed to "${config.parameters[name] ?? ""}", ` +
          `which takes effect only after a restart; still using ` +
          `"${running.parameters[name] ?? ""}"`,
      );
    }
    keepRunningValues(running, config);
    keepRunningValues(running, stressConfig);
    const changed = changedParameters(running, config);
    const runningFamilies = this.server.runtime.families;
    if (
      families.ipv4 !== runningFamilies.ipv4 ||
      families.ipv6 !== runningFamilies.ipv6
    ) {
      changed.push("Postfix's inet_protocols");
    }

    const next = this.server.newRuntime(config, stressConfig, families);
    const inProgress = this.server.sessionCount;
    this.server.replaceRuntime(next);
    this.logger.info(
      "configuration reloaded: " +
        (changed.length > 0
          ? `changed ${changed.join(", ")}`
          : "no parameter changed") +
        `; table files reread; ${inProgress} connections in progress ` +
        "finish under the previous configuration",
    );
  }
}
