// Errors of the QEMU runtime. Stable codes; `data` is JSON-safe. Codes that exist in the api catalog
// (DESKTOP_RUNNING) keep their HTTP status; the others reach the client as RUNTIME_FAILED with this as cause.

export class RuntimeError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly data: Record<string, unknown> = {},
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'RuntimeError';
  }
}

/** The desktop has no overlay recorded, or its file is gone: booting would silently lose its disk. */
export class RuntimeOverlayMissingError extends RuntimeError {
  constructor(desktopId: string, path: string | null) {
    super('RUNTIME_OVERLAY_MISSING', `desktop ${desktopId}: overlay ${path ?? '(none recorded)'} is missing`, { desktopId, path });
    this.name = 'RuntimeOverlayMissingError';
  }
}

/** start/export/remove of a desktop whose VM runs. */
export class RuntimeDesktopRunningError extends RuntimeError {
  constructor(desktopId: string, pid: number) {
    super('DESKTOP_RUNNING', `desktop ${desktopId} is running (QEMU pid ${pid})`, { desktopId, pid });
    this.name = 'RuntimeDesktopRunningError';
  }
}
