// Tests of the addon's socket on accepted TCP connections: one-shot
// watches, peeking without consuming, reads, writes, discard, close,
// release, and the errors each method throws.
import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import net from "node:net";
import v8 from "node:v8";
import vm from "node:vm";
import { READABLE, WRITABLE, type NativeSocket } from "../../src/native.js";
import { socketPair } from "../../src/native-socket.js";
import {
  AcceptQueue,
  Client,
  addon,
  pause,
  sockets,
  waitUntil,
  watchOnce,
} from "./helpers.js";

const TIMEOUT = { timeout: 10_000 };

// The garbage collector, for the tests of what the addon does with sockets
// that JavaScript drops. Setting the flag at run time affects only contexts
// created afterwards, hence the new context.
v8.setFlagsFromString("--expose-gc");
const collectGarbage = vm.runInNewContext("gc") as () => void;

interface Connection {
  client: Client;
  socket: NativeSocket;
}

/** Accepts one loopback connection. The test's after hook closes both ends. */
async function connect(t: TestContext): Promise<Connection> {
  const queue = new AcceptQueue("127.0.0.1");
  t.after(() => queue.close());
  queue.listener.start();
  const client = await Client.connect("127.0.0.1", queue.port);
  t.after(() => client.destroy());
  const { socket } = await queue.next();
  return { client, socket };
}

test("watch fires once on data", TIMEOUT, async (t) => {
  const { client, socket } = await connect(t);
  const calls: [number, number][] = [];
  socket.watch(READABLE, (status, events) => calls.push([status, events]));

  client.socket.write("EHLO client.example\r\n");
  await waitUntil(() => calls.length > 0, "watch callback");
  // The bytes stay unread, so a level-triggered watch would fire again.
  await pause(100);
  assert.deepEqual(calls, [[0, READABLE]]);
});

test("rearmed watch fires again", TIMEOUT, async (t) => {
  const { client, socket } = await connect(t);
  client.socket.write("x");

  const first = await watchOnce(socket);
  const second = await watchOnce(socket);
  assert.deepEqual(first, { status: 0, events: READABLE });
  assert.deepEqual(second, { status: 0, events: READABLE });
});

test("watch rearmed inside its callback", TIMEOUT, async (t) => {
  const { client, socket } = await connect(t);
  let calls = 0;
  const onReadable = (): void => {
    calls++;
    if (calls < 3) socket.watch(READABLE, onReadable);
  };
  socket.watch(READABLE, onReadable);

  client.socket.write("x");
  await waitUntil(() => calls === 3, "three callbacks");
  await pause(50);
  assert.equal(calls, 3);
});

test("new watch replaces pending one", TIMEOUT, async (t) => {
  const { client, socket } = await connect(t);
  const calls: string[] = [];
  socket.watch(READABLE, () => calls.push("first"));
  socket.watch(READABLE, () => calls.push("second"));

  client.socket.write("x");
  await waitUntil(() => calls.length > 0, "watch callback");
  await pause(50);
  assert.deepEqual(calls, ["second"]);
});

test("unwatch cancels pending watch", TIMEOUT, async (t) => {
  const { client, socket } = await connect(t);
  let calls = 0;
  socket.watch(READABLE, () => calls++);
  socket.unwatch();
  socket.unwatch();

  client.socket.write("x");
  await pause(100);
  assert.equal(calls, 0);
  assert.deepEqual(socket.peek(10), Buffer.from("x"));
});

test("watch writable fires at once", TIMEOUT, async (t) => {
  const { socket } = await connect(t);

  const result = await watchOnce(socket, WRITABLE);
  assert.deepEqual(result, { status: 0, events: WRITABLE });
});

test("watch rejects unknown event bits", TIMEOUT, async (t) => {
  const { socket } = await connect(t);

  assert.throws(() => socket.watch(0, () => {}), TypeError);
  assert.throws(() => socket.watch(4, () => {}), TypeError);
});

test(
  "failed watch leaves no poll",
  // A watch that throws must leave no active poll behind, or a readable
  // socket would spin the event loop until close().
  TIMEOUT,
  async (t) => {
    const [socket, peer] = socketPair(addon);
    t.after(() => socket.close());
    t.after(() => peer.close());
    const notAFunction = null as unknown as () => void;
    assert.throws(() => socket.watch(READABLE, notAFunction));

    assert.equal(peer.write(Buffer.from("x")), 1);
    const before = process.cpuUsage();
    await pause(200);
    const used = process.cpuUsage(before);
    const cpuMs = (used.user + used.system) / 1000;
    assert.ok(cpuMs < 100, `${cpuMs.toFixed(0)} ms of CPU in 200 ms idle`);
  },
);

test("peek returns null when idle", TIMEOUT, async (t) => {
  const { socket } = await connect(t);

  assert.equal(socket.peek(100), null);
  assert.equal(socket.read(100), null);
});

