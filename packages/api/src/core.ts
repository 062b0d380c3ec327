// @roamdesk/api/core: the parts of the contract that run without the schema library — name and id validators,
// limits, the error catalog with ApiError, offline grants, the URL prefix. The device and the CLI import values
// from here (and only types from '@roamdesk/api'): loading TypeBox's hundreds of modules cost every CLI command
// about a second.

export * from './patterns.ts';
export * from './limits.ts';
export * from './error-catalog.ts';
export * from './grants.ts';

/** Every route lives under this prefix. */
export const API_PREFIX = '/api/v1';
