// Loads the C++ addon. A missing or broken build stops startup with a
// message that says how to build it, instead of a bare stack trace.
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { existsSync } from "node:fs";
import type { Addon } from "../native/addon.js";

export type {
  Addon,
  NativeListener,
  NativeHandoffs,
  ListenerError,
} from "../native/addon.js";

export type { NativeSocket } from "./native-socket.js";

/** Bits for NativeSocket.watch(). */
export const READABLE = 1;
export const WRITABLE = 2;

/** Returns the package root, from either src/ (tsx) or dist/src/ (tsc). */
export function packageRoot(): string {
  let directory = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(directory, "package.json"))) {
    const parent = dirname(directory);
    if (parent === directory) {
      throw new Error("postwarden: package.json not found above " + directory);
    }
    directory = parent;
  }
  return directory;
}

export class AddonLoadError extends Error {}

let loaded: Addon | undefined;

/** Loads the addon once; throws AddonLoadError with build instructions. */
export function loadAddon(): Addon {
  if (loaded) return loaded;
  const root = packageRoot();
  const path = join(root, "build", "Release", "postwarden.node");
  const require = createRequire(import.meta.url);
  try {
    loaded = require(path) as Addon;
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new AddonLoadError(
      `cannot load the native addon ${path}: ${reason}\n` +
        `Build it with "npm ci" (or "npm run install") in ${root}; ` +
        "this needs g++, make and python3.",
    );
  }
  return loaded;
}
