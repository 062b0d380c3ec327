import { Type, type Static } from 'typebox';
import { Name, ServerPath, Timestamp, Uuid } from '../names.ts';
import { CPUS_MAX, CPUS_MIN, MEMORY_MIB_MAX, MEMORY_MIB_MIN, SERIAL_LOG_TAIL_MAX, STOP_TIMEOUT_MAX_SECONDS } from '../limits.ts';
import { Lease } from './leases.ts';

export const DesktopState = Type.Union([
  Type.Literal('stopped'),
  Type.Literal('starting'),
  Type.Literal('running'),
  Type.Literal('stopping'),
  Type.Literal('error'),
]);
export type DesktopState = Static<typeof DesktopState>;

/** Who holds the lease: the server, or a device (`lease` says which, since when and at which generation). */
export const DesktopLocation = Type.String({ description: '"server", or "device" while a device holds the lease' });


export const MemoryMiB = Type.Integer({ minimum: MEMORY_MIB_MIN, maximum: MEMORY_MIB_MAX });
export const Cpus = Type.Integer({ minimum: CPUS_MIN, maximum: CPUS_MAX });
/** A kernel command line: one argv element for QEMU, so no shell quoting matters, but no control characters. */
export const KernelAppend = Type.String({ maxLength: 4096, pattern: '^[^\\u0000-\\u001f\\u007f]*$' });

/** Why a running desktop's VM is paused (its disk's error policy pauses it rather than fail the guest's write). */
export const DesktopPause = Type.Object({
  reason: Type.Union([Type.Literal('no-space'), Type.Literal('disk-error'), Type.Literal('paused')], {
    description: "no-space: the server's disk is full (the server resumes it once there is room again); disk-error: another I/O error; paused: on request",
  }),
  since: Timestamp,
});
export type DesktopPause = Static<typeof DesktopPause>;

export const Desktop = Type.Object({
  id: Uuid,
  name: Name,
  owner: Name,
  image: Name,
  memoryMiB: Type.Integer(),
  cpus: Type.Integer(),
  kernel: Type.Union([Type.String(), Type.Null()]),
  initrd: Type.Union([Type.String(), Type.Null()]),
  append: Type.Union([Type.String(), Type.Null()]),
  state: DesktopState,
  paused: Type.Optional(DesktopPause),
  location: DesktopLocation,
  leaseGeneration: Type.Integer({ description: 'fencing token; bumped by every lease move' }),
  lease: Lease,
  createdAt: Timestamp,
  updatedAt: Timestamp,
});
export type Desktop = Static<typeof Desktop>;

export const CreateDesktopRequest = Type.Object(
  {
    name: Name,
    image: Name,
    owner: Name,
    memoryMiB: Type.Optional(MemoryMiB),
    cpus: Type.Optional(Cpus),
    kernel: Type.Optional(ServerPath),
    initrd: Type.Optional(ServerPath),
    append: Type.Optional(KernelAppend),
  },
  { additionalProperties: false },
);
export type CreateDesktopRequest = Static<typeof CreateDesktopRequest>;

export const DEFAULT_MEMORY_MIB = 1024;
export const DEFAULT_CPUS = 1;

export const DesktopResponse = Type.Object({ desktop: Desktop });
export type DesktopResponse = Static<typeof DesktopResponse>;

export const DesktopListResponse = Type.Object({ desktops: Type.Array(Desktop) });
export type DesktopListResponse = Static<typeof DesktopListResponse>;


/**
 * `POST /desktops/:name/stop|restart?force=true`: quit the VM at once instead of a graceful power-down;
 * `?timeoutSeconds=N`: how long the guest gets to power off before QEMU is killed (default: the server's).
 */
export const StopQuery = Type.Object(
  {
    force: Type.Optional(Type.Boolean({ description: 'skip the ACPI power-down: QEMU quits at once (a hung guest; unsaved guest data is lost)' })),
    timeoutSeconds: Type.Optional(Type.Integer({
      minimum: 0, maximum: STOP_TIMEOUT_MAX_SECONDS,
      description: "seconds the guest gets to power off before QEMU is killed (default: the server's stopTimeoutMs; 0 is force)",
    })),
  },
  { additionalProperties: false },
);
export type StopQuery = Static<typeof StopQuery>;

export const SerialLogQuery = Type.Object(
  { tail: Type.Optional(Type.Integer({ minimum: 1, maximum: SERIAL_LOG_TAIL_MAX, description: 'last N bytes' })) },
  { additionalProperties: false },
);
export type SerialLogQuery = Static<typeof SerialLogQuery>;
