// A small UDP DNS server on 127.0.0.1 for tests that need replies rbldnsd
// cannot give: SERVFAIL, REFUSED, no reply at all, and a chosen TTL or SOA
// minimum per query. A handler picks the reply for each query.
// A "records" reply serves A, AAAA, TXT and MX records, for SPF tests.
// Limits: UDP only, with no TCP fallback, and replies are never truncated
// to the 512-byte UDP limit, so keep answers small. It accepts only
// standard queries with one question, and ignores malformed packets
// without replying.
import { createSocket, type RemoteInfo, type Socket } from "node:dgram";
import { isIPv4, isIPv6 } from "node:net";
import { expandIPv6 } from "../../src/dnsbl/resolver.js";

export type QueryType = "A" | "SOA" | "AAAA" | "TXT" | "MX" | "OTHER";

/**
 * Records of one name. A query for a type with no records gets NODATA.
 * A TXT string longer than 255 bytes is sent as several strings, which
 * resolvers join.
 */
export interface NameRecords {
  a?: string[];
  aaaa?: string[];
  txt?: string[];
  mx?: { preference: number; exchange: string }[];
}

/**
 * The reply to one query.
 * - answer: one A record per address for an A query, an SOA record whose
 *   minimum equals `ttl` for an SOA query, and NOERROR with no records
 *   (NODATA) for any other type.
 * - soa: an SOA record for an SOA query. Any other type gets NODATA with
 *   the SOA record in the authority section, as for negative caching.
 * - nxdomain: NXDOMAIN, with an SOA record (TTL and minimum both
 *   `soaMinimum`) in the authority section when `soaMinimum` is set.
 * - servfail, refused: that response code and no records.
 * - silent: no reply, so the client times out.
 * - records: the records of the queried type from `records`, or NODATA.
 * TTLs and minimums are in seconds.
 */
export type ResponderBehaviour =
  | { kind: "answer"; addresses: string[]; ttl: number }
  | { kind: "records"; records: NameRecords; ttl: number }
  | { kind: "soa"; minimum: number; ttl: number }
  | { kind: "nxdomain"; soaMinimum?: number }
  | { kind: "servfail" }
  | { kind: "refused" }
  | { kind: "silent" };

export type ResponderHandler = (
  name: string,
  type: QueryType,
) => ResponderBehaviour;

const HEADER_LENGTH = 12;
const MAX_NAME_LENGTH = 255;
const FLAG_RESPONSE = 0x8000;
const FLAG_AUTHORITATIVE = 0x0400;
const FLAG_RECURSION_DESIRED = 0x0100;
const OPCODE_MASK = 0x7800;
const RCODE_NOERROR = 0;
const RCODE_SERVFAIL = 2;
const RCODE_NXDOMAIN = 3;
const RCODE_REFUSED = 5;
const CLASS_IN = 1;
const MAX_TTL = 0x7fffffff;

const TYPE_NAMES = new Map<number, QueryType>([
  [1, "A"],
  [6, "SOA"],
  [15, "MX"],
  [16, "TXT"],
  [28, "AAAA"],
]);
const TYPE_A = 1;
const TYPE_SOA = 6;
const TYPE_MX = 15;
const TYPE_TXT = 16;
const TYPE_AAAA = 28;
const MAX_TXT_STRING = 255;

// Every SOA record this server sends uses these names and timers. Only the
// TTL and the minimum vary. "invalid" is reserved by RFC 2606.
const SOA_PRIMARY = "ns.invalid";
const SOA_MAILBOX = "hostmaster.invalid";
const SOA_SERIAL = 1;
const SOA_REFRESH = 3600;
const SOA_RETRY = 600;
const SOA_EXPIRE = 86400;

interface Query {
  id: number;
  flags: number;
  /** Lower-cased, in presentation format without the final dot. */
  name: string;
  type: QueryType;
  /** The question section exactly as received, echoed in the reply. */
  question: Buffer;
}

