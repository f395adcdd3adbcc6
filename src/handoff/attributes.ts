// The connection attributes that follow the descriptor in Postfix's pass
// protocol, in "attr0" encoding: name NUL value NUL for each attribute, and
// one more NUL that ends the list. smtpd (Postfix 3.7) exits on a missing
// or malformed attribute and master then throttles the whole service for
// service_throttle_time, so everything is validated before it is encoded.
import { isIPv4, isIPv6 } from "node:net";

export interface ConnectionAttributes {
  clientAddress: string;
  clientPort: number;
  serverAddress: string;
  serverPort: number;
}

export class AttributeError extends Error {}

const MAPPED_PREFIX = /^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i;

/**
 * Returns the address in the form smtpd accepts: IPv4 dotted quad or bare
 * IPv6 text (no brackets, no zone), with an IPv4-mapped IPv6 address turned
 * into IPv4 so that mynetworks entries such as 127.0.0.0/8 still match.
 * Throws AttributeError for anything else.
 */
export function normalizeAddress(address: string, role: string): string {
  const plain = address.replace(MAPPED_PREFIX, "");
  if (isIPv4(plain)) return plain;
  if (isIPv6(plain) && !plain.includes("%")) return plain.toLowerCase();
  throw new AttributeError(`invalid ${role} address "${address}"`);
}

function checkPort(port: number, role: string): string {
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new AttributeError(`invalid ${role} port ${String(port)}`);
  }
  return String(port);
}

/** Validates and encodes the four attributes; throws AttributeError. */
export function encodeAttributes(attributes: ConnectionAttributes): Buffer {
  const clientAddress = normalizeAddress(attributes.clientAddress, "client");
  const clientPort = checkPort(attributes.clientPort, "client");
  const serverAddress = normalizeAddress(attributes.serverAddress, "server");
  const serverPort = checkPort(attributes.serverPort, "server");
  return Buffer.from(
    `client_address\0${clientAddress}\0client_port\0${clientPort}\0` +
      `server_address\0${serverAddress}\0server_port\0${serverPort}\0\0`,
    "latin1",
  );
}

/**
 * Decodes an attr0 list as smtpd reads it: the first value of a repeated
 * name wins. Returns undefined when the terminating NUL is missing. Used by
 * tests and by fakes of smtpd's side.
 */
export function decodeAttributes(
  data: Buffer,
): Map<string, string> | undefined {
  const result = new Map<string, string>();
  let offset = 0;
  for (;;) {
    const nameEnd = data.indexOf(0, offset);
    if (nameEnd < 0) return undefined;
    if (nameEnd === offset) return result;
    const valueEnd = data.indexOf(0, nameEnd + 1);
    if (valueEnd < 0) return undefined;
    const name = data.toString("latin1", offset, nameEnd);
    if (!result.has(name)) {
      result.set(name, data.toString("latin1", nameEnd + 1, valueEnd));
    }
    offset = valueEnd + 1;
  }
}