test("peek leaves bytes pending", TIMEOUT, async (t) => {
  const { client, socket } = await connect(t);
  client.socket.write("EHLO client.example\r\n");
  await watchOnce(socket);

  const first = socket.peek(100);
  const second = socket.peek(100);
  assert.equal(first?.toString(), "EHLO client.example\r\n");
  assert.deepEqual(second, first);
  assert.equal(socket.peek(4)?.toString(), "EHLO");
});

test("read consumes pending bytes", TIMEOUT, async (t) => {
  const { client, socket } = await connect(t);
  client.socket.write("QUIT\r\n");
  await watchOnce(socket);

  assert.equal(socket.read(2)?.toString(), "QU");
  assert.equal(socket.peek(100)?.toString(), "IT\r\n");
  assert.equal(socket.read(100)?.toString(), "IT\r\n");
  assert.equal(socket.peek(100), null);
});

test("peek returns empty at end", TIMEOUT, async (t) => {
  const { client, socket } = await connect(t);
  client.socket.end();

  const result = await watchOnce(socket);
  assert.deepEqual(result, { status: 0, events: READABLE });
  const first = socket.peek(100);
  assert.ok(first instanceof Buffer, "peek returns a Buffer");
  assert.equal(first.length, 0);
  assert.equal(socket.peek(100)?.length, 0);
  assert.equal(socket.read(100)?.length, 0);
});

test("peek shows data before end", TIMEOUT, async (t) => {
  const { client, socket } = await connect(t);
  client.socket.end("QUIT\r\n");
  await watchOnce(socket);
  // The FIN can arrive after the data, so give it time to arrive.
  await pause(50);

  assert.equal(socket.peek(100)?.toString(), "QUIT\r\n");
  assert.equal(socket.read(100)?.toString(), "QUIT\r\n");
  assert.equal(socket.peek(100)?.length, 0);
});

test("write sends bytes to client", TIMEOUT, async (t) => {
  const { client, socket } = await connect(t);
  const greeting = "220 mx.example ESMTP\r\n";

  assert.equal(socket.write(Buffer.from(greeting)), greeting.length);
  assert.equal(await client.receive(greeting.length), greeting);
});

/** Returns the max size in a tcp_rmem or tcp_wmem setting (its third field). */
function maxTcpBuffer(setting: "tcp_rmem" | "tcp_wmem"): number {
  const text = readFileSync(`/proc/sys/net/ipv4/${setting}`, "utf8");
  return Number(text.trim().split(/\s+/)[2]);
}

test("write returns zero when full", TIMEOUT, async (t) => {
  const { client, socket } = await connect(t);
  // Node stops reading once its own buffer is full, so the kernel's send
  // and receive buffers fill next. They cannot grow past these maximums, so
  // twice their sum bounds the loop.
  client.socket.pause();
  const limit = 2 * (maxTcpBuffer("tcp_rmem") + maxTcpBuffer("tcp_wmem"));
  assert.ok(limit > 0, `limit ${limit}`);
  const chunk = Buffer.alloc(65536, 0x61);
  let total = 0;
  let lastWritten = -1;
  while (total <= limit && lastWritten !== 0) {
    lastWritten = socket.write(chunk);
    total += lastWritten;
  }

  assert.equal(lastWritten, 0);
  assert.ok(total > 0, `${total} bytes written before the buffer filled`);
});

test("discard drops pending bytes", TIMEOUT, async (t) => {
  const { client, socket } = await connect(t);
  client.socket.write("early talker\r\n");
  await watchOnce(socket);

  assert.equal(socket.discard(), 14);
  assert.equal(socket.peek(100), null);
  assert.equal(socket.discard(), 0);
});

test("discard returns -1 at end", TIMEOUT, async (t) => {
  const { client, socket } = await connect(t);
  client.socket.end();
  await watchOnce(socket);

  assert.equal(socket.discard(), -1);
});

test("close twice is safe", TIMEOUT, async (t) => {
  const { client, socket } = await connect(t);
  socket.watch(READABLE, () => {});

  socket.close();
  socket.close();
  assert.equal(socket.fd, -1);
  await client.waitForEnd();
  assert.equal(client.ended, true);
});

test("close inside watch callback", TIMEOUT, async (t) => {
  const { client, socket } = await connect(t);
  let calls = 0;
  socket.watch(READABLE, () => {
    calls++;
    socket.close();
  });

  client.socket.write("x");
  await waitUntil(() => calls > 0, "watch callback");
  assert.equal(socket.fd, -1);
  await client.waitForEnd();
  assert.equal(calls, 1);
});

