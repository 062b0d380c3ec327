/**
 * Wire-level shapes of QMP (qmp-spec section 2). These describe what QEMU sends; QEMU may add keys
 * at any time (qmp-spec 5: "Clients should be able to ignore them"), so nothing here is exhaustive.
 */

/** A version triple as in the greeting and query-version (qmp-spec 2.2). */
export interface QmpVersionTriple {
  major: number;
  minor: number;
  micro: number;
}

/** `query-version`'s answer; the greeting's `version` has "the same" format (qmp-spec 2.2). */
export interface QmpVersionInfo {
  qemu: QmpVersionTriple;
  package: string;
}

/** The greeting `{ "QMP": { "version", "capabilities" } }` (qmp-spec 2.2). */
export interface QmpGreeting {
  version: QmpVersionInfo;
  /** Capabilities the server offers, e.g. `"oob"` (qmp-spec 2.2.1). We enable none. */
  capabilities: string[];
}

/** `{ "seconds", "microseconds" }` since the Unix epoch; both -1 if the host clock failed (qmp-spec 2.5). */
export interface QmpTimestamp {
  seconds: number;
  microseconds: number;
}

/** Data of the events this project reacts to. Other events carry `Record<string, unknown>`. */
export interface QmpEventDataMap {
  STOP: Record<string, never>;
  RESUME: Record<string, never>;
  POWERDOWN: Record<string, never>;
  SHUTDOWN: { guest: boolean; reason: QmpShutdownCause };
  RESET: { guest: boolean; reason: QmpShutdownCause };
  MIGRATION: { status: string };
  JOB_STATUS_CHANGE: { id: string; status: string };
  BLOCK_JOB_COMPLETED: {
    type: string;
    device: string;
    len: number;
    offset: number;
    speed: number;
    error?: string;
  };
  BLOCK_JOB_ERROR: { device: string; operation: 'read' | 'write'; action: string };
  BLOCK_IO_ERROR: {
    device: string;
    'node-name'?: string;
    operation: 'read' | 'write';
    action: string;
    nospace?: boolean;
    reason: string;
  };
  VNC_CONNECTED: Record<string, unknown>;
  VNC_DISCONNECTED: Record<string, unknown>;
}

/** qapi ShutdownCause (run-state.json). */
export type QmpShutdownCause =
  | 'none'
  | 'host-error'
  | 'host-qmp-quit'
  | 'host-qmp-system-reset'
  | 'host-signal'
  | 'host-ui'
  | 'guest-shutdown'
  | 'guest-reset'
  | 'guest-panic'
  | 'subsystem-reset'
  | 'snapshot-load';

export type QmpKnownEventName = keyof QmpEventDataMap;

export type QmpEventData<N extends string> = N extends QmpKnownEventName
  ? QmpEventDataMap[N]
  : Record<string, unknown>;

/**
 * An asynchronous event (qmp-spec 2.5). `data` is optional on the wire; the client fills in `{}`
 * when it is absent, so consumers never check for undefined.
 */
export interface QmpEvent<N extends string = string> {
  event: N;
  data: QmpEventData<N>;
  timestamp: QmpTimestamp;
}
