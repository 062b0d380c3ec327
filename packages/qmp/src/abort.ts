/** The error to reject with when `signal` aborts: its reason if that is an Error, else an AbortError. */
export function abortError(signal: AbortSignal | undefined): Error {
  const reason: unknown = signal?.reason;
  if (reason instanceof Error) return reason;
  const detail = typeof reason === 'string' ? reason : 'The operation was aborted';
  return new DOMException(detail, 'AbortError');
}