test("closed socket methods throw EBADF", TIMEOUT, async (t) => {
  const { socket } = await connect(t);
  const [other] = socketPair(addon);
  t.after(() => other.close());
  socket.close();

  const calls: [string, () => unknown][] = [
    ["epoll_ctl", () => socket.watch(READABLE, () => {})],
    ["recv", () => socket.peek(10)],
    ["recv", () => socket.read(10)],
    ["recv", () => socket.discard()],
    ["send", () => socket.write(Buffer.from("x"))],
    ["sendmsg", () => socket.sendFd(other)],
    ["recvmsg", () => socket.receiveFd()],
    ["release", () => socket.release()],
  ];
  for (const [syscall, call] of calls) {
    assert.throws(
      call,
      (error: NodeJS.ErrnoException) => {
        assert.ok(error instanceof Error, "is an Error");
        assert.equal(error.code, "EBADF", syscall);
        assert.equal(error.errno, -9, syscall);
        assert.equal(error.syscall, syscall);
        return true;
      },
      call.toString(),
    );
  }
});

test("sendFd rejects closed descriptor", TIMEOUT, async (t) => {
  const { socket } = await connect(t);
  const [channel, peer] = socketPair(addon);
  t.after(() => channel.close());
  t.after(() => peer.close());
  socket.close();

  assert.throws(() => channel.sendFd(socket), {
    code: "EBADF",
    errno: -9,
    syscall: "sendmsg",
  });
  assert.equal(peer.peek(10), null);
});

test("reset fails watch and peek", TIMEOUT, async (t) => {
  const { client, socket } = await connect(t);
  client.socket.resetAndDestroy();

  const result = await watchOnce(socket);
  assert.ok(result.status < 0, `status ${result.status}`);
  assert.throws(() => socket.peek(100), {
    code: "ECONNRESET",
    errno: -104,
    syscall: "recv",
  });
});

test("write after reset throws", TIMEOUT, async (t) => {
  const { client, socket } = await connect(t);
  client.socket.resetAndDestroy();
  await watchOnce(socket);

  // Linux reports the reset once (ECONNRESET), then a broken pipe (EPIPE).
  // MSG_NOSIGNAL keeps SIGPIPE from killing the process.
  for (const [code, errno] of [
    ["ECONNRESET", -104],
    ["EPIPE", -32],
  ] as const) {
    assert.throws(() => socket.write(Buffer.from("421\r\n")), {
      code,
      errno,
      syscall: "send",
    });
  }
});

test("release hands descriptor to Node", TIMEOUT, async (t) => {
  const { client, socket } = await connect(t);

  const fd = socket.release();
  assert.ok(fd >= 0, `fd ${fd}`);
  assert.equal(socket.fd, -1);
  assert.throws(() => socket.peek(1), { code: "EBADF" });
  socket.close();

  const adopted = new net.Socket({ fd, readable: true, writable: true });
  t.after(() => adopted.destroy());
  adopted.write("220 adopted\r\n");
  assert.equal(await client.receive(13), "220 adopted\r\n");
  assert.equal(client.ended, false);
});

test("dropped socket closes on GC", TIMEOUT, async (t) => {
  let accepted = 0;
  // The callback keeps no reference, so only the collector can close it.
  const listener = new addon.Listener(
    "127.0.0.1",
    0,
    16,
    8,
    (fd) => {
      sockets.adopt(fd);
      accepted++;
    },
    () => {},
  );
  t.after(() => listener.close());
  listener.start();
  const client = await Client.connect("127.0.0.1", listener.address().port);
  t.after(() => client.destroy());
  await waitUntil(() => accepted === 1, "accept");

  // Finalizers run after a collection, so collect again until they ran.
  for (let i = 0; i < 100 && !client.ended; i++) {
    collectGarbage();
    await pause(10);
  }
  assert.equal(client.ended, true);
});

test("watched socket outlives its references", TIMEOUT, async (t) => {
  let accepted = 0;
  let calls = 0;
  let peeked = "";
  const listener = new addon.Listener(
    "127.0.0.1",
    0,
    16,
    8,
    (fd) => {
      const socket = sockets.adopt(fd);
      accepted++;
      // The pending watch must keep this socket alive until it fires.
      socket.watch(READABLE, () => {
        calls++;
        peeked = socket.peek(100)?.toString() ?? "";
        socket.close();
      });
    },
    () => {},
  );
  t.after(() => listener.close());
  listener.start();
  const client = await Client.connect("127.0.0.1", listener.address().port);
  t.after(() => client.destroy());
  await waitUntil(() => accepted === 1, "accept");

  for (let i = 0; i < 10; i++) {
    collectGarbage();
    await pause(10);
  }
  assert.equal(client.ended, false);

  client.socket.write("HELO x\r\n");
  await waitUntil(() => calls > 0, "watch callback");
  assert.equal(peeked, "HELO x\r\n");
  await client.waitForEnd();
});
