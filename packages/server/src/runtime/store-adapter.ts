// @roamdesk/store's Store as the server's ObjectStore port. It fits structurally except for remove():
// the port says removing an absent object is not an error, the store says ObjectNotFoundError. A seal (at
// check-out) also builds the new layer's piece manifest in the seal's own read pass and leaves it in
// `manifests`, the cache the transfer endpoints serve from: the device asks for it right after.

import { ObjectNotFoundError, type Store } from '@roamdesk/store';
import { type ManifestCache, sealWithManifest } from '@roamdesk/transfer';
import type { ObjectStore } from '../ports.ts';

export function storeAdapter(store: Store, manifests: ManifestCache | null = null): ObjectStore {
  return {
    importImage: (path, options) => store.importImage(path, options),
    createOverlay: (parentId, options) => store.createOverlay(parentId, options),
    importDifference: (parentId, targetId) => store.importDifference(parentId, targetId),
    has: (id) => store.has(id),
    seal: (overlay) => (manifests === null ? store.seal(overlay) : sealWithManifest(manifests, (o) => store.seal(overlay, o), (l) => l)),
    async remove(id) {
      try {
        await store.remove(id);
      } catch (err) {
        if (!(err instanceof ObjectNotFoundError)) throw err;
      }
    },
  };
}
