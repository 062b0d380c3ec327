// The lease contract (DESIGN.md "The lease state machine"): devices, check-out, replicate, check-in,
// rollback, heartbeats, offline grants and long-running operations. Server and device agent both build on
// these shapes; the state machine itself lives in the server.
//
//   at server (stopped|running…) ──checkout──▶ checking-out (gen+1) ──confirm──▶ checked-out
//        ▲        ▲                               │ cancel (gen+1)                 │ replicate (gen must match)
//        │        └───────────────────────────────┘                                ▼
//        └──────────── checkin committed (gen+1) ◀──────────────────────────── checked-out
//        └──── rollback (admin, or owner if policy allows): gen+1, chain = last replicated state
//
// Every device call names the generation it believes in; a different one is 409 LEASE_STALE and changes
// nothing. Device calls authenticate with the device credential (a bearer token of kind "device").
//
// Endpoints (under /api/v1):
//   POST   /devices                          user token  → 201 RegisterDeviceResponse
//   GET    /devices                          user: own devices; admin: all → DeviceListResponse
//   DELETE /devices/:id                      admin (or the owner) → 204; revokes the credential; later device
//                                            calls get 403 DEVICE_REVOKED and change nothing (fenced)
//   POST   /devices/heartbeat                device → HeartbeatResponse (renews grants; tells of lost leases)
//   GET    /grant-key                        any user → { grantKey } (PEM)
//   POST   /desktops/:name/checkout          device → 201 CheckoutResponse: stops the server VM (graceful,
//                                            forced after the stop timeout), seals its overlay, lease →
//                                            checking-out on this device (gen+1). Same device again while
//                                            checking-out → the same answer (resume).
//   POST   /desktops/:name/checkout/confirm  device, GenerationRequest → LeaseResponse (checked-out, grant)
//   POST   /desktops/:name/checkout/cancel   device, GenerationRequest → LeaseResponse (lease back, gen+1)
//   POST   /desktops/:name/replicate         device, LayersRequest → LeaseResponse: `top` must be on the server
//                                            (uploaded) and its chain must extend the replicated top
//   POST   /desktops/:name/checkin           device, LayersRequest → LeaseResponse: same checks, then in ONE
//                                            transaction the chain becomes the server's, lease back (gen+1)
//   POST   /desktops/:name/rollback          admin, or owner if policy allows → LeaseResponse: lease back
//                                            (gen+1), chain = replicated top; the device quarantines its work
//   GET    /desktops/:name/lease             → LeaseResponse (no grant)
//   GET    /operations?desktop=NAME, GET /operations/:id → Operation(s) (owner or admin)
//   POST   /desktops/:name/operations       device, StartOperationRequest → 201 OperationResponse: a replicate or
//                                            check-in operation to post upload progress to BEFORE the layers are
//                                            uploaded; name it in LayersRequest.operation. One at a time per
//                                            desktop (else 409 LEASE_BUSY). Without it the call makes its own.
//   POST   /operations/:id/progress          device, OperationProgress → 204 (the device's transfer progress)
//   POST   /operations/:id/finish            device, { state: 'succeeded'|'failed'|'cancelled', error? } → 204
//
// Errors: 409 LEASE_STALE (data: current generation), 409 CHECKED_OUT (message names the device and since
// when; used by start and console too), 403 DEVICE_REVOKED, 409 LEASE_BUSY (another operation holds it),
// 422 CHAIN_MISMATCH (replicate/check-in: `top`'s chain does not extend the replicated chain).
// Device-only routes refuse a session token (403 FORBIDDEN naming the device credential).
//
// Chains stay short: CheckoutResponse and LeaseResponse carry the server's `maxChainLength` policy. The lease
// holder may compact its own layers; the server accepts a new top whose chain (same image) shares a prefix with
// the replicated chain and is not an ancestor of it: the replaced objects stay in the server's store.
// Scheduled replication: the same answers (and each heartbeat's lease entry) carry `replicateEverySeconds`; the
// device's keeper replicates that often while the local VM runs and the server is reachable.

import { Type, type Static } from 'typebox';
import { Name, ObjectId, Timestamp, Uuid } from '../names.ts';
import { StoredObject } from './transfer.ts';

// --- devices

/** The device credential: a prefix secret scanners can spot (`rdd_`, unlike session tokens' `rdt_`), 32 random bytes. */
export const DEVICE_TOKEN_PREFIX = 'rdd_';
export const DEVICE_TOKEN_PATTERN = '^rdd_[A-Za-z0-9_-]{43}$';

