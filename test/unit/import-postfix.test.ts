// `postwarden import-postfix` on a Postfix configuration with a typical
// postscreen setup, read through the real postconf(1) (no Postfix needs to
// run). The output is parsed and loaded with postwarden's own loader.
import { before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildConfig } from "../../src/config/load.js";
import { parseMainCf } from "../../src/config/syntax.js";
import { importPostfix } from "../../src/postfix/import.js";
import { readSnapshot } from "../../src/postfix/snapshot.js";

const MASTER_CF = `
smtp      inet  n       -       y       -       1       postscreen
  -o postscreen_greet_wait=\${stress?{3}:{8}}s
smtpd     pass  -       -       y       -       -       smtpd
dnsblog   unix  -       -       y       -       0       dnsblog
tlsproxy  unix  -       -       y       -       0       tlsproxy
`;

function mainCf(directory: string): string {
  return `
mydomain = example.com
myhostname = mx1.$mydomain
mynetworks = 127.0.0.0/8 [::1]/128 192.0.2.0/24 [2001:db8:1::]/48
inet_interfaces = all
inet_protocols = ipv4
queue_directory = ${directory}/spool
smtpd_banner = $myhostname ESMTP
smtpd_helo_required = yes
postscreen_access_list = permit_mynetworks,
    cidr:$config_directory/postscreen_access.cidr,
    hash:$config_directory/postscreen_allow
postscreen_blacklist_action = drop
postscreen_greet_action = enforce
postscreen_dnsbl_threshold = 3
postscreen_dnsbl_whitelist_threshold = -1
postscreen_dnsbl_action = enforce
postscreen_dnsbl_sites =
    zen.spamhaus.org=127.0.0.[2..11]*3
    zen.spamhaus.org=127.0.0.[10;11]*8
    bl.spamcop.net*2
    list.dnswl.org=127.0.[0..255].[0;1;2;3]*-2
    swl.spamhaus.org*-4
postscreen_dnsbl_reply_map = texthash:$config_directory/dnsbl_reply_map
postscreen_cache_map = proxy:btree:$data_directory/postscreen_cache
postscreen_pipelining_enable = yes
postscreen_non_smtp_command_enable = yes
postscreen_bare_newline_enable = yes
postscreen_bare_newline_action = enforce
postscreen_watchdog_timeout = 20s
postscreen_forbidden_commands = CONNECT GET POST HEAD regexp:{{/^[^A-Z]/ Bogus}}
`;
}

let output: string;
let directory: string;

before(async () => {
  directory = mkdtempSync(join(tmpdir(), "postwarden-import-"));
  mkdirSync(join(directory, "spool"));
  writeFileSync(join(directory, "main.cf"), mainCf(directory));
  writeFileSync(join(directory, "master.cf"), MASTER_CF);
  writeFileSync(
    join(directory, "postscreen_access.cidr"),
    "192.0.2.66 reject\n198.51.100.0/24 permit\n",
  );
  writeFileSync(
    join(directory, "dnsbl_reply_map"),
    "secretkey.zen.dq.spamhaus.net zen.spamhaus.org\n",
  );
  output = importPostfix(await readSnapshot(directory));
});

/** The value of `name` in the output, after continuation lines. */
function valueOf(name: string): string | undefined {
  return parseMainCf(output, "output").find((setting) => setting.name === name)
    ?.value;
}

