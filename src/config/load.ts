// Builds the typed configuration from defaults, a main.cf-style file and
// command-line overrides, and validates every value. Any unknown name or
// invalid value stops startup with the file, line, name and reason.
import { readFileSync } from "node:fs";
import { createSecureContext, type SecureContext } from "node:tls";
import { isIP } from "node:net";
import { join } from "node:path";
import {
  expandValue,
  formatOrigin,
  parseMainCf,
  type Origin,
  type Setting,
} from "./syntax.js";
import {
  PARAMETERS,
  resolveParameter,
  type ParameterSpec,
} from "./parameters.js";
import { parseTime } from "./time.js";
import { facilityCode } from "../log/syslog-format.js";
import type { CacheSettings } from "../cache/verdict-cache.js";
import { AccessList, InterfaceList } from "../access/access-list.js";
import { parseNetworkList } from "../access/network.js";
import type { InfrastructureAllowlistConfig } from "../access/infrastructure-allowlist.js";
import { parsePassClasses, type PassClasses } from "../handoff/classes.js";
import { parseSites } from "../dnsbl/sites.js";
import { loadReplyMap } from "../dnsbl/reply-map.js";
import {
  parseCriteria,
  parsePatterns,
  parsePolicyListen,
  TrapList,
  type GreylistConfig,
  type GreylistMode,
} from "../greylist/settings.js";
import {
  buildLists,
  parseErrorAnswers,
  type DnsblList,
} from "../dnsbl/lists.js";

export interface ListenAddress {
  host: string;
  port: number;
  /** Connections start with a PROXY protocol header ("/haproxy"). */
  proxy: boolean;
}

export type GreetAction = "ignore" | "enforce" | "drop";
export type TestAction = "ignore" | "enforce" | "drop";

export interface DeepTestConfig {
  enabled: boolean;
  action: TestAction;
  ttlMs: number;
}

/** Settings of the dummy SMTP engine and its deep tests. */
export interface EngineConfig {
  pipelining: DeepTestConfig;
  nonSmtp: DeepTestConfig;
  bareNewline: DeepTestConfig;
  /** Upper-case command words treated as non-SMTP. */
  forbiddenCommands: string[];
  commandCountLimit: number;
  commandTimeLimitMs: number;
  lineLengthLimit: number;
  heloRequired: boolean;
  disableVrfy: boolean;
  /** Upper-case EHLO keywords not announced. */
  discardEhloKeywords: string[];
  /** Turns 5xx replies into 4xx. */
  softBounce: boolean;
  /** Lines appended to 4xx and 5xx replies; "\n" separates lines. */
  rejectFooter: string;
  /** Certificate and key for STARTTLS; undefined when not configured. */
  tls: SecureContext | undefined;
  tarpit: TarpitConfig;
}

/** Tarpit settings: replies sent slowly, as OpenBSD spamd does. */
export interface TarpitConfig {
  /** Outcomes that are tarpitted: "dnsbl_drop", "denylist_drop". */
  outcomes: string[];
  delayMs: number;
  connectionLimit: number;
  timeLimitMs: number;
}

export interface DnsblConfig {
  /** One entry per query domain; empty when no lists are configured. */
  lists: DnsblList[];
  threshold: number;
  /** Negative to enable; 0 means off. */
  allowlistThreshold: number;
  action: TestAction;
  timeoutMs: number;
  minTtlSeconds: number;
  maxTtlSeconds: number;
  healthCheckIntervalMs: number;
}

/** Load limits; 0 turns a per-client limit off. */
export interface LimitsConfig {
  preQueueLimit: number;
  postQueueLimit: number;
  clientConnectionCountLimit: number;
  clientConnectionRateLimit: number;
  clientConnectionRateTimeUnitMs: number;
  /** Event-loop delay that is logged as a stall. */
  stallWarningMs: number;
}

