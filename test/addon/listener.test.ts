// Tests of the addon's TCP listener against Node clients on loopback:
// bound addresses, the addresses and ports reported per connection,
// batches, pause and close.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { join } from "node:path";
import { packageRoot } from "../../src/native.js";
import { AcceptQueue, Client, pause, within } from "./helpers.js";

const TIMEOUT = { timeout: 10_000 };

test("listener binds IPv4 loopback", TIMEOUT, (t) => {
  const queue = new AcceptQueue("127.0.0.1");
  t.after(() => queue.close());

  const bound = queue.listener.address();
  assert.equal(bound.address, "127.0.0.1");
  assert.ok(bound.port > 0, `port ${bound.port}`);
});

test("listener binds IPv6 loopback", TIMEOUT, (t) => {
  const queue = new AcceptQueue("::1");
  t.after(() => queue.close());

  const bound = queue.listener.address();
  assert.equal(bound.address, "::1");
  assert.ok(bound.port > 0, `port ${bound.port}`);
});

for (const host of ["127.0.0.1", "::1"]) {
  test(`listener reports ${host} endpoints`, TIMEOUT, async (t) => {
    const queue = new AcceptQueue(host);
    t.after(() => queue.close());
    queue.listener.start();
    const client = await Client.connect(host, queue.port);
    t.after(() => client.destroy());

    const accepted = await queue.next();
    assert.equal(accepted.clientAddress, client.socket.localAddress);
    assert.equal(accepted.clientPort, client.socket.localPort);
    assert.equal(accepted.serverAddress, client.socket.remoteAddress);
    assert.equal(accepted.serverPort, client.socket.remotePort);
    assert.equal(accepted.serverPort, queue.port);
    assert.ok(accepted.socket.fd >= 0, `fd ${accepted.socket.fd}`);
  });
}

test("listener reports mapped client as IPv4", TIMEOUT, async (t) => {
  // A dual-stack client: an IPv6 socket that reaches 127.0.0.1 through the
  // IPv4-mapped address. Node shows its own end as ::ffff:127.0.0.1.
  const queue = new AcceptQueue("127.0.0.1");
  t.after(() => queue.close());
  queue.listener.start();
  const client = await Client.connect("::ffff:127.0.0.1", queue.port, 6);
  t.after(() => client.destroy());
  assert.equal(client.socket.localAddress, "::ffff:127.0.0.1");

  const accepted = await queue.next();
  assert.equal(accepted.clientAddress, "127.0.0.1");
  assert.equal(accepted.clientPort, client.socket.localPort);
  assert.equal(accepted.serverAddress, "127.0.0.1");
  assert.equal(accepted.serverPort, queue.port);
});

test("listener families share one port", TIMEOUT, async (t) => {
  const v4 = new AcceptQueue("127.0.0.1");
  t.after(() => v4.close());
  const v6 = new AcceptQueue("::1", v4.port);
  t.after(() => v6.close());
  v4.listener.start();
  v6.listener.start();
  assert.equal(v6.port, v4.port);

  const client4 = await Client.connect("127.0.0.1", v4.port);
  t.after(() => client4.destroy());
  const client6 = await Client.connect("::1", v4.port);
  t.after(() => client6.destroy());

  const accepted4 = await v4.next();
  const accepted6 = await v6.next();
  assert.equal(accepted4.clientAddress, "127.0.0.1");
  assert.equal(accepted6.clientAddress, "::1");
  assert.equal(accepted4.clientPort, client4.socket.localPort);
  assert.equal(accepted6.clientPort, client6.socket.localPort);
});

test("listener rejects invalid hosts", TIMEOUT, () => {
  for (const host of ["localhost", "1.2.3", "[::1]", ""]) {
    assert.throws(
      () => new AcceptQueue(host),
      { code: "EINVAL", errno: -22, syscall: "bind" },
      JSON.stringify(host),
    );
  }
});

test("listener rejects IPv4-mapped host", TIMEOUT, () => {
  // IPv6 listeners are IPv6-only, and Linux fails the bind of such a socket
  // to an IPv4-mapped address with EINVAL, so the mistake shows at startup.
  assert.throws(() => new AcceptQueue("::ffff:127.0.0.1"), {
    code: "EINVAL",
    syscall: "bind",
  });
});

