// Prefetch and local status of a desktop's chain: the device downloads a desktop's image and current layers
// ahead of any check-out (resumable: an interrupted run keeps its verified pieces in store/incoming/), and
// tells how much of the server's chain is already local. The transfer engine (native hashing and zstd) is
// loaded on first use, so commands that never move objects do not pay for it at start-up.

import { API_PREFIX } from '@roamdesk/api/core';
import type { ChainResponse, StoredObject } from '@roamdesk/api';
import type { Store } from '@roamdesk/store';
import type { CompressionMode, TransferProgress, TransferProgressCallback, TransferReport } from '@roamdesk/transfer';

import type { ApiClient, CallOptions } from './api-client.ts';
import { ClientError } from './errors.ts';
import { existingLocalStore, type KnownChain, loadKnownChain, localStore, lockLocalStore, saveKnownChain } from './local-store.ts';

export interface PrefetchOptions {
  client: ApiClient;
  /** ROAMDESK_HOME: the local store is `<home>/store`. */
  home: string;
  desktop: string;
  /** Folders that may already hold some objects' bytes (every piece is verified). */
  seeds?: readonly string[];
  compression?: CompressionMode;
  signal?: AbortSignal;
  /** Called once with the server's chain, before any byte moves (to size progress bars). */
  onChain?: (chain: ChainResponse) => void;
  onProgress?: TransferProgressCallback;
}

export interface PrefetchResult {
  desktop: string;
  chain: ChainResponse;
  report: TransferReport;
  /** The local store's directory. */
  store: string;
}

/**
 * Downloads what the local store lacks of the desktop's server chain (image first). Only one prefetch writes the
 * local store at a time (CLIENT_ERR_BUSY otherwise). When `signal` fires the download stops, its verified
 * pieces stay in the store's incoming/ directory, and this fails with CLIENT_ERR_INTERRUPTED; the next call
 * resumes. Other failures are the client's (CLIENT_ERR_UNREACHABLE, ApiError) or the transfer engine's
 * (TransferError XFER_ERR_*); they also keep what was verified.
 */
export async function prefetchDesktop(o: PrefetchOptions): Promise<PrefetchResult> {
  const token = o.client.token;
  if (token === undefined) throw new ClientError('CLIENT_ERR_NOT_LOGGED_IN', 'not logged in', { hint: 'log in first (roamdesk login URL --user NAME)' });
  const { downloadObjects, isTransferError } = await import('@roamdesk/transfer');
  const lock = await lockLocalStore(o.home, `prefetch ${o.desktop}`);
  const seen: { last: TransferProgress | null } = { last: null };
  let chain: ChainResponse | null = null;
  let store: Store | null = null;
  try {
    const call: CallOptions = o.signal !== undefined ? { signal: o.signal } : {};
    const [desktop, c] = await Promise.all([o.client.getDesktop(o.desktop, call), o.client.desktopChain(o.desktop, call)]);
    chain = c;
    await saveKnownChain(o.home, knownChain(o.client.server, o.desktop, desktop.location, c));
    o.onChain?.(c);
    store = await localStore(o.home);
    const report = await downloadObjects({
      store,
      remote: { apiBase: `${o.client.server}${API_PREFIX}`, token },
      objects: c.objects,
      ...(o.seeds !== undefined ? { seeds: o.seeds } : {}),
      ...(o.compression !== undefined ? { compression: o.compression } : {}),
      ...(o.signal !== undefined ? { signal: o.signal } : {}),
      onProgress: (p) => {
        seen.last = p;
        o.onProgress?.(p);
      },
    });
    return { desktop: o.desktop, chain: c, report, store: store.root };
  } catch (err) {
    if (o.signal?.aborted === true || isTransferError(err, 'XFER_ERR_ABORTED')) {
      // What is local now, counted the way `status` counts it (the last progress event may be 200 ms old).
      const local = store !== null && chain !== null ? await localObjectStatus(store, chain.objects).catch(() => null) : null;
      const done = local !== null ? local.reduce((n, x) => n + x.localBytes, 0) : (seen.last?.bytesDone ?? 0);
      throw interrupted(o.desktop, done, chain?.bytes ?? seen.last?.bytesTotal ?? 0, err);
    }
    throw err;
  } finally {
    await lock.release();
  }
}

