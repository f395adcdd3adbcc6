// Connections in progress per client key (an IPv4 address or an IPv6
// prefix). The verdict cache is consulted only for a client's first
// concurrent connection, as in postscreen, and per-client limits build on
// the same counts.
export class ClientCounts {
  private readonly counts = new Map<string, number>();

  /** Counts a new connection; returns the count including it. */
  add(key: string): number {
    const count = (this.counts.get(key) ?? 0) + 1;
    this.counts.set(key, count);
    return count;
  }

  remove(key: string): void {
    const count = (this.counts.get(key) ?? 0) - 1;
    if (count > 0) this.counts.set(key, count);
    else this.counts.delete(key);
  }

  get(key: string): number {
    return this.counts.get(key) ?? 0;
  }

  /** Number of distinct clients with a connection in progress. */
  get size(): number {
    return this.counts.size;
  }
}
