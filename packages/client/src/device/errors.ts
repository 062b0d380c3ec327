// Errors of the device agent. Like ClientError: a stable `code`, JSON-safe `data`, and a `data.hint` saying
// what to do. Server refusals stay ApiError (LEASE_STALE, CHECKED_OUT, DEVICE_REVOKED, LEASE_BUSY …).

export const DEVICE_ERROR_CODES = [
  /** This machine is not registered as a device (roamdesk device register). */
  'DEVICE_ERR_NOT_REGISTERED',
  /** The device record, a desktop record or the clock file cannot be read or parsed. */
  'DEVICE_ERR_STATE_INVALID',
  /** The desktop is not checked out to this device. */
  'DEVICE_ERR_NOT_CHECKED_OUT',
  /** The desktop's local check-out is unfinished (checking-out) or no longer valid (lease lost). */
  'DEVICE_ERR_LEASE_STATE',
  /** The offline grant is missing, forged, for another lease, expired, or the device was offline too long. */
  'DEVICE_ERR_GRANT_INVALID',
  'DEVICE_ERR_GRANT_EXPIRED',
  /** The local VM runs (and the command needs it stopped), or does not run (and it needs it running). */
  'DEVICE_ERR_VM_RUNNING',
  'DEVICE_ERR_VM_NOT_RUNNING',
  /** The local VM is paused by a disk error (a full disk, EIO): a graceful stop cannot reach the guest. */
  'DEVICE_ERR_VM_PAUSED',
  /** Too little free space where the local store lives for what the command must write. */
  'DEVICE_ERR_NO_SPACE',
  /** Another roamdesk process holds this desktop's lock (a replication or check-in in progress). */
  'DEVICE_ERR_BUSY',
  /** The chain downloaded or found locally is not what the server described. */
  'DEVICE_ERR_CHAIN_INVALID',
  /** A quarantine entry that does not exist or cannot be read. */
  'DEVICE_ERR_QUARANTINE',
  /** The local VM cannot be started here (kernel files missing, …). */
  'DEVICE_ERR_VM_CONFIG',
] as const;
export type DeviceErrorCode = (typeof DEVICE_ERROR_CODES)[number];

export class DeviceError extends Error {
  readonly code: DeviceErrorCode;
  readonly data: Readonly<Record<string, unknown>>;

  constructor(code: DeviceErrorCode, message: string, data: Readonly<Record<string, unknown>> = {}, options?: ErrorOptions) {
    super(message, options);
    this.name = 'DeviceError';
    this.code = code;
    this.data = data;
  }
}
