// The fixed keys of the JSON log's records, as docs/observability.md
// documents them.

/** Keys of an event record, in order. */
export const EVENT_KEYS = [
  "type",
  "time",
  "level",
  "program",
  "pid",
  "event",
  "client_address",
  "client_port",
];

/** Keys of a connection summary record, in order. */
export const CONNECTION_KEYS = [
  "type",
  "time",
  "level",
  "program",
  "pid",
  "client_address",
  "client_port",
  "listener_address",
  "listener_port",
  "start_time",
  "end_time",
  "duration_seconds",
  "tests",
  "dnsbl_score",
  "verdict",
  "action",
  "reply",
  "handoff",
  "handoff_error",
];
