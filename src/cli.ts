#!/usr/bin/env node
// Command-line entry: `postwarden run` starts the daemon, `postwarden check`
// validates a configuration and the Postfix side, and `postwarden
// import-postfix` converts postscreen settings.
import { Command, Option } from "commander";
import { accessSync, constants, statSync } from "node:fs";
import { ConfigError, loadConfig, type Config } from "./config/load.js";
import type { Setting } from "./config/syntax.js";
import { AddonLoadError, loadAddon } from "./native.js";
import type { DaemonLogger, Logger } from "./log/logger.js";
import { createLogger } from "./log/create.js";
import {
  readPostfixSettings,
  type PostfixSettings,
} from "./postfix/postconf.js";
import { parseNetworkList } from "./access/network.js";
import { currentUser, type FileUser } from "./check/access.js";
import { checkPostfixSide } from "./check/postfix-side.js";
import { formatProblem, type Problem } from "./check/problem.js";
import { checkTableAccess } from "./check/tables.js";
import { importPostfix } from "./postfix/import.js";
import { PostconfError } from "./postfix/postconf-values.js";
import { readSnapshot } from "./postfix/snapshot.js";
import { Server } from "./server.js";
import { openMetrics } from "./metrics/http.js";
import { Reloader, type LoadedConfig } from "./reload.js";
import {
  checkReadable,
  planPrivileges,
  prepareDataDirectory,
  PrivilegeError,
  requiredFiles,
  resolveAccount,
  switchAccount,
  type Account,
} from "./privilege.js";
import { limitYoungGeneration } from "./heap.js";
import {
  CacheCliError,
  deleteCommand,
  flushCommand,
  greylistCommand,
  listCommand,
  showCommand,
  statsCommand,
} from "./cache/cli.js";

const DEFAULT_CONFIG = "/etc/postwarden/main.cf";

interface CommonOptions {
  config: string;
  listen?: string[];
  queueDirectory?: string;
  smtpdPassSocket?: string;
  postfixConfigDirectory?: string;
  greetWait?: string;
  greetAction?: string;
  greetMode?: string;
  parameter: string[];
}

function addCommonOptions(command: Command): Command {
  return command
    .option("-c, --config <file>", "configuration file", DEFAULT_CONFIG)
    .option(
      "--listen <address...>",
      'address to listen on, "addr:port" or "[v6addr]:port" (repeatable)',
    )
    .option("--queue-directory <dir>", "Postfix queue directory")
    .option("--smtpd-pass-socket <path>", "smtpd pass socket to hand off to")
    .option(
      "--postfix-config-directory <dir>",
      "Postfix configuration directory read with postconf",
    )
    .option("--greet-wait <time>", "pregreet wait, such as 6s")
    .addOption(
      new Option("--greet-action <action>", "pregreet action").choices([
        "ignore",
        "enforce",
        "drop",
      ]),
    )
    .addOption(
      new Option("--greet-mode <mode>", "pregreet mode").choices([
        "teaser",
        "silent",
        "stutter",
      ]),
    )
    .option(
      "-o, --parameter <name=value>",
      "set any parameter, overriding the file (repeatable)",
      (value: string, previous: string[]) => [...previous, value],
      [] as string[],
    );
}

function overridesFrom(options: CommonOptions): Setting[] {
  const origin = { file: "command line", line: 0 };
  const settings: Setting[] = [];
  const add = (name: string, value: string | undefined): void => {
    if (value !== undefined) settings.push({ name, value, origin });
  };
  add("listen", options.listen?.join(" "));
  add("queue_directory", options.queueDirectory);
  add("smtpd_pass_socket", options.smtpdPassSocket);
  add("postfix_config_directory", options.postfixConfigDirectory);
  add("greet_wait", options.greetWait);
  add("greet_action", options.greetAction);
  add("greet_mode", options.greetMode);
  for (const item of options.parameter) {
    const equals = item.indexOf("=");
    if (equals < 1) {
      throw new ConfigError([
        `command line: invalid -o "${item}": expected name=value`,
      ]);
    }
    add(item.slice(0, equals).trim(), item.slice(equals + 1).trim());
  }
  return settings;
}

function readConfig(
  options: CommonOptions,
  requireListen = true,
  baseSettings: Setting[] = [],
  stress = false,
): Config {
  // Without an explicit file, a missing default file means "all defaults",
  // so that command-line flags alone can run postwarden.
  return loadConfig(options.config, overridesFrom(options), {
    missingFileIsEmpty: options.config === DEFAULT_CONFIG,
    requireListen,
    baseSettings,
    stress,
  });
}

