// @roamdesk/qmp: a typed QMP client. See README.md.
export { QmpClient, DEFAULT_CONNECT_TIMEOUT_MS } from './client.ts';
export type { QmpConnectOptions, QmpWaitForEventOptions } from './client.ts';
export type { QmpRunstate } from './protocol.ts';
export { ID_PREFIX } from './protocol.ts';
export type { QmpEventListener } from './event-hub.ts';
export * from './errors.ts';
export type * from './commands.ts';
export type * from './types.ts';
