// Types for unix-dgram 2.0.7, which ships none. Errors carry negative
// errno values as `code` (-2 for ENOENT); a send on a full connected
// socket reports the error "congestion" with code 1 and later emits
// "writable".
declare module "unix-dgram" {
  import type { EventEmitter } from "node:events";

  export interface UnixDgramError extends Error {
    code: number;
    errno?: number;
    syscall?: string;
  }

  export interface UnixDgramSocket extends EventEmitter {
    bind(path: string): void;
    connect(path: string): void;
    /** Sends on a connected socket; the callback runs synchronously. */
    send(data: Buffer, callback: (error?: UnixDgramError) => void): void;
    close(): void;
  }

  export function createSocket(
    type: "unix_dgram",
    onMessage?: (data: Buffer, info: { size: number; path?: string }) => void,
  ): UnixDgramSocket;
}
