// The ports the server is built on. buildApp(deps) receives one implementation of each; tests pass fakes
// (test/fakes.ts), startServer passes the real ones. Nothing in routes/ reaches around these to touch QEMU,
// the object store, the wall clock or the random generator directly, which is what keeps the API testable
// with app.inject and no VM.

import type { Socket } from 'node:net';
import type { Readable } from 'node:stream';
import type { DesktopPause, ImageFormat } from '@roamdesk/api';

/** Wall-clock time in ms since the epoch. Injected so tests can expire tokens and slide rate-limit windows. */
export interface Clock {
  now(): number;
}

/** Identifier source. Injected so tests can predict ids. */
export interface Ids {
  /** A canonical lower-case UUID (desktop, user, token ids). */
  uuid(): string;
}

/** What the server needs from the content-addressed store (`@roamdesk/store`'s `Store` fits structurally). */
export interface ObjectStore {
  /**
   * Import a base image from a file on the server: hash it, validate it (qcow2 header policy, explicit
   * format, no backing file), and publish it under its SHA-256. Idempotent for equal bytes. The source file
   * is left where it is. `format` omitted = the store detects it from the bytes (never by QEMU probing).
   */
  importImage(sourcePath: string, options: { format?: ImageFormat }): Promise<ImportedObject>;
  /**
   * A new, empty writable overlay on the sealed object `parentId`, inside the store (so sealing it later is a
   * link, not a copy). The file name has a random part: the caller records `path`. `label` is advisory.
   */
  createOverlay(parentId: string, options: { label?: string }): Promise<{ path: string }>;
  /**
   * Publish a new version of an image as ONE layer over `parentId` (the previous version's top object): the
   * guest-level difference between the chain ending at `parentId` and the standalone image `targetId`
   * (`qemu-img rebase` in safe mode, checked with `qemu-img compare`, then imported like any untrusted layer,
   * with the backing name exactly `<parentId>.qcow2`). Null when the guest would see no difference (nothing is
   * published). `targetId` is left in the store; both must have the same virtual size. Nothing is left behind
   * on failure.
   */
  importDifference(parentId: string, targetId: string): Promise<ImportedLayer | null>;
  /**
   * Seal a stopped VM's overlay (created by createOverlay on `parent`) into an immutable layer, without a copy:
   * the overlay file is gone afterwards and the layer's parent is `parent`. Refused while a VM has it open.
   * Sealing again after a crash mid-seal is safe (the store finds the layer already published).
   */
  seal(overlay: { path: string; parent: string }): Promise<ImportedLayer>;
  /** Remove an object. Removing an absent object is not an error. */
  remove(id: string): Promise<void>;
  has(id: string): Promise<boolean>;
}

export interface ImportedObject {
  /** SHA-256 of the object's bytes, 64 lower-case hex. */
  id: string;
  /** Bytes stored. */
  size: number;
  /** Bytes the guest sees. */
  virtualSize: number;
  /** The format the store recorded, when it reports one. */
  format?: ImageFormat;
}

export interface ImportedLayer {
  /** SHA-256 of the layer's bytes. */
  id: string;
  /** The object the layer's backing name points at. */
  parent: string | null;
  /** Bytes stored (the layer file). */
  size: number;
  virtualSize: number;
}

/**
 * Everything the runtime needs to run one desktop. Paths are built by the server from validated ids and
 * checked database values (never from names); the runtime creates `runDir` if it is missing. The server
 * creates the overlay (ObjectStore.createOverlay) and records it before the first start.
 */
export interface RuntimeDesktop {
  id: string;
  name: string;
  imageId: string;
  /** The chain's top sealed object (the image, or later a layer): the overlay's backing file. */
  topObjectId: string;
  memoryMiB: number;
  cpus: number;
  kernel: string | null;
  initrd: string | null;
  append: string | null;
  /** `<data>/vms/<desktop-id>/` */
  runDir: string;
  /** The writable overlay on top of the chain (absolute, in the store's objects dir); null = none yet. */
  overlayPath: string | null;
  leaseGeneration: number;
}

/** What the runtime observes about a desktop's VM. */
export interface RuntimeStatus {
  state: 'running' | 'stopped' | 'error';
  /** Human-readable reason for 'error'. */
  detail?: string;
}

/**
 * Runs desktops on this server. The QEMU implementation (src/runtime/qemu-runtime.ts) is written later;
 * test/fakes.ts has an in-memory one. Every method may throw an error with an engine `code`
 * (`QEMU_ERR_*`, `QMP_ERR_*` …), which the API passes through with the status from the api catalog.
 */
