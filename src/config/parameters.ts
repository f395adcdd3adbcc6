// The parameters postwarden reads, with their defaults and value types.
// Names follow postscreen's where the meaning is the same; those marked
// `postscreen` are also accepted with the postscreen_ prefix, so settings
// copied from a main.cf keep working. Defaults mirror Postfix 3.7.
import { hostname } from "node:os";
import type { TimeUnit } from "./time.js";

interface Common {
  name: string;
  /** Also accepted as postscreen_<name>. */
  postscreen?: boolean;
  /** Other accepted names, such as postscreen's names before 3.6. */
  aliases?: readonly string[];
}

export type ParameterSpec = Common &
  (
    | {
        kind: "string" | "list" | "boolean";
        default: string | (() => string);
      }
    | {
        kind: "integer";
        default: string;
        min?: number;
        max?: number;
      }
    | {
        kind: "time";
        default: string;
        unit: TimeUnit;
        minSeconds: number;
        /** Upper bound for values used as timer delays. */
        maxSeconds?: number;
      }
    | {
        kind: "choice";
        default: string;
        choices: readonly string[];
        /** Values that are known but rejected for now, with the reason. */
        unsupported?: Readonly<Record<string, string>>;
      }
  );

/**
 * Postfix's myhostname default: the host name from gethostname(), with
 * ".localdomain" (the default mydomain) appended when it has no dot. No DNS
 * lookup is made.
 */
export function defaultHostname(): string {
  const name = hostname();
  return name.includes(".") ? name : `${name}.localdomain`;
}

/**
 * Longest timer delay, 24 days: Node's timers take at most 2^31-1 ms and
 * fire at once for longer delays.
 */
const MAX_TIMER_SECONDS = 24 * 86400;

/**
 * Reverse names that look like dynamic or residential addresses: names
 * that embed the address (four numbers), and labels such as "dyn",
 * "dhcp", "ppp", "pool" or "dsl" followed by a digit, dot, dash or the end.
 * Separated by white space; each is a case-insensitive JavaScript regular
 * expression, with "$$" for a literal "$" as in every main.cf value.
 */
const DEFAULT_DYNAMIC_NAME_PATTERNS =
  "[0-9]+[.-][0-9]+[.-][0-9]+[.-][0-9]+ " +
  "(^|[.-])(dyn|dynamic|dhcp|dialup|dial-up|ppp|pool|cable|dsl|adsl|" +
  "xdsl|cpe|broadband|customer|resnet)([0-9.-]|$$)";

