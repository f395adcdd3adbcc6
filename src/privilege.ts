// Least privilege. Started as root, postwarden binds its listeners, gives
// the data directory to its configured user, and then switches to that
// user and its groups before it accepts any client. It then checks that
// the switch took effect in every thread and cannot be undone. Started as
// another user, it can only check that it already runs as the configured
// user.
import { spawnSync } from "node:child_process";
import {
  closeSync,
  constants,
  existsSync,
  fchownSync,
  fstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
} from "node:fs";
import { userInfo } from "node:os";
import { dirname } from "node:path";
import type { Config, PrivilegeConfig } from "./config/load.js";

/**
 * Time allowed for one getent lookup, which NSS may send to a network
 * source such as LDAP.
 */
const GETENT_TIMEOUT_MS = 10_000;

export class PrivilegeError extends Error {}

/** A user and its groups, resolved through the name service switch. */
export interface Account {
  user: string;
  uid: number;
  group: string;
  gid: number;
  /** Gids from supplementary_groups, added to the group database's. */
  supplementaryGids: number[];
  /** Every gid the process has after the switch, sorted. */
  groups: number[];
}

/** The start-up decision: switch to the account, or keep the current user. */
export type PrivilegePlan =
  { action: "switch"; account: Account } | { action: "keep"; account: Account };

/**
 * Runs `getent DATABASE KEY`, which looks the key up through NSS as the C
 * library does. Returns the first output line, or undefined when getent
 * exits with status 2 (key not found).
 */
function getent(database: string, key: string): string | undefined {
  const result = spawnSync("getent", [database, key], {
    encoding: "utf8",
    timeout: GETENT_TIMEOUT_MS,
  });
  if (result.error !== undefined) {
    throw new PrivilegeError(
      `getent ${database} ${key} failed: ${result.error.message}`,
    );
  }
  if (result.status === 2) return undefined;
  if (result.status !== 0) {
    throw new PrivilegeError(
      `getent ${database} ${key} failed with exit status ` +
        `${String(result.status ?? result.signal)}: ${result.stderr.trim()}`,
    );
  }
  return result.stdout.split("\n")[0] ?? "";
}

/** Returns a group's name and gid, or throws naming the parameter. */
function lookUpGroup(
  name: string,
  parameter: string,
): { name: string; gid: number } {
  const entry = getent("group", name);
  if (entry === undefined) {
    throw new PrivilegeError(
      `${parameter}: group ${name} not found (getent group ${name}). ` +
        "Create it or set an existing group",
    );
  }
  const fields = entry.split(":");
  return { name: fields[0] ?? name, gid: Number(fields[2]) };
}

/**
 * Resolves the configured user and groups. The groups are what
 * initgroups(3) gives the user with that primary group, plus
 * supplementary_groups. Throws PrivilegeError when a name is not found.
 */
export function resolveAccount(privilege: PrivilegeConfig): Account {
  const entry = getent("passwd", privilege.user);
  if (entry === undefined) {
    throw new PrivilegeError(
      `user: user ${privilege.user} not found (getent passwd ` +
        `${privilege.user}). Create it as docs/deployment.md shows ` +
        '("useradd --system ... postwarden"), or set user to an existing ' +
        "account such as postfix",
    );
  }
  const fields = entry.split(":");
  const user = fields[0] ?? privilege.user;
  const uid = Number(fields[2]);
  const primaryGid = Number(fields[3]);

  let group: { name: string; gid: number };
  if (privilege.group === "") {
    const name = getent("group", String(primaryGid))?.split(":")[0];
    group = { name: name ?? String(primaryGid), gid: primaryGid };
  } else {
    group = lookUpGroup(privilege.group, "group");
  }

  // "getent initgroups USER" prints the user name, then the gids that the
  // group database lists the user in.
  const listed = (getent("initgroups", user) ?? "")
    .trim()
    .split(/\s+/)
    .slice(1)
    .map(Number);
  const supplementaryGids = privilege.supplementaryGroups.map(
    (name) => lookUpGroup(name, "supplementary_groups").gid,
  );
  const groups = [
    ...new Set([group.gid, ...listed, ...supplementaryGids]),
  ].sort((a, b) => a - b);
  return {
    user,
    uid,
    group: group.name,
    gid: group.gid,
    supplementaryGids,
    groups,
  };
}

/**
 * Decides whether start-up switches user. Throws PrivilegeError when the
 * configured user is root without allow_root, or when postwarden was
 * started as a user other than root or the configured one.
 */
export function planPrivileges(privilege: PrivilegeConfig): PrivilegePlan {
  const account = resolveAccount(privilege);
  if (account.uid === 0 && !privilege.allowRoot) {
    throw new PrivilegeError(
      `user: ${account.user} is root, and postwarden would keep running ` +
        "as root while it talks to clients from the internet. Set user to " +
        "an unprivileged account such as postwarden, or set allow_root = " +
        "yes to run as root anyway",
    );
  }
  const uid = process.getuid?.() ?? -1;
  if (uid === 0) {
    return { action: account.uid === 0 ? "keep" : "switch", account };
  }
  const gid = process.getgid?.() ?? -1;
  if (uid !== account.uid || gid !== account.gid) {
    throw new PrivilegeError(
      `postwarden runs as ${describeCurrentUser()}, but user and group ` +
        `are ${account.user} (uid ${account.uid}) and ${account.group} ` +
        `(gid ${account.gid}). Start it as root, so that it can switch, ` +
        `or as ${account.user} with group ${account.group}`,
    );
  }
  return { action: "keep", account };
}

