// Checks that smtpd's pass socket exists, that the user may connect to it,
// and that a process listens on it. The last step really connects and
// closes at once, because the sockets that master(8) binds are listed in
// /proc/net/unix by a path relative to their queue directory, which does
// not tell one Postfix instance from another. The smtpd that takes the
// test connection logs it; Postfix 3.7.11 writes "warning:
// pass_accept_attr: cannot receive file descriptor" and "error: accept
// connection".
import { lstatSync } from "node:fs";
import { connect } from "node:net";
import { connectProblem, type FileUser } from "./access.js";

/** Deadline for the test connection; a local accept takes microseconds. */
const CONNECT_TIMEOUT_MS = 2_000;

/**
 * Returns why the pass socket at `path` cannot be used by `user`, or
 * undefined when it can. The test connection is made as this process.
 */
export async function passSocketProblem(
  path: string,
  user: FileUser,
): Promise<string | undefined> {
  try {
    if (!lstatSync(path).isSocket()) {
      return "not a socket";
    }
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT") {
      return (
        "not found: start Postfix (master creates the socket), or fix " +
        "queue_directory or smtpd_pass_socket"
      );
    }
    return `cannot stat: ${(error as Error).message}`;
  }

  let denied: string | undefined;
  try {
    denied = connectProblem(path, user);
  } catch (error) {
    return `cannot stat: ${(error as Error).message}`;
  }
  if (denied !== undefined) {
    return `cannot connect as ${user.name}: ${denied}`;
  }
  return testConnect(path);
}

function testConnect(path: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    const socket = connect({ path });
    const finish = (problem: string | undefined): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(problem);
    };
    const timer = setTimeout(
      () => finish(`connect timed out after ${CONNECT_TIMEOUT_MS / 1000}s`),
      CONNECT_TIMEOUT_MS,
    );
    socket.once("connect", () => finish(undefined));
    socket.once("error", (error: NodeJS.ErrnoException) => {
      finish(
        error.code === "ECONNREFUSED"
          ? "connection refused: no process listens on it (is Postfix " +
              'running? Start it with "postfix start")'
          : `connect failed: ${error.message}`,
      );
    });
  });
}
