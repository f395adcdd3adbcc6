// The daemon's state as metrics read it at each scrape.
import type { DnsblHealth } from "../dnsbl/health.js";
import type { Greylist } from "../greylist/greylist.js";
import type { Load } from "../intake/load.js";
import { formatEndpoint } from "../log/format.js";
import type { NativeListener } from "../native.js";
import type { StateSource } from "./metrics.js";

/** Builds the gauges' source from the server's listeners, sessions and load. */
export function daemonState(
  listeners: readonly NativeListener[],
  sessions: ReadonlySet<unknown>,
  load: Load,
  /** The DNS list health in force, which a reload replaces. */
  health: () => DnsblHealth | undefined,
  greylist: Greylist | undefined,
): StateSource {
  const labels = listeners.map((listener) => {
    const bound = listener.address();
    return formatEndpoint(bound.address, bound.port);
  });
  return {
    listeners: () => labels,
    phases: () => load.phases,
    activeConnections: () => sessions.size,
    stress: () => load.stress,
    tarpitted: () => load.tarpitted,
    dnsblHealth: () => health()?.states() ?? [],
    greylist: () => greylist?.counts,
  };
}