function interrupted(desktop: string, bytesLocal: number, bytesTotal: number, cause: unknown): ClientError {
  return new ClientError('CLIENT_ERR_INTERRUPTED', `prefetch of ${desktop} interrupted`, {
    desktop,
    bytesLocal,
    bytesTotal,
    hint: `run \`roamdesk prefetch ${desktop}\` again to resume: verified pieces are kept`,
  }, { cause });
}

function knownChain(server: string, desktop: string, location: string, c: ChainResponse): KnownChain {
  return { version: 1, server, desktop, location, objects: c.objects, bytes: c.bytes, asOf: new Date().toISOString() };
}

/** How much of one object of the chain is in the local store. */
export interface LocalObjectStatus {
  id: string;
  kind: 'image' | 'layer';
  size: number;
  /** complete: in the store; partial: an interrupted download kept verified pieces; missing: nothing local. */
  local: 'complete' | 'partial' | 'missing';
  localBytes: number;
  /** The object's file, when complete. */
  path?: string;
}

/**
 * A desktop's chain and how much of it is local. The JSON shape of `roamdesk status --json`; later issues add
 * keys (lease, overlay) without changing these.
 */
export interface DesktopStatus {
  desktop: string;
  /** Who holds the lease: "server", or the device holding it. */
  location: string;
  /** server: the chain was read from the server now; last-known: the server was unreachable, this is the chain recorded at `asOf`. */
  source: 'server' | 'last-known';
  /** When the chain was read from the server (ISO-8601). */
  asOf: string;
  objects: LocalObjectStatus[];
  bytesTotal: number;
  bytesLocal: number;
  /** Set when source is last-known: why the server could not be asked. */
  unreachable?: { server: string; message: string };
}

/** Per object of `objects`: complete, partial (verified bytes of an interrupted download) or missing. Read-only. */
export async function localObjectStatus(store: Store | null, objects: readonly StoredObject[]): Promise<LocalObjectStatus[]> {
  const { partialProgress } = await import('@roamdesk/transfer');
  const out: LocalObjectStatus[] = [];
  for (const o of objects) {
    const base = { id: o.id, kind: o.kind, size: o.size };
    if (store !== null && (await store.has(o.id))) {
      out.push({ ...base, local: 'complete', localBytes: o.size, path: store.objectPath(o.id) });
      continue;
    }
    const partial = store === null ? null : await partialProgress(store, o.id);
    if (partial !== null && partial.bytesVerified > 0) out.push({ ...base, local: 'partial', localBytes: partial.bytesVerified });
    else out.push({ ...base, local: 'missing', localBytes: 0 });
  }
  return out;
}

export interface StatusOptions {
  client: ApiClient;
  home: string;
  desktop: string;
  signal?: AbortSignal;
}

/**
 * The desktop's server chain and how much of it is local. When the server cannot be reached, the chain the
 * last prefetch or status recorded is used (source 'last-known'); without one, CLIENT_ERR_UNREACHABLE.
 */
export async function desktopStatus(o: StatusOptions): Promise<DesktopStatus> {
  let known: KnownChain;
  let unreachable: DesktopStatus['unreachable'];
  try {
    const call: CallOptions = o.signal !== undefined ? { signal: o.signal } : {};
    const [desktop, c] = await Promise.all([o.client.getDesktop(o.desktop, call), o.client.desktopChain(o.desktop, call)]);
    known = knownChain(o.client.server, o.desktop, desktop.location, c);
    // Best effort: a status that cannot write its cache still answers.
    await saveKnownChain(o.home, known).catch(() => undefined);
  } catch (err) {
    if (!(err instanceof ClientError && err.code === 'CLIENT_ERR_UNREACHABLE')) throw err;
    const cached = await loadKnownChain(o.home, o.desktop, o.client.server);
    if (cached === null) {
      throw new ClientError('CLIENT_ERR_UNREACHABLE', `${err.message}; no earlier prefetch or status of ${o.desktop} is recorded on this machine`, {
        ...err.data,
        desktop: o.desktop,
      }, { cause: err });
    }
    known = cached;
    unreachable = { server: o.client.server, message: err.message };
  }
  const store = await existingLocalStore(o.home);
  const objects = await localObjectStatus(store, known.objects);
  return {
    desktop: o.desktop,
    location: known.location,
    source: unreachable === undefined ? 'server' : 'last-known',
    asOf: known.asOf,
    objects,
    bytesTotal: objects.reduce((n, x) => n + x.size, 0),
    bytesLocal: objects.reduce((n, x) => n + x.localBytes, 0),
    ...(unreachable !== undefined ? { unreachable } : {}),
  };
}
