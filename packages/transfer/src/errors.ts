/**
 * Errors of @roamdesk/transfer: `TransferError` + stable `code` (XFER_ERR_*) + JSON-safe `data`.
 *
 *   XFER_ERR_MANIFEST        a manifest is malformed or contradicts what it describes (sizes, piece count…)
 *   XFER_ERR_PIECE_HASH      a piece's bytes do not match its hash (after the retries, for a download)
 *   XFER_ERR_OBJECT_HASH     the assembled object does not hash to its id
 *   XFER_ERR_PROTOCOL        the peer sent bytes that are not a valid frame stream (or a truncated one)
 *   XFER_ERR_REMOTE          the server answered with an error (data.status, data.code, data.body)
 *   XFER_ERR_NETWORK         the connection failed (after the retries)
 *   XFER_ERR_TLS             the server's TLS certificate is not trusted here (never retried; data.hint says what to do)
 *   XFER_ERR_UPLOAD          an upload cannot proceed (unknown, not ours, incomplete, too large…)
 *   XFER_ERR_BUSY            another process of this machine is receiving the same object
 *   XFER_ERR_NO_SPACE        the receiving disk has not enough free space (checked before a byte moves; ENOSPC later)
 *   XFER_ERR_DISK            the receiving disk failed (EIO…): what was received of that object is discarded
 *   XFER_ERR_ABORTED         the caller's AbortSignal fired
 */
import { dirname } from 'node:path';

export type TransferErrorCode =
  | 'XFER_ERR_MANIFEST'
  | 'XFER_ERR_PIECE_HASH'
  | 'XFER_ERR_OBJECT_HASH'
  | 'XFER_ERR_PROTOCOL'
  | 'XFER_ERR_REMOTE'
  | 'XFER_ERR_NETWORK'
  | 'XFER_ERR_TLS'
  | 'XFER_ERR_UPLOAD'
  | 'XFER_ERR_BUSY'
  | 'XFER_ERR_NO_SPACE'
  | 'XFER_ERR_DISK'
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

/** A Node fs error's errno code (ENOSPC, EIO…), if `e` is one. */
function errnoCode(e: unknown): string | undefined {
  const code = (e as { code?: unknown } | null)?.code;
  return e instanceof Error && typeof code === 'string' && /^E[A-Z0-9]+$/.test(code) ? code : undefined;
}

const NO_SPACE = new Set(['ENOSPC', 'EDQUOT']);

/**
 * What a failed write or fsync of a received object means for the user. No space: the pieces verified so far
 * stay (a re-run resumes once space is freed). Any other error of the disk: the object's received bytes are not
 * to be trusted any more (after a failed writeback Linux may mark the pages clean and later read back data that
 * never reached the disk), so the caller discards them — reliability.md R7.
 */
export function diskError(e: unknown, path: string, op: 'write' | 'fsync'): TransferError | null {
  const errno = errnoCode(e);
  if (errno === undefined) return null;
  const dir = dirname(path);
  if (NO_SPACE.has(errno)) {
    // A failed write left the verified pieces alone; a failed fsync condemned them all (see PartialObject).
    const then = op === 'write' ? 'the pieces already verified are kept' : 'the object is received again from the start';
    return new TransferError('XFER_ERR_NO_SPACE', `no space left in ${dir} (${errno} on ${op})`, {
      path, errno, op, hint: `free space in ${dir} (or move the data there to a larger disk), then run the same command again: ${then}`,
    }, { cause: e });
  }
  return new TransferError('XFER_ERR_DISK', `the disk failed while receiving into ${dir} (${errno} on ${op}); what was received of this object was discarded`, {
    path, errno, op, hint: `check the disk (kernel log: dmesg), then run the same command again: the object is received again from the start`,
  }, { cause: e });
}

export function abortedError(signal: AbortSignal): TransferError {
  return new TransferError('XFER_ERR_ABORTED', 'transfer aborted', {}, { cause: signal.reason });
}

/**
 * OpenSSL's verify results and node:tls's host check, as Node reports them in `err.code`: the server's certificate
 * is not one this machine trusts. Retrying cannot help; the user has to act.
 */
const UNTRUSTED_CERTIFICATE = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT', 'SELF_SIGNED_CERT_IN_CHAIN', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'CERT_HAS_EXPIRED', 'CERT_NOT_YET_VALID', 'CERT_UNTRUSTED', 'CERT_REJECTED',
  'CERT_SIGNATURE_FAILURE', 'CERT_REVOKED', 'ERR_TLS_CERT_ALTNAME_INVALID',
]);

export function isUntrustedCertificate(code: unknown): boolean {
  return typeof code === 'string' && UNTRUSTED_CERTIFICATE.has(code);
}

export const UNTRUSTED_CERTIFICATE_HINT =
  "the server's TLS certificate is not trusted here: if it is self-signed or signed by your organisation's own CA, run roamdesk with NODE_EXTRA_CA_CERTS=/path/to/that-certificate.pem; if it expired or names another host, the server's administrator renews it (roamdesk server re-reads --tls-cert/--tls-key on SIGHUP)";

/** A connection that failed: XFER_ERR_TLS for a certificate this machine does not trust, else XFER_ERR_NETWORK. */
export function connectionError(url: string, e: Error): TransferError {
  const errno = (e as NodeJS.ErrnoException).code;
  const message = `${url}: ${errno ?? ''} ${e.message}`.replace(/\s+/g, ' ').trim();
  if (isUntrustedCertificate(errno)) return new TransferError('XFER_ERR_TLS', message, { url, errno, hint: UNTRUSTED_CERTIFICATE_HINT }, { cause: e });
  return new TransferError('XFER_ERR_NETWORK', message, { url, errno }, { cause: e });
}
