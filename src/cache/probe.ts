// Opens an LMDB store and reads every entry, then exits 0. LocalStore runs
// this in a child process before opening a store itself, because LMDB
// trusts its file: a corrupt store can crash the reading process with a
// segmentation fault, and that must not be the daemon.
import { open } from "lmdb";

const path = process.argv[2];
if (path === undefined) {
  process.stderr.write("usage: probe.js STORE\n");
  process.exit(2);
}
const db = open<string, string>({
  path,
  encoding: "string",
  compression: false,
});
let count = 0;
for (const entry of db.getRange()) {
  if (typeof entry.key === "string") count++;
}
await db.close();
process.stdout.write(`${count}\n`);