/**
 * Reads the configuration with Postfix's myhostname and mynetworks as
 * defaults, which the file and the command line override. Returns the
 * configuration, what Postfix said, and warnings to log.
 */
async function readConfigWithPostfix(options: CommonOptions): Promise<{
  config: Config;
  stressConfig: Config;
  postfix: PostfixSettings;
  warnings: string[];
}> {
  const first = readConfig(options);
  const postfix = await readPostfixSettings(first.postfixConfigDirectory);
  const warnings: string[] = [];
  if (postfix.families.assumedBecause !== undefined) {
    warnings.push(
      `${postfix.families.assumedBecause}; assuming smtpd accepts IPv4 and ` +
        "IPv6 clients, and using postwarden's own myhostname and mynetworks",
    );
  }
  const origin = {
    file: `postconf -c ${first.postfixConfigDirectory}`,
    line: 0,
  };
  const base: Setting[] = [];
  if (postfix.myhostname !== undefined) {
    base.push({ name: "myhostname", value: postfix.myhostname, origin });
  }
  if (postfix.mynetworks !== undefined) {
    try {
      parseNetworkList(postfix.mynetworks);
      base.push({ name: "mynetworks", value: postfix.mynetworks, origin });
    } catch (error) {
      warnings.push(
        `Postfix's mynetworks "${postfix.mynetworks}" is not a plain list of ` +
          `networks (${(error as Error).message}); using postwarden's ` +
          "default. Set mynetworks in postwarden's configuration",
      );
    }
  }
  return {
    config: readConfig(options, true, base),
    stressConfig: readConfig(options, true, base, true),
    postfix,
    warnings,
  };
}

/**
 * Reads the configuration for the daemon, at startup and on reload, and
 * checks that Postfix accepts clients of every listener's address family.
 * `listen` is the running listeners' addresses on reload, because those
 * stay until a restart.
 */
async function readDaemonConfig(
  options: CommonOptions,
  listen?: Config["listen"],
): Promise<LoadedConfig> {
  const { config, stressConfig, postfix, warnings } =
    await readConfigWithPostfix(options);
  const families = postfix.families;
  const v6Listeners = (listen ?? config.listen).filter(({ host }) =>
    host.includes(":"),
  );
  if (v6Listeners.length > 0 && !families.ipv6) {
    throw new ConfigError([
      `listen: IPv6 address ${v6Listeners[0]?.host ?? ""} configured, but ` +
        `Postfix in ${config.postfixConfigDirectory} has inet_protocols ` +
        "without ipv6, and its smtpd would exit on IPv6 clients. Remove " +
        "the IPv6 listen address or enable ipv6 in Postfix.",
    ]);
  }
  return { config, stressConfig, families, warnings };
}

async function run(options: CommonOptions): Promise<void> {
  const { config, stressConfig, families, warnings } =
    await readDaemonConfig(options);
  const logger = createLogger(config.log);
  const addon = loadAddon();
  for (const warning of warnings) logger.warning(warning);
  limitYoungGeneration();

  const plan = planPrivileges(config.privilege);
  const user = plan.account.user;
  const metrics = await openMetrics(config.metricsListen, logger);
  const server = new Server(
    config,
    addon,
    logger,
    families,
    stressConfig,
    metrics.metrics,
  );
  const reloader = new Reloader(
    server,
    async () => {
      const loaded = await readDaemonConfig(options, config.listen);
      loaded.warnings.push(...passSocketProblems(loaded.config, user));
      return loaded;
    },
    logger,
  );

  // Signal handlers first: a SIGTERM right after "listening on" must still
  // stop cleanly.
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    logger.info(`stopping on ${signal}`);
    void Promise.all([server.stop(), metrics.close()]).then(() => {
      reportDroppedLines(logger, config.log.destination);
      logger.info("stopped");
      process.exit(0);
    });
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
  process.on("SIGHUP", () => {
    if (!stopping) reloader.request();
  });

  bindListeners(server, plan.account);
  const files = requiredFiles(options.config, config);
  if (plan.action === "switch") {
    prepareDataDirectory(config, plan.account);
    switchAccount(plan.account);
  }
  logAccount(logger, plan.account, plan.action === "switch");
  checkReadable(files, user);
  for (const problem of passSocketProblems(config, user)) {
    logger.warning(problem);
  }
  server.start();
  await server.startPolicyService();
  for (const note of config.notes) logger.info(`note: ${note}`);
  logger.info(
    `postwarden started; handing off to ${config.smtpdPassSocket}; ` +
      `verdict cache ${config.cache.settings?.mapName ?? "off"}`,
  );
}

