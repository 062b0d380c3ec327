// Limits on open console sessions. Each session holds a WebSocket, a UNIX socket and a VNC client inside
// QEMU (which re-encodes the screen per client), so an unbounded number is a cheap way to load the host.

import { ApiError } from '@roamdesk/api';

export interface ConsoleLimits {
  perDesktop: number;
  perUser: number;
  total: number;
}

export const DEFAULT_CONSOLE_LIMITS: ConsoleLimits = { perDesktop: 4, perUser: 8, total: 64 };

export interface ConsoleSlot {
  readonly id: number;
  readonly desktopId: string;
  readonly userId: string;
  /** Idempotent: the proxy's end and the socket's close may both call it. */
  readonly release: () => void;
}

export class ConsoleSessions {
  private readonly open = new Map<number, { desktopId: string; userId: string }>();
  private next = 1;

  constructor(private readonly limits: ConsoleLimits = DEFAULT_CONSOLE_LIMITS) {}

  get size(): number {
    return this.open.size;
  }

  /** Take a slot or throw CONSOLE_LIMIT. Synchronous, so check and take cannot interleave with another request. */
  acquire(desktopId: string, userId: string): ConsoleSlot {
    let forDesktop = 0;
    let forUser = 0;
    for (const s of this.open.values()) {
      if (s.desktopId === desktopId) forDesktop += 1;
      if (s.userId === userId) forUser += 1;
    }
    if (this.open.size >= this.limits.total || forDesktop >= this.limits.perDesktop || forUser >= this.limits.perUser) {
      throw new ApiError('CONSOLE_LIMIT', undefined, { perDesktop: this.limits.perDesktop, perUser: this.limits.perUser });
    }
    const id = this.next++;
    this.open.set(id, { desktopId, userId });
    return { id, desktopId, userId, release: () => void this.open.delete(id) };
  }
}