export interface LogConfig {
  destination: "syslog" | "stderr" | "json";
  syslogSocket: string;
  /** Facility code, such as 2 for mail. */
  syslogFacility: number;
  /** Program name in every line and record, such as postfix/postwarden. */
  syslogName: string;
}

export interface CacheConfig {
  /** Undefined when cache_map is empty: no cache at all. */
  settings: CacheSettings | undefined;
  greetTtlMs: number;
  /** 0 means never. */
  cleanupIntervalMs: number;
}

/** The account the daemon switches to after binding its listeners. */
export interface PrivilegeConfig {
  /** User name or numeric uid. */
  user: string;
  /** Group name or numeric gid; empty means the user's primary group. */
  group: string;
  /** Groups added to those the group database lists for the user. */
  supplementaryGroups: string[];
  /** Allows running as root, when `user` is root. */
  allowRoot: boolean;
}

export interface Config {
  listen: ListenAddress[];
  myhostname: string;
  /** The greeting text after "220 " when postwarden completes a greeting. */
  smtpdBanner: string;
  /** The teaser text; empty turns the pregreet test off in teaser mode. */
  greetBanner: string;
  greetMode: "teaser" | "silent" | "stutter";
  greetWaitMs: number;
  greetStutterDelayMs: number;
  greetAction: GreetAction;
  dnsbl: DnsblConfig;
  /** Resolver addresses ("addr", "addr:port", "[v6]:port"); empty = system. */
  dnsServers: string[];
  accessList: AccessList;
  infrastructureAllowlist: InfrastructureAllowlistConfig;
  denylistAction: TestAction;
  allowlistInterfaces: InterfaceList;
  /** ALLOWLISTED/DENYLISTED (yes) or WHITELISTED/BLACKLISTED (no). */
  respectfulLogging: boolean;
  log: LogConfig;
  dataDirectory: string;
  cache: CacheConfig;
  clientIpv6PrefixLength: number;
  greylist: GreylistConfig;
  engine: EngineConfig;
  limits: LimitsConfig;
  /** Time a load balancer has to send its PROXY header. */
  upstreamProxyTimeoutMs: number;
  /** Address of the Prometheus endpoint; undefined turns metrics off. */
  metricsListen: ListenAddress | undefined;
  /** True in the configuration used under stress (${stress} is "yes"). */
  stress: boolean;
  /** Remarks for the startup log about how settings were read. */
  notes: string[];
  /** Every parameter's value after $name expansion, for `check`. */
  parameters: Record<string, string>;
  privilege: PrivilegeConfig;
  queueDirectory: string;
  /** Path of smtpd's pass socket. */
  smtpdPassSocket: string;
  /** Name of the pass service in log lines, such as "private/smtpd". */
  smtpdServiceLabel: string;
  /** Pass services for hand-off classes; an absent class uses the default. */
  passClasses: PassClasses;
  postfixConfigDirectory: string;
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(problems.join("\n"));
  }
}

/** Reads the file and builds the configuration; see buildConfig. */
export function loadConfig(
  file: string,
  overrides: Setting[] = [],
  options: {
    missingFileIsEmpty?: boolean;
    requireListen?: boolean;
    /** Settings that come before the file's, such as Postfix's values. */
    baseSettings?: Setting[];
    /** Builds the configuration used under stress. */
    stress?: boolean;
  } = {},
): Config {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT" && options.missingFileIsEmpty === true) {
      text = "";
    } else {
      throw new ConfigError([
        `cannot read configuration file ${file}: ${(error as Error).message}`,
      ]);
    }
  }
  let settings: Setting[];
  try {
    settings = parseMainCf(text, file);
  } catch (error) {
    throw new ConfigError([(error as Error).message]);
  }
  return buildConfig(
    [...(options.baseSettings ?? []), ...settings, ...overrides],
    options,
  );
}

interface RawValue {
  value: string;
  origin: Origin;
  writtenName: string;
}