interface ResourceRecord {
  /** Owner name: the query name when true, the root zone when false. */
  ownerIsQueryName: boolean;
  type: number;
  ttl: number;
  data: Buffer;
}

export class DnsResponder {
  readonly server: string;
  /** Every well-formed query received, in order. */
  readonly queries: { name: string; type: string }[] = [];
  /** Errors thrown by the handler, found in its replies or raised by the socket. stop() rejects with them. */
  readonly errors: Error[] = [];
  private closed = false;

  private constructor(
    private readonly socket: Socket,
    readonly port: number,
    private readonly handler: ResponderHandler,
  ) {
    this.server = `127.0.0.1:${port}`;
    socket.on("message", (packet, remote) => this.receive(packet, remote));
    socket.on("error", (error) => this.errors.push(error));
  }

  /** Binds a UDP socket to a free port on 127.0.0.1 and starts replying to queries. */
  static async start(handler: ResponderHandler): Promise<DnsResponder> {
    const socket = createSocket("udp4");
    await new Promise<void>((resolve, reject) => {
      socket.once("error", reject);
      socket.bind({ address: "127.0.0.1", port: 0 }, () => {
        socket.off("error", reject);
        resolve();
      });
    });
    return new DnsResponder(socket, socket.address().port, handler);
  }

  /**
   * Closes the socket. Rejects if the handler threw or returned an invalid
   * reply during the run, so that a test's cleanup reports it.
   */
  async stop(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      await new Promise<void>((resolve) => this.socket.close(() => resolve()));
    }
    if (this.errors.length > 0) {
      throw new AggregateError(
        this.errors,
        `DnsResponder on ${this.server} had ${this.errors.length} error(s): ` +
          this.errors.map((error) => error.message).join("; "),
      );
    }
  }

  private receive(packet: Buffer, remote: RemoteInfo): void {
    const query = parseQuery(packet);
    if (query === undefined) {
      return;
    }
    this.queries.push({ name: query.name, type: query.type });

    let reply: Buffer | undefined;
    try {
      reply = buildReply(query, this.handler(query.name, query.type));
    } catch (error) {
      // A broken handler must not crash the test process from inside a
      // socket callback, so the client gets SERVFAIL and stop() reports it.
      this.errors.push(
        error instanceof Error ? error : new Error(String(error)),
      );
      reply = encodeMessage(query, RCODE_SERVFAIL, [], []);
    }
    if (reply !== undefined && !this.closed) {
      this.socket.send(reply, remote.port, remote.address);
    }
  }
}

/** Parses a standard query with one question. Returns undefined for any other packet. */
function parseQuery(packet: Buffer): Query | undefined {
  if (packet.length < HEADER_LENGTH) {
    return undefined;
  }
  const id = packet.readUInt16BE(0);
  const flags = packet.readUInt16BE(2);
  const questionCount = packet.readUInt16BE(4);
  const isQuery = (flags & FLAG_RESPONSE) === 0;
  const isStandardQuery = (flags & OPCODE_MASK) === 0;
  if (!isQuery || !isStandardQuery || questionCount !== 1) {
    return undefined;
  }

  const labels: string[] = [];
  let offset = HEADER_LENGTH;
  let nameLength = 1;
  // Each pass consumes at least one byte, so the loop ends by the packet's end.
  for (;;) {
    if (offset >= packet.length) {
      return undefined;
    }
    const labelLength = packet[offset] ?? 0;
    offset += 1;
    if (labelLength === 0) {
      break;
    }
    // Lengths above 63 are compression pointers (top bits 11) or reserved
    // forms. The question name has no earlier name to point to, so any of
    // them means a malformed packet.
    if (labelLength > 63) {
      return undefined;
    }
    nameLength += labelLength + 1;
    if (nameLength > MAX_NAME_LENGTH || offset + labelLength > packet.length) {
      return undefined;
    }
    labels.push(presentLabel(packet.subarray(offset, offset + labelLength)));
    offset += labelLength;
  }
  if (offset + 4 > packet.length) {
    return undefined;
  }
  const typeNumber = packet.readUInt16BE(offset);
  offset += 4;

  return {
    id,
    flags,
    name: labels.length === 0 ? "." : labels.join("."),
    type: TYPE_NAMES.get(typeNumber) ?? "OTHER",
    question: Buffer.from(packet.subarray(HEADER_LENGTH, offset)),
  };
}

