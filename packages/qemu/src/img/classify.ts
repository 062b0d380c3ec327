/** Pure classification of a finished qemu-img run into success or one of the typed failures. */
import type { QemuImgLimit } from './errors.ts';

export interface Finished {
  readonly exitCode: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stderr: string;
  /** prlimit was wrapped around the run. */
  readonly limited: boolean;
  /** We killed it because the wall-clock timeout passed. */
  readonly timedOut: boolean;
  /** We killed it because the caller aborted. */
  readonly aborted: boolean;
}

export type Outcome =
  | { readonly kind: 'ok' }
  | { readonly kind: 'missing' }
  | { readonly kind: 'aborted' }
  | { readonly kind: 'limit'; readonly limit: QemuImgLimit }
  | { readonly kind: 'locked' }
  | { readonly kind: 'no-space' }
  | { readonly kind: 'failed' };

// glib aborts with "failed to allocate N bytes"; qemu_thread_create fails with EAGAIN under a small RLIMIT_AS.
const OUT_OF_MEMORY_RE = /Cannot allocate memory|failed to allocate|Resource temporarily unavailable|out of memory/i;
// block/file-posix.c raw_check_lock_bytes: 'Failed to get "write" lock' / 'Failed to get shared "write" lock'.
const LOCKED_RE = /Failed to get (?:shared )?"[a-z ]+" lock/;
// strerror(ENOSPC), as qemu-img reports a failed write ("error while writing at byte N: No space left on device").
const NO_SPACE_RE = /No space left on device/;
// util-linux prlimit exec failure: "prlimit: failed to execute X: No such file or directory", exit 127.
const EXEC_FAILED_RE = /failed to execute .*No such file or directory/;

export function classify(f: Finished, okExitCodes: readonly number[]): Outcome {
  if (f.aborted) return { kind: 'aborted' };
  if (f.timedOut) return { kind: 'limit', limit: 'wall-clock' };
  if (f.exitCode !== null && okExitCodes.includes(f.exitCode)) return { kind: 'ok' };
  if (f.exitCode === 127 && f.limited && EXEC_FAILED_RE.test(f.stderr)) return { kind: 'missing' };
  if (f.limited) {
    // RLIMIT_CPU: SIGXCPU at the soft limit, SIGKILL at the hard one (setrlimit(2)). We never send either.
    if (f.signal === 'SIGXCPU' || f.signal === 'SIGKILL') return { kind: 'limit', limit: 'cpu' };
    // RLIMIT_AS: allocation failures abort (glib g_malloc) or surface as ENOMEM/EAGAIN messages.
    if (f.signal === 'SIGABRT' || f.signal === 'SIGSEGV' || f.signal === 'SIGBUS' || OUT_OF_MEMORY_RE.test(f.stderr)) {
      return { kind: 'limit', limit: 'address-space' };
    }
  }
  if (LOCKED_RE.test(f.stderr)) return { kind: 'locked' };
  if (NO_SPACE_RE.test(f.stderr)) return { kind: 'no-space' };
  return { kind: 'failed' };
}