/** Builds and validates the configuration from settings in order. */
export function buildConfig(
  settings: Setting[],
  options: { requireListen?: boolean; stress?: boolean } = {},
): Config {
  const problems: string[] = [];
  const raw = new Map<string, RawValue>();

  for (const setting of settings) {
    const resolution = resolveParameter(setting.name);
    if (resolution.spec === undefined) {
      problems.push(
        `${formatOrigin(setting.origin)}: ${setting.name}: ${resolution.error}`,
      );
      continue;
    }
    raw.set(resolution.spec.name, {
      value: setting.value,
      origin: setting.origin,
      writtenName: setting.name,
    });
  }

  const defaults = new Map(
    PARAMETERS.map((spec) => [
      spec.name,
      typeof spec.default === "function" ? spec.default() : spec.default,
    ]),
  );
  const unknownNames = new Set<string>();
  const lookup = (name: string): string | undefined => {
    // "stress" is postscreen's load flag: "yes" under stress, else empty.
    if (name === "stress") return options.stress === true ? "yes" : "";
    if (!defaults.has(name)) unknownNames.add(name);
    return raw.get(name)?.value ?? defaults.get(name);
  };

  const values = new Map<string, string>();
  const describe = (spec: ParameterSpec): string => {
    const given = raw.get(spec.name);
    const where = given ? formatOrigin(given.origin) : "default value";
    return `${where}: ${given?.writtenName ?? spec.name}`;
  };
  for (const spec of PARAMETERS) {
    unknownNames.clear();
    try {
      values.set(spec.name, expandValue(lookup(spec.name) ?? "", lookup));
    } catch (error) {
      problems.push(`${describe(spec)}: ${(error as Error).message}`);
    }
    for (const name of unknownNames) {
      problems.push(
        `${describe(spec)}: unknown parameter $${name} in the value`,
      );
    }
  }

  const get = (name: string): string => values.get(name) ?? "";
  const spec = (name: string): ParameterSpec => {
    const found = PARAMETERS.find((candidate) => candidate.name === name);
    if (found === undefined) throw new Error(`no parameter ${name}`);
    return found;
  };
  const check = <T>(name: string, convert: (value: string) => T): T => {
    try {
      return convert(get(name));
    } catch (error) {
      problems.push(`${describe(spec(name))}: ${(error as Error).message}`);
      return undefined as T;
    }
  };

  const deepTest = (prefix: string): DeepTestConfig => ({
    enabled: check(`${prefix}_enable`, parseBoolean),
    action: check(`${prefix}_action`, (value) =>
      checkChoice(spec(`${prefix}_action`), value),
    ) as TestAction,
    ttlMs: check(`${prefix}_ttl`, (value) =>
      checkTime(spec(`${prefix}_ttl`), value),
    ),
  });

  const config: Config = {
    listen: check("listen", (value) => {
      const addresses =
        value.trim() === "" && options.requireListen === false
          ? []
          : parseListen(value);
      // postscreen's global switch marks every listener.
      if (get("upstream_proxy_protocol") === "haproxy") {
        for (const address of addresses) address.proxy = true;
      }
      return addresses;
    }),
    myhostname: get("myhostname"),
    smtpdBanner: get("smtpd_banner"),
    greetBanner: get("greet_banner"),
    greetMode: check("greet_mode", (value) =>
      checkChoice(spec("greet_mode"), value),
    ) as Config["greetMode"],
    greetWaitMs: check("greet_wait", (value) =>
      checkTime(spec("greet_wait"), value),
    ),
    greetStutterDelayMs: check("greet_stutter_delay", (value) =>
      checkTime(spec("greet_stutter_delay"), value),
    ),
    greetAction: check("greet_action", (value) =>
      checkChoice(spec("greet_action"), value),
    ) as GreetAction,
    dnsbl: {
      lists: [],
      threshold: check("dnsbl_threshold", (value) =>
        checkInteger(spec("dnsbl_threshold"), value),
      ),
      allowlistThreshold: check("dnsbl_allowlist_threshold", (value) =>
        checkInteger(spec("dnsbl_allowlist_threshold"), value),
      ),
      action: check("dnsbl_action", (value) =>
        checkChoice(spec("dnsbl_action"), value),
      ) as TestAction,
      timeoutMs: check("dnsbl_timeout", (value) =>
        checkTime(spec("dnsbl_timeout"), value),
      ),
      minTtlSeconds:
        check("dnsbl_min_ttl", (value) =>
          checkTime(spec("dnsbl_min_ttl"), value),
        ) / 1000,
      maxTtlSeconds:
        check("dnsbl_max_ttl", (value) =>
          checkTime(spec("dnsbl_max_ttl"), value),
        ) / 1000,
      healthCheckIntervalMs: check("dnsbl_health_check_interval", (value) =>
        checkTime(spec("dnsbl_health_check_interval"), value),
      ),
    },
    dnsServers: check("dns_servers", parseDnsServers),
    accessList: check("access_list", (value) =>
      AccessList.parse(splitList(value), parseNetworkList(get("mynetworks"))),
    ),
    infrastructureAllowlist: {
      domains: check("infrastructure_allowlist_domains", parseDomainList),
      refreshIntervalMs: check("infrastructure_allowlist_refresh", (value) =>
        checkTime(spec("infrastructure_allowlist_refresh"), value),
      ),
      timeoutMs: check("infrastructure_allowlist_timeout", (value) =>
        checkTime(spec("infrastructure_allowlist_timeout"), value),
      ),
    },
    denylistAction: check("denylist_action", (value) =>
      checkChoice(spec("denylist_action"), value),
    ) as TestAction,
    allowlistInterfaces: check("allowlist_interfaces", (value) =>
      InterfaceList.parse(splitList(value)),
    ),
    respectfulLogging: check("respectful_logging", parseBoolean),
    log: {
      destination: check("log_destination", (value) =>
        checkChoice(spec("log_destination"), value),
      ) as LogConfig["destination"],
      syslogSocket: check("syslog_socket", requireAbsolute),
      syslogFacility: check("syslog_facility", facilityCode),
      syslogName: check("syslog_name", checkProgramName),
    },
    dataDirectory: check("data_directory", requireAbsolute),
    cache: {
      settings: undefined,
      greetTtlMs: check("greet_ttl", (value) =>
        checkTime(spec("greet_ttl"), value),
      ),
      cleanupIntervalMs: check("cache_cleanup_interval", (value) =>
        checkTime(spec("cache_cleanup_interval"), value),
      ),
    },
    clientIpv6PrefixLength: check("client_ipv6_prefix_length", (value) =>
      checkInteger(spec("client_ipv6_prefix_length"), value),
    ),
    greylist: {
      mode: check("greylist_mode", (value) =>
        checkChoice(spec("greylist_mode"), value),
      ) as GreylistMode,
      minDelayMs: check("greylist_min_delay", (value) =>
        checkTime(spec("greylist_min_delay"), value),
      ),
      expireMs: check("greylist_expire", (value) =>
        checkTime(spec("greylist_expire"), value),
      ),
      passTtlMs: check("greylist_pass_ttl", (value) =>
        checkTime(spec("greylist_pass_ttl"), value),
      ),
      ipv4PrefixLength: check("greylist_ipv4_prefix_length", (value) =>
        checkInteger(spec("greylist_ipv4_prefix_length"), value),
      ),
      criteria: check("greylist_suspicious_criteria", (value) =>
        parseCriteria(splitList(value)),
      ),
      dynamicNamePatterns: check(
        "greylist_dynamic_name_patterns",
        parsePatterns,
      ),
      traps: check("trap_recipients", (value) =>
        TrapList.parse(splitList(value)),
      ),
      trapTtlMs: check("trap_ttl", (value) =>
        checkTime(spec("trap_ttl"), value),
      ),
      policyListen: check("policy_listen", parsePolicyListen),
    },
    engine: {
      pipelining: deepTest("pipelining"),
      nonSmtp: deepTest("non_smtp_command"),
      bareNewline: deepTest("bare_newline"),
      forbiddenCommands: splitList(get("forbidden_commands")).map((word) =>
        word.toUpperCase(),
      ),
      commandCountLimit: check("command_count_limit", (value) =>
        checkInteger(spec("command_count_limit"), value),
      ),
      commandTimeLimitMs: check("command_time_limit", (value) =>
        checkTime(spec("command_time_limit"), value),
      ),
      lineLengthLimit: check("line_length_limit", (value) =>
        checkInteger(spec("line_length_limit"), value),
      ),
      heloRequired: check("helo_required", parseBoolean),
      disableVrfy: check("disable_vrfy_command", parseBoolean),
      discardEhloKeywords: splitList(get("discard_ehlo_keywords")).map((word) =>
        word.toUpperCase(),
      ),
      softBounce: check("soft_bounce", parseBoolean),
      rejectFooter: get("reject_footer"),
      tls: undefined,
      tarpit: {
        outcomes: check("tarpit_outcomes", (value) => {
          const outcomes = splitList(value);
          for (const outcome of outcomes) {
            if (outcome !== "dnsbl_drop" && outcome !== "denylist_drop") {
              throw new Error(
                `invalid outcome "${outcome}": expected dnsbl_drop or denylist_drop`,
              );
            }
          }
          return outcomes;
        }),
        delayMs: check("tarpit_delay", (value) =>
          checkTime(spec("tarpit_delay"), value),
        ),
        connectionLimit: check("tarpit_connection_limit", (value) =>
          checkInteger(spec("tarpit_connection_limit"), value),
        ),
        timeLimitMs: check("tarpit_time_limit", (value) =>
          checkTime(spec("tarpit_time_limit"), value),
        ),
      },
    },
    limits: {
      preQueueLimit: check("pre_queue_limit", (value) =>
        checkInteger(spec("pre_queue_limit"), value),
      ),
      postQueueLimit: check("post_queue_limit", (value) =>
        checkInteger(spec("post_queue_limit"), value),
      ),
      clientConnectionCountLimit: check(
        "client_connection_count_limit",
        (value) => checkInteger(spec("client_connection_count_limit"), value),
      ),
      clientConnectionRateLimit: check(
        "client_connection_rate_limit",
        (value) => checkInteger(spec("client_connection_rate_limit"), value),
      ),
      stallWarningMs: check("event_loop_stall_warning", (value) =>
        checkTime(spec("event_loop_stall_warning"), value),
      ),
      clientConnectionRateTimeUnitMs: check(
        "client_connection_rate_time_unit",
        (value) => checkTime(spec("client_connection_rate_time_unit"), value),
      ),
    },
    upstreamProxyTimeoutMs: check("upstream_proxy_timeout", (value) =>
      checkTime(spec("upstream_proxy_timeout"), value),
    ),
    metricsListen: check("metrics_listen", parseMetricsListen),
    stress: options.stress === true,
    notes: [],
    parameters: Object.fromEntries(values),
    privilege: {
      user: check("user", checkAccountName),
      group: get("group") === "" ? "" : check("group", checkAccountName),
      supplementaryGroups: check("supplementary_groups", (value) =>
        splitList(value).map(checkAccountName),
      ),
      allowRoot: check("allow_root", parseBoolean),
    },
    queueDirectory: check("queue_directory", requireAbsolute),
    smtpdPassSocket: "",
    smtpdServiceLabel: "",
    passClasses: {},
    postfixConfigDirectory: check("postfix_config_directory", requireAbsolute),
  };

  const passSocket = get("smtpd_pass_socket");
  if (passSocket !== "") {
    config.smtpdPassSocket = check("smtpd_pass_socket", requireAbsolute);
    config.smtpdServiceLabel = passSocket;
  } else {
    const service = check("smtpd_service_name", (value) => {
      if (!/^[A-Za-z0-9_.-]+$/.test(value)) {
        throw new Error(`invalid service name "${value}"`);
      }
      return value;
    });
    config.smtpdServiceLabel = `private/${service}`;
    config.smtpdPassSocket = join(
      config.queueDirectory ?? "",
      "private",
      service,
    );
  }

  config.passClasses = check("smtpd_pass_classes", (value) =>
    parsePassClasses(value, config.queueDirectory ?? ""),
  );
  check("mynetworks", parseNetworkList);
  const certFile = get("tls_cert_file");
  const keyFile = get("tls_key_file");
  if ((certFile === "") !== (keyFile === "")) {
    problems.push(
      `${describe(spec(certFile === "" ? "tls_cert_file" : "tls_key_file"))}: ` +
        "missing value: set both tls_cert_file and tls_key_file, or neither",
    );
  } else if (certFile !== "") {
    check("tls_cert_file", () => {
      try {
        config.engine.tls = createSecureContext({
          cert: readFileSync(certFile),
          key: readFileSync(keyFile),
        });
      } catch (error) {
        throw new Error(
          `cannot load ${certFile} and ${keyFile}: ${(error as Error).message}`,
          { cause: error },
        );
      }
    });
  }
  const cacheTimes = {
    localTtlMs: check("cache_local_ttl", (value) =>
      checkTime(spec("cache_local_ttl"), value),
    ),
    redisTimeoutMs: check("cache_redis_timeout", (value) =>
      checkTime(spec("cache_redis_timeout"), value),
    ),
    retentionMs: check("cache_retention_time", (value) =>
      checkTime(spec("cache_retention_time"), value),
    ),
  };
  check("cache_map", (value) => {
    const map = parseCacheMap(value, config.dataDirectory ?? "");
    if (map === undefined) return;
    config.cache.settings = {
      ...map,
      keyPrefix: get("cache_key_prefix"),
      ...cacheTimes,
    };
    if (map.note !== undefined) config.notes.push(map.note);
  });
  const sites = check("dnsbl_sites", (value) => parseSites(splitList(value)));
  const replyMap = check("dnsbl_reply_map", loadReplyMap);
  const errorRules = check("dnsbl_error_answers", (value) =>
    parseErrorAnswers(splitList(value)),
  );
  if (
    sites !== undefined &&
    replyMap !== undefined &&
    errorRules !== undefined
  ) {
    config.dnsbl.lists = buildLists(sites, replyMap, errorRules);
  }
  const { minDelayMs, expireMs } = config.greylist;
  if (minDelayMs >= expireMs) {
    problems.push(
      `${describe(spec("greylist_min_delay"))}: must be shorter than ` +
        "greylist_expire, or no retry could ever pass",
    );
  }
  const { minTtlSeconds, maxTtlSeconds } = config.dnsbl;
  if (minTtlSeconds > maxTtlSeconds) {
    problems.push(
      `${describe(spec("dnsbl_min_ttl"))}: must not exceed dnsbl_max_ttl`,
    );
  }

  if (problems.length > 0) throw new ConfigError(problems);
  return config;
}

