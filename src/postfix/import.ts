// Builds a postwarden configuration from a Postfix instance that runs
// postscreen: its postscreen_* settings (in main.cf, defaults that follow
// changed smtpd settings, and -o settings of the postscreen service in
// master.cf), the shared parameters they refer to, the listen addresses of
// master.cf's port-25 service and the smtpd pass service. Anything that
// cannot be mapped becomes a "#" comment with the reason. The result is
// loaded with postwarden's own loader before it is returned, and a line the
// loader rejects is turned into a comment too.
import { resolve } from "node:path";
import { buildConfig, ConfigError, splitList } from "../config/load.js";
import { resolveParameter } from "../config/parameters.js";
import { parseMainCf } from "../config/syntax.js";
import { parseNetworkList } from "../access/network.js";
import { parseSite } from "../dnsbl/sites.js";
import { CidrTable } from "../access/cidr-table.js";
import { socketDirectory, type MasterEntry } from "./master-cf.js";
import { parseInetProtocols } from "./postconf.js";
import {
  convertValue,
  expandWith,
  SHARED_PARAMETERS,
  type PostfixSnapshot,
} from "./snapshot.js";

/** One output setting, or a comment when `setting` is undefined. */
interface OutputLine {
  comments: string[];
  setting?: { name: string; value: string };
}

/** postwarden's defaults for the locations of the Postfix side. */
const DEFAULT_QUEUE_DIRECTORY = "/var/spool/postfix";
const DEFAULT_CONFIG_DIRECTORY = "/etc/postfix";

/** Port numbers for the service names a port-25 listener uses. */
const SERVICE_PORTS: Readonly<Record<string, number>> = {
  smtp: 25,
  submission: 587,
  smtps: 465,
  submissions: 465,
};

/** Reasons for postscreen settings that postwarden replaces on purpose. */
const REPLACED: Readonly<Record<string, string>> = {
  postscreen_cache_map:
    "postwarden keeps its own verdict cache (cache_map, default " +
    "lmdb:$data_directory/verdict_cache); postscreen's cache is not read",
};

/** Returns the text of a postwarden configuration file for `snapshot`. */
export function importPostfix(snapshot: PostfixSnapshot): string {
  const postscreenService = findService(snapshot.master, "postscreen");
  applyServiceOverrides(snapshot, postscreenService);

  const lines: OutputLine[] = [];
  const notImported: string[] = [];
  lines.push(...locationLines(snapshot, postscreenService));

  const mapped = new Map<string, OutputLine>();
  // postwarden reads only myhostname and mynetworks from Postfix, so the
  // other shared parameters are written out when main.cf sets them.
  const references = new Set<string>(["myhostname", "mynetworks"]);
  for (const name of SHARED_PARAMETERS) {
    if (snapshot.explicit.has(name)) references.add(name);
  }
  for (const name of postscreenNames(snapshot)) {
    const line = mapParameter(name, snapshot, notImported, references);
    if (line?.setting !== undefined) mapped.set(line.setting.name, line);
  }
  const tls = tlsLines(snapshot, notImported);
  if (snapshot.explicit.has("soft_bounce")) {
    // postscreen honours Postfix's global soft_bounce as well.
    const value = snapshot.raw.get("soft_bounce") ?? "";
    mapped.set("soft_bounce", {
      comments: [],
      setting: {
        name: "soft_bounce",
        value: convertValue(value, snapshot).value,
      },
    });
  }

  lines.push(...sharedLines(snapshot, references));
  lines.push(...mapped.values(), ...tls);
  return render(loadable(lines), notImported, snapshot);
}

function findService(
  entries: MasterEntry[],
  command: string,
): MasterEntry | undefined {
  return entries.find(
    (entry) =>
      entry.type === "inet" && entry.command.split("/").pop() === command,
  );
}

