// Hand-off classes end to end: a private Postfix with three pass services
// (the default smtpd plus smtpd-trusted and smtpd-strict, each with its
// own syslog_name), rbldnsd serving a DNS list on loopback, and postwarden
// choosing the service from each client's verdict. The maillog's program
// name shows which smtpd took the client.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { PostfixInstance } from "../support/postfix.js";
import { PostwardenProcess } from "../support/postwarden.js";
import { SmtpClient } from "../support/smtp-client.js";
import { requireRootAndPostfix } from "../support/requirements.js";
import { Rbldnsd } from "../support/rbldnsd.js";

requireRootAndPostfix();

const SOA = "$SOA 300 ns.test. admin.test. 1 600 300 86400 120";
const TRUSTED_CLIENT = "127.0.0.70";
const LISTED_CLIENT = "127.0.0.71";
const PLAIN_CLIENT = "127.0.0.72";

let postfix: PostfixInstance;
let rbldnsd: Rbldnsd;

before(async () => {
  postfix = PostfixInstance.create({}, [
    "smtpd-trusted pass - - n - - smtpd -o syslog_name=postfix/smtpd-trusted",
    "smtpd-strict pass - - n - - smtpd -o syslog_name=postfix/smtpd-strict",
  ]);
  await postfix.start();
  rbldnsd = await Rbldnsd.start([
    {
      name: "bl.test",
      type: "ip4set",
      lines: [SOA, ":127.0.0.2:", "127.0.0.2", LISTED_CLIENT],
    },
  ]);
});

after(async () => {
  await rbldnsd?.stop();
  await postfix?.destroy();
});

function escape(text: string): string {
  return text.replace(/[[\].*+?^$()|{}\\]/g, "\\$&");
}

/** Connects from `source`, reads the greeting through smtpd's, and quits. */
async function visit(port: number, source: string): Promise<number> {
  const client = await SmtpClient.open(port, "127.0.0.1", source);
  try {
    for (;;) {
      const line = await client.readLine(15_000);
      if (line[3] !== "-") {
        assert.equal(line, "220 pass-test.localdomain ESMTP Postfix");
        break;
      }
    }
    assert.match((await client.command("QUIT"))[0] ?? "", /^221 /);
  } finally {
    client.socket.destroy();
  }
  return client.localPort;
}

/** Clients and the smtpd service (syslog name) each one must reach. */
const CASES = [
  { source: TRUSTED_CLIENT, service: "smtpd-trusted", passClass: "trusted" },
  { source: LISTED_CLIENT, service: "smtpd-strict", passClass: "strict" },
  { source: PLAIN_CLIENT, service: "pass", passClass: undefined },
] as const;

test("pass classes choose the service", async () => {
  const warden = PostwardenProcess.startInFrontOf(postfix, [
    "-o",
    "access_list=permit_mynetworks",
    "-o",
    `mynetworks=${TRUSTED_CLIENT}/32`,
    "-o",
    `dns_servers=${rbldnsd.server}`,
    "-o",
    "dnsbl_sites=bl.test*1",
    "-o",
    "dnsbl_threshold=2",
    "-o",
    "smtpd_pass_classes=trusted = smtpd-trusted, strict = smtpd-strict",
  ]);
  try {
    const port = await warden.listeningPort();
    for (const { source, service, passClass } of CASES) {
      const clientPort = await visit(port, source);
      const label = escape(`[${source}]:${clientPort}`);
      await postfix.waitForLog(
        new RegExp(
          `postfix/${service}/smtpd\\[\\d+\\]: connect from unknown${label}$`,
        ),
      );
      const classLines = warden.grep(new RegExp(`pass class .* for ${label}`));
      if (passClass === undefined) {
        assert.deepEqual(classLines, [], "a default hand-off logged a class");
      } else {
        assert.deepEqual(
          classLines.map((line) => line.replace(/^.*: pass/, "pass")),
          [
            `pass class ${passClass} for [${source}]:${clientPort}: ` +
              `service private/smtpd-${passClass}`,
          ],
        );
      }
      // The client reached exactly one smtpd service.
      const connects = postfix
        .log()
        .match(new RegExp(`connect from unknown${label}\\n`, "g"));
      assert.equal(connects?.length, 1, `connects of ${source}`);
    }
    await warden.waitForLog(
      new RegExp(`PASS NEW ${escape(`[${LISTED_CLIENT}]:`)}\\d+$`),
    );
    assert.equal(warden.grep(/DNSBL rank/).length, 0, "a client was listed");
  } finally {
    assert.equal(await warden.stop(), 0);
  }
});

test("pass classes config errors", async () => {
  const warden = PostwardenProcess.startInFrontOf(postfix, [
    "-o",
    "smtpd_pass_classes=trusted = smtpd-trusted, vip = smtpd-vip",
  ]);
  assert.equal(await warden.waitForExit(), 1);
  assert.match(
    warden.lines.join("\n"),
    /smtpd_pass_classes: unknown class "vip" in "vip=smtpd-vip": expected trusted or strict/,
  );
});