function checkChoice(spec: ParameterSpec, value: string): string {
  if (spec.kind !== "choice") throw new Error(`${spec.name} is not a choice`);
  const reason = spec.unsupported?.[value];
  if (reason !== undefined) throw new Error(reason);
  if (!spec.choices.includes(value)) {
    throw new Error(
      `invalid value "${value}": expected one of ${spec.choices.join(", ")}`,
    );
  }
  return value;
}

/**
 * Parses cache_map: "lmdb:/path" (the file is /path.lmdb), postscreen's
 * "btree:/path" or "hash:/path" (kept in LMDB format at /path.lmdb, with a
 * note), a "proxy:" prefix (ignored), or "redis://..." / "rediss://..."
 * for a cache shared through Redis, with the local store in data_directory.
 * An empty value turns the cache off.
 */
export function parseCacheMap(
  value: string,
  dataDirectory: string,
):
  | {
      localPath: string;
      mapName: string;
      redisUrl: string | undefined;
      note: string | undefined;
    }
  | undefined {
  const text = value.trim().replace(/^proxy:/, "");
  if (text === "") return undefined;
  if (/^rediss?:\/\//.test(text)) {
    const localPath = join(dataDirectory, "verdict_cache.lmdb");
    return {
      localPath,
      mapName: `lmdb:${localPath} + ${text.replace(/\/\/[^@/]*@/, "//***@")}`,
      redisUrl: text,
      note: undefined,
    };
  }
  const match = /^(lmdb|btree|hash):(\/.+)$/.exec(text);
  if (match === null) {
    throw new Error(
      `unsupported cache map "${value}": use lmdb:/path, or ` +
        "redis://host:port/db to share the cache between MX hosts",
    );
  }
  const type = match[1] ?? "";
  const path = match[2] ?? "";
  const localPath = `${path}.lmdb`;
  const note =
    type === "lmdb"
      ? undefined
      : `cache_map ${type}:${path} is kept in LMDB format in ${localPath}`;
  return { localPath, mapName: `lmdb:${path}`, redisUrl: undefined, note };
}

