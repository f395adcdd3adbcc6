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

/** Waits for the smtpd whose syslog name is `service` to log the client. */
function expectSmtpd(
  service: string,
  source: string,
  port: number,
): Promise<string> {
  return postfix.waitForLog(
    new RegExp(
      `postfix/${service}/smtpd\\[\\d+\\]: connect from ` +
        `unknown${escape(`[${source}]:${port}`)}$`,
    ),
  );
}

test("pass classes choose the service", async () => {
  const warden = PostwardenProcess.start({
    args: [
      "--config",
      "/dev/null",
      "--listen",
      "127.0.0.1:0",
      "--queue-directory",
      postfix.queueDirectory,
      "--postfix-config-directory",
      postfix.configDirectory,
      "--greet-wait",
      "1s",
      "-o",
      "myhostname=warden.example.com",
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
    ],
  });
  try {
    const port = await warden.listeningPort();

    const trustedPort = await visit(port, TRUSTED_CLIENT);
    const trustedLabel = `[${TRUSTED_CLIENT}]:${trustedPort}`;
    await expectSmtpd("smtpd-trusted", TRUSTED_CLIENT, trustedPort);
    await warden.waitForLog(
      new RegExp(
        `pass class trusted for ${escape(trustedLabel)}: ` +
          "service private/smtpd-trusted$",
      ),
    );

    const listedPort = await visit(port, LISTED_CLIENT);
    const listedLabel = `[${LISTED_CLIENT}]:${listedPort}`;
    await expectSmtpd("smtpd-strict", LISTED_CLIENT, listedPort);
    await warden.waitForLog(new RegExp(`PASS NEW ${escape(listedLabel)}$`));
    await warden.waitForLog(
      new RegExp(
        `pass class strict for ${escape(listedLabel)}: ` +
          "service private/smtpd-strict$",
      ),
    );

    const plainPort = await visit(port, PLAIN_CLIENT);
    const plainLabel = `[${PLAIN_CLIENT}]:${plainPort}`;
    await expectSmtpd("pass", PLAIN_CLIENT, plainPort);
    await warden.waitForLog(new RegExp(`PASS NEW ${escape(plainLabel)}$`));
    assert.deepEqual(
      warden.grep(new RegExp(`pass class .* for ${escape(plainLabel)}`)),
      [],
      "a default hand-off logged a class",
    );

    // Each client reached exactly one smtpd service.
    const log = postfix.log();
    for (const [source, clientPort] of [
      [TRUSTED_CLIENT, trustedPort],
      [LISTED_CLIENT, listedPort],
      [PLAIN_CLIENT, plainPort],
    ] as const) {
      const connects = log.match(
        new RegExp(
          `connect from unknown${escape(`[${source}]:${clientPort}`)}\\n`,
          "g",
        ),
      );
      assert.equal(connects?.length, 1, `${source} connects:\n${log}`);
    }
  } finally {
    assert.equal(await warden.stop(), 0);
  }
});

test("pass classes config errors", async () => {
  const warden = PostwardenProcess.start({
    args: [
      "--config",
      "/dev/null",
      "--listen",
      "127.0.0.1:0",
      "--queue-directory",
      postfix.queueDirectory,
      "--postfix-config-directory",
      postfix.configDirectory,
      "-o",
      "smtpd_pass_classes=trusted = smtpd-trusted, vip = smtpd-vip, strict =",
    ],
  });
  assert.equal(await warden.waitForExit(), 1);
  const output = warden.lines.join("\n");
  assert.match(output, /smtpd_pass_classes: unknown class "vip"/);
});
