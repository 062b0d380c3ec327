/**
 * How a QEMU process ended, decided from facts the runner collected. Pure.
 *
 * - 'guest-shutdown': a SHUTDOWN event with guest=true (the guest powered off, or rebooted under -no-reboot).
 * - 'host-quit':      a SHUTDOWN event with guest=false (QMP quit, SIGTERM/SIGINT to QEMU, window closed),
 *                     or exit code 0 without any event.
 * - 'killed':         QEMU died of the signal *we* sent (kill(), or powerDown's last resort).
 * - 'crashed':        anything else: no SHUTDOWN event and a nonzero code or a signal we did not send
 *                     (segfault, abort, OOM killer, someone else's SIGKILL), or SHUTDOWN reason host-error.
 */
export type VmExitReason = 'guest-shutdown' | 'host-quit' | 'killed' | 'crashed';

export interface VmExit {
  /** Exit code; null when killed by a signal, or unknown for an adopted process. */
  code: number | null;
  signal: string | null;
  reason: VmExitReason;
  /** One line for humans; for 'crashed' it ends with the tail of QEMU's stderr. */
  detail: string;
  /** The SHUTDOWN event's reason (qapi ShutdownCause), if one came. */
  shutdownReason?: string;
  stderrTail: string;
}

export interface ExitFacts {
  code: number | null;
  signal: string | null;
  /** The SHUTDOWN event, if QMP delivered one. */
  shutdown?: { guest: boolean; reason: string } | undefined;
  /** The signal we sent to the process, if any. */
  sentSignal?: string | undefined;
  /** True for an adopted process, whose exit status we cannot read. */
  statusUnknown?: boolean;
  stderrTail: string;
}

export function classifyExit(f: ExitFacts): VmExit {
  const base = { code: f.code, signal: f.signal, stderrTail: f.stderrTail, ...(f.shutdown ? { shutdownReason: f.shutdown.reason } : {}) };
  const status = f.statusUnknown ? 'exit status unknown (adopted process)' : f.signal ? `signal ${f.signal}` : `code ${String(f.code)}`;
  const tail = f.stderrTail.trim() ? `; stderr: ${f.stderrTail.trim().split('\n').slice(-5).join(' | ')}` : '';

  if (f.sentSignal !== undefined && (f.signal === f.sentSignal || (f.statusUnknown && !f.shutdown))) {
    return { ...base, reason: 'killed', detail: `QEMU was killed by us (${f.sentSignal})` };
  }
  if (f.shutdown && f.shutdown.reason !== 'host-error') {
    const reason = f.shutdown.guest ? 'guest-shutdown' : 'host-quit';
    if (f.signal === null && (f.code === 0 || f.statusUnknown)) {
      return { ...base, reason, detail: `QEMU shut down (${f.shutdown.reason}), ${status}` };
    }
    // A SHUTDOWN event and then a bad exit: the shutdown itself went wrong.
    return { ...base, reason: 'crashed', detail: `QEMU failed while shutting down (${f.shutdown.reason}), ${status}${tail}` };
  }
  if (!f.shutdown && f.signal === null && f.code === 0) {
    return { ...base, reason: 'host-quit', detail: 'QEMU exited with code 0 without a SHUTDOWN event' };
  }
  return { ...base, reason: 'crashed', detail: `QEMU exited unexpectedly (${status})${tail}` };
}