export const DeviceName = Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9][A-Za-z0-9._ -]*$' });

export const Device = Type.Object({
  id: Uuid,
  name: DeviceName,
  owner: Name,
  createdAt: Timestamp,
  lastSeenAt: Type.Union([Timestamp, Type.Null()]),
  revokedAt: Type.Union([Timestamp, Type.Null()]),
});
export type Device = Static<typeof Device>;

export const RegisterDeviceRequest = Type.Object({ name: Type.Optional(DeviceName) }, { additionalProperties: false });
export type RegisterDeviceRequest = Static<typeof RegisterDeviceRequest>;

export const RegisterDeviceResponse = Type.Object({
  device: Device,
  /** Bearer credential for this device (`rdd_…`), shown once; stored only as a hash on the server. */
  credential: Type.String(),
  /** Ed25519 public key (PEM, SPKI) that verifies this server's offline grants. */
  grantKey: Type.String(),
});
export type RegisterDeviceResponse = Static<typeof RegisterDeviceResponse>;

export const DeviceListResponse = Type.Object({ devices: Type.Array(Device) });
export const DeviceIdParams = Type.Object({ id: Uuid }, { additionalProperties: false });
export const GrantKeyResponse = Type.Object({ grantKey: Type.String({ description: 'Ed25519 public key, PEM (SPKI)' }) });
export type GrantKeyResponse = Static<typeof GrantKeyResponse>;

// --- leases

export const Lease = Type.Object({
  generation: Type.Integer({ minimum: 1 }),
  /** null while the server holds the lease. */
  deviceId: Type.Union([Uuid, Type.Null()]),
  deviceName: Type.Union([DeviceName, Type.Null()]),
  /** When the lease moved to its holder. */
  since: Timestamp,
  state: Type.Union([Type.Literal('server'), Type.Literal('checking-out'), Type.Literal('checked-out')]),
  /** The last state the server holds a copy of (check-out point or last replication). */
  replicatedTopObjectId: ObjectId,
  replicatedAt: Type.Union([Timestamp, Type.Null()]),
});
export type Lease = Static<typeof Lease>;

/**
 * A server-signed offline grant: `<base64url(JSON of GrantBody)>.<base64url(Ed25519 signature)>`. The device
 * refuses to start the local VM once the grant's lifetime (`expiresAt` − `issuedAt`) has passed since it arrived,
 * or `maxOfflineSeconds` have gone by without server contact, both in the device's monotonic elapsed time (a clock
 * set back does not extend it; a device clock that disagrees with the server's changes nothing).
 */
export const GrantBody = Type.Object({
  desktop: Name,
  desktopId: Uuid,
  deviceId: Uuid,
  generation: Type.Integer({ minimum: 1 }),
  issuedAt: Timestamp,
  expiresAt: Timestamp,
  maxOfflineSeconds: Type.Integer({ minimum: 1 }),
});
export type GrantBody = Static<typeof GrantBody>;

export const GenerationRequest = Type.Object({ generation: Type.Integer({ minimum: 1 }) }, { additionalProperties: false });
export type GenerationRequest = Static<typeof GenerationRequest>;

/** Policy: compact the chain into one layer once it holds more layers than this (this server always sends it). */
const MaxChainLength = Type.Integer({ minimum: 1 });
/**
 * Policy: while the local VM runs and the server is reachable, replicate this often (seconds from the start of
 * one replication to the next, View's "target replication frequency"); 0 = no scheduled replication (users may
 * still replicate). This server always sends it.
 */
const ReplicateEverySeconds = Type.Integer({ minimum: 0 });

export const CheckoutResponse = Type.Object({
  operation: Uuid,
  lease: Lease,
  /** What the device must hold, image first (the server's sealed chain at check-out). */
  chain: Type.Array(StoredObject),
  maxChainLength: Type.Optional(MaxChainLength),
  replicateEverySeconds: Type.Optional(ReplicateEverySeconds),
});
export type CheckoutResponse = Static<typeof CheckoutResponse>;

export const LeaseResponse = Type.Object({
  lease: Lease,
  grant: Type.Optional(Type.String()),
  maxChainLength: Type.Optional(MaxChainLength),
  replicateEverySeconds: Type.Optional(ReplicateEverySeconds),
});
export type LeaseResponse = Static<typeof LeaseResponse>;

