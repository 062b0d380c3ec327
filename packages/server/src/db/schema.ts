// Table types for kysely. Portable choices, the same on SQLite and PostgreSQL:
// - ids are text (UUIDs; image ids are the 64-hex SHA-256), except events.id, an auto-increment integer so
//   events have a total order even when many share a millisecond;
// - timestamps are ISO-8601 UTC text as Date.toISOString() writes it (fixed width, so text order = time order);
// - booleans are integers 0/1 (SQLite has no boolean type);
// - sizes are bigint (PG int8 is parsed to a JS number by db/postgres.ts; SQLite integers are 64-bit already);
// - JSON is text.

import type { ColumnType, Generated } from 'kysely';

export interface UsersTable {
  id: string;
  name: string;
  password_hash: string;
  role: 'admin' | 'user';
  created_at: string;
  disabled: number;
}

export type TokenKind = 'session' | 'console';

export interface TokensTable {
  id: string;
  user_id: string;
  /** SHA-256 (hex) of the bearer secret. The secret itself is never stored. */
  token_hash: string;
  kind: TokenKind;
  created_at: string;
  expires_at: string;
  revoked_at: string | null;
  last_used_at: string | null;
  /** Console tokens are bound to one desktop. */
  desktop_id: string | null;
  /** Single-use tokens (console) record their use here. */
  used_at: string | null;
}

export interface ImagesTable {
  id: string;
  name: string;
  format: 'raw' | 'qcow2';
  size: number;
  virtual_size: number;
  created_at: string;
  created_by: string | null;
}

/**
 * One row per published version of an image (migration 0002). Version 1 is the image itself
 * (top_object_id = images.id); version N+1 is version N's top object plus ONE layer, so its top_object_id is
 * that layer and the chain of version N is v1 → layer 2 → … → layer N.
 */
export interface ImageVersionsTable {
  image_id: string;
  version: number;
  /** The chain's top object for this version: the image itself for version 1, else the version's layer. */
  top_object_id: string;
  /** File size of the version's layer (for version 1, of the image): what a device holding version N−1 fetches. */
  diff_size: number;
  created_at: string;
  created_by: string | null;
}

export type DesktopStateColumn = 'stopped' | 'starting' | 'running' | 'stopping' | 'error';

export interface DesktopsTable {
  id: string;
  name: string;
  owner_id: string;
  image_id: string;
  memory_mib: number;
  cpus: number;
  kernel: string | null;
  initrd: string | null;
  append: string | null;
  state: DesktopStateColumn;
  /** Lease holder: 'server', or 'device' while a device holds the lease (lease_state says more). */
  location: string;
  /** Fencing token: bumped by every lease move (check-out, check-in, rollback). */
  lease_generation: number;
  /** The chain's top sealed object: the image, or later the newest layer. */
  top_object_id: string;
  /**
   * The writable overlay, relative to the data directory (`store/objects/overlay-<label>-<16 hex>.qcow2`: a
   * store overlay, so sealing it is a link, never a copy). Null while the desktop has none: before its first
   * start (and later while a device holds the lease). The name has a random part, hence stored here.
   */
  overlay_path: string | null;
  created_at: string;
  updated_at: string;
  /** Migration 0004: where the lease is. 'server' by default; every move is one compare-and-set UPDATE. */
  lease_state: ColumnType<LeaseStateColumn, LeaseStateColumn | undefined, LeaseStateColumn>;
  /** The device holding the lease (checking-out, checked-out); null at the server. */
  lease_device_id: string | null;
  /** When the lease moved to its holder; null for rows from before 0004 (read as created_at). */
  lease_since: string | null;
  /**
   * While a device holds the lease: the newest state the server holds a copy of (the sealed check-out point, then
   * each replication). Rollback returns the chain here. Null at the server (it is top_object_id then).
   */
  replicated_top_object_id: string | null;
  replicated_at: string | null;
}

export type LeaseStateColumn = 'server' | 'checking-out' | 'checked-out';

/** Migration 0004: registered client machines. The credential is stored only as a SHA-256 hash. */
export interface DevicesTable {
  id: string;
  user_id: string;
  name: string;
  credential_hash: string;
  created_at: string;
  last_seen_at: string | null;
  revoked_at: string | null;
}

export type OperationKindColumn = 'checkout' | 'replicate' | 'checkin' | 'rollback';
export type OperationStateColumn = 'running' | 'succeeded' | 'failed' | 'cancelled';

/** Migration 0004: long operations (check-out, replicate, check-in, rollback) with progress and a result. */
export interface OperationsTable {
  id: string;
  kind: OperationKindColumn;
  /** Operations go with their desktop (foreign key, cascade). */
  desktop_id: string;
  device_id: string | null;
  /** Who started it (no foreign key: the log outlives users). */
  user_id: string | null;
  state: OperationStateColumn;
  /** JSON OperationProgress. */
  progress: string;
  /** JSON object or null. */
  result: string | null;
  /** JSON { code, message } or null. */
  error: string | null;
  created_at: string;
  updated_at: string;
}

export interface EventsTable {
  id: Generated<number>;
  at: string;
  /** No foreign key: the log outlives the users and desktops it mentions. */
  actor_id: string | null;
  actor_name: string | null;
  action: string;
  desktop_id: string | null;
  target: string | null;
  result: 'ok' | 'error';
  /** JSON object. */
  detail: string;
}

export interface UploadedObjectsTable {
  object_id: string;
  user_id: string;
  created_at: string;
}

export interface Database {
  users: UsersTable;
  tokens: TokensTable;
  images: ImagesTable;
  image_versions: ImageVersionsTable;
  desktops: DesktopsTable;
  events: EventsTable;
  uploaded_objects: UploadedObjectsTable;
  devices: DevicesTable;
  operations: OperationsTable;
}
