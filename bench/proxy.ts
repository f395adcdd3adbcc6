// A naive byte-copying TCP proxy, the design postwarden avoids: every
// client connection gets a second connection to smtpd, and each byte is
// read into Node and written out again for the whole session. It stands
// for "screen in Node, then proxy" in the benchmark.
//
// Usage: node proxy.js LISTEN_PORT UPSTREAM_PORT (both on 127.0.0.1).
// Prints "listening PORT" on stdout once it accepts connections.
import { connect, createServer, type Socket } from "node:net";

const [listenPort, upstreamPort] = process.argv.slice(2).map(Number);
if (
  listenPort === undefined ||
  upstreamPort === undefined ||
  !Number.isInteger(listenPort) ||
  !Number.isInteger(upstreamPort)
) {
  process.stderr.write("usage: proxy.js LISTEN_PORT UPSTREAM_PORT\n");
  process.exit(2);
}

const server = createServer((client: Socket) => {
  const upstream = connect({ host: "127.0.0.1", port: upstreamPort });
  client.setNoDelay(true);
  upstream.setNoDelay(true);
  client.pipe(upstream);
  upstream.pipe(client);
  const destroyBoth = (): void => {
    client.destroy();
    upstream.destroy();
  };
  client.on("error", destroyBoth);
  upstream.on("error", destroyBoth);
});

server.listen({ host: "127.0.0.1", port: listenPort, backlog: 4096 }, () => {
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : 0;
  process.stdout.write(`listening ${port}\n`);
});

process.on("SIGTERM", () => {
  server.close();
  process.exit(0);
});