function checkInteger(spec: ParameterSpec, value: string): number {
  if (spec.kind !== "integer")
    throw new Error(`${spec.name} is not an integer`);
  if (!/^[+-]?\d+$/.test(value.trim())) {
    throw new Error(`invalid value "${value}": expected a whole number`);
  }
  const number = Number(value);
  if (spec.min !== undefined && number < spec.min) {
    throw new Error(`invalid value "${value}": must be at least ${spec.min}`);
  }
  if (spec.max !== undefined && number > spec.max) {
    throw new Error(`invalid value "${value}": must be at most ${spec.max}`);
  }
  return number;
}

function parseBoolean(value: string): boolean {
  const lower = value.trim().toLowerCase();
  if (lower === "yes" || lower === "true") return true;
  if (lower === "no" || lower === "false") return false;
  throw new Error(`invalid value "${value}": expected yes or no`);
}

/**
 * Parses infrastructure_allowlist_domains: mail domains, lower-cased and
 * without a final dot. Throws an Error naming the first invalid domain.
 */
export function parseDomainList(value: string): string[] {
  const domains = splitList(value).map((item) => {
    const domain = item.toLowerCase().replace(/\.$/, "");
    const labels = domain.split(".");
    const valid =
      domain.length <= 253 &&
      labels.length >= 2 &&
      labels.every((label) =>
        /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/.test(label),
      );
    if (!valid) {
      throw new Error(
        `invalid domain "${item}": expected a mail domain such as ` +
          '"example.com"',
      );
    }
    return domain;
  });
  return [...new Set(domains)];
}

