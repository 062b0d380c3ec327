// The real engines startServer uses when the caller passes none: one @roamdesk/store Store over
// `<data>/store` (one per process: Store.open removes temp files, safe only for the store's one owner),
// shared by the ObjectStore port and the QEMU runtime over `<data>/vms`.

import { Store } from '@roamdesk/store';
import { ManifestCache, prewarmObjectHasher } from '@roamdesk/transfer';
import type { DataPaths } from '../config.ts';
import type { ObjectStore, ObjectTransfer } from '../ports.ts';
import { QemuRuntime } from './qemu-runtime.ts';
import { storeAdapter } from './store-adapter.ts';
import { transferAdapter } from './transfer-adapter.ts';

export interface DefaultEngines {
  store(): Promise<ObjectStore>;
  runtime(): Promise<QemuRuntime>;
  transfer(): Promise<ObjectTransfer>;
}

export function defaultEngines(paths: DataPaths): DefaultEngines {
  let opened: Promise<Store> | undefined;
  const open = () => (opened ??= Store.open(paths.store));
  // One cache for both: a seal leaves the new layer's manifest where the transfer endpoints look.
  const manifests = new ManifestCache(paths.manifests);
  return {
    store: async () => storeAdapter(await open(), manifests),
    runtime: async () => new QemuRuntime({ store: await open(), vmsDir: paths.vms, tmpDir: paths.uploads }),
    transfer: async () => {
      // Uploads and seals hash in a worker: one is started with the server, not by the first request that needs it
      // (60–130 ms here). Unref'd: it never keeps the process alive.
      prewarmObjectHasher();
      return transferAdapter(await open(), manifests);
    },
  };
}