describe("import-postfix", () => {
  test("actions and thresholds", () => {
    assert.equal(valueOf("greet_action"), "enforce");
    assert.equal(valueOf("dnsbl_action"), "enforce");
    assert.equal(valueOf("denylist_action"), "drop");
    assert.equal(valueOf("bare_newline_action"), "enforce");
    assert.equal(valueOf("dnsbl_threshold"), "3");
    assert.equal(valueOf("dnsbl_allowlist_threshold"), "-1");
  });

  test("weighted DNS-list entries", () => {
    assert.equal(
      valueOf("dnsbl_sites"),
      "zen.spamhaus.org=127.0.0.[2..11]*3 zen.spamhaus.org=127.0.0.[10;11]*8 " +
        "bl.spamcop.net*2 list.dnswl.org=127.0.[0..255].[0;1;2;3]*-2 " +
        "swl.spamhaus.org*-4",
    );
    assert.match(output, /^dnsbl_sites =\n {4}zen\.spamhaus\.org=/m);
  });

  test("access list keeps cidr tables", () => {
    assert.equal(
      valueOf("access_list"),
      `permit_mynetworks cidr:${directory}/postscreen_access.cidr`,
    );
    assert.match(
      output,
      new RegExp(
        `^# left out "hash:${directory}/postscreen_allow": postwarden's ` +
          "access_list takes permit_mynetworks and cidr:/path only$",
        "m",
      ),
    );
  });

  test("shared parameters expanded", () => {
    assert.equal(valueOf("myhostname"), "mx1.example.com");
    assert.equal(
      valueOf("mynetworks"),
      "127.0.0.0/8 [::1]/128 192.0.2.0/24 [2001:db8:1::]/48",
    );
    assert.equal(valueOf("smtpd_banner"), "${myhostname} ESMTP");
    assert.equal(
      valueOf("dnsbl_reply_map"),
      `texthash:${directory}/dnsbl_reply_map`,
    );
  });

  test("defaults that follow smtpd settings", () => {
    // postscreen_helo_required defaults to $smtpd_helo_required.
    assert.equal(valueOf("helo_required"), "yes");
  });

  test("deep tests enabled", () => {
    assert.equal(valueOf("pipelining_enable"), "yes");
    assert.equal(valueOf("non_smtp_command_enable"), "yes");
    assert.equal(valueOf("bare_newline_enable"), "yes");
  });

  test("master.cf settings", () => {
    assert.equal(valueOf("greet_wait"), "${stress?{3}:{8}}s");
    assert.equal(valueOf("listen"), "0.0.0.0:25");
    assert.equal(valueOf("queue_directory"), `${directory}/spool`);
    assert.equal(valueOf("postfix_config_directory"), directory);
    assert.equal(valueOf("smtpd_pass_socket"), undefined);
  });

  test("private pass service noted", () => {
    assert.match(
      output,
      /^# master\.cf line \d+ makes the pass service private, which$/m,
    );
  });

  test("forbidden commands without tables", () => {
    assert.equal(valueOf("forbidden_commands"), "CONNECT GET POST HEAD");
    assert.match(
      output,
      /^# left out "regexp:\{\{\/\^\[\^A-Z\]\/ Bogus\}\}": table lookups are not supported/m,
    );
  });

  test("unmapped settings become comments", () => {
    assert.match(
      output,
      /^# postscreen_watchdog_timeout = 20s\n# {3}postwarden has no equivalent of this postscreen parameter$/m,
    );
    assert.match(
      output,
      /^# postscreen_cache_map = proxy:btree:\$data_directory\/postscreen_cache\n# {3}postwarden keeps its own verdict cache/m,
    );
    assert.equal(valueOf("cache_map"), undefined);
    assert.equal(valueOf("watchdog_timeout"), undefined);
  });

  test("output loads with postwarden's loader", () => {
    const config = buildConfig(parseMainCf(output, "output"));
    assert.equal(config.greetAction, "enforce");
    assert.equal(config.greetWaitMs, 8000);
    assert.equal(config.dnsbl.threshold, 3);
    // Two entries share zen.spamhaus.org, which is queried once.
    assert.equal(config.dnsbl.lists.length, 4);
    assert.equal(config.smtpdBanner, "mx1.example.com ESMTP");
    // mynetworks comes first and holds 192.0.2.66, listed as reject.
    assert.equal(config.accessList.evaluate("192.0.2.66"), "permit");
    assert.equal(config.accessList.evaluate("198.51.100.7"), "permit");
    assert.equal(config.accessList.evaluate("203.0.113.1"), undefined);
  });
});