/**
 * Converts one label to lower-case presentation format (RFC 1035 section
 * 5.1): dots, backslashes and bytes outside printable ASCII become \DDD.
 */
function presentLabel(label: Buffer): string {
  let text = "";
  for (const byte of label) {
    const isPrintable = byte > 0x20 && byte < 0x7f;
    if (isPrintable && byte !== 0x2e && byte !== 0x5c) {
      text += String.fromCharCode(byte).toLowerCase();
    } else {
      text += "\\" + String(byte).padStart(3, "0");
    }
  }
  return text;
}

/** Builds the reply bytes, or returns undefined when the behaviour is silent. */
function buildReply(
  query: Query,
  behaviour: ResponderBehaviour,
): Buffer | undefined {
  switch (behaviour.kind) {
    case "answer": {
      checkTtl(behaviour.ttl, "ttl");
      for (const address of behaviour.addresses) {
        if (!isIPv4(address)) {
          throw new Error(
            `invalid address ${JSON.stringify(address)} for ${query.name}: ` +
              "an answer behaviour takes IPv4 addresses only",
          );
        }
      }
      if (query.type === "A") {
        const records = behaviour.addresses.map((address) =>
          addressRecord(address, behaviour.ttl),
        );
        return encodeMessage(query, RCODE_NOERROR, records, []);
      }
      if (query.type === "SOA") {
        const record = soaRecord(true, behaviour.ttl, behaviour.ttl);
        return encodeMessage(query, RCODE_NOERROR, [record], []);
      }
      return encodeMessage(query, RCODE_NOERROR, [], []);
    }
    case "soa": {
      checkTtl(behaviour.ttl, "ttl");
      checkTtl(behaviour.minimum, "minimum");
      if (query.type === "SOA") {
        const record = soaRecord(true, behaviour.ttl, behaviour.minimum);
        return encodeMessage(query, RCODE_NOERROR, [record], []);
      }
      const record = soaRecord(false, behaviour.ttl, behaviour.minimum);
      return encodeMessage(query, RCODE_NOERROR, [], [record]);
    }
    case "nxdomain": {
      const minimum = behaviour.soaMinimum;
      if (minimum === undefined) {
        return encodeMessage(query, RCODE_NXDOMAIN, [], []);
      }
      checkTtl(minimum, "soaMinimum");
      const record = soaRecord(false, minimum, minimum);
      return encodeMessage(query, RCODE_NXDOMAIN, [], [record]);
    }
    case "records":
      checkTtl(behaviour.ttl, "ttl");
      return encodeMessage(
        query,
        RCODE_NOERROR,
        typedRecords(query, behaviour.records, behaviour.ttl),
        [],
      );
    case "servfail":
      return encodeMessage(query, RCODE_SERVFAIL, [], []);
    case "refused":
      return encodeMessage(query, RCODE_REFUSED, [], []);
    case "silent":
      return undefined;
  }
}

function checkTtl(value: number, field: string): void {
  if (!Number.isInteger(value) || value < 0 || value > MAX_TTL) {
    throw new Error(
      `invalid ${field} ${value}: expected whole seconds from 0 to ${MAX_TTL}`,
    );
  }
}

