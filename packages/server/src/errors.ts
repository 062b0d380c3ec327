// Server-side error constructors. All of them are @roamdesk/api `ApiError`s (a real Error with a stable
// code and data), so the one error handler (http/error-handler.ts) can map them by the api catalog.

import { ApiError, type ErrorData } from '@roamdesk/api';

export { ApiError };

export type Resource = 'desktop' | 'image' | 'user' | 'object' | 'upload' | 'device' | 'operation';

/**
 * Not found. Also what a caller gets for someone else's desktop: the message and data must not differ
 * between "does not exist" and "exists but is not yours" (reliability.md §2.5).
 */
export function notFound(resource: Resource, name: string): ApiError {
  return new ApiError('NOT_FOUND', `${resource} ${JSON.stringify(name)} not found`, { resource, name });
}

export function conflict(message: string, data?: ErrorData): ApiError {
  return new ApiError('CONFLICT', message, data);
}

export function validationFailed(message: string, issues: ReadonlyArray<{ path: string; message: string }>): ApiError {
  return new ApiError('VALIDATION_FAILED', message, { in: 'body', issues });
}

export class RateLimitedError extends ApiError {
  constructor(readonly retryAfterSeconds: number) {
    super('RATE_LIMITED', 'Too many login attempts; retry later.', { retryAfterSeconds });
    this.name = 'RateLimitedError';
  }
}
