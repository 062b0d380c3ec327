/**
 * Errors of @roamdesk/transfer: `TransferError` + stable `code` (XFER_ERR_*) + JSON-safe `data`.
 *
 *   XFER_ERR_MANIFEST        a manifest is malformed or contradicts what it describes (sizes, piece count…)
 *   XFER_ERR_PIECE_HASH      a piece's bytes do not match its hash (after the retries, for a download)
 *   XFER_ERR_OBJECT_HASH     the assembled object does not hash to its id
 *   XFER_ERR_PROTOCOL        the peer sent bytes that are not a valid frame stream (or a truncated one)
 *   XFER_ERR_REMOTE          the server answered with an error (data.status, data.code, data.body)
 *   XFER_ERR_NETWORK         the connection failed (after the retries)
 *   XFER_ERR_UPLOAD          an upload cannot proceed (unknown, not ours, incomplete, too large…)
 *   XFER_ERR_BUSY            another process of this machine is receiving the same object
 *   XFER_ERR_ABORTED         the caller's AbortSignal fired
 */
export type TransferErrorCode =
  | 'XFER_ERR_MANIFEST'
  | 'XFER_ERR_PIECE_HASH'
  | 'XFER_ERR_OBJECT_HASH'
  | 'XFER_ERR_PROTOCOL'
  | 'XFER_ERR_REMOTE'
  | 'XFER_ERR_NETWORK'
  | 'XFER_ERR_UPLOAD'
  | 'XFER_ERR_BUSY'
  | 'XFER_ERR_ABORTED';

export class TransferError extends Error {
  readonly code: TransferErrorCode;
  readonly data: Readonly<Record<string, unknown>>;
  constructor(code: TransferErrorCode, message: string, data: Record<string, unknown> = {}, options?: ErrorOptions) {
    super(message, options);
    this.name = 'TransferError';
    this.code = code;
    this.data = Object.freeze({ ...data });
  }
  toJSON(): { name: string; code: string; message: string; data: Readonly<Record<string, unknown>> } {
    return { name: this.name, code: this.code, message: this.message, data: this.data };
  }
}

export function isTransferError(e: unknown, code?: TransferErrorCode): e is TransferError {
  return e instanceof TransferError && (code === undefined || e.code === code);
}

export function abortedError(signal: AbortSignal): TransferError {
  return new TransferError('XFER_ERR_ABORTED', 'transfer aborted', {}, { cause: signal.reason });
}