/**
 * Binds the listeners. A bind refused to a process that is not root gets
 * a hint, because ports below 1024 need root or CAP_NET_BIND_SERVICE.
 */
function bindListeners(server: Server, account: Account): void {
  try {
    server.bind();
  } catch (error) {
    const { code, syscall } = error as NodeJS.ErrnoException;
    if (code !== "EACCES" || syscall !== "bind" || process.getuid?.() === 0) {
      throw error;
    }
    throw new PrivilegeError(
      `${(error as Error).message}. Ports below 1024 need root: start ` +
        `postwarden as root, and it switches to user ${account.user} ` +
        "once the listeners are bound, or give it CAP_NET_BIND_SERVICE",
    );
  }
}

function logAccount(logger: Logger, account: Account, switched: boolean): void {
  const text =
    `user ${account.user} (uid ${account.uid}), group ${account.group} ` +
    `(gid ${account.gid}), groups ${account.groups.join(" ")}`;
  if (account.uid === 0) {
    logger.warning(
      `running as root because allow_root = yes: a flaw in postwarden ` +
        "would give a remote attacker root",
    );
  } else if (switched) {
    logger.info(`switched to ${text}; setuid(0) is denied`);
  } else {
    logger.info(`running as ${text}`);
  }
}

/**
 * Checks that `user` can use the pass sockets, the default and each
 * class's. Returns a warning for each that it cannot use, because every
 * client sent there would get a 421. Postfix may start later, so this
 * never stops postwarden.
 */
function passSocketProblems(config: Config, user: string): string[] {
  const paths = [
    config.smtpdPassSocket,
    ...Object.values(config.passClasses).map((service) => service.path),
  ];
  return paths.flatMap((path) => checkPassSocket(path, user) ?? []);
}

/** Returns why `user` cannot use smtpd's pass socket at `path`, if so. */
function checkPassSocket(path: string, user: string): string | undefined {
  let problem: string | undefined;
  try {
    if (!statSync(path).isSocket()) problem = "not a socket";
    else accessSync(path, constants.W_OK);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    problem =
      code === "ENOENT"
        ? "not found (is Postfix running, with a pass service of that name, and is queue_directory right?)"
        : code === "EACCES"
          ? `permission denied for user ${user}: add it to ` +
            "group postdrop for a public/ pass service, or run as user " +
            "postfix for a private/ one"
          : (error as Error).message;
  }
  if (problem === undefined) return undefined;
  return (
    `smtpd pass socket ${path}: ${problem}; clients get ` +
    '"421 4.3.2" replies until this is fixed'
  );
}

/** Logs how many lines missed the configured destination, if any. */
function reportDroppedLines(logger: DaemonLogger, destination: string): void {
  const count = logger.droppedLines;
  if (count === 0) return;
  const where =
    destination === "syslog"
      ? "did not reach the syslog socket and were written to stderr"
      : "were dropped because the log reader was too slow";
  logger.warning(`${count} log lines ${where}`);
}

/**
 * Validates the configuration, the files it reads and the Postfix side.
 * Prints the values in effect on stdout and each problem on stderr, and
 * sets exit status 1 when there is any.
 */
async function check(options: CommonOptions): Promise<void> {
  let config: Config;
  try {
    const loaded = await readConfigWithPostfix(options);
    config = loaded.config;
    for (const warning of loaded.warnings) {
      process.stderr.write(`postwarden: warning: ${warning}\n`);
    }
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    for (const problem of error.problems) {
      process.stderr.write(`postwarden: ${problem}\n`);
    }
    process.stderr.write(
      "postwarden: configuration invalid; the Postfix side was not checked\n",
    );
    process.exitCode = 1;
    return;
  }
  const lines = Object.entries(config.parameters).map(
    ([name, value]) => `${name} = ${value}`,
  );
  process.stdout.write(lines.join("\n") + "\n");

  const { user, problems: userProblems } = runningUser(config, options.config);
  const problems = [
    ...userProblems,
    ...checkTableAccess(config, user),
    ...(await checkPostfixSide(config, options.config, user)),
  ];
  for (const problem of problems) {
    process.stderr.write(`postwarden: ${formatProblem(problem)}\n`);
  }
  process.stderr.write(
    problems.length === 0
      ? `postwarden: check passed: configuration, tables and Postfix in ${config.postfixConfigDirectory}\n`
      : `postwarden: check failed: ${problems.length} problem(s)\n`,
  );
  process.exitCode = problems.length === 0 ? 0 : 1;
}