/** Parses dns_servers: "addr", "addr:port", "[v6addr]" or "[v6addr]:port". */
export function parseDnsServers(value: string): string[] {
  return splitList(value).map((item) => {
    const match = /^(?:\[([^\]]+)\]|([^:[\]]+))(?::(\d+))?$/.exec(item);
    const plainV6 = isIP(item) === 6 ? item : undefined;
    const host = plainV6 ?? match?.[1] ?? match?.[2];
    const port = plainV6 === undefined ? match?.[3] : undefined;
    if (
      host === undefined ||
      isIP(host) === 0 ||
      (port !== undefined && (Number(port) < 1 || Number(port) > 65535))
    ) {
      throw new Error(
        `invalid DNS server "${item}": use a numeric address with an ` +
          'optional port, such as "127.0.0.1:5353" or "[::1]:53"',
      );
    }
    const bracketed = isIP(host) === 6 ? `[${host}]` : host;
    return port === undefined ? host : `${bracketed}:${port}`;
  });
}

function checkTime(spec: ParameterSpec, value: string): number {
  if (spec.kind !== "time") throw new Error(`${spec.name} is not a time`);
  const ms = parseTime(value, spec.unit);
  if (spec.maxSeconds !== undefined && ms > spec.maxSeconds * 1000) {
    throw new Error(
      `invalid value "${value}": must be at most ${spec.maxSeconds / 86400}d`,
    );
  }
  if (ms < spec.minSeconds * 1000) {
    throw new Error(
      `invalid value "${value}": must be at least ${spec.minSeconds}s`,
    );
  }
  return ms;
}

