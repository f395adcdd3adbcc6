// Hostile clients against the socket layer (descriptor-number sockets, one
// epoll set of one-shot watches, closing by the garbage collector), in
// front of a private Postfix, on loopback only. Clients reset or half-close
// around the teaser and the end of the greet wait, pregreet in crowds,
// churn through the hand-off, never read a stuttered teaser, or wait while
// postwarden reloads or stops. After each attack postwarden must hold its
// baseline descriptors, keep its RSS level, log no error, and still hand a
// patient client to smtpd, which accepts a message from it.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import type { Socket } from "node:net";
import { PostfixInstance } from "../support/postfix.js";
import type { PostwardenProcess } from "../support/postwarden.js";
import { SmtpClient } from "../support/smtp-client.js";
import {
  descriptorCount,
  expectDescriptorsBack,
  expectIdle,
  expectWellFormedLog,
  rssKiB,
} from "../support/process-checks.js";
import { rawClient, reset, type RawResult } from "../support/raw-client.js";
import {
  expectPostfixLogClean,
  startAttackTarget,
  stopPostwarden,
} from "../support/attack-target.js";
import { requireRootAndPostfix } from "../support/requirements.js";

requireRootAndPostfix();

const TEASER = "220-warden.example.com ESMTP Postfix";
const SMTPD_GREETING = "220 pass-test.localdomain ESMTP Postfix";
const SHUTDOWN_REPLY = "421 4.3.2 Service currently unavailable";
const PROTOCOL_ERROR_REPLY = "521 5.5.1 Protocol error";

let postfix: PostfixInstance;

before(async () => {
  postfix = PostfixInstance.create();
  await postfix.start();
});

after(async () => {
  await postfix?.destroy();
});

function startPostwarden(
  ...extra: string[]
): Promise<{ warden: PostwardenProcess; port: number }> {
  return startAttackTarget(postfix, ...extra);
}

/**
 * Fails on warnings and errors in postwarden's log, but for the warning
 * that tests run it as root.
 */
function expectNoWarnings(warden: PostwardenProcess): void {
  const bad = warden
    .grep(/: (warning|error|fatal|panic): /)
    .filter((line) => !/: warning: running as root /.test(line));
  assert.deepEqual(bad, [], "postwarden logged warnings");
}

/**
 * Connects as a patient client, waits for smtpd's greeting after the
 * teaser, and has a message accepted by smtpd.
 */
async function expectMessageAccepted(port: number): Promise<void> {
  const client = await SmtpClient.open(port);
  try {
    assert.deepEqual(await client.readReply(15_000), [TEASER, SMTPD_GREETING]);
    const dialogue: [string, RegExp][] = [
      ["EHLO patient.example.org", /^250-pass-test\.localdomain$/],
      ["MAIL FROM:<alice@example.org>", /^250 /],
      ["RCPT TO:<bob@example.net>", /^250 /],
      ["DATA", /^354 /],
      ["Subject: churn\r\n\r\nhello\r\n.", /^250 2\.0\.0 Ok: queued as /],
      ["QUIT", /^221 /],
    ];
    for (const [command, expected] of dialogue) {
      const reply = await client.command(command, 15_000);
      assert.match(reply[0] ?? "", expected, `reply to ${command}`);
    }
  } finally {
    client.destroy();
  }
}

/** Shuts down the sending side (a FIN) and keeps reading. */
function halfClose(socket: Socket): void {
  if (!socket.destroyed) socket.end();
}

/** Runs `action` on the socket `delayMs` after the connection is made. */
function later(delayMs: number, action: (socket: Socket) => void) {
  return (socket: Socket): void => {
    setTimeout(() => action(socket), delayMs);
  };
}

/** Runs `action` once the whole teaser line has arrived. */
function afterTeaser(action: (socket: Socket) => void) {
  let done = false;
  return (socket: Socket, received: string): void => {
    if (!done && received.includes(`${TEASER}\r\n`)) {
      done = true;
      action(socket);
    }
  };
}

/** Client `n`'s address in 127.`block`/16, one of 250 per /24. */
function sourceAddress(block: number, n: number): string {
  return `127.${block}.${Math.floor(n / 250)}.${(n % 250) + 1}`;
}

/**
 * Checks that postwarden is back to `baseline` descriptors, idle, still
 * hands a client to smtpd, and logged nothing wrong, nor smtpd.
 */
