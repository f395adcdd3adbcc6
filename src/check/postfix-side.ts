// Checks the Postfix instance that postwarden hands clients to, found in
// postfix_config_directory: the pass service in master.cf, its socket,
// and the smtpd settings in effect for that service (main.cf values, with
// the service's -o settings winning, as in Postfix).
import { basename, dirname, join, resolve } from "node:path";
import type { Config } from "../config/load.js";
import { expandValue } from "../config/syntax.js";
import {
  MasterCfError,
  overrideOf,
  readMasterCf,
  socketDirectory,
  type MasterEntry,
} from "../postfix/master-cf.js";
import { parseInetProtocols } from "../postfix/postconf.js";
import {
  mainCfLine,
  PostconfError,
  readPostconf,
} from "../postfix/postconf-values.js";
import type { FileUser } from "./access.js";
import { passSocketProblem } from "./pass-socket.js";
import type { Problem } from "./problem.js";

/** A parameter's value for the pass service and where it is set. */
interface Effective {
  value: string;
  file: string;
  line: number;
  /** "main.cf", "Postfix's default" or "-o in master.cf", for messages. */
  source: string;
}

/** Returns every problem found on the Postfix side; empty when none. */
export async function checkPostfixSide(
  config: Config,
  configFile: string,
  user: FileUser,
): Promise<Problem[]> {
  const directory = config.postfixConfigDirectory;
  const mainCf = join(directory, "main.cf");
  const masterCf = join(directory, "master.cf");

  let values: Map<string, string>;
  try {
    values = await readPostconf(directory, ["-x"]);
  } catch (error) {
    if (!(error instanceof PostconfError)) throw error;
    return [{ file: mainCf, line: 0, reason: error.message }];
  }

  const problems: Problem[] = [];
  problems.push(...checkQueueDirectory(config, configFile, values, mainCf));

  const service = passServiceOf(config);
  let entries: MasterEntry[];
  try {
    entries = readMasterCf(masterCf);
  } catch (error) {
    if (!(error instanceof MasterCfError)) throw error;
    return [...problems, { file: masterCf, line: 0, reason: error.message }];
  }
  const entry = findPassService(entries, service, masterCf, problems);
  if (entry !== undefined) {
    problems.push(...checkService(entry, service.label, values, directory));
  }
  const protocols =
    entry === undefined
      ? mainCfValue("inet_protocols", values, directory)
      : effectiveValue(entry, "inet_protocols", values, directory);
  problems.push(...protocolProblems(protocols, config, service.label));

  const socketProblem = await passSocketProblem(config.smtpdPassSocket, user);
  if (socketProblem !== undefined) {
    problems.push({
      file: config.smtpdPassSocket,
      line: 0,
      reason: `pass socket ${service.label}: ${socketProblem}`,
    });
  }
  return problems;
}

/** The master.cf service that smtpd_pass_socket names. */
interface PassService {
  name: string;
  directory: string;
  label: string;
}

function passServiceOf(config: Config): PassService {
  const name = basename(config.smtpdPassSocket);
  const directory = basename(dirname(config.smtpdPassSocket));
  return { name, directory, label: `${directory}/${name}` };
}

function checkQueueDirectory(
  config: Config,
  configFile: string,
  values: Map<string, string>,
  mainCf: string,
): Problem[] {
  const queueDirectory = values.get("queue_directory") ?? "";
  const socketQueue = dirname(dirname(resolve(config.smtpdPassSocket)));
  const service = passServiceOf(config);
  const problems: Problem[] = [];
  if (service.directory !== "private" && service.directory !== "public") {
    problems.push({
      file: configFile,
      line: 0,
      reason:
        `smtpd pass socket ${config.smtpdPassSocket} is not in a private/ ` +
        "or public/ directory, where Postfix creates pass sockets",
    });
  } else if (socketQueue !== resolve(queueDirectory)) {
    problems.push({
      file: mainCf,
      line: mainCfLine(config.postfixConfigDirectory, "queue_directory"),
      reason:
        `Postfix's queue_directory is ${queueDirectory}, but postwarden ` +
        `hands off to ${config.smtpdPassSocket}: set postwarden's ` +
        "queue_directory (or smtpd_pass_socket) to match",
    });
  }
  return problems;
}

/**
 * Finds the pass service. When there is none, pushes a problem that names
 * a near miss (same name, other type or directory) or the line to add.
 */