test("listener rejects ports out of range", TIMEOUT, () => {
  for (const port of [-1, 65536]) {
    assert.throws(
      () => new AcceptQueue("127.0.0.1", port),
      { code: "EINVAL", syscall: "bind" },
      String(port),
    );
  }
});

test("listener rejects port in use", TIMEOUT, (t) => {
  const first = new AcceptQueue("127.0.0.1");
  t.after(() => first.close());

  assert.throws(() => new AcceptQueue("127.0.0.1", first.port), {
    code: "EADDRINUSE",
    errno: -98,
    syscall: "bind",
  });
});

test("listener accepts several connections", TIMEOUT, async (t) => {
  // An accept limit of 1 makes every connection take its own readiness
  // event, so this also checks that the watch stays armed between batches.
  const queue = new AcceptQueue("127.0.0.1", 0, 1);
  t.after(() => queue.close());
  queue.listener.start();

  const clients: Client[] = [];
  t.after(() => clients.forEach((client) => client.destroy()));
  for (let i = 0; i < 5; i++) {
    clients.push(await Client.connect("127.0.0.1", queue.port));
  }

  const ports = new Set<number>();
  for (let i = 0; i < clients.length; i++) {
    ports.add((await queue.next()).clientPort);
  }
  const expected = new Set(clients.map((client) => client.socket.localPort));
  assert.deepEqual(ports, expected);
  assert.equal(queue.errors.length, 0);
});

test("listener accepts nothing before start", TIMEOUT, async (t) => {
  const queue = new AcceptQueue("127.0.0.1");
  t.after(() => queue.close());
  // The kernel completes handshakes into the backlog before start().
  const clients = [
    await Client.connect("127.0.0.1", queue.port),
    await Client.connect("127.0.0.1", queue.port),
  ];
  t.after(() => clients.forEach((client) => client.destroy()));

  await pause(100);
  assert.equal(queue.accepted.length, 0);

  queue.listener.start();
  await queue.next();
  await queue.next();
  assert.equal(queue.accepted.length, 2);
});

test("listener pause keeps backlog waiting", TIMEOUT, async (t) => {
  const queue = new AcceptQueue("127.0.0.1");
  t.after(() => queue.close());
  queue.listener.start();
  queue.listener.pause();
  const client = await Client.connect("127.0.0.1", queue.port);
  t.after(() => client.destroy());

  await pause(100);
  assert.equal(queue.accepted.length, 0);

  queue.listener.start();
  const accepted = await queue.next();
  assert.equal(accepted.clientPort, client.socket.localPort);
});

test("pause in callback ends batch", TIMEOUT, async (t) => {
  const queue = new AcceptQueue("127.0.0.1", 0, 8, () => {
    queue.listener.pause();
  });
  t.after(() => queue.close());
  const clients: Client[] = [];
  t.after(() => clients.forEach((client) => client.destroy()));
  for (let i = 0; i < 3; i++) {
    clients.push(await Client.connect("127.0.0.1", queue.port));
  }

  // All three wait in the backlog, so one readiness event could take them
  // all, but the callback pauses the listener after the first.
  queue.listener.start();
  await queue.next();
  await pause(100);
  assert.equal(queue.accepted.length, 1);

  queue.listener.start();
  await queue.next();
  assert.equal(queue.accepted.length, 2);
});

test("close in callback ends batch", TIMEOUT, async (t) => {
  const queue = new AcceptQueue("127.0.0.1", 0, 8, () => {
    queue.listener.close();
  });
  t.after(() => queue.close());
  const clients: Client[] = [];
  t.after(() => clients.forEach((client) => client.destroy()));
  for (let i = 0; i < 3; i++) {
    clients.push(await Client.connect("127.0.0.1", queue.port));
  }

  queue.listener.start();
  await queue.next();
  await pause(100);
  assert.equal(queue.accepted.length, 1);

  // Closing the listening socket resets the two still in the backlog.
  const first = queue.accepted[0];
  const dropped = clients.filter(
    (client) => client.socket.localPort !== first?.clientPort,
  );
  assert.equal(dropped.length, 2);
  for (const client of dropped) {
    await client.waitForEnd();
  }
});

