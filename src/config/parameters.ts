// The parameters postwarden reads, with their defaults and value types.
// Names follow postscreen's where the meaning is the same; those marked
// `postscreen` are also accepted with the postscreen_ prefix, so settings
// copied from a main.cf keep working. Defaults mirror Postfix 3.7.
import { hostname } from "node:os";
import type { TimeUnit } from "./time.js";

export type ParameterSpec =
  | {
      name: string;
      kind: "string" | "list";
      default: string | (() => string);
      postscreen?: boolean;
    }
  | {
      name: string;
      kind: "time";
      default: string;
      unit: TimeUnit;
      minSeconds: number;
      postscreen?: boolean;
    }
  | {
      name: string;
      kind: "choice";
      default: string;
      choices: readonly string[];
      /** Values that are known but rejected for now, with the reason. */
      unsupported?: Readonly<Record<string, string>>;
      postscreen?: boolean;
    };

/**
 * Postfix's myhostname default: the host name from gethostname(), with
 * ".localdomain" (the default mydomain) appended when it has no dot. No DNS
 * lookup is made.
 */
export function defaultHostname(): string {
  const name = hostname();
  return name.includes(".") ? name : `${name}.localdomain`;
}

const ENFORCE_NEEDS_ENGINE =
  "action enforce needs the dummy SMTP engine, which postwarden does not " +
  "have yet; use drop or ignore";

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
    choices: ["teaser", "silent"],
  },
  {
    name: "greet_wait",
    kind: "time",
    default: "6s",
    unit: "s",
    minSeconds: 1,
    postscreen: true,
  },
  {
    name: "greet_action",
    kind: "choice",
    default: "ignore",
    choices: ["ignore", "drop"],
    unsupported: { enforce: ENFORCE_NEEDS_ENGINE },
    postscreen: true,
  },
  { name: "queue_directory", kind: "string", default: "/var/spool/postfix" },
  { name: "smtpd_service_name", kind: "string", default: "smtpd" },
  { name: "smtpd_pass_socket", kind: "string", default: "" },
  {
    name: "postfix_config_directory",
    kind: "string",
    default: "/etc/postfix",
  },
];

const BY_NAME = new Map(PARAMETERS.map((spec) => [spec.name, spec]));

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