/**
 * Checks a user or group name, or a numeric id. Names use the POSIX
 * portable characters (letters, digits, ".", "_", "-"), do not start with
 * "-" or a digit, and may end in "$" as Samba machine accounts do.
 */
function checkAccountName(value: string): string {
  const name = value.trim();
  if (!/^(?:[A-Za-z_][A-Za-z0-9_.-]*\$?|\d+)$/.test(name)) {
    throw new Error(
      `invalid user or group "${value}": expected a name such as ` +
        '"postwarden" or a numeric id',
    );
  }
  return name;
}

function requireAbsolute(value: string): string {
  if (!value.startsWith("/")) {
    throw new Error(`invalid path "${value}": must be absolute`);
  }
  return value;
}

/**
 * Checks a syslog program name: log parsers read it as the text before
 * "[pid]: ", so it may not be empty or contain white space, "[", "]" or ":".
 */
function checkProgramName(value: string): string {
  if (!/^[^\s[\]:]+$/.test(value)) {
    throw new Error(
      `invalid program name "${value}": expected a non-empty name without ` +
        'white space, "[", "]" or ":", such as postfix/postwarden',
    );
  }
  return value;
}

/** Splits a Postfix list value: items separated by commas or white space. */
export function splitList(value: string): string[] {
  return value.split(/[\s,]+/).filter((item) => item !== "");
}