/** Applies the postscreen service's -o settings, as postscreen would. */
function applyServiceOverrides(
  snapshot: PostfixSnapshot,
  service: MasterEntry | undefined,
): void {
  for (const { name, value } of service?.overrides ?? []) {
    snapshot.raw.set(name, value);
    snapshot.explicit.add(name);
  }
}

/**
 * The postscreen_* names to consider: those set explicitly, and those
 * whose value differs from Postfix's default because it refers to a
 * changed parameter (postscreen_helo_required = $smtpd_helo_required).
 */
function postscreenNames(snapshot: PostfixSnapshot): string[] {
  const names: string[] = [];
  for (const name of snapshot.raw.keys()) {
    if (!name.startsWith("postscreen_")) continue;
    if (snapshot.explicit.has(name) || differsFromDefault(name, snapshot)) {
      names.push(name);
    }
  }
  return names.sort();
}

function differsFromDefault(name: string, snapshot: PostfixSnapshot): boolean {
  const value = snapshot.raw.get(name) ?? "";
  const fallback = snapshot.defaults.get(name) ?? "";
  try {
    return (
      expandWith(value, snapshot.raw) !==
      expandWith(fallback, snapshot.defaults)
    );
  } catch {
    return value !== fallback;
  }
}

function mapParameter(
  name: string,
  snapshot: PostfixSnapshot,
  notImported: string[],
  references: Set<string>,
): OutputLine | undefined {
  const written = snapshot.raw.get(name) ?? "";
  const skip = (reason: string): undefined => {
    notImported.push(`${name} = ${written}`, `  ${reason}`);
    return undefined;
  };

  if (name === "postscreen_tls_security_level") return undefined;
  const replaced = REPLACED[name];
  if (replaced !== undefined) return skip(replaced);
  const resolution = resolveParameter(name);
  if (resolution.spec === undefined) {
    return skip("postwarden has no equivalent of this postscreen parameter");
  }
  const target = resolution.spec.name;

  let converted;
  try {
    converted = convertValue(written, snapshot);
  } catch (error) {
    return skip(`invalid value: ${(error as Error).message}`);
  }
  const comments = converted.note === undefined ? [] : [converted.note];

  let value = converted.value;
  const postwardenDefault = resolution.spec.default;
  if (
    !snapshot.explicit.has(name) &&
    value.replace(/\$\{([A-Za-z0-9_]+)\}/g, "$$$1") === postwardenDefault
  ) {
    // Such as greet_banner = $smtpd_banner after a changed myhostname.
    return undefined;
  }
  for (const reference of converted.references) references.add(reference);
  if (target === "dnsbl_sites") {
    value = keepItems(value, comments, (item) => {
      parseSite(item);
    });
  } else if (target === "access_list") {
    value = keepItems(value, comments, checkAccessItem);
  } else if (target === "forbidden_commands") {
    value = keepItems(value, comments, (item) => {
      if (item.includes(":")) {
        throw new Error(
          "table lookups are not supported; postwarden already treats " +
            "words that start with a non-letter as non-SMTP commands",
        );
      }
    });
  }
  return { comments, setting: { name: target, value } };
}

/** Keeps the list items that `check` accepts; comments on the others. */
function keepItems(
  value: string,
  comments: string[],
  check: (item: string) => void,
): string {
  const kept: string[] = [];
  for (const item of splitListWithBraces(value)) {
    try {
      check(item);
      kept.push(item);
    } catch (error) {
      comments.push(`left out "${item}": ${(error as Error).message}`);
    }
  }
  return kept.join(" ");
}

/**
 * Splits a list value as Postfix does, where "{...}" groups such as
 * regexp:{{/^[^A-Z]/ Bogus}} stay in one item.
 */
export function splitListWithBraces(value: string): string[] {
  const items: string[] = [];
  let current = "";
  let depth = 0;
  for (const character of value) {
    if (depth === 0 && /[\s,]/.test(character)) {
      if (current !== "") items.push(current);
      current = "";
      continue;
    }
    if (character === "{") depth++;
    else if (character === "}" && depth > 0) depth--;
    current += character;
  }
  if (current !== "") items.push(current);
  return items;
}