function findPassService(
  entries: MasterEntry[],
  service: PassService,
  masterCf: string,
  problems: Problem[],
): MasterEntry | undefined {
  const sameName = entries.filter((entry) => entry.service === service.name);
  const found = sameName.find(
    (entry) =>
      entry.type === "pass" && socketDirectory(entry) === service.directory,
  );
  if (found !== undefined) return found;

  const privateField = service.directory === "public" ? "n" : "-";
  const suggestedLine =
    `"${service.name} pass ${privateField} - y - - smtpd" ` +
    '(keep the chroot column of your smtpd lines), then run "postfix reload"';
  const nearMiss = sameName[0];
  if (nearMiss !== undefined) {
    const what =
      nearMiss.type === "pass"
        ? `a ${socketDirectory(nearMiss)}/ pass service (private column ` +
          `"${nearMiss.private}")`
        : `a service of type ${nearMiss.type}`;
    problems.push({
      file: masterCf,
      line: nearMiss.line,
      reason:
        `"${service.name}" is ${what}, but postwarden hands off to ` +
        `${service.label}: make it ${suggestedLine}`,
    });
  } else {
    problems.push({
      file: masterCf,
      line: 0,
      reason:
        `no pass service for ${service.label}, where postwarden hands ` +
        `off clients: add ${suggestedLine}`,
    });
  }
  return undefined;
}

function effectiveValue(
  entry: MasterEntry,
  name: string,
  values: Map<string, string>,
  directory: string,
): Effective {
  const override = overrideOf(entry, name);
  if (override !== undefined) {
    let value = override;
    try {
      value = expandValue(override, (other) => values.get(other));
    } catch {
      // An invalid $ expression is compared as written.
    }
    return {
      value,
      file: join(directory, "master.cf"),
      line: entry.line,
      source: "-o in master.cf",
    };
  }
  return mainCfValue(name, values, directory);
}

function mainCfValue(
  name: string,
  values: Map<string, string>,
  directory: string,
): Effective {
  const line = mainCfLine(directory, name);
  return {
    value: values.get(name) ?? "",
    file: join(directory, "main.cf"),
    line,
    source: line > 0 ? "main.cf" : "Postfix's default",
  };
}

function checkService(
  entry: MasterEntry,
  label: string,
  values: Map<string, string>,
  directory: string,
): Problem[] {
  const problems: Problem[] = [];
  const masterCf = join(directory, "master.cf");
  if (basename(entry.command) !== "smtpd") {
    problems.push({
      file: masterCf,
      line: entry.line,
      reason:
        `pass service ${label} runs "${entry.command}", not smtpd: ` +
        "postwarden hands clients to smtpd only",
    });
  }

  const delayReject = effectiveValue(
    entry,
    "smtpd_delay_reject",
    values,
    directory,
  );
  if (delayReject.value.toLowerCase() !== "yes") {
    problems.push({
      file: delayReject.file,
      line: delayReject.line,
      reason:
        `smtpd_delay_reject = ${delayReject.value} (${delayReject.source}) ` +
        `for ${label}: smtpd would reject at connect time right after ` +
        'postwarden\'s "220-" greeting line, which makes a malformed ' +
        "reply; set smtpd_delay_reject = yes for that service",
    });
  }

  const proxy = effectiveValue(
    entry,
    "smtpd_upstream_proxy_protocol",
    values,
    directory,
  );
  if (proxy.value !== "") {
    problems.push({
      file: proxy.file,
      line: proxy.line,
      reason:
        `smtpd_upstream_proxy_protocol = ${proxy.value} (${proxy.source}) ` +
        `for ${label}: smtpd would wait for a PROXY header that a ` +
        "handed-off client never sends; remove it, and set " +
        "upstream_proxy_protocol (or a /haproxy listener) in postwarden",
    });
  }
  return problems;
}

/** Checks that inet_protocols has the families postwarden listens on. */
function protocolProblems(
  protocols: Effective,
  config: Config,
  label: string,
): Problem[] {
  const listeners = config.listen.map(({ host, port }) =>
    host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`,
  );
  const families = parseInetProtocols(protocols.value);
  const describe = `inet_protocols = ${protocols.value} (${protocols.source})`;
  const problems: Problem[] = [];
  for (const family of ["ipv4", "ipv6"] as const) {
    const heard = listeners.filter(
      (address) => address.startsWith("[") === (family === "ipv6"),
    );
    if (heard.length === 0 || families[family]) continue;
    const name = family === "ipv6" ? "IPv6" : "IPv4";
    problems.push({
      file: protocols.file,
      line: protocols.line,
      reason:
        `${describe} has no ${family}, but postwarden listens on ` +
        `${heard.join(", ")}: ${label} would exit on ${name} clients; add ` +
        `${family} to inet_protocols or remove the ${name} listen address`,
    });
  }
  return problems;
}
