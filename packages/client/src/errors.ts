// Errors of the client library. Every error has a stable `code` and JSON-safe `data`, so the CLI can print
// what failed, why, and what to do (`data.hint`), and scripts can switch on the code.

export const CLIENT_ERROR_CODES = [
  /** The server could not be reached at all (refused, DNS, TLS, reset, timeout). */
  'CLIENT_ERR_UNREACHABLE',
  /** The server answered, but not in the API's shape (wrong URL, a proxy page, a truncated body). */
  'CLIENT_ERR_BAD_RESPONSE',
  /** No token in the client state: the user has to log in first. */
  'CLIENT_ERR_NOT_LOGGED_IN',
  /** The state file exists but cannot be read or parsed. */
  'CLIENT_ERR_STATE_INVALID',
  /** Writing the state file or a download failed. */
  'CLIENT_ERR_WRITE_FAILED',
  /** The download target exists and overwriting was not allowed. */
  'CLIENT_ERR_FILE_EXISTS',
  /** A local file to upload is missing or not a regular file. */
  'CLIENT_ERR_FILE_INVALID',
  /** A server URL that is not an absolute http(s) URL. */
  'CLIENT_ERR_BAD_URL',
  /** Another roamdesk process is using the local store (a prefetch); data.pid names it. */
  'CLIENT_ERR_BUSY',
  /** A transfer was stopped by its AbortSignal (Ctrl-C); what was verified is kept and the next run resumes. */
  'CLIENT_ERR_INTERRUPTED',
] as const;
export type ClientErrorCode = (typeof CLIENT_ERROR_CODES)[number];

export type ErrorData = Readonly<Record<string, unknown>>;

/** An error raised by the client itself (not by the server). */
export class ClientError extends Error {
  readonly code: string;
  readonly data: ErrorData;

  constructor(code: ClientErrorCode, message: string, data: ErrorData = {}, options?: ErrorOptions) {
    super(message, options);
    this.name = 'ClientError';
    this.code = code;
    this.data = data;
  }
}

/**
 * The server refused a request: its `{error:{code,message,data?}}` body, kept verbatim, plus the HTTP status.
 * Unlike `@roamdesk/api`'s server-side ApiError, `code` is any string: engine codes (`QCOW2_ERR_*`, …) and codes
 * added by newer servers pass through unchanged.
 */
export class ApiError extends Error {
  readonly code: string;
  readonly status: number;
  readonly data: ErrorData | undefined;

  constructor(status: number, code: string, message: string, data?: ErrorData, options?: ErrorOptions) {
    super(message, options);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.data = data;
  }

  /** True for the one 404 the server's not-found handler answers for an unknown route (not an unknown resource). */
  get isUnknownRoute(): boolean {
    return this.status === 404 && this.code === 'NOT_FOUND' && this.message.startsWith('no route ');
  }
}
