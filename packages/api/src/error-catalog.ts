// The error catalog: every error code the HTTP API can answer with, and its HTTP status, in one place.
//
// Wire shape (always, for every non-2xx answer):   { "error": { "code": "...", "message": "...", "data": {...}? } }
//
// Codes are stable strings that clients switch on; messages are for people and may be reworded.
// Engine packages (qcow2, qemu, qmp, store, transfer) have their own code families, e.g. `QCOW2_ERR_BAD_MAGIC`;
// they are mapped by exact code first, then by prefix, so a new engine code gets a sensible status without
// touching this file.

import type { ErrorBody } from './errors.ts';

/** Codes the server itself raises, with their HTTP status and a default message. */
export const ERROR_CATALOG = {
  // --- request shape
  VALIDATION_FAILED: { status: 400, message: 'The request is not valid.' },
  INVALID_PATH: { status: 400, message: 'The path does not name an existing regular file on the server.' },
  PAYLOAD_TOO_LARGE: { status: 413, message: 'The request body is too large.' },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, message: 'The request body has an unsupported content type.' },
  // --- authentication and authorization
  AUTH_REQUIRED: { status: 401, message: 'Authentication is required.' },
  AUTH_INVALID: { status: 401, message: 'Invalid credentials.' },
  TOKEN_EXPIRED: { status: 401, message: 'The token has expired; log in again.' },
  FORBIDDEN: { status: 403, message: 'Not allowed.' },
  RATE_LIMITED: { status: 429, message: 'Too many attempts; retry later.' },
  // --- resources
  NOT_FOUND: { status: 404, message: 'Not found.' },
  CONFLICT: { status: 409, message: 'The request conflicts with the current state.' },
  IMAGE_IN_USE: { status: 409, message: 'The image is used by desktops.' },
  IMAGE_VERSION_UNCHANGED: { status: 409, message: 'The new version shows the guest the same disk as the latest version.' },
  IMAGE_SIZE_MISMATCH: { status: 422, message: 'The new version has a different virtual size than the image.' },
  // --- desktops and leases
  DESKTOP_RUNNING: { status: 409, message: 'The desktop is running.' },
  DESKTOP_NOT_RUNNING: { status: 409, message: 'The desktop is not running.' },
  DESKTOP_BUSY: { status: 409, message: 'The desktop is starting or stopping; retry when it settles.' },
  DESKTOP_PAUSED: { status: 409, message: "A disk error paused the desktop's VM; start resumes it once the disk has room again, or stop it with force." },
  CHECKED_OUT: { status: 409, message: 'The desktop is checked out to a device.' },
  LEASE_STALE: { status: 409, message: 'The lease generation is stale.' },
  LEASE_BUSY: { status: 409, message: 'Another operation holds the lease; retry when it ends.' },
  CHAIN_MISMATCH: { status: 422, message: "The new top does not extend the desktop's replicated chain." },
  DEVICE_REVOKED: { status: 403, message: 'This device was revoked; register it again.' },
  // --- remote console
  CONSOLE_LIMIT: { status: 429, message: 'Too many console sessions are open; close one and retry.' },
  // --- server side
  // RFC 4918 §11.5 Insufficient Storage: not the caller's fault, and retrying at once does not help.
  NO_SPACE: { status: 507, message: "The server's disk is full." },
  RUNTIME_FAILED: { status: 500, message: 'The desktop runtime failed.' },
  INTERNAL: { status: 500, message: 'Internal server error.' },
} as const satisfies Record<string, { status: number; message: string }>;

export type ErrorCode = keyof typeof ERROR_CATALOG;

/** Engine codes whose status differs from their family's. */
export const ENGINE_CODE_STATUS: Readonly<Record<string, number>> = {
  // A running VM holds the image's write lock: the caller can retry after stopping it.
  QEMU_ERR_IMG_LOCKED: 409,
  // qemu-img was killed by a resource limit while reading an uploaded image: the image is at fault.
  QEMU_ERR_IMG_LIMIT: 422,
  QEMU_ERR_IMG_INVALID_ARGUMENT: 422,
  // The server's disk cannot hold what is being sent or imported: 507 Insufficient Storage (RFC 4918 §11.5); not
  // the caller's fault, and retrying at once does not help.
  XFER_ERR_NO_SPACE: 507,
  STORE_ERR_NO_SPACE: 507,
  QEMU_ERR_IMG_NO_SPACE: 507,
  // The server's disk failed while receiving, or under the store: the received bytes were discarded, nothing published.
  XFER_ERR_DISK: 500,
  STORE_ERR_DISK: 500,
};

/**
 * Engine code families by prefix. A qcow2 or store refusal is about the submitted bytes (422); a QEMU
 * tool failure is ours (500); a QMP failure means the VM's monitor misbehaved (502, a bad upstream).
 */
export const ENGINE_PREFIX_STATUS: ReadonlyArray<readonly [prefix: string, status: number]> = [
  ['QCOW2_ERR_', 422],
  ['STORE_ERR_', 422],
  ['XFER_ERR_', 422],
  ['QEMU_ERR_', 500],
  ['QMP_ERR_', 502],
];

/** Code strings are bounded and upper-snake so a foreign `code` property can never smuggle text into a response. */
const CODE_RE = /^[A-Z][A-Z0-9_]{1,63}$/;

export function isErrorCode(code: string): code is ErrorCode {
  return Object.hasOwn(ERROR_CATALOG, code);
}

/** The HTTP status for a code, or undefined if the code is unknown (the server then answers 500 INTERNAL). */
export function statusForCode(code: string): number | undefined {
  if (!CODE_RE.test(code)) return undefined;
  if (isErrorCode(code)) return ERROR_CATALOG[code].status;
  const exact = ENGINE_CODE_STATUS[code];
  if (exact !== undefined) return exact;
  for (const [prefix, status] of ENGINE_PREFIX_STATUS) {
    if (code.startsWith(prefix)) return status;
  }
  return undefined;
}

export type ErrorData = Readonly<Record<string, unknown>>;

/**
 * An error with a catalogued code. The server throws these (or subclasses); the error handler turns them
 * into the wire shape. The CLI can rebuild one from a response body with `ApiError.fromBody`.
 */
export class ApiError extends Error {
  readonly code: ErrorCode;
  readonly data: ErrorData | undefined;

  constructor(code: ErrorCode, message?: string, data?: ErrorData, options?: ErrorOptions) {
    super(message ?? ERROR_CATALOG[code].message, options);
    this.name = 'ApiError';
    this.code = code;
    this.data = data;
  }

  get status(): number {
    return ERROR_CATALOG[this.code].status;
  }

  toBody(): ErrorBody {
    return this.data === undefined
      ? { error: { code: this.code, message: this.message } }
      : { error: { code: this.code, message: this.message, data: { ...this.data } } };
  }
}