function checkAccessItem(item: string): void {
  if (item === "permit_mynetworks") return;
  if (!item.startsWith("cidr:")) {
    throw new Error(
      "postwarden's access_list takes permit_mynetworks and cidr:/path only",
    );
  }
  CidrTable.load(item.slice("cidr:".length));
}

/** Shared parameters that mapped values refer to, plus those always set. */
function sharedLines(
  snapshot: PostfixSnapshot,
  references: Set<string>,
): OutputLine[] {
  // A shared value may refer to another shared parameter
  // (smtpd_banner = $myhostname ESMTP $mail_name), so this runs until no
  // new name appears; there are only SHARED_PARAMETERS.size names.
  const lines = new Map<string, OutputLine>();
  for (let round = 0; round <= SHARED_PARAMETERS.size; round++) {
    for (const name of references) {
      if (lines.has(name)) continue;
      lines.set(name, sharedLine(name, snapshot, references));
    }
  }
  return [...SHARED_PARAMETERS]
    .map((name) => lines.get(name))
    .filter((line) => line !== undefined);
}

function sharedLine(
  name: string,
  snapshot: PostfixSnapshot,
  references: Set<string>,
): OutputLine {
  const written = snapshot.raw.get(name) ?? "";
  if (name === "mynetworks") {
    // Written out in full, because postwarden's default differs from
    // Postfix's and mynetworks_style is not a postwarden setting.
    return mynetworksLine(written, snapshot);
  }
  const converted = convertValue(written, snapshot);
  for (const reference of converted.references) references.add(reference);
  return {
    comments: converted.note === undefined ? [] : [converted.note],
    setting: { name, value: converted.value },
  };
}

function mynetworksLine(
  written: string,
  snapshot: PostfixSnapshot,
): OutputLine {
  let value: string;
  try {
    value = expandWith(written, snapshot.raw);
    parseNetworkList(value);
  } catch (error) {
    return {
      comments: [
        `mynetworks = ${written}`,
        `  not imported: ${(error as Error).message}; postwarden takes ` +
          "numeric networks only. Set mynetworks here by hand",
      ],
    };
  }
  return { comments: [], setting: { name: "mynetworks", value } };
}

/**
 * listen from the port-25 service (postscreen, else smtpd), and the
 * queue, configuration directory and pass socket of the Postfix side.
 */
function locationLines(
  snapshot: PostfixSnapshot,
  postscreenService: MasterEntry | undefined,
): OutputLine[] {
  const lines: OutputLine[] = [listenLine(snapshot, postscreenService)];
  const queueDirectory = expandWith(
    snapshot.raw.get("queue_directory") ?? DEFAULT_QUEUE_DIRECTORY,
    snapshot.raw,
  );
  const configDirectory = resolve(snapshot.configDirectory);
  if (configDirectory !== DEFAULT_CONFIG_DIRECTORY) {
    lines.push({
      comments: [],
      setting: { name: "postfix_config_directory", value: configDirectory },
    });
  }
  if (queueDirectory !== DEFAULT_QUEUE_DIRECTORY) {
    lines.push({
      comments: [],
      setting: { name: "queue_directory", value: queueDirectory },
    });
  }

  const pass = snapshot.master.filter(
    (entry) =>
      entry.type === "pass" && entry.command.split("/").pop() === "smtpd",
  );
  const chosen = pass[0];
  if (chosen === undefined) {
    lines.push({
      comments: [
        "master.cf has no smtpd pass service yet. For the default user",
        'postwarden, add "smtpd pass n - y - - smtpd" (public/smtpd) and',
        "set smtpd_pass_socket to it; with user = postfix, add",
        '"smtpd pass - - y - - smtpd" (private/smtpd, the default socket)',
      ],
    });
  } else if (socketDirectory(chosen) === "private") {
    lines.push({
      comments: [
        `master.cf line ${chosen.line} makes the pass service private, which`,
        "only user postfix may reach: set user = postfix, or put n in its",
        "private column and smtpd_pass_socket to its public/ path",
      ],
    });
  }
  if (
    chosen !== undefined &&
    (chosen.service !== "smtpd" || socketDirectory(chosen) !== "private")
  ) {
    lines.push({
      comments: [`the smtpd pass service of master.cf line ${chosen.line}`],
      setting: {
        name: "smtpd_pass_socket",
        value: `${queueDirectory}/${socketDirectory(chosen)}/${chosen.service}`,
      },
    });
  }
  return lines;
}

