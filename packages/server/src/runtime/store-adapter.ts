// @roamdesk/store's Store as the server's ObjectStore port. It fits structurally except for remove():
// the port says removing an absent object is not an error, the store says ObjectNotFoundError.

import { ObjectNotFoundError, type Store } from '@roamdesk/store';
import type { ObjectStore } from '../ports.ts';

export function storeAdapter(store: Store): ObjectStore {
  return {
    importImage: (path, options) => store.importImage(path, options),
    createOverlay: (parentId, options) => store.createOverlay(parentId, options),
    importDifference: (parentId, targetId) => store.importDifference(parentId, targetId),
    has: (id) => store.has(id),
    seal: (overlay) => store.seal(overlay),
    async remove(id) {
      try {
        await store.remove(id);
      } catch (err) {
        if (!(err instanceof ObjectNotFoundError)) throw err;
      }
    },
  };
}
