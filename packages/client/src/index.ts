// @roamdesk/client: the device side — a typed client for the server's HTTP API, the client state in
// ROAMDESK_HOME, the local store, prefetch/status of desktops' chains, and the device agent (device/: check-out,
// the local VM, offline grants, replicate, check-in, rollback, quarantine). Never logs or exits.

export { ApiClient, type ApiClientOptions, type CallOptions, type ConsoleSession, type ExportOptions, type UploadOptions } from './api-client.ts';
export { ApiError, ClientError, CLIENT_ERROR_CODES, type ClientErrorCode, type ErrorData } from './errors.ts';
export { normalizeServerUrl, type FetchFn } from './http.ts';
export { EMPTY_STATE, resolveHome, STATE_FILE, STATE_VERSION, StateStore, type ClientState, type Session } from './state.ts';
export { type DownloadResult, type Progress, type ProgressFn } from './transfer.ts';
export {
  DESKTOPS_DIR, existingLocalStore, type KnownChain, loadKnownChain, localStore, localStorePath, type LocalStoreLock, lockLocalStore, saveKnownChain,
  STORE_DIR, STORE_LOCK_FILE,
} from './local-store.ts';
export {
  type DesktopStatus, desktopStatus, type LocalObjectStatus, localObjectStatus, prefetchDesktop, type PrefetchOptions, type PrefetchResult, type StatusOptions,
} from './prefetch.ts';
export * from './device/index.ts';