function listenLine(
  snapshot: PostfixSnapshot,
  postscreenService: MasterEntry | undefined,
): OutputLine {
  const service =
    postscreenService ?? findService(snapshot.master, "smtpd") ?? undefined;
  const families = parseInetProtocols(
    expandWith(snapshot.raw.get("inet_protocols") ?? "all", snapshot.raw),
  );
  const comments: string[] = [];
  let hosts: string[];
  let port = 25;
  if (service === undefined) {
    comments.push(
      "no postscreen or smtpd inet service in master.cf; port 25 assumed",
    );
    hosts = wildcardHosts(families);
  } else {
    comments.push(
      `from master.cf line ${service.line}: ${service.service} inet ... ` +
        `${service.command}; stop that service before starting postwarden`,
    );
    const split = /^(?:(.*):)?([^:]+)$/.exec(service.service);
    const portText = split?.[2] ?? "smtp";
    port = SERVICE_PORTS[portText] ?? Number(portText);
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      comments.push(`unknown port "${portText}"; port 25 assumed`);
      port = 25;
    }
    const host = split?.[1];
    hosts =
      host !== undefined && host !== ""
        ? [host]
        : interfaceHosts(snapshot, families, comments);
  }
  const value = hosts
    .map((host) =>
      host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`,
    )
    .join(", ");
  return { comments, setting: { name: "listen", value } };
}

function wildcardHosts(families: { ipv4: boolean; ipv6: boolean }): string[] {
  return [
    ...(families.ipv4 ? ["0.0.0.0"] : []),
    ...(families.ipv6 ? ["::"] : []),
  ];
}

function interfaceHosts(
  snapshot: PostfixSnapshot,
  families: { ipv4: boolean; ipv6: boolean },
  comments: string[],
): string[] {
  const interfaces = splitList(
    expandWith(snapshot.raw.get("inet_interfaces") ?? "all", snapshot.raw),
  ).map((item) => item.replace(/^\[(.*)\]$/, "$1"));
  if (interfaces.includes("all")) return wildcardHosts(families);
  const hosts: string[] = [];
  for (const item of interfaces) {
    if (item === "loopback-only" || item === "localhost") {
      if (families.ipv4) hosts.push("127.0.0.1");
      if (families.ipv6) hosts.push("::1");
    } else if (/^[0-9.]+$/.test(item) || item.includes(":")) {
      hosts.push(item);
    } else {
      comments.push(
        `inet_interfaces item "${item}" is a name; listen takes numeric ` +
          "addresses only, so add its addresses by hand",
      );
    }
  }
  return hosts.length > 0 ? hosts : wildcardHosts(families);
}

/**
 * STARTTLS in the dummy engine: postscreen offers it when
 * postscreen_tls_security_level is set, with smtpd's certificate.
 */
function tlsLines(
  snapshot: PostfixSnapshot,
  notImported: string[],
): OutputLine[] {
  const expand = (name: string): string => {
    try {
      return expandWith(snapshot.raw.get(name) ?? "", snapshot.raw);
    } catch {
      return "";
    }
  };
  const level = expand("postscreen_tls_security_level");
  if (level === "" || level === "none") return [];
  const cert = expand("smtpd_tls_cert_file");
  const key = expand("smtpd_tls_key_file");
  if (cert === "" || key === "") {
    notImported.push(
      `postscreen_tls_security_level = ${level}`,
      "  smtpd_tls_cert_file and smtpd_tls_key_file are not both set " +
        "(smtpd_tls_chain_files is not read); set tls_cert_file and " +
        "tls_key_file by hand to offer STARTTLS",
    );
    return [];
  }
  return [
    {
      comments: [`postscreen_tls_security_level = ${level}`],
      setting: { name: "tls_cert_file", value: cert.replace(/\$/g, "$$$$") },
    },
    {
      comments: [],
      setting: { name: "tls_key_file", value: key.replace(/\$/g, "$$$$") },
    },
  ];
}

function formatSetting(setting: { name: string; value: string }): string {
  const items = splitList(setting.value);
  // Long lists go one item per continuation line, as main.cf allows.
  if (setting.name === "dnsbl_sites" && items.length > 1) {
    return `${setting.name} =\n${items.map((item) => `    ${item}`).join("\n")}`;
  }
  return `${setting.name} = ${setting.value}`;
}

function renderLines(lines: OutputLine[]): string[] {
  const text: string[] = [];
  for (const line of lines) {
    text.push(...line.comments.map((comment) => `# ${comment}`));
    if (line.setting !== undefined) text.push(formatSetting(line.setting));
  }
  return text;
}