async function expectRecovered(
  warden: PostwardenProcess,
  port: number,
  baseline: number,
): Promise<void> {
  await expectDescriptorsBack(warden.pid, baseline);
  await expectIdle(warden.pid);
  await expectMessageAccepted(port);
  expectWellFormedLog(warden);
  expectNoWarnings(warden);
  expectPostfixLogClean(postfix);
}

function countOpen(results: RawResult[]): number {
  return results.filter((result) => !result.ended).length;
}

describe("socket layer under attack", () => {
  test("half-closes and resets around hand-off", async () => {
    const { warden, port } = await startPostwarden();
    try {
      await expectMessageAccepted(port);
      const baseline = descriptorCount(warden.pid);
      let halfClosedPort = 0;
      const attacks: Promise<RawResult>[] = [
        rawClient(port, {
          onConnect: (socket) => {
            halfClosedPort = socket.localPort ?? 0;
          },
          onData: afterTeaser(halfClose),
        }),
        rawClient(port, {
          onData: afterTeaser((socket) => {
            socket.write("EHLO early.example.org\r\n");
            reset(socket);
          }),
        }),
        rawClient(port, {
          onConnect: (socket) => {
            socket.write("EHLO early.example.org\r\n");
            reset(socket);
          },
        }),
      ];
      // Around the end of the 1 s greet wait, when the hand-off starts:
      // the FIN or the pregreet may reach postwarden or smtpd.
      for (let delay = 900; delay <= 1100; delay += 10) {
        attacks.push(
          rawClient(port, { onConnect: later(delay, halfClose) }),
          rawClient(port, {
            onConnect: later(delay, (socket) =>
              socket.end("EHLO late.example.org\r\n"),
            ),
          }),
          rawClient(port, {
            onConnect: later(delay, (socket) => {
              socket.write("EHLO late.example.org\r\n");
              reset(socket);
            }),
          }),
        );
      }
      const results = await Promise.all(attacks);
      assert.equal(countOpen(results), 0, "clients left open");
      const halfClosedEarly = results[0];
      assert.equal(halfClosedEarly?.received, `${TEASER}\r\n`);
      // postwarden sees the FIN after the teaser, and smtpd never does.
      await warden.waitForLog(
        new RegExp(
          `HANGUP after [\\d.]+ from \\[127\\.0\\.0\\.1\\]:${halfClosedPort} `,
        ),
      );
      await expectRecovered(warden, port, baseline);
    } finally {
      await stopPostwarden(warden);
    }
  });

  test("crowd of pregreeting clients", async () => {
    const { warden, port } = await startPostwarden("--greet-action", "drop");
    try {
      await expectMessageAccepted(port);
      const baseline = descriptorCount(warden.pid);
      const clients = 300;
      const results = await Promise.all(
        Array.from({ length: clients }, (_, n) =>
          rawClient(port, {
            localAddress: sourceAddress(8, n),
            onConnect: (socket) => socket.write("EHLO crowd.example.org\r\n"),
            // Every third client resets as soon as it has the reply.
            onData: (socket, received) => {
              if (n % 3 === 0 && received.includes(PROTOCOL_ERROR_REPLY)) {
                reset(socket);
              }
            },
          }),
        ),
      );
      assert.equal(countOpen(results), 0, "clients left open");
      results.forEach((result, n) =>
        assert.equal(
          result.received,
          `${TEASER}\r\n${PROTOCOL_ERROR_REPLY}\r\n`,
          `client ${n}`,
        ),
      );
      await warden.waitForLogCount(/ PREGREET /, clients);
      await expectRecovered(warden, port, baseline);
    } finally {
      await stopPostwarden(warden);
    }
  });

  test("churn through hand-off stays flat", async (t) => {
    const { warden, port } = await startPostwarden();
    try {
      await expectMessageAccepted(port);
      await sleep(200);
      const baseline = descriptorCount(warden.pid);
      const rounds = 5;
      const perRound = 400;
      const rss: number[] = [rssKiB(warden.pid)];
      const roundMs: number[] = [];
      for (let round = 0; round < rounds; round++) {
        const started = Date.now();
        const clients = Array.from({ length: perRound }, (_, index) => {
          const n = round * perRound + index;
          // Stays 0 to 1.3 s, so about a quarter of the clients are
          // handed off to smtpd before they leave.
          const stay = (n * 37) % 1300;
          const leave = n % 2 === 0 ? reset : halfClose;
          return rawClient(port, {
            localAddress: sourceAddress(9, n),
            onConnect: stay < 20 ? leave : later(stay, leave),
          });
        });
        const [results] = await Promise.all([
          Promise.all(clients),
          expectMessageAccepted(port),
        ]);
        assert.equal(countOpen(results), 0, `clients left open in ${round}`);
        await expectDescriptorsBack(warden.pid, baseline);
        roundMs.push(Date.now() - started);
        rss.push(rssKiB(warden.pid));
      }
      const connections = rounds * (perRound + 1) + 1;
      await warden.waitForLogCount(/ CONNECT from /, connections);
      const handedOff = warden.grep(/ PASS NEW /).length;
      t.diagnostic(
        `RSS KiB per round: ${rss.join(" ")}; ms per round: ` +
          `${roundMs.join(" ")}; ${handedOff} of ${connections} handed off`,
      );
      assert.ok(handedOff > rounds, `only ${handedOff} clients handed off`);
      // The first rounds grow the heap; later rounds must not keep adding.
      const lateGrowth = (rss.at(-1) ?? 0) - (rss[2] ?? 0);
      assert.ok(
        lateGrowth < 16 * 1024,
        `RSS grew by ${lateGrowth} KiB over the last ${rounds - 2} rounds`,
      );
      await expectRecovered(warden, port, baseline);
    } finally {
      await stopPostwarden(warden);
    }
  });

  test("stutter clients that never read", async () => {
    const { warden, port } = await startPostwarden(
      "--greet-mode",
      "stutter",
      "-o",
      "greet_stutter_delay=100ms",
      "--greet-wait",
      "2s",
    );
    try {
      await expectMessageAccepted(port);
      const baseline = descriptorCount(warden.pid);
      // The clients read nothing until smtpd has had them for a while.
      const clients = Array.from({ length: 100 }, () =>
        SmtpClient.open(port).then((client) => {
          client.socket.pause();
          return client;
        }),
      );
      const opened = await Promise.all(clients);
      await sleep(3000);
      try {
        for (const client of opened) client.socket.resume();
        for (const client of opened) {
          assert.deepEqual(await client.readReply(10_000), [
            TEASER,
            SMTPD_GREETING,
          ]);
          assert.match((await client.command("QUIT"))[0] ?? "", /^221 /);
        }
      } finally {
        for (const client of opened) client.destroy();
      }
      await expectRecovered(warden, port, baseline);
    } finally {
      await stopPostwarden(warden);
    }
  });

  test("reloads during a crowded greet wait", async () => {
    const { warden, port } = await startPostwarden("--greet-wait", "2s");
    try {
      await expectMessageAccepted(port);
      const baseline = descriptorCount(warden.pid);
      const clients = Array.from({ length: 200 }, (_, n) =>
        rawClient(port, {
          localAddress: sourceAddress(10, n),
          onData: (socket, received) => {
            if (received.includes(SMTPD_GREETING)) socket.end("QUIT\r\n");
          },
        }),
      );
      for (let reload = 1; reload <= 3; reload++) {
        await sleep(300);
        warden.child.kill("SIGHUP");
        await warden.waitForLogCount(/configuration reloaded: /, reload);
      }
      const results = await Promise.all(clients);
      assert.equal(countOpen(results), 0, "clients left open");
      results.forEach((result, n) =>
        assert.match(
          result.received,
          new RegExp(`^${TEASER}\\r\\n${SMTPD_GREETING}\\r\\n221 `),
          `client ${n}`,
        ),
      );
      await expectRecovered(warden, port, baseline);
    } finally {
      await stopPostwarden(warden);
    }
  });

  test("stop during a crowded greet wait", async () => {
    const { warden, port } = await startPostwarden("--greet-wait", "5s");
    try {
      const clients = Array.from({ length: 200 }, (_, n) =>
        rawClient(port, { localAddress: sourceAddress(11, n) }),
      );
      await warden.waitForLogCount(/ CONNECT from /, 200);
      const signalled = Date.now();
      warden.child.kill("SIGTERM");
      assert.equal(await warden.waitForExit(10_000), 0);
      const stopMs = Date.now() - signalled;
      assert.ok(stopMs < 3000, `stop took ${stopMs} ms`);
      const results = await Promise.all(clients);
      assert.equal(countOpen(results), 0, "clients left open");
      results.forEach((result, n) =>
        assert.equal(
          result.received,
          `${TEASER}\r\n${SHUTDOWN_REPLY}\r\n`,
          `client ${n}`,
        ),
      );
      expectWellFormedLog(warden);
      expectNoWarnings(warden);
    } finally {
      await stopPostwarden(warden);
    }
  });
});
