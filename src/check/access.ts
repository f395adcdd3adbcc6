// Decides from owner, group and mode bits whether a user may read a file or
// connect to a UNIX-domain socket, which needs write permission on the
// socket and search permission on every directory above it. It ignores
// ACLs and capabilities other than root's, so a file that an ACL opens to
// the user is reported as not accessible.
import { statSync } from "node:fs";
import { dirname, resolve } from "node:path";

/** The identity whose permissions are checked. */
export interface FileUser {
  /** Name for messages, such as "postfix" or "uid 107". */
  name: string;
  uid: number;
  /** Primary and supplementary group ids. */
  gids: number[];
}

/**
 * The user running this process. As root, `postwarden check` judges files
 * as the configured run-time user instead, because root passes every
 * permission check.
 */
export function currentUser(): FileUser {
  const uid = process.getuid?.() ?? 0;
  const gid = process.getgid?.() ?? 0;
  const groups = process.getgroups?.() ?? [];
  const name =
    uid === 0 ? "root" : (process.env.USER ?? process.env.LOGNAME ?? "");
  return {
    name: name === "" ? `uid ${uid}` : name,
    uid,
    gids: [gid, ...groups],
  };
}

const READ = 4;
const WRITE = 2;
const SEARCH = 1;

function allowed(
  mode: number,
  ownerUid: number,
  ownerGid: number,
  user: FileUser,
  bit: number,
): boolean {
  if (user.uid === 0) return true;
  if (user.uid === ownerUid) return ((mode >> 6) & bit) !== 0;
  if (user.gids.includes(ownerGid)) return ((mode >> 3) & bit) !== 0;
  return (mode & bit) !== 0;
}

/**
 * Returns why `user` cannot reach `path` with the permission `bit` on the
 * file itself, or undefined when it can. Throws the stat error of the
 * file or of a directory above it.
 */
function accessProblem(
  path: string,
  user: FileUser,
  bit: number,
): string | undefined {
  const absolute = resolve(path);
  const directories: string[] = [];
  for (let dir = dirname(absolute); ; dir = dirname(dir)) {
    directories.unshift(dir);
    if (dir === dirname(dir)) break;
  }
  for (const dir of directories) {
    const stat = statSync(dir);
    if (!allowed(stat.mode, stat.uid, stat.gid, user, SEARCH)) {
      return `${user.name} has no search permission on directory ${dir}`;
    }
  }
  const stat = statSync(absolute);
  if (!allowed(stat.mode, stat.uid, stat.gid, user, bit)) {
    const what = bit === READ ? "read" : "write";
    const mode = (stat.mode & 0o777).toString(8).padStart(3, "0");
    return (
      `${user.name} has no ${what} permission ` +
      `(owner uid ${stat.uid}, group gid ${stat.gid}, mode ${mode})`
    );
  }
  return undefined;
}

/** Returns why `user` cannot read `path`, or undefined when it can. */
export function readProblem(path: string, user: FileUser): string | undefined {
  return accessProblem(path, user, READ);
}

/**
 * Returns why `user` cannot connect to the UNIX-domain socket `path` for
 * lack of permission, or undefined when it may.
 */
export function connectProblem(
  path: string,
  user: FileUser,
): string | undefined {
  return accessProblem(path, user, WRITE);
}
