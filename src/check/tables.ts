// Lists the files a configuration reads (cidr tables in access_list, a
// texthash dnsbl_reply_map, the STARTTLS certificate and key) and checks
// that the user can read them. Loading the configuration has already
// parsed their contents, so only permissions are left to check here.
import type { Config } from "../config/load.js";
import { splitList } from "../config/load.js";
import { readProblem, type FileUser } from "./access.js";
import type { Problem } from "./problem.js";

interface TableFile {
  parameter: string;
  path: string;
}

export function referencedFiles(config: Config): TableFile[] {
  const files: TableFile[] = [];
  const parameters = config.parameters;
  for (const item of splitList(parameters.access_list ?? "")) {
    if (item.startsWith("cidr:")) {
      files.push({ parameter: "access_list", path: item.slice(5) });
    }
  }
  const replyMap = (parameters.dnsbl_reply_map ?? "").trim();
  if (replyMap.startsWith("texthash:")) {
    files.push({
      parameter: "dnsbl_reply_map",
      path: replyMap.slice("texthash:".length),
    });
  }
  for (const parameter of ["tls_cert_file", "tls_key_file"]) {
    const path = parameters[parameter] ?? "";
    if (path !== "") files.push({ parameter, path });
  }
  return files;
}

/** Returns a problem for each referenced file that `user` cannot read. */
export function checkTableAccess(config: Config, user: FileUser): Problem[] {
  const problems: Problem[] = [];
  for (const { parameter, path } of referencedFiles(config)) {
    let reason: string | undefined;
    try {
      reason = readProblem(path, user);
    } catch (error) {
      reason = (error as Error).message;
    }
    if (reason !== undefined) {
      problems.push({
        file: path,
        line: 0,
        reason: `${parameter}: cannot be read: ${reason}`,
      });
    }
  }
  return problems;
}