export const PARAMETERS: readonly ParameterSpec[] = [
  { name: "listen", kind: "list", default: "" },
  { name: "myhostname", kind: "string", default: defaultHostname },
  { name: "mail_name", kind: "string", default: "Postfix" },
  {
    name: "smtpd_banner",
    kind: "string",
    default: "$myhostname ESMTP $mail_name",
  },
  {
    name: "greet_banner",
    kind: "string",
    default: "$smtpd_banner",
    postscreen: true,
  },
  {
    name: "greet_mode",
    kind: "choice",
    default: "teaser",
    choices: ["teaser", "silent", "stutter"],
  },
  {
    name: "greet_stutter_delay",
    kind: "time",
    default: "1s",
    unit: "s",
    minSeconds: 0,
    maxSeconds: MAX_TIMER_SECONDS,
  },
  {
    name: "greet_wait",
    kind: "time",
    default: "${stress?{2}:{6}}s",
    unit: "s",
    minSeconds: 1,
    maxSeconds: MAX_TIMER_SECONDS,
    postscreen: true,
  },
  {
    name: "greet_action",
    kind: "choice",
    default: "ignore",
    choices: ["ignore", "enforce", "drop"],
    postscreen: true,
  },
  { name: "dnsbl_sites", kind: "list", default: "", postscreen: true },
  {
    name: "dnsbl_threshold",
    kind: "integer",
    default: "1",
    min: 1,
    postscreen: true,
  },
  {
    name: "dnsbl_allowlist_threshold",
    kind: "integer",
    default: "0",
    max: 0,
    postscreen: true,
    aliases: ["postscreen_dnsbl_whitelist_threshold"],
  },
  {
    name: "dnsbl_action",
    kind: "choice",
    default: "ignore",
    choices: ["ignore", "enforce", "drop"],
    postscreen: true,
  },
  {
    name: "dnsbl_timeout",
    kind: "time",
    default: "10s",
    unit: "s",
    minSeconds: 1,
    maxSeconds: MAX_TIMER_SECONDS,
    postscreen: true,
  },
  {
    name: "dnsbl_min_ttl",
    kind: "time",
    default: "60s",
    unit: "s",
    minSeconds: 1,
    postscreen: true,
  },
  {
    name: "dnsbl_max_ttl",
    kind: "time",
    default: "1h",
    unit: "s",
    minSeconds: 1,
    postscreen: true,
    aliases: ["postscreen_dnsbl_ttl"],
  },
  { name: "dnsbl_reply_map", kind: "string", default: "", postscreen: true },
  {
    name: "dnsbl_error_answers",
    kind: "list",
    default: "127.255.255.0/24 127.0.0.1 127.0.0.255",
  },
  {
    name: "dnsbl_health_check_interval",
    kind: "time",
    default: "5m",
    unit: "s",
    minSeconds: 1,
    maxSeconds: MAX_TIMER_SECONDS,
  },
  { name: "dns_servers", kind: "list", default: "" },
  {
    name: "access_list",
    kind: "list",
    default: "permit_mynetworks",
    postscreen: true,
  },
  { name: "mynetworks", kind: "list", default: "127.0.0.0/8 [::1]/128" },
  {
    name: "denylist_action",
    kind: "choice",
    default: "ignore",
    choices: ["ignore", "enforce", "drop"],
    postscreen: true,
    aliases: ["postscreen_blacklist_action"],
  },
  {
    name: "allowlist_interfaces",
    kind: "list",
    default: "static:all",
    postscreen: true,
    aliases: ["postscreen_whitelist_interfaces"],
  },
  { name: "respectful_logging", kind: "boolean", default: "yes" },
  { name: "infrastructure_allowlist_domains", kind: "list", default: "" },
  {
    name: "infrastructure_allowlist_refresh",
    kind: "time",
    default: "1h",
    unit: "s",
    minSeconds: 1,
    maxSeconds: MAX_TIMER_SECONDS,
  },
  {
    name: "infrastructure_allowlist_timeout",
    kind: "time",
    default: "30s",
    unit: "s",
    minSeconds: 1,
    maxSeconds: MAX_TIMER_SECONDS,
  },
  {
    name: "log_destination",
    kind: "choice",
    default: "syslog",
    choices: ["syslog", "stderr", "json"],
  },
  { name: "syslog_socket", kind: "string", default: "/dev/log" },
  { name: "syslog_facility", kind: "string", default: "mail" },
  { name: "syslog_name", kind: "string", default: "postfix/postwarden" },
  {
    name: "greet_ttl",
    kind: "time",
    default: "1d",
    unit: "d",
    minSeconds: 1,
    postscreen: true,
  },
  { name: "data_directory", kind: "string", default: "/var/lib/postwarden" },
  {
    name: "cache_map",
    kind: "string",
    default: "lmdb:$data_directory/verdict_cache",
    postscreen: true,
  },
  {
    name: "cache_retention_time",
    kind: "time",
    default: "7d",
    unit: "d",
    minSeconds: 0,
    postscreen: true,
  },
  {
    name: "cache_cleanup_interval",
    kind: "time",
    default: "12h",
    unit: "s",
    minSeconds: 0,
    maxSeconds: MAX_TIMER_SECONDS,
    postscreen: true,
  },
  {
    name: "cache_local_ttl",
    kind: "time",
    default: "60s",
    unit: "s",
    minSeconds: 0,
  },
  {
    name: "cache_redis_timeout",
    kind: "time",
    default: "50ms",
    unit: "ms",
    minSeconds: 0.001,
    maxSeconds: MAX_TIMER_SECONDS,
  },
  { name: "cache_key_prefix", kind: "string", default: "postwarden:" },
  {
    name: "client_ipv6_prefix_length",
    kind: "integer",
    default: "64",
    min: 1,
    max: 128,
  },
  {
    name: "pipelining_enable",
    kind: "boolean",
    default: "no",
    postscreen: true,
  },
  {
    name: "pipelining_action",
    kind: "choice",
    default: "enforce",
    choices: ["ignore", "enforce", "drop"],
    postscreen: true,
  },
  {
    name: "pipelining_ttl",
    kind: "time",
    default: "30d",
    unit: "d",
    minSeconds: 1,
    postscreen: true,
  },
  {
    name: "non_smtp_command_enable",
    kind: "boolean",
    default: "no",
    postscreen: true,
  },
  {
    name: "non_smtp_command_action",
    kind: "choice",
    default: "drop",
    choices: ["ignore", "enforce", "drop"],
    postscreen: true,
  },
  {
    name: "non_smtp_command_ttl",
    kind: "time",
    default: "30d",
    unit: "d",
    minSeconds: 1,
    postscreen: true,
  },
  {
    name: "bare_newline_enable",
    kind: "boolean",
    default: "no",
    postscreen: true,
  },
  {
    name: "bare_newline_action",
    kind: "choice",
    default: "ignore",
    choices: ["ignore", "enforce", "drop"],
    postscreen: true,
  },
  {
    name: "bare_newline_ttl",
    kind: "time",
    default: "30d",
    unit: "d",
    minSeconds: 1,
    postscreen: true,
  },
  {
    name: "forbidden_commands",
    kind: "list",
    default: "CONNECT GET POST",
    postscreen: true,
  },
  {
    name: "command_count_limit",
    kind: "integer",
    default: "20",
    min: 1,
    postscreen: true,
  },
  {
    name: "command_time_limit",
    kind: "time",
    default: "${stress?{10}:{300}}s",
    unit: "s",
    minSeconds: 1,
    maxSeconds: MAX_TIMER_SECONDS,
    postscreen: true,
  },
  { name: "line_length_limit", kind: "integer", default: "2048", min: 64 },
  { name: "helo_required", kind: "boolean", default: "no", postscreen: true },
  {
    name: "disable_vrfy_command",
    kind: "boolean",
    default: "no",
    postscreen: true,
  },
  {
    name: "discard_ehlo_keywords",
    kind: "list",
    default: "",
    postscreen: true,
  },
  { name: "soft_bounce", kind: "boolean", default: "no" },
  { name: "reject_footer", kind: "string", default: "", postscreen: true },
  { name: "tarpit_outcomes", kind: "list", default: "" },
  {
    name: "tarpit_delay",
    kind: "time",
    default: "1s",
    unit: "s",
    minSeconds: 0.001,
    maxSeconds: MAX_TIMER_SECONDS,
  },
  {
    name: "tarpit_connection_limit",
    kind: "integer",
    default: "100",
    min: 0,
  },
  {
    name: "tarpit_time_limit",
    kind: "time",
    default: "60s",
    unit: "s",
    minSeconds: 1,
    maxSeconds: MAX_TIMER_SECONDS,
  },
  {
    name: "tls_cert_file",
    kind: "string",
    default: "",
    postscreen: true,
    aliases: ["smtpd_tls_cert_file"],
  },
  {
    name: "tls_key_file",
    kind: "string",
    default: "",
    postscreen: true,
    aliases: ["smtpd_tls_key_file"],
  },
  {
    name: "pre_queue_limit",
    kind: "integer",
    default: "100",
    min: 1,
    postscreen: true,
  },
  {
    name: "post_queue_limit",
    kind: "integer",
    default: "100",
    min: 1,
    postscreen: true,
  },
  {
    name: "client_connection_count_limit",
    kind: "integer",
    default: "50",
    min: 0,
    postscreen: true,
  },
  {
    name: "client_connection_rate_limit",
    kind: "integer",
    default: "0",
    min: 0,
  },
  {
    name: "client_connection_rate_time_unit",
    kind: "time",
    default: "60s",
    unit: "s",
    minSeconds: 1,
  },
  {
    name: "event_loop_stall_warning",
    kind: "time",
    default: "1s",
    unit: "s",
    minSeconds: 0.01,
    maxSeconds: MAX_TIMER_SECONDS,
  },
  {
    name: "upstream_proxy_protocol",
    kind: "choice",
    default: "",
    choices: ["", "haproxy"],
    postscreen: true,
  },
  {
    name: "upstream_proxy_timeout",
    kind: "time",
    default: "5s",
    unit: "s",
    minSeconds: 1,
    maxSeconds: MAX_TIMER_SECONDS,
    postscreen: true,
  },
  { name: "metrics_listen", kind: "string", default: "" },
  {
    name: "greylist_mode",
    kind: "choice",
    default: "off",
    choices: ["off", "all", "suspicious"],
  },
  {
    name: "greylist_min_delay",
    kind: "time",
    default: "300s",
    unit: "s",
    minSeconds: 0,
  },
  {
    name: "greylist_expire",
    kind: "time",
    default: "4h",
    unit: "s",
    minSeconds: 1,
  },
  {
    name: "greylist_pass_ttl",
    kind: "time",
    default: "36d",
    unit: "d",
    minSeconds: 1,
  },
  {
    name: "greylist_ipv4_prefix_length",
    kind: "integer",
    default: "32",
    min: 1,
    max: 32,
  },
  {
    name: "greylist_suspicious_criteria",
    kind: "list",
    default: "dnsbl pregreet fcrdns dynamic_name",
  },
  {
    name: "greylist_dynamic_name_patterns",
    kind: "string",
    default: DEFAULT_DYNAMIC_NAME_PATTERNS,
  },
  { name: "trap_recipients", kind: "list", default: "" },
  {
    name: "trap_ttl",
    kind: "time",
    default: "24h",
    unit: "s",
    minSeconds: 1,
  },
  { name: "policy_listen", kind: "string", default: "" },
  { name: "user", kind: "string", default: "postwarden" },
  { name: "group", kind: "string", default: "" },
  { name: "supplementary_groups", kind: "list", default: "" },
  { name: "allow_root", kind: "boolean", default: "no" },
  { name: "queue_directory", kind: "string", default: "/var/spool/postfix" },
  { name: "smtpd_service_name", kind: "string", default: "smtpd" },
  { name: "smtpd_pass_socket", kind: "string", default: "" },
  { name: "smtpd_pass_classes", kind: "list", default: "" },
  {
    name: "postfix_config_directory",
    kind: "string",
    default: "/etc/postfix",
  },
];

const BY_NAME = new Map<string, ParameterSpec>();
for (const spec of PARAMETERS) {
  BY_NAME.set(spec.name, spec);
  for (const alias of spec.aliases ?? []) BY_NAME.set(alias, spec);
}

export type Resolution =
  { spec: ParameterSpec } | { error: string; spec?: undefined };

/**
 * Finds the parameter for a name as written in a file, accepting the
 * postscreen_ spelling for parameters that have one.
 */
export function resolveParameter(name: string): Resolution {
  const direct = BY_NAME.get(name);
  if (direct !== undefined) return { spec: direct };

  if (name.startsWith("postscreen_")) {
    const spec = BY_NAME.get(name.slice("postscreen_".length));
    if (spec?.postscreen === true) return { spec };
    return {
      error:
        "this postscreen parameter is not supported by postwarden yet; " +
        "remove it",
    };
  }
  return { error: "unknown parameter" };
}