/**
 * Loads the settings with postwarden's loader and turns each setting it
 * rejects into a comment with the loader's reason. Each round removes at
 * least one setting, so this ends.
 */
function loadable(lines: OutputLine[]): OutputLine[] {
  const result = lines.map((line) => ({
    ...line,
    comments: [...line.comments],
  }));
  for (let round = 0; round <= result.length; round++) {
    const problems = loadProblems(result);
    if (problems.length === 0) return result;
    let changed = false;
    for (const { index, reason } of problems) {
      const line = result[index];
      if (line?.setting === undefined) continue;
      line.comments.push(
        `${line.setting.name} = ${line.setting.value}`,
        `  rejected by postwarden: ${reason}`,
      );
      delete line.setting;
      changed = true;
    }
    if (!changed) {
      throw new Error(
        `imported configuration does not load: ${problems
          .map((problem) => problem.reason)
          .join("; ")}`,
      );
    }
  }
  return result;
}

function loadProblems(
  lines: OutputLine[],
): { index: number; reason: string }[] {
  const settings = lines.flatMap((line, index) =>
    line.setting === undefined
      ? []
      : [
          {
            ...line.setting,
            origin: { file: "import", line: index + 1 },
          },
        ],
  );
  try {
    buildConfig(settings);
    return [];
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    return error.problems.map((problem) => {
      // A problem without a line (on a default value) cannot be fixed by
      // leaving a line out, so loadable() throws for it.
      const match = /^import:(\d+): (.*)$/s.exec(problem);
      return match === null
        ? { index: -1, reason: problem }
        : { index: Number(match[1]) - 1, reason: match[2] ?? problem };
    });
  }
}

function render(
  lines: OutputLine[],
  notImported: string[],
  snapshot: PostfixSnapshot,
): string {
  const directory = resolve(snapshot.configDirectory);
  const text = [
    `# postwarden configuration imported from Postfix in ${directory}`,
    "# by postwarden import-postfix. Check it with postwarden check.",
    "",
    ...renderLines(lines),
  ];
  if (snapshot.masterError !== undefined) {
    text.push("", `# master.cf not read: ${snapshot.masterError}`);
  }
  if (notImported.length > 0) {
    text.push("", "# Not imported:");
    text.push(...notImported.map((line) => `# ${line}`));
  }
  const output = text.join("\n") + "\n";
  // The output must parse as main.cf syntax; a failure here is a bug.
  parseMainCf(output, "import");
  return output;
}
