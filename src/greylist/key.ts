// The client key for greylisting. An IPv4 client is grouped by
// greylist_ipv4_prefix_length (32 keeps the address), so that a pool of
// neighbouring outbound servers retrying the same message counts as one
// client. An IPv6 client is grouped by the verdict cache's prefix
// (client_ipv6_prefix_length). Limits and the verdict cache keep their own
// per-client key (src/cache/key.ts).
import { isIPv4 } from "node:net";
import { clientKey } from "../cache/key.js";

export function greylistKey(
  address: string,
  ipv4PrefixLength: number,
  ipv6PrefixLength: number,
): string {
  if (!isIPv4(address) || ipv4PrefixLength >= 32) {
    return clientKey(address, ipv6PrefixLength);
  }
  const value = address
    .split(".")
    .reduce((sum, octet) => sum * 256 + Number(octet), 0);
  const size = 2 ** (32 - ipv4PrefixLength);
  const network = Math.floor(value / size) * size;
  const octets = [24, 16, 8, 0].map(
    (shift) => Math.floor(network / 2 ** shift) % 256,
  );
  return `${octets.join(".")}/${ipv4PrefixLength}`;
}
