// Tests of descriptor passing (sendFd and receiveFd over a socket pair) and
// of the Handoff class against fake smtpd servers on UNIX-domain sockets in
// a temporary directory. A Node server cannot receive descriptors, because
// it reads the pass byte with read() and the kernel then drops the
// descriptor that the byte carries.
import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { linkSync, mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { READABLE, type NativeSocket } from "../../src/native.js";
import {
  connectUnix,
  socketPair as nativeSocketPair,
} from "../../src/native-socket.js";
import { encodeAttributes } from "../../src/handoff/attributes.js";
import {
  Handoff,
  type PassFailure,
  type PassOptions,
} from "../../src/handoff/pass.js";
import {
  AcceptQueue,
  Client,
  WAIT_MS,
  addon,
  pause,
  waitUntil,
  watchOnce,
  within,
  type Accepted,
} from "./helpers.js";

const TIMEOUT = { timeout: 10_000 };

interface TcpConnection {
  client: Client;
  accepted: Accepted;
}

/** Accepts one loopback connection. The test's after hook closes both ends. */
async function connectTcp(t: TestContext): Promise<TcpConnection> {
  const queue = new AcceptQueue("127.0.0.1");
  t.after(() => queue.close());
  queue.listener.start();
  const client = await Client.connect("127.0.0.1", queue.port);
  t.after(() => client.destroy());
  const accepted = await queue.next();
  return { client, accepted };
}

/** Returns a socket pair. The test's after hook closes both ends. */
function socketPair(t: TestContext): [NativeSocket, NativeSocket] {
  const pair = nativeSocketPair(addon);
  t.after(() => pair.forEach((socket) => socket.close()));
  return pair;
}

/** Creates a temporary directory that the test's after hook removes. */
function temporaryDirectory(t: TestContext): string {
  const directory = mkdtempSync(join(tmpdir(), "postwarden-addon-"));
  t.after(() => rmSync(directory, { recursive: true, force: true }));
  return directory;
}

// Descriptor passing

test("receiveFd returns null when idle", TIMEOUT, (t) => {
  const [, receiver] = socketPair(t);

  assert.equal(receiver.receiveFd(), null);
});

test("receiveFd rejects byte without descriptor", TIMEOUT, (t) => {
  const [sender, receiver] = socketPair(t);
  assert.equal(sender.write(Buffer.from([0])), 1);

  assert.throws(() => receiver.receiveFd(), {
    code: "EPROTO",
    errno: -71,
    syscall: "recvmsg",
  });
});

test("passed socket reaches the client", TIMEOUT, async (t) => {
  const { client, accepted } = await connectTcp(t);
  const [sender, receiver] = socketPair(t);

  assert.equal(sender.sendFd(accepted.socket), true);
  await watchOnce(receiver);
  const received = receiver.receiveFd();
  assert.ok(received !== null, "a descriptor was received");
  t.after(() => received.close());
  assert.ok(received.fd >= 0, `fd ${received.fd}`);
  assert.notEqual(received.fd, accepted.socket.fd);
  assert.equal(receiver.receiveFd(), null);

  assert.equal(received.write(Buffer.from("220 via copy\r\n")), 14);
  assert.equal(await client.receive(14), "220 via copy\r\n");

  client.socket.write("EHLO client.example\r\n");
  await watchOnce(received);
  assert.equal(received.peek(100)?.toString(), "EHLO client.example\r\n");
  assert.equal(received.read(100)?.toString(), "EHLO client.example\r\n");
  // Both descriptors share one connection, so the read consumed it for both.
  assert.equal(accepted.socket.peek(100), null);
});

test("received copy outlives original close", TIMEOUT, async (t) => {
  const { client, accepted } = await connectTcp(t);
  const [sender, receiver] = socketPair(t);
  accepted.socket.watch(READABLE, () => {});
  assert.equal(sender.sendFd(accepted.socket), true);
  await watchOnce(receiver);
  const received = receiver.receiveFd();
  assert.ok(received !== null, "a descriptor was received");
  t.after(() => received.close());

  // close() without shutdown() leaves the connection to the other copy.
  accepted.socket.close();
  await pause(100);
  assert.equal(client.ended, false);
  assert.equal(client.closed, false);

  assert.equal(received.write(Buffer.from("220 still here\r\n")), 16);
  assert.equal(await client.receive(16), "220 still here\r\n");
  client.socket.write("QUIT\r\n");
  const result = await watchOnce(received);
  assert.equal(result.status, 0);
  assert.equal(received.read(100)?.toString(), "QUIT\r\n");

  received.close();
  await client.waitForEnd();
  assert.equal(client.ended, true);
});

test("descriptor in flight keeps connection", TIMEOUT, async (t) => {
  const { client, accepted } = await connectTcp(t);
  const [sender, receiver] = socketPair(t);
  assert.equal(sender.sendFd(accepted.socket), true);

  // Closing the sender's copy before the receiver takes it must not end the
  // session, because the kernel keeps a descriptor in flight open.
  accepted.socket.close();
  sender.close();
  await pause(50);
  assert.equal(client.ended, false);

  const received = receiver.receiveFd();
  assert.ok(received !== null, "a descriptor was received");
  t.after(() => received.close());
  assert.equal(received.write(Buffer.from("250 ok\r\n")), 8);
  assert.equal(await client.receive(8), "250 ok\r\n");
});

// Handoff against fake smtpd servers

interface FakeConnection {
  socket: net.Socket;
  received: Buffer;
}

/**
 * A fake smtpd pass service: a Node server on a UNIX-domain path that
 * records what each connection sends. It calls `onData` after each chunk,
 * so that the test can reply or close.
 */
class FakeSmtpd {
  readonly connections: FakeConnection[] = [];
  readonly server: net.Server;

  private constructor(onData: (connection: FakeConnection) => void) {
    this.server = net.createServer((socket) => {
      const connection = { socket, received: Buffer.alloc(0) };
      this.connections.push(connection);
      socket.on("error", () => {});
      socket.on("data", (chunk: Buffer) => {
        connection.received = Buffer.concat([connection.received, chunk]);
        onData(connection);
      });
    });
  }

  static async start(
    t: TestContext,
    path: string,
    onData: (connection: FakeConnection) => void,
  ): Promise<FakeSmtpd> {
    const fake = new FakeSmtpd(onData);
    t.after(() => fake.close());
    fake.server.listen(path);
    await within(once(fake.server, "listening"), WAIT_MS, `listen on ${path}`);
    return fake;
  }

  async close(): Promise<void> {
    for (const { socket } of this.connections) socket.destroy();
    if (!this.server.listening) return;
    const closed = once(this.server, "close");
    this.server.close();
    await within(closed, WAIT_MS, "close fake smtpd");
  }
}

/** Records the Handoff callbacks in the order they arrive. */
class Recorder {
  readonly calls: (
    ["sent", PassFailure | undefined] | ["finished", boolean] | ["unread"]
  )[] = [];

  readonly callbacks = {
    onSent: (failure: PassFailure | undefined): void => {
      this.calls.push(["sent", failure]);
    },
    onFinished: (timedOut: boolean): void => {
      this.calls.push(["finished", timedOut]);
    },
    onUnread: (): void => {
      this.calls.push(["unread"]);
    },
  };

  async waitForCalls(count: number, ms = WAIT_MS): Promise<void> {
    await waitUntil(() => this.calls.length >= count, `${count} calls`, ms);
  }

  failure(): PassFailure {
    const [call] = this.calls;
    assert.ok(call !== undefined, "onSent was called");
    assert.equal(call[0], "sent");
    const failure = call[1];
    assert.ok(typeof failure === "object", "onSent reported a failure");
    return failure;
  }
}

const ATTRIBUTES = encodeAttributes({
  clientAddress: "192.0.2.10",
  clientPort: 40000,
  serverAddress: "192.0.2.25",
  serverPort: 25,
});

function passOptions(
  socketPath: string,
  overrides: Partial<PassOptions> = {},
): PassOptions {
  return {
    addon,
    socketPath,
    connectTimeoutMs: 1000,
    closeTimeoutMs: 5000,
    ...overrides,
  };
}

/** Runs a Handoff that must fail and returns what onSent reported. */
async function expectFailure(
  t: TestContext,
  socketPath: string,
): Promise<{ failure: PassFailure; client: NativeSocket; peer: NativeSocket }> {
  const [client, peer] = socketPair(t);
  const recorder = new Recorder();
  new Handoff(client, ATTRIBUTES, passOptions(socketPath), recorder.callbacks);
  await recorder.waitForCalls(1);
  const failure = recorder.failure();
  await pause(50);
  assert.equal(recorder.calls.length, 1, "onFinished is never called");
  return { failure, client, peer };
}

test("handoff reports missing socket", TIMEOUT, async (t) => {
  const path = join(temporaryDirectory(t), "missing");

  const { failure, client, peer } = await expectFailure(t, path);
  assert.equal(failure.stage, "connect");
  assert.equal(failure.error.code, "ENOENT");
  assert.equal(failure.error.syscall, "connect");
  // The client stays open, so that the caller can send a reply.
  assert.ok(client.fd >= 0, `client fd ${client.fd}`);
  assert.equal(peer.peek(1), null);
});

test("handoff reports stale socket", TIMEOUT, async (t) => {
  const directory = temporaryDirectory(t);
  const path = join(directory, "pass");
  // A hard link keeps the socket file after the server closes and Node
  // removes the original name, like a socket left by a dead smtpd.
  const fake = await FakeSmtpd.start(t, join(directory, "live"), () => {});
  linkSync(join(directory, "live"), path);
  await fake.close();

  const { failure, client } = await expectFailure(t, path);
  assert.equal(failure.stage, "connect");
  assert.equal(failure.error.code, "ECONNREFUSED");
  assert.ok(client.fd >= 0, `client fd ${client.fd}`);
});

test("handoff reports overlong socket path", TIMEOUT, async (t) => {
  const path = join(temporaryDirectory(t), "p".repeat(120));

  const { failure } = await expectFailure(t, path);
  assert.equal(failure.stage, "connect");
  assert.equal(failure.error.code, "ENAMETOOLONG");
});

test("handoff sends byte and attributes", TIMEOUT, async (t) => {
  const path = join(temporaryDirectory(t), "pass");
  const { client, accepted } = await connectTcp(t);
  const attributes = encodeAttributes(accepted);
  const expected = Buffer.concat([Buffer.from([0]), attributes]);
  const fake = await FakeSmtpd.start(t, path, (connection) => {
    if (connection.received.length >= expected.length) connection.socket.end();
  });
  const recorder = new Recorder();

  const handoff = new Handoff(
    accepted.socket,
    attributes,
    passOptions(path),
    recorder.callbacks,
  );
  await recorder.waitForCalls(2);

  assert.deepEqual(recorder.calls, [
    ["sent", undefined],
    ["finished", false],
  ]);
  assert.equal(handoff.sent, true);
  assert.equal(fake.connections.length, 1);
  assert.deepEqual(fake.connections[0]?.received, expected);
  assert.equal(accepted.socket.fd, -1);
  // Node dropped the passed descriptor and the Handoff closed its own copy,
  // so no copy of the client connection is left open.
  await client.waitForEnd();
  assert.equal(client.ended, true);
});

test("handoff times out on silent smtpd", TIMEOUT, async (t) => {
  const path = join(temporaryDirectory(t), "pass");
  await FakeSmtpd.start(t, path, () => {});
  const [client, peer] = socketPair(t);
  const recorder = new Recorder();
  const started = Date.now();

  new Handoff(
    client,
    ATTRIBUTES,
    passOptions(path, { closeTimeoutMs: 150 }),
    recorder.callbacks,
  );
  await recorder.waitForCalls(2);

  const elapsed = Date.now() - started;
  assert.deepEqual(recorder.calls, [
    ["sent", undefined],
    ["finished", true],
  ]);
  assert.ok(elapsed >= 140, `finished after ${elapsed} ms`);
  assert.equal(client.fd, -1);
  // The connection was shut down, so the other end sees end of stream
  // even though the descriptor still sits in the pass socket's queue.
  assert.equal(peer.read(16)?.length, 0);
});

test("finishNow ends the wait", TIMEOUT, async (t) => {
  const path = join(temporaryDirectory(t), "pass");
  await FakeSmtpd.start(t, path, () => {});
  const [client] = socketPair(t);
  const recorder = new Recorder();

  const handoff = new Handoff(
    client,
    ATTRIBUTES,
    passOptions(path),
    recorder.callbacks,
  );
  await recorder.waitForCalls(1);
  handoff.finishNow();
  handoff.finishNow();
  await pause(50);

  assert.deepEqual(recorder.calls, [
    ["sent", undefined],
    ["finished", false],
  ]);
  assert.equal(client.fd, -1);
});

test("handoff ignores stray smtpd bytes", TIMEOUT, async (t) => {
  const path = join(temporaryDirectory(t), "pass");
  const expectedLength = 1 + ATTRIBUTES.length;
  await FakeSmtpd.start(t, path, (connection) => {
    if (connection.received.length < expectedLength) return;
    connection.socket.write("unexpected\n");
    setTimeout(() => connection.socket.end(), 50);
  });
  const [client] = socketPair(t);
  const recorder = new Recorder();

  new Handoff(client, ATTRIBUTES, passOptions(path), recorder.callbacks);
  await recorder.waitForCalls(2);

  assert.deepEqual(recorder.calls, [
    ["sent", undefined],
    ["finished", false],
  ]);
});

test("handoff reports unread reset", TIMEOUT, async (t) => {
  const path = join(temporaryDirectory(t), "pass");
  // With reading paused, the server closes with our bytes unread, and the
  // kernel reports ECONNRESET on our end of the channel.
  let connections = 0;
  const server = net.createServer({ pauseOnConnect: true }, (socket) => {
    connections++;
    socket.destroy();
  });
  server.listen(path);
  await within(once(server, "listening"), WAIT_MS, "listen");
  t.after(() => server.close());
  const [client] = socketPair(t);
  const recorder = new Recorder();

  new Handoff(client, ATTRIBUTES, passOptions(path), recorder.callbacks);
  await recorder.waitForCalls(2);

  // The client may not have reached smtpd: it stays open for a reply.
  assert.deepEqual(recorder.calls, [["sent", undefined], ["unread"]]);
  assert.equal(connections, 1);
  assert.notEqual(client.fd, -1);
});

/**
 * Connects to `path` until connect fails with EAGAIN, which means that the
 * listen backlog is full. The test's after hook closes the connections.
 */
function fillBacklog(t: TestContext, path: string): void {
  const fillers: NativeSocket[] = [];
  t.after(() => fillers.forEach((socket) => socket.close()));
  for (let i = 0; i < 1024; i++) {
    try {
      fillers.push(connectUnix(addon, path));
    } catch (error) {
      assert.equal((error as NodeJS.ErrnoException).code, "EAGAIN");
      return;
    }
  }
  assert.fail(`backlog of ${path} still not full after 1024 connections`);
}

test("handoff retries full backlog", TIMEOUT, async (t) => {
  const path = join(temporaryDirectory(t), "pass");
  const expectedLength = 1 + ATTRIBUTES.length;
  const fake = await FakeSmtpd.start(t, path, (connection) => {
    if (connection.received.length >= expectedLength) connection.socket.end();
  });
  // The server accepts only when the event loop runs, so connecting in a
  // loop without yielding fills its backlog.
  fillBacklog(t, path);
  const [client] = socketPair(t);
  const recorder = new Recorder();

  new Handoff(client, ATTRIBUTES, passOptions(path), recorder.callbacks);
  assert.equal(recorder.calls.length, 0, "connect did not succeed at once");
  await recorder.waitForCalls(2);

  assert.deepEqual(recorder.calls, [
    ["sent", undefined],
    ["finished", false],
  ]);
  const withData = fake.connections.filter(
    (connection) => connection.received.length > 0,
  );
  assert.equal(withData.length, 1);
  assert.equal(withData[0]?.received.length, expectedLength);
});

/**
 * Starts a Node process that listens on `path` with a backlog of 1 and then
 * blocks its only thread, so it never accepts or reads. It exits by itself
 * after `lifetimeMs`, and the test's after hook kills it sooner.
 */
async function startFrozenSmtpd(
  t: TestContext,
  path: string,
  lifetimeMs = 8000,
): Promise<void> {
  const script = `
    const net = require("node:net");
    const server = net.createServer();
    server.listen({ path: process.argv[1], backlog: 1 }, () => {
      process.stdout.write("listening\\n");
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ${lifetimeMs});
      process.exit(0);
    });
  `;
  const child = spawn(process.execPath, ["-e", script, path], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  t.after(() => child.kill("SIGKILL"));
  await within(once(child.stdout, "data"), 5000, "frozen smtpd start");
}

test("handoff gives up on full backlog", TIMEOUT, async (t) => {
  const path = join(temporaryDirectory(t), "pass");
  await startFrozenSmtpd(t, path);
  fillBacklog(t, path);
  const [client] = socketPair(t);
  const recorder = new Recorder();
  const started = Date.now();

  new Handoff(
    client,
    ATTRIBUTES,
    passOptions(path, { connectTimeoutMs: 150 }),
    recorder.callbacks,
  );
  await recorder.waitForCalls(1);

  const elapsed = Date.now() - started;
  const failure = recorder.failure();
  assert.equal(failure.stage, "connect");
  assert.equal(failure.error.code, "EAGAIN");
  assert.ok(elapsed >= 140, `gave up after ${elapsed} ms`);
  assert.ok(client.fd >= 0, `client fd ${client.fd}`);
});

test("handoff send times out", TIMEOUT, async (t) => {
  const path = join(temporaryDirectory(t), "pass");
  await startFrozenSmtpd(t, path);
  const [client] = socketPair(t);
  const recorder = new Recorder();
  // Far more than a UNIX socket buffers, and the frozen server reads none.
  const attributes = Buffer.alloc(4 * 1024 * 1024, 0x61);
  const started = Date.now();

  new Handoff(
    client,
    attributes,
    passOptions(path, { connectTimeoutMs: 150 }),
    recorder.callbacks,
  );
  await recorder.waitForCalls(1);
  const elapsed = Date.now() - started;
  await pause(50);

  const failure = recorder.failure();
  assert.equal(recorder.calls.length, 1, "onFinished is never called");
  assert.equal(failure.stage, "send");
  assert.equal(failure.error.code, "ETIMEDOUT");
  assert.ok(elapsed >= 140, `gave up after ${elapsed} ms`);
  assert.ok(client.fd >= 0, `client fd ${client.fd}`);
});