/**
 * Parses metrics_listen: empty (metrics off) or one "addr:port" or
 * "[v6addr]:port"; port 0 picks a free port.
 */
export function parseMetricsListen(value: string): ListenAddress | undefined {
  const items = splitList(value);
  if (items.length === 0) return undefined;
  const [address] = parseListen(value);
  if (items.length > 1 || address === undefined || address.proxy) {
    throw new Error(
      `invalid value "${value}": expected one address and port, such as ` +
        '"127.0.0.1:9425" or "[::1]:9425"',
    );
  }
  return address;
}

/**
 * Parses listen addresses: "addr:port" for IPv4 and "[addr]:port" for
 * IPv6; port 0 picks a free port. Host names are rejected, because resolving them would make startup
 * depend on DNS.
 */
export function parseListen(value: string): ListenAddress[] {
  const items = splitList(value);
  if (items.length === 0) {
    throw new Error(
      'missing value: set at least one address, such as "listen = 0.0.0.0:25"',
    );
  }
  return items.map((written) => {
    const proxy = written.endsWith("/haproxy");
    const item = proxy ? written.slice(0, -"/haproxy".length) : written;
    const match = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d+)$/.exec(item);
    const host = match?.[1] ?? match?.[2];
    const version = host === undefined ? 0 : isIP(host);
    const bracketed = match?.[1] !== undefined;
    if (
      match === null ||
      host === undefined ||
      version === 0 ||
      (version === 6) !== bracketed
    ) {
      throw new Error(
        `invalid listen address "${item}": use a numeric address and port, ` +
          'such as "192.0.2.25:25" or "[2001:db8::25]:25"',
      );
    }
    const port = Number(match[3]);
    if (port > 65535) {
      throw new Error(`invalid port in listen address "${item}"`);
    }
    return { host, port, proxy };
  });
}