/** Encodes the records of the query's type; throws for invalid data. */
function typedRecords(
  query: Query,
  records: NameRecords,
  ttl: number,
): ResourceRecord[] {
  const record = (type: number, data: Buffer): ResourceRecord => ({
    ownerIsQueryName: true,
    type,
    ttl,
    data,
  });
  switch (query.type) {
    case "A":
      return (records.a ?? []).map((address) => {
        if (!isIPv4(address)) {
          throw new Error(`invalid A address ${JSON.stringify(address)}`);
        }
        return addressRecord(address, ttl);
      });
    case "AAAA":
      return (records.aaaa ?? []).map((address) => {
        if (!isIPv6(address)) {
          throw new Error(`invalid AAAA address ${JSON.stringify(address)}`);
        }
        return record(TYPE_AAAA, Buffer.from(expandIPv6(address), "hex"));
      });
    case "TXT":
      return (records.txt ?? []).map((text) => {
        const bytes = Buffer.from(text, "utf8");
        const parts: Buffer[] = [];
        for (let start = 0; start < bytes.length; start += MAX_TXT_STRING) {
          const chunk = bytes.subarray(start, start + MAX_TXT_STRING);
          parts.push(Buffer.from([chunk.length]), chunk);
        }
        if (parts.length === 0) parts.push(Buffer.from([0]));
        return record(TYPE_TXT, Buffer.concat(parts));
      });
    case "MX":
      return (records.mx ?? []).map(({ preference, exchange }) => {
        const head = Buffer.alloc(2);
        head.writeUInt16BE(preference, 0);
        const name = exchange === "" ? Buffer.from([0]) : encodeName(exchange);
        return record(TYPE_MX, Buffer.concat([head, name]));
      });
    default:
      return [];
  }
}

function addressRecord(address: string, ttl: number): ResourceRecord {
  const data = Buffer.from(address.split(".").map(Number));
  return { ownerIsQueryName: true, type: TYPE_A, ttl, data };
}

function soaRecord(
  ownerIsQueryName: boolean,
  ttl: number,
  minimum: number,
): ResourceRecord {
  const timers = Buffer.alloc(20);
  timers.writeUInt32BE(SOA_SERIAL, 0);
  timers.writeUInt32BE(SOA_REFRESH, 4);
  timers.writeUInt32BE(SOA_RETRY, 8);
  timers.writeUInt32BE(SOA_EXPIRE, 12);
  timers.writeUInt32BE(minimum, 16);
  const data = Buffer.concat([
    encodeName(SOA_PRIMARY),
    encodeName(SOA_MAILBOX),
    timers,
  ]);
  return { ownerIsQueryName, type: TYPE_SOA, ttl, data };
}

/** Encodes a dotted name of plain ASCII labels, without compression. */
function encodeName(name: string): Buffer {
  const parts: Buffer[] = [];
  for (const label of name.split(".")) {
    const bytes = Buffer.from(label, "ascii");
    parts.push(Buffer.from([bytes.length]), bytes);
  }
  parts.push(Buffer.from([0]));
  return Buffer.concat(parts);
}

function encodeMessage(
  query: Query,
  rcode: number,
  answers: ResourceRecord[],
  authority: ResourceRecord[],
): Buffer {
  const header = Buffer.alloc(HEADER_LENGTH);
  header.writeUInt16BE(query.id, 0);
  const flags =
    FLAG_RESPONSE |
    FLAG_AUTHORITATIVE |
    (query.flags & FLAG_RECURSION_DESIRED) |
    rcode;
  header.writeUInt16BE(flags, 2);
  header.writeUInt16BE(1, 4);
  header.writeUInt16BE(answers.length, 6);
  header.writeUInt16BE(authority.length, 8);
  header.writeUInt16BE(0, 10);
  const records = [...answers, ...authority].map(encodeRecord);
  return Buffer.concat([header, query.question, ...records]);
}

function encodeRecord(record: ResourceRecord): Buffer {
  // 0xc00c is a compression pointer to the question name, which always
  // starts right after the 12-byte header; a single zero byte is the root.
  const owner = record.ownerIsQueryName
    ? Buffer.from([0xc0, HEADER_LENGTH])
    : Buffer.from([0]);
  const fixed = Buffer.alloc(10);
  fixed.writeUInt16BE(record.type, 0);
  fixed.writeUInt16BE(CLASS_IN, 2);
  fixed.writeUInt32BE(record.ttl, 4);
  fixed.writeUInt16BE(record.data.length, 8);
  return Buffer.concat([owner, fixed, record.data]);
}