/**
 * Returns the user that `run` would screen clients as: the configured
 * user when this process is root (which switches to it), this process's
 * user otherwise. A configured user that does not exist is a problem, and
 * the checks then go on as this process's user.
 */
function runningUser(
  config: Config,
  configFile: string,
): { user: FileUser; problems: Problem[] } {
  if (process.getuid?.() !== 0) return { user: currentUser(), problems: [] };
  try {
    const account = resolveAccount(config.privilege);
    const user = { name: account.user, uid: account.uid, gids: account.groups };
    return { user, problems: [] };
  } catch (error) {
    if (!(error instanceof PrivilegeError)) throw error;
    return {
      user: currentUser(),
      problems: [{ file: configFile, line: 0, reason: error.message }],
    };
  }
}

/** Prints a postwarden configuration for the Postfix in `directory`. */
async function importFromPostfix(directory: string): Promise<void> {
  const snapshot = await readSnapshot(directory);
  process.stdout.write(importPostfix(snapshot));
}

function fail(error: unknown): never {
  if (error instanceof ConfigError) {
    process.stderr.write(
      "postwarden: fatal: invalid configuration:\n  " +
        error.problems.join("\n  ") +
        "\n",
    );
  } else if (
    error instanceof AddonLoadError ||
    error instanceof CacheCliError ||
    error instanceof PostconfError ||
    error instanceof PrivilegeError
  ) {
    process.stderr.write(`postwarden: fatal: ${error.message}\n`);
  } else {
    const message = error instanceof Error ? error.message : String(error);
    process.stderr.write(`postwarden: fatal: ${message}\n`);
  }
  process.exit(1);
}

const program = new Command()
  .name("postwarden")
  .description("Screens SMTP clients before handing them to Postfix smtpd");

addCommonOptions(
  program
    .command("run")
    .description("listen and screen clients until SIGTERM or SIGINT"),
).action((options: CommonOptions) => run(options).catch(fail));

addCommonOptions(
  program
    .command("check")
    .description(
      "validate the configuration, its table files and the Postfix side " +
        "(pass service, socket, smtpd settings); exit 1 on any problem",
    ),
).action((options: CommonOptions) => check(options).catch(fail));

program
  .command("import-postfix")
  .description(
    "print a postwarden configuration equivalent to the postscreen " +
      "settings of a Postfix instance",
  )
  .argument(
    "[config-directory]",
    "Postfix configuration directory",
    "/etc/postfix",
  )
  .action((directory: string) => importFromPostfix(directory).catch(fail));

const cache = program
  .command("cache")
  .description("inspect and edit the verdict cache, also while running");

function addCacheCommand(
  name: string,
  description: string,
  action: (
    config: Config,
    argument: string | undefined,
    json: boolean,
    out: (text: string) => void,
  ) => Promise<number>,
  argument?: string,
): void {
  const command = cache.command(name).description(description);
  if (argument !== undefined) command.argument(argument);
  addCommonOptions(command).option("--json", "print JSON");
  command.action(async (...args: unknown[]) => {
    const hasArgument = argument !== undefined;
    const value = hasArgument ? (args[0] as string) : undefined;
    const options = args[hasArgument ? 1 : 0] as CommonOptions & {
      json?: boolean;
    };
    try {
      const config = readConfig(options, false);
      const code = await action(config, value, options.json === true, (text) =>
        process.stdout.write(text),
      );
      process.exitCode = code;
    } catch (error) {
      fail(error);
    }
  });
}

addCacheCommand(
  "show",
  "show the verdicts for one client address",
  (config, address, json, out) => showCommand(config, address ?? "", json, out),
  "<address>",
);
addCacheCommand(
  "list",
  "list every client in the local store",
  (config, _a, json, out) => listCommand(config, json, out),
);
addCacheCommand(
  "greylist",
  "list greylist triplets, passed greylist keys and trapped clients",
  (config, _a, json, out) => greylistCommand(config, json, out),
);
addCacheCommand(
  "delete",
  "delete a client's verdicts, greylist and trap entries (address), or those of every client in a network (CIDR)",
  (config, target, _json, out) => deleteCommand(config, target ?? "", out),
  "<address-or-network>",
);
addCacheCommand("flush", "delete every client", (config, _a, _json, out) =>
  flushCommand(config, out),
);
addCacheCommand(
  "stats",
  "count entries and passed tests",
  (config, _a, json, out) => statsCommand(config, json, out),
);

await program.parseAsync();