function describeCurrentUser(): string {
  const uid = process.getuid?.() ?? -1;
  const gid = process.getgid?.() ?? -1;
  let name = String(uid);
  try {
    name = userInfo().username;
  } catch {
    // A uid without a passwd entry: the number alone names it.
  }
  return `user ${name} (uid ${uid}, gid ${gid})`;
}

/**
 * Creates the data directory if needed and gives it and the LMDB store
 * files to the account, so that the store can be opened after the switch.
 * A cache directory outside data_directory is changed only when this call
 * creates it. Symbolic links and files with more than one link are
 * rejected: the account owns the directory and could otherwise make root
 * change the owner of another file.
 */
export function prepareDataDirectory(config: Config, account: Account): void {
  const directories = new Set([config.dataDirectory]);
  const localPath = config.cache.settings?.localPath;
  if (localPath !== undefined) directories.add(dirname(localPath));
  for (const directory of directories) {
    let created: string | undefined;
    try {
      created = mkdirSync(directory, { recursive: true, mode: 0o750 });
    } catch (error) {
      throw new PrivilegeError(
        `cannot create ${directory}: ${(error as Error).message}. Create ` +
          `it with "install -d -o ${account.user} -g ${account.group} ` +
          `-m 0750 ${directory}"`,
      );
    }
    if (created !== undefined || directory === config.dataDirectory) {
      changeOwner(directory, account, true);
    }
  }
  if (localPath !== undefined) {
    // lmdb names its lock file after the store file.
    for (const path of [localPath, `${localPath}-lock`]) {
      if (existsSync(path)) changeOwner(path, account, false);
    }
  }
}

/** Gives a file or directory to the account without following links. */
function changeOwner(path: string, account: Account, directory: boolean) {
  const flags =
    constants.O_RDONLY |
    constants.O_NOFOLLOW |
    constants.O_NONBLOCK |
    (directory ? constants.O_DIRECTORY : 0);
  let fd: number;
  try {
    fd = openSync(path, flags);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const reason =
      code === "ELOOP"
        ? "is a symbolic link"
        : code === "ENOTDIR"
          ? "is not a directory"
          : (error as Error).message;
    throw new PrivilegeError(
      `cannot give ${path} to user ${account.user}: ${reason}. Remove it ` +
        "or set data_directory to a directory of its own",
    );
  }
  try {
    const info = fstatSync(fd);
    if (!directory && (!info.isFile() || info.nlink !== 1)) {
      throw new PrivilegeError(
        `cannot give ${path} to user ${account.user}: not a regular file ` +
          "with a single link. Remove it",
      );
    }
    if (info.uid !== account.uid || info.gid !== account.gid) {
      fchownSync(fd, account.uid, account.gid);
    }
  } finally {
    closeSync(fd);
  }
}

/**
 * Switches the process to the account: groups first, then gid, then uid,
 * because changing groups and gid needs root. Throws PrivilegeError unless
 * verifySwitch confirms the result.
 */
export function switchAccount(account: Account): void {
  try {
    // Node has process.initgroups on POSIX, but @types/node 20 omits it.
    const posix = process as NodeJS.Process & {
      initgroups?: (user: string, extraGroup: number) => void;
    };
    if (posix.initgroups === undefined) {
      throw new Error("process.initgroups is not available on this platform");
    }
    posix.initgroups(account.user, account.gid);
    if (account.supplementaryGids.length > 0) {
      // The kernel's list, because process.getgroups() adds the effective
      // gid (still root's) when the list lacks it.
      const status = readFileSync("/proc/self/status", "utf8");
      const current = statusIds(status, "Groups") ?? [];
      process.setgroups?.([
        ...new Set([...current, ...account.supplementaryGids]),
      ]);
    }
    process.setgid?.(account.gid);
    process.setuid?.(account.uid);
  } catch (error) {
    throw new PrivilegeError(
      `switching to user ${account.user} failed: ${(error as Error).message}`,
    );
  }
  verifySwitch(account);
}

/** Returns the ids on a /proc status line such as "Uid:\t0\t0\t0\t0". */
export function statusIds(status: string, field: string): number[] | undefined {
  const line = status.split("\n").find((text) => text.startsWith(`${field}:`));
  if (line === undefined) return undefined;
  return line
    .slice(field.length + 1)
    .trim()
    .split(/\s+/)
    .filter((item) => item !== "")
    .map(Number);
}

function sameSet(actual: readonly number[], expected: readonly number[]) {
  const a = [...new Set(actual)].sort((x, y) => x - y);
  const b = [...new Set(expected)].sort((x, y) => x - y);
  return a.length === b.length && a.every((value, index) => value === b[index]);
}

