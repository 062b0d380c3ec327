// Turn anything thrown in a request into the one wire shape `{ error: { code, message, data? } }` with the
// status from the api catalog. Pure, so it is tested without a server.

import { ApiError, ERROR_CATALOG, type ErrorBody, statusForCode } from '@roamdesk/api';
import { RateLimitedError } from '../errors.ts';

export interface ErrorResponse {
  status: number;
  body: ErrorBody;
  headers: Record<string, string>;
  /** True when the error was not expected: log it with its stack. */
  unexpected: boolean;
}

interface ValidationIssue {
  instancePath?: unknown;
  message?: unknown;
  keyword?: unknown;
}

const MAX_ISSUES = 20;

const NO_SPACE_HINT = 'ask the server\'s administrator to free space on its disk, then run the same command again';

/**
 * ENOSPC or EDQUOT from a file system call (Node's errno code), or SQLITE_FULL from the database, here or in the
 * error's causes: libraries wrap what they met.
 */
function isNoSpace(err: unknown): boolean {
  for (let e = err, depth = 0; typeof e === 'object' && e !== null && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (code === 'ENOSPC' || code === 'EDQUOT' || code === 'SQLITE_FULL') return true;
  }
  return false;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && Object.getPrototypeOf(v) === Object.prototype;
}

/** fastify's own 4xx errors (body parsing, content type …), by fastify code, then by status. */
const FASTIFY_CODES: Readonly<Record<string, keyof typeof ERROR_CATALOG>> = {
  FST_ERR_CTP_BODY_TOO_LARGE: 'PAYLOAD_TOO_LARGE',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'UNSUPPORTED_MEDIA_TYPE',
};

export function toErrorResponse(err: unknown, requestId: string): ErrorResponse {
  if (err instanceof ApiError) {
    const headers: Record<string, string> = err instanceof RateLimitedError ? { 'retry-after': String(err.retryAfterSeconds) } : {};
    const unexpected = err.status >= 500;
    const body = err.toBody();
    if (unexpected) body.error.data = { ...body.error.data, requestId };
    return { status: err.status, body, headers, unexpected };
  }

  const e = (typeof err === 'object' && err !== null ? err : {}) as {
    code?: unknown;
    message?: unknown;
    statusCode?: unknown;
    validation?: unknown;
    validationContext?: unknown;
    data?: unknown;
  };

  // Schema validation (params, querystring, body, headers).
  if (Array.isArray(e.validation)) {
    const issues = (e.validation as ValidationIssue[]).slice(0, MAX_ISSUES).map((v) => ({
      path: typeof v.instancePath === 'string' ? v.instancePath : '',
      message: typeof v.message === 'string' ? v.message.slice(0, 300) : 'invalid',
    }));
    const where = typeof e.validationContext === 'string' ? e.validationContext : 'request';
    return {
      status: 400,
      body: { error: { code: 'VALIDATION_FAILED', message: `invalid ${where}`, data: { in: where, issues } } },
      headers: {},
      unexpected: false,
    };
  }

  const code = typeof e.code === 'string' ? e.code : undefined;
  const message = typeof e.message === 'string' ? e.message.slice(0, 1000) : '';

  // Engine errors (QCOW2_ERR_*, STORE_ERR_*, QEMU_ERR_* …) keep their own code.
  const engineStatus = code === undefined ? undefined : statusForCode(code);
  if (code !== undefined && engineStatus !== undefined) {
    const unexpected = engineStatus >= 500;
    // Data of a 4xx describes the caller's input; data of a 5xx may describe the server (paths, stderr).
    const data = unexpected ? { requestId } : isPlainObject(e.data) ? e.data : undefined;
    return {
      status: engineStatus,
      body: { error: data === undefined ? { code, message } : { code, message, data } },
      headers: {},
      unexpected,
    };
  }

  // fastify's own client errors: bad JSON, wrong content type, too large …
  const status = typeof e.statusCode === 'number' ? e.statusCode : 500;
  if (status >= 400 && status < 500) {
    const mapped =
      (code !== undefined ? FASTIFY_CODES[code] : undefined) ??
      (status === 413 ? 'PAYLOAD_TOO_LARGE' : status === 415 ? 'UNSUPPORTED_MEDIA_TYPE' : status === 404 ? 'NOT_FOUND' : 'VALIDATION_FAILED');
    return {
      status: ERROR_CATALOG[mapped].status,
      body: { error: { code: mapped, message: message || ERROR_CATALOG[mapped].message } },
      headers: {},
      unexpected: false,
    };
  }

  // The server's own disk full, wherever it was met (a store write, the database): the caller can do nothing about
  // it but wait or tell the administrator, and should be told that much rather than "internal error".
  if (isNoSpace(err)) {
    return {
      status: ERROR_CATALOG.NO_SPACE.status,
      body: { error: { code: 'NO_SPACE', message: ERROR_CATALOG.NO_SPACE.message, data: { requestId, hint: NO_SPACE_HINT } } },
      headers: {},
      unexpected: true,
    };
  }

  // Anything else is a bug or an unplanned failure: say so, and no more (no stack, no message).
  return {
    status: 500,
    body: { error: { code: 'INTERNAL', message: ERROR_CATALOG.INTERNAL.message, data: { requestId } } },
    headers: {},
    unexpected: true,
  };
}
