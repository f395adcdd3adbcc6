// Hand-off classes: smtpd_pass_classes maps a class to a pass service, and
// the verdict picks the class. "trusted" takes allowlisted clients: an
// access list permit (the infrastructure allowlist included) or a DNS
// allowlist score. "strict" takes clients with a DNS list score above zero
// that were still handed off. Every other client, and a class that is not
// configured, uses the default smtpd_pass_socket.
import { isAbsolute, join } from "node:path";
import type { Config } from "../config/load.js";
import type { Logger } from "../log/logger.js";

export const PASS_CLASS_NAMES = ["trusted", "strict"] as const;
export type PassClassName = (typeof PASS_CLASS_NAMES)[number];

/** A pass service: its socket path and its name in log lines. */
export interface PassService {
  path: string;
  label: string;
}

export type PassClasses = Partial<Record<PassClassName, PassService>>;

/** Facts about a client that the session has at hand-off. */
export interface HandoffFacts {
  address: string;
  dnsAllowlisted: boolean;
  /** The DNS list score, 0 when no list was asked in this session. */
  dnsblScore: number;
}

const SERVICE_NAME = /^[A-Za-z0-9_.-]+$/;

/**
 * Parses smtpd_pass_classes: "class = service" items separated by commas
 * or white space. A service is a master.cf service name (socket in
 * $queue_directory/private), "private/name" or "public/name", or an
 * absolute socket path. Throws an Error naming the invalid item.
 */
export function parsePassClasses(
  value: string,
  queueDirectory: string,
): PassClasses {
  const items = value
    .replace(/\s*=\s*/g, "=")
    .split(/[\s,]+/)
    .filter((item) => item !== "");
  const classes: PassClasses = {};
  for (const item of items) {
    const equals = item.indexOf("=");
    const name = equals < 0 ? item : item.slice(0, equals);
    const service = equals < 0 ? "" : item.slice(equals + 1);
    if (!(PASS_CLASS_NAMES as readonly string[]).includes(name)) {
      throw new Error(
        `unknown class "${name}" in "${item}": expected ` +
          `${PASS_CLASS_NAMES.join(" or ")}`,
      );
    }
    if (service === "") {
      throw new Error(
        `missing service for class "${name}": write ` +
          `"${name} = smtpd-${name}" (a master.cf pass service) or a socket path`,
      );
    }
    const className = name as PassClassName;
    if (classes[className] !== undefined) {
      throw new Error(`class "${name}" is set twice`);
    }
    classes[className] = parseService(service, queueDirectory);
  }
  return classes;
}

function parseService(service: string, queueDirectory: string): PassService {
  if (isAbsolute(service)) return { path: service, label: service };
  const match = /^(?:(private|public)\/)?(.+)$/.exec(service);
  const directory = match?.[1] ?? "private";
  const name = match?.[2] ?? "";
  if (!SERVICE_NAME.test(name)) {
    throw new Error(
      `invalid service "${service}": expected a master.cf service name, ` +
        "private/name, public/name or an absolute socket path",
    );
  }
  return {
    path: join(queueDirectory, directory, name),
    label: `${directory}/${name}`,
  };
}

/** Returns the class for a client, or undefined for the default service. */
export function choosePassClass(
  config: Pick<Config, "accessList">,
  facts: HandoffFacts,
): PassClassName | undefined {
  if (
    facts.dnsAllowlisted ||
    config.accessList.evaluate(facts.address) === "permit"
  ) {
    return "trusted";
  }
  if (facts.dnsblScore > 0) return "strict";
  return undefined;
}

/**
 * Returns the socket path to hand the client to, and logs the class when
 * it is not the default. `facts` is called only when classes are set, so
 * a configuration without classes costs nothing here.
 */
export function choosePassSocket(
  config: Pick<Config, "accessList" | "passClasses" | "smtpdPassSocket">,
  logger: Logger,
  clientLabel: string,
  facts: () => HandoffFacts,
): string {
  const { passClasses } = config;
  if (passClasses.trusted === undefined && passClasses.strict === undefined) {
    return config.smtpdPassSocket;
  }
  const name = choosePassClass(config, facts());
  const service = name === undefined ? undefined : passClasses[name];
  if (name === undefined || service === undefined) {
    return config.smtpdPassSocket;
  }
  logger.info(
    `pass class ${name} for ${clientLabel}: service ${service.label}`,
  );
  return service.path;
}
