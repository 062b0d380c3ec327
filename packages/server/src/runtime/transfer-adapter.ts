// @roamdesk/transfer over the server's store as the ObjectTransfer port: manifests cached in `manifests`
// (under `<data>/manifests`; objects never change), uploads held in the store's incoming/ directory.

import type { ObjectInfo, Store } from '@roamdesk/store';
import { BufferPool, DEFAULT_PIECE_SIZE, type ManifestCache, ObjectServer, receiveUpgraded, TransferError, UploadRegistry, type UploadState } from '@roamdesk/transfer';
import type { ObjectTransfer, StoredObjectInfo, UploadStateView } from '../ports.ts';

/** One read of an upgraded upload connection at most; the buffers are pooled (fresh memory is slow here). */
const UPGRADED_READ_BYTES = 1024 * 1024;
/** As the plain PUT's body limit: a batch is 32 MiB; a stream this long is not a client of ours. */
const UPGRADED_MAX_BYTES = 1024 * 1024 * 1024;
const UPGRADED_IDLE_MS = 60_000;

/** Chains cached per top object (immutable), bounded. */
const CHAIN_CACHE_MAX = 4096;

function describe(info: ObjectInfo): StoredObjectInfo {
  const d: StoredObjectInfo = { id: info.id, kind: info.kind, parent: info.parent, size: info.size, virtualSize: info.virtualSize };
  if (info.derivedFrom !== undefined) d.derivedFrom = info.derivedFrom;
  return d;
}

function view(s: UploadState): UploadStateView {
  return { ...s, missing: s.missing.map(([a, b]) => [a, b]) };
}

export function transferAdapter(store: Store, manifests: ManifestCache): ObjectTransfer {
  const objects = new ObjectServer(store, manifests);
  const uploads = new UploadRegistry(store);
  const chains = new Map<string, StoredObjectInfo[]>();
  const readBuffers = new BufferPool(UPGRADED_READ_BYTES);
  const info = async (id: string): Promise<ObjectInfo> => {
    const i = await store.get(id);
    if (i === null) throw new TransferError('XFER_ERR_MANIFEST', `object ${id} is not on this server`, { id, notFound: true });
    return i;
  };
  return {
    describe: async (id) => {
      const i = await store.get(id);
      return i === null ? null : describe(i);
    },
    async chain(top) {
      const hit = chains.get(top);
      if (hit !== undefined) return hit;
      const c = (await store.chain(top)).map(describe);
      if (chains.size >= CHAIN_CACHE_MAX) chains.clear();
      chains.set(top, c);
      return c;
    },
    manifest: async (id, pieceSize) => objects.manifest(await info(id), pieceSize),
    async pieces(id, req, write, signal) {
      await objects.pieces(await info(id), { first: req.first, count: req.count, pieceSize: req.pieceSize ?? DEFAULT_PIECE_SIZE, encoding: req.encoding }, write, signal);
    },
    async beginUpload(owner, manifest, opts) {
      // A layer can be no larger than its parent's disk plus qcow2 metadata; an image is bounded the same way
      // by its own declared size (checked again on the finished bytes by the store).
      const m = manifest as { parent?: unknown; virtualSize?: unknown };
      let virtualSize = typeof m.virtualSize === 'number' ? m.virtualSize : 0;
      if (typeof m.parent === 'string') {
        const parent = await store.get(m.parent);
        if (parent === null) throw new TransferError('XFER_ERR_UPLOAD', `the parent ${m.parent} is not on this server: upload it first`, { parent: m.parent });
        if (parent.virtualSize !== virtualSize) throw new TransferError('XFER_ERR_MANIFEST', `invalid manifest: virtualSize ${virtualSize} differs from the parent's ${parent.virtualSize}`);
        virtualSize = parent.virtualSize;
      }
      const maxBytes = Math.ceil(virtualSize * 1.05) + 64 * 1024 * 1024;
      return view(await uploads.begin(owner, manifest, { maxBytes, maxOpenPerOwner: opts.maxOpen }, { revealHeld: opts.mayRead }));
    },
    uploadState: async (owner, uploadId) => view(await uploads.state(owner, uploadId)),
    receiveUpload: async (owner, uploadId, body) => view(await uploads.receive(owner, uploadId, body)),
    async openUpgradedUpload(owner, uploadId) {
      const sink = await uploads.sink(owner, uploadId);
      return async (socket, head, answerError) => {
        const buffer = readBuffers.take();
        try {
          await receiveUpgraded(socket, head, sink, {
            buffer, maxBytes: UPGRADED_MAX_BYTES, idleMs: UPGRADED_IDLE_MS,
            answer: (o) => ('state' in o ? { status: 200, body: view(o.state) } : answerError(o.error)),
          });
        } finally {
          readBuffers.give(buffer);
        }
      };
    },
    completeUpload: async (owner, uploadId) => describe(await uploads.complete(owner, uploadId)),
    abandonUpload: (owner, uploadId) => uploads.abandon(owner, uploadId),
    expireUploads: (cutoffMs) => uploads.expire(cutoffMs),
    close: () => uploads.close(),
  };
}
