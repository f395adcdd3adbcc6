// Parses a PROXY protocol header (HAProxy's versions 1 and 2) at the start
// of a connection from a load balancer. The parser works on peeked bytes
// and returns how many belong to the header, so that exactly those are read
// and the client's first SMTP bytes stay for the pregreet test and smtpd.
// Version 2 TLVs are skipped. LOCAL (v2) and UNKNOWN (v1) headers, which
// health checks send, carry no client address.

export type ProxyResult =
  /** More bytes are needed to decide. */
  | { kind: "incomplete" }
  | { kind: "invalid"; reason: string }
  | {
      kind: "header";
      /** Bytes that belong to the header. */
      length: number;
      /** Undefined for LOCAL and UNKNOWN: use the connection's own ends. */
      source?: { address: string; port: number };
      destination?: { address: string; port: number };
    };

const V2_SIGNATURE = Buffer.from([
  0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
]);
/** A v1 header is at most 107 bytes, CRLF included. */
const V1_MAX_LENGTH = 107;
/** Upper bound for a v2 header we accept, TLVs included. */
const V2_MAX_LENGTH = 16 + 2048;

function formatIPv6(bytes: Buffer): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2)
    groups.push(bytes.readUInt16BE(i).toString(16));
  // Compress the longest run of zero groups.
  let best = -1;
  let bestLength = 0;
  for (let i = 0; i < 8;) {
    let j = i;
    while (j < 8 && groups[j] === "0") j++;
    if (j - i > bestLength && j - i >= 2) {
      best = i;
      bestLength = j - i;
    }
    i = j === i ? i + 1 : j;
  }
  const text =
    best < 0
      ? groups.join(":")
      : `${groups.slice(0, best).join(":")}::${groups.slice(best + bestLength).join(":")}`;
  // An IPv4-mapped address is reported as IPv4, as the listener does.
  const mapped = /^::ffff:([0-9a-f]+):([0-9a-f]+)$/.exec(text);
  if (mapped !== null) {
    const high = parseInt(mapped[1] ?? "0", 16);
    const low = parseInt(mapped[2] ?? "0", 16);
    return `${high >> 8}.${high & 255}.${low >> 8}.${low & 255}`;
  }
  return text;
}

const IPV4 =
  /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

function parsePort(text: string): number | undefined {
  if (!/^(0|[1-9]\d{0,4})$/.test(text)) return undefined;
  const port = Number(text);
  return port <= 65535 ? port : undefined;
}

function parseV1(data: Buffer): ProxyResult {
  const end = data.indexOf("\r\n");
  if (end < 0) {
    if (data.length >= V1_MAX_LENGTH) {
      return { kind: "invalid", reason: "v1 header longer than 107 bytes" };
    }
    return { kind: "incomplete" };
  }
  if (end + 2 > V1_MAX_LENGTH) {
    return { kind: "invalid", reason: "v1 header longer than 107 bytes" };
  }
  const line = data.toString("latin1", 0, end);
  const parts = line.split(" ");
  if (parts[1] === "UNKNOWN") return { kind: "header", length: end + 2 };
  if (parts.length !== 6) return { kind: "invalid", reason: "bad v1 header" };
  const [, family, source, destination, sourcePort, destinationPort] = parts;
  const sport = parsePort(sourcePort ?? "");
  const dport = parsePort(destinationPort ?? "");
  if (sport === undefined || dport === undefined) {
    return { kind: "invalid", reason: "bad port in v1 header" };
  }
  const valid =
    family === "TCP4"
      ? IPV4.test(source ?? "") && IPV4.test(destination ?? "")
      : family === "TCP6"
        ? isIPv6Text(source ?? "") && isIPv6Text(destination ?? "")
        : false;
  if (!valid) {
    return {
      kind: "invalid",
      reason: "bad or mismatched address family in v1 header",
    };
  }
  return {
    kind: "header",
    length: end + 2,
    source: { address: normalizeV6(source ?? ""), port: sport },
    destination: { address: normalizeV6(destination ?? ""), port: dport },
  };
}

function isIPv6Text(text: string): boolean {
  return (
    /^[0-9a-fA-F:.]+$/.test(text) && text.includes(":") && text.length <= 45
  );
}

function normalizeV6(text: string): string {
  if (!text.includes(":")) return text;
  const bytes = Buffer.alloc(16);
  const [head = "", tail] = text.toLowerCase().split("::");
  const headGroups = head === "" ? [] : head.split(":");
  const tailGroups = tail === undefined || tail === "" ? [] : tail.split(":");
  const groups = [
    ...headGroups,
    ...Array<string>(8 - headGroups.length - tailGroups.length).fill("0"),
    ...tailGroups,
  ];
  groups.slice(0, 8).forEach((group, index) => {
    bytes.writeUInt16BE(parseInt(group, 16) & 0xffff, index * 2);
  });
  return formatIPv6(bytes);
}

function parseV2(data: Buffer): ProxyResult {
  if (data.length < 16) return { kind: "incomplete" };
  const versionCommand = data[12] ?? 0;
  if (versionCommand >> 4 !== 2) {
    return { kind: "invalid", reason: "unknown v2 version" };
  }
  const command = versionCommand & 0x0f;
  const family = data[13] ?? 0;
  const length = 16 + data.readUInt16BE(14);
  if (length > V2_MAX_LENGTH) {
    return { kind: "invalid", reason: "v2 header too long" };
  }
  if (data.length < length) return { kind: "incomplete" };
  if (command === 0x0) return { kind: "header", length };
  if (command !== 0x1) return { kind: "invalid", reason: "unknown v2 command" };

  const body = data.subarray(16, length);
  if (family === 0x11) {
    if (body.length < 12)
      return { kind: "invalid", reason: "short v2 IPv4 address block" };
    const address = (offset: number): string =>
      [0, 1, 2, 3].map((i) => String(body[offset + i])).join(".");
    return {
      kind: "header",
      length,
      source: { address: address(0), port: body.readUInt16BE(8) },
      destination: { address: address(4), port: body.readUInt16BE(10) },
    };
  }
  if (family === 0x21) {
    if (body.length < 36)
      return { kind: "invalid", reason: "short v2 IPv6 address block" };
    return {
      kind: "header",
      length,
      source: {
        address: formatIPv6(body.subarray(0, 16)),
        port: body.readUInt16BE(32),
      },
      destination: {
        address: formatIPv6(body.subarray(16, 32)),
        port: body.readUInt16BE(34),
      },
    };
  }
  if (family === 0x00) return { kind: "header", length };
  return { kind: "invalid", reason: "unsupported v2 address family" };
}

/** Parses a header at the start of `data` (peeked, never consumed). */
export function parseProxyHeader(data: Buffer): ProxyResult {
  const prefix = data.subarray(0, Math.min(data.length, 12));
  if (V2_SIGNATURE.subarray(0, prefix.length).equals(prefix)) {
    return data.length < 12 ? { kind: "incomplete" } : parseV2(data);
  }
  const v1 = Buffer.from("PROXY ");
  const start = data.subarray(0, Math.min(data.length, 6));
  if (v1.subarray(0, start.length).equals(start)) {
    return data.length < 6 ? { kind: "incomplete" } : parseV1(data);
  }
  return { kind: "invalid", reason: "unrecognized protocol header" };
}