/**
 * Lists what differs from the account in one /proc/self/task/TID/status:
 * the real, effective, saved and file-system ids, the groups, and the
 * permitted and effective capabilities, which must be empty.
 */
function statusProblems(status: string, account: Account): string[] {
  const problems: string[] = [];
  const uids = statusIds(status, "Uid");
  const gids = statusIds(status, "Gid");
  const groups = statusIds(status, "Groups") ?? [];
  if (uids?.length !== 4 || uids.some((id) => id !== account.uid)) {
    problems.push(`uids ${String(uids)}`);
  }
  if (gids?.length !== 4 || gids.some((id) => id !== account.gid)) {
    problems.push(`gids ${String(gids)}`);
  }
  if (!sameSet(groups, account.groups)) {
    problems.push(`groups ${groups.join(" ")}`);
  }
  for (const field of ["CapPrm", "CapEff"]) {
    const line = status.split("\n").find((text) => text.startsWith(field));
    if (line === undefined || !/^\w+:\s*0+$/.test(line.trim())) {
      problems.push(`capabilities ${line ?? `${field} missing`}`);
    }
  }
  return problems;
}

/**
 * Checks the process after a switch: the ids Node reports, every thread's
 * credentials in /proc (the C library applies setuid to all threads), and
 * that setuid(0) now fails. Throws PrivilegeError listing what differs.
 */
export function verifySwitch(account: Account): void {
  const problems: string[] = [];
  const ids = {
    uid: process.getuid?.(),
    euid: process.geteuid?.(),
    gid: process.getgid?.(),
    egid: process.getegid?.(),
  };
  if (ids.uid !== account.uid || ids.euid !== account.uid) {
    problems.push(`uid ${ids.uid} and euid ${ids.euid}`);
  }
  if (ids.gid !== account.gid || ids.egid !== account.gid) {
    problems.push(`gid ${ids.gid} and egid ${ids.egid}`);
  }
  const groups = process.getgroups?.() ?? [];
  if (!sameSet(groups, account.groups)) {
    problems.push(`groups ${groups.join(" ")}`);
  }
  try {
    for (const task of readdirSync("/proc/self/task")) {
      let status: string;
      try {
        status = readFileSync(`/proc/self/task/${task}/status`, "utf8");
      } catch {
        continue; // The thread has exited.
      }
      for (const problem of statusProblems(status, account)) {
        problems.push(`thread ${task}: ${problem}`);
      }
    }
  } catch (error) {
    problems.push(`cannot read /proc/self/task: ${(error as Error).message}`);
  }
  let regainedRoot = false;
  try {
    process.setuid?.(0);
    regainedRoot = process.geteuid?.() === 0;
  } catch {
    // EPERM, as expected.
  }
  if (regainedRoot) problems.push("setuid(0) succeeded");
  if (problems.length > 0) {
    throw new PrivilegeError(
      `switching to user ${account.user} (uid ${account.uid}), group ` +
        `${account.group} (gid ${account.gid}), groups ` +
        `${account.groups.join(" ")} failed; the process has ` +
        problems.join(", "),
    );
  }
}

/** A file that the running user must be able to read, and its source. */
export interface RequiredFile {
  /** The parameter or option that names the file. */
  source: string;
  path: string;
}

/**
 * Lists the configuration file and the table, certificate and key files
 * the configuration names. Call it before switching user: a directory the
 * user cannot search would hide the file from existsSync afterwards.
 */
export function requiredFiles(
  configFile: string,
  config: Config,
): RequiredFile[] {
  const files: RequiredFile[] = [];
  if (existsSync(configFile)) {
    files.push({ source: "configuration file", path: configFile });
  }
  const parameters = config.parameters;
  for (const item of (parameters.access_list ?? "").split(/[\s,]+/)) {
    if (item.startsWith("cidr:")) {
      files.push({ source: "access_list", path: item.slice("cidr:".length) });
    }
  }
  const replyMap = (parameters.dnsbl_reply_map ?? "").trim();
  if (replyMap.startsWith("texthash:")) {
    files.push({
      source: "dnsbl_reply_map",
      path: replyMap.slice("texthash:".length),
    });
  }
  for (const name of ["tls_cert_file", "tls_key_file"]) {
    const path = parameters[name] ?? "";
    if (path !== "") files.push({ source: name, path });
  }
  return files;
}

/**
 * Opens each file for reading as the current user, who must be able to
 * read them again after start-up. Throws PrivilegeError naming every file
 * that fails.
 */
export function checkReadable(files: RequiredFile[], user: string): void {
  const problems: string[] = [];
  for (const { source, path } of files) {
    try {
      closeSync(openSync(path, constants.O_RDONLY | constants.O_NONBLOCK));
    } catch (error) {
      problems.push(
        `${source} ${path} is not readable by user ${user}: ` +
          `${(error as Error).message}`,
      );
    }
  }
  if (problems.length > 0) {
    throw new PrivilegeError(
      `${problems.join("; ")}. Make each file and its directories ` +
        `readable by ${user}, for example with chgrp and chmod g+r`,
    );
  }
}