test("listener close stops accepting", TIMEOUT, async (t) => {
  const queue = new AcceptQueue("127.0.0.1");
  t.after(() => queue.close());
  queue.listener.start();
  const port = queue.port;
  const client = await Client.connect("127.0.0.1", port);
  t.after(() => client.destroy());
  await queue.next();

  queue.listener.close();
  queue.listener.close();
  await assert.rejects(Client.connect("127.0.0.1", port), {
    code: "ECONNREFUSED",
  });
  assert.equal(queue.accepted.length, 1);
  assert.throws(() => queue.listener.address(), {
    code: "EBADF",
    errno: -9,
    syscall: "getsockname",
  });
  assert.throws(() => queue.listener.start(), {
    code: "EBADF",
    syscall: "uv_poll_start",
  });
});

test("accepted socket survives listener close", TIMEOUT, async (t) => {
  const queue = new AcceptQueue("127.0.0.1");
  t.after(() => queue.close());
  queue.listener.start();
  const client = await Client.connect("127.0.0.1", queue.port);
  t.after(() => client.destroy());
  const { socket } = await queue.next();

  queue.listener.close();
  assert.equal(socket.write(Buffer.from("220 ok\r\n")), 8);
  assert.equal(await client.receive(8), "220 ok\r\n");
  assert.equal(client.ended, false);
});

// Runs in a child process whose descriptor limit is 128. It connects a
// client while the listener is not started, uses up every descriptor, and
// then starts the listener, so accept() fails with EMFILE. After 200 ms it
// frees the descriptors, connects a second client and prints a JSON report.
const EMFILE_SCRIPT = `
  const addon = require(process.argv[1]);
  const fs = require("node:fs");
  const net = require("node:net");
  const report = { errors: [], accepted: 0, firstEnded: false, descriptors: 0 };
  const listener = new addon.Listener(
    "127.0.0.1", 0, 16, 8,
    (fd) => { report.accepted++; fs.closeSync(fd); },
    (error) => report.errors.push({
      code: error.code, errno: error.errno, syscall: error.syscall,
      paused: error.paused,
    }),
  );
  const port = listener.address().port;
  const first = net.connect({ host: "127.0.0.1", port });
  first.on("end", () => { report.firstEnded = true; });
  first.on("error", () => { report.firstEnded = true; });
  first.on("connect", () => {
    const descriptors = [];
    for (let i = 0; i < 1024; i++) {
      try { descriptors.push(fs.openSync("/dev/null", "r")); } catch { break; }
    }
    report.descriptors = descriptors.length;
    listener.start();
    setTimeout(() => {
      for (const fd of descriptors) fs.closeSync(fd);
      const second = net.connect({ host: "127.0.0.1", port });
      setTimeout(() => {
        listener.close();
        first.destroy();
        second.destroy();
        process.stdout.write(JSON.stringify(report) + "\\n");
      }, 200);
    }, 200);
  });
`;

interface EmfileReport {
  errors: { code: string; errno: number; syscall: string; paused: boolean }[];
  accepted: number;
  firstEnded: boolean;
  descriptors: number;
}

test("listener drops connection at EMFILE", TIMEOUT, async (t) => {
  const addonPath = join(packageRoot(), "build", "Release", "postwarden.node");
  const child = spawn(
    "bash",
    [
      "-c",
      'ulimit -n 128 && exec "$0" "$@"',
      process.execPath,
      "-e",
      EMFILE_SCRIPT,
      addonPath,
    ],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  t.after(() => child.kill("SIGKILL"));
  let output = "";
  child.stdout.on("data", (chunk: Buffer) => {
    output += chunk.toString();
  });
  const [exitCode] = (await within(
    once(child, "exit"),
    5000,
    "EMFILE child process",
  )) as [number | null];
  assert.equal(exitCode, 0);

  const report = JSON.parse(output) as EmfileReport;
  assert.ok(report.descriptors > 0, `${report.descriptors} descriptors used`);
  // One error for the one pending connection: the listener accepted and
  // dropped it instead of firing again and again.
  assert.deepEqual(report.errors, [
    { code: "EMFILE", errno: -24, syscall: "accept", paused: false },
  ]);
  assert.equal(report.firstEnded, true);
  // Once descriptors are free again, the listener accepts without start().
  assert.equal(report.accepted, 1);
});