export interface DesktopRuntime {
  /** Boot the VM on image + layers + overlay. Resolves once QEMU runs (not when the guest has booted). */
  start(desktop: RuntimeDesktop): Promise<void>;
  /** Graceful power-down; kill after `timeoutMs`. Stopping a stopped desktop is not an error. */
  stop(desktop: RuntimeDesktop, options: { timeoutMs: number }): Promise<void>;
  status(desktop: RuntimeDesktop): Promise<RuntimeStatus>;
  /** The last `tailBytes` of the serial console log ('' when there is none yet). */
  serialLog(desktop: RuntimeDesktop, tailBytes: number): Promise<string>;
  /** One standalone qcow2 of the current chain (image + layers + overlay), streamed. Only while stopped. */
  export(desktop: RuntimeDesktop): Promise<Readable>;
  /** Discard the overlay and the run directory of a deleted desktop. Absent files are not an error. */
  remove(desktop: RuntimeDesktop): Promise<void>;
  /**
   * Called once at server start with every desktop in the database. Finds VMs left from a previous run,
   * kills those that no desktop should be running, and reports each desktop's real state.
   */
  reconcile(desktops: readonly RuntimeDesktop[]): Promise<ReadonlyMap<string, RuntimeStatus>>;
  /**
   * The VM's VNC UNIX socket (`vm.paths.vnc`: mode 0600 in the 0700 run dir) while it runs, else null.
   * Only the console proxy (src/console/) connects to it, after checking a console token; VNC never
   * listens on TCP.
   */
  consoleSocket(desktop: RuntimeDesktop): Promise<string | null>;
  /**
   * Tell `listener` when a VM ends without stop() being asked (the guest powered off, QEMU crashed or was
   * killed), so the recorded state can follow. Returns the unsubscribe function. Optional: fakes need not.
   */
  onExit?(listener: (desktopId: string, status: RuntimeStatus) => void): () => void;
  /**
   * Why a running VM is paused (a disk error: the disk's error policy pauses it; or a request), null when it runs
   * on or does not run. Synchronous: from the VM's own events, so listing desktops asks no VM. Optional.
   */
  paused?(desktopId: string): DesktopPause | null;
  /** Let a paused VM run again (QMP cont: QEMU retries the requests a disk error stopped). Optional. */
  resume?(desktop: RuntimeDesktop): Promise<void>;
  /** Tell `listener` when a VM pauses (`pause`) or runs again (null; `auto`: the runtime resumed it itself). */
  onPause?(listener: (desktopId: string, pause: DesktopPause | null, info: { auto: boolean; freeBytes: number | null }) => void): () => void;
  /** Server shutdown: let go of the VMs (QMP connections, watchers) WITHOUT stopping them. Optional. */
  close?(): Promise<void>;
}

/** Password hashing (argon2id in production; the same algorithm with small costs in tests). */
export interface PasswordHasher {
  hash(password: string): Promise<string>;
  verify(hash: string, password: string): Promise<boolean>;
}

/**
 * Moving objects to and from devices (@roamdesk/transfer over the real store; see runtime/transfer-adapter.ts).
 * Authorization is decided by the routes before any of these is called.
 */
export interface ObjectTransfer {
  /** The object's description, or null when the store does not hold it. */
  describe(id: string): Promise<StoredObjectInfo | null>;
  /** The chain ending at `top`, bottom (image) first. Objects never change, so this may be cached. */
  chain(top: string): Promise<StoredObjectInfo[]>;
  manifest(id: string, pieceSize: number | undefined): Promise<unknown>;
  /** Streams pieces as frames; `write` resolves when a frame is handed to the socket. */
  pieces(id: string, req: { first: number; count: number; pieceSize: number | undefined; encoding: 'raw' | 'zstd' }, write: (header: Buffer, payload: Buffer) => Promise<void>, signal: AbortSignal): Promise<void>;
  /**
   * Starts or resumes an upload. `mayRead`: whether the caller may read the object if the server holds it; if
   * not, the answer is the same as for an object the server lacks (every piece missing), so an upload cannot
   * be used to learn which objects exist; completing it proves the caller holds the whole object. `maxOpen`: how
   * many uploads the owner may have in progress (a new one beyond that is refused).
   */
  beginUpload(owner: string, manifest: unknown, opts: { mayRead: boolean; maxOpen: number }): Promise<UploadStateView>;
  uploadState(owner: string, uploadId: string): Promise<UploadStateView>;
  receiveUpload(owner: string, uploadId: string, body: AsyncIterable<Buffer>): Promise<UploadStateView>;
  /**
   * The same for an upgraded connection (@roamdesk/transfer upgraded-receiver.ts). Checks the upload first
   * (throws before anything is switched); the returned function switches the connection, reads the stream,
   * answers (`answerError` turns a failure into a status and body) and resolves once the connection closed.
   */
  openUpgradedUpload(owner: string, uploadId: string): Promise<(socket: Socket, head: Buffer, answerError: (e: unknown) => { status: number; body: unknown }) => Promise<void>>;
  completeUpload(owner: string, uploadId: string): Promise<StoredObjectInfo>;
  abandonUpload(owner: string, uploadId: string): Promise<void>;
  /** Removes uploads untouched since `cutoffMs` (epoch ms) and not receiving; says what went. */
  expireUploads(cutoffMs: number): Promise<Array<{ uploadId: string; owner: string | null; bytes: number; lastActivity: string }>>;
  close(): Promise<void>;
}

export interface StoredObjectInfo {
  id: string;
  kind: 'image' | 'layer';
  parent: string | null;
  size: number;
  virtualSize: number;
  /** A layer the server computed as the difference between `parent` and this object (ObjectInfo.derivedFrom). */
  derivedFrom?: string;
}

export interface UploadStateView {
  uploadId: string | null;
  id: string;
  complete: boolean;
  piecesTotal: number;
  piecesVerified: number;
  missing: Array<[number, number]>;
}