/** Replicate and check-in: the device's new top (its layers already uploaded via /uploads). */
export const LayersRequest = Type.Object(
  { generation: Type.Integer({ minimum: 1 }), top: ObjectId, operation: Type.Optional(Uuid) },
  { additionalProperties: false },
);
export type LayersRequest = Static<typeof LayersRequest>;

export const HeartbeatRequest = Type.Object(
  { leases: Type.Array(Type.Object({ desktop: Name, generation: Type.Integer({ minimum: 1 }) }), { maxItems: 1000 }) },
  { additionalProperties: false },
);
export type HeartbeatRequest = Static<typeof HeartbeatRequest>;

export const HeartbeatResponse = Type.Object({
  device: Device,
  leases: Type.Array(Type.Object({
    desktop: Name,
    /** false: the lease moved away (rollback, cancel, check-in) or the desktop is gone — stop using the local copy. A revoked device gets 403 DEVICE_REVOKED instead. */
    valid: Type.Boolean(),
    generation: Type.Integer({ minimum: 1 }),
    grant: Type.Optional(Type.String()),
    /** The lease policy as it is now (an administrator may change it while the desktop is away). */
    maxChainLength: Type.Optional(MaxChainLength),
    replicateEverySeconds: Type.Optional(ReplicateEverySeconds),
  })),
});
export type HeartbeatResponse = Static<typeof HeartbeatResponse>;

// --- operations

export const OperationKind = Type.Union([Type.Literal('checkout'), Type.Literal('replicate'), Type.Literal('checkin'), Type.Literal('rollback')]);
export const OperationState = Type.Union([Type.Literal('running'), Type.Literal('succeeded'), Type.Literal('failed'), Type.Literal('cancelled')]);

export const OperationProgress = Type.Object({
  phase: Type.String({ maxLength: 64 }),
  bytesDone: Type.Integer({ minimum: 0 }),
  bytesTotal: Type.Integer({ minimum: 0 }),
  bytesOnWire: Type.Integer({ minimum: 0 }),
  bytesSaved: Type.Integer({ minimum: 0 }),
  rateBytesPerSec: Type.Number({ minimum: 0 }),
  etaSeconds: Type.Union([Type.Number({ minimum: 0 }), Type.Null()]),
});
export type OperationProgress = Static<typeof OperationProgress>;

export const Operation = Type.Object({
  id: Uuid,
  kind: OperationKind,
  desktop: Name,
  deviceId: Type.Union([Uuid, Type.Null()]),
  state: OperationState,
  progress: OperationProgress,
  result: Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()]),
  error: Type.Union([Type.Object({ code: Type.String(), message: Type.String() }), Type.Null()]),
  createdAt: Timestamp,
  updatedAt: Timestamp,
});
export type Operation = Static<typeof Operation>;

export const OperationResponse = Type.Object({ operation: Operation });
export type OperationResponse = Static<typeof OperationResponse>;
export const OperationListResponse = Type.Object({ operations: Type.Array(Operation) });
export type OperationListResponse = Static<typeof OperationListResponse>;

export const OperationIdParams = Type.Object({ id: Uuid }, { additionalProperties: false });

export const OPERATIONS_LIMIT_MAX = 1000;
export const OperationsQuery = Type.Object(
  { desktop: Type.Optional(Name), limit: Type.Optional(Type.Integer({ minimum: 1, maximum: OPERATIONS_LIMIT_MAX })) },
  { additionalProperties: false },
);
export type OperationsQuery = Static<typeof OperationsQuery>;

/** POST /desktops/:name/operations: announce a replicate or check-in before uploading its layers. */
export const StartOperationRequest = Type.Object(
  { kind: Type.Union([Type.Literal('replicate'), Type.Literal('checkin')]), generation: Type.Integer({ minimum: 1 }) },
  { additionalProperties: false },
);
export type StartOperationRequest = Static<typeof StartOperationRequest>;

/**
 * POST /operations/:id/finish: the device gives up on a running operation. 'succeeded' is the server's to
 * record (confirm, replicate and check-in do), so a device sends 'failed' or 'cancelled'.
 */
export const FinishOperationRequest = Type.Object(
  {
    state: Type.Union([Type.Literal('succeeded'), Type.Literal('failed'), Type.Literal('cancelled')]),
    error: Type.Optional(Type.Object(
      { code: Type.String({ pattern: '^[A-Z][A-Z0-9_]{1,63}$' }), message: Type.String({ maxLength: 1000 }) },
      { additionalProperties: false },
    )),
  },
  { additionalProperties: false },
);
export type FinishOperationRequest = Static<typeof FinishOperationRequest>;
