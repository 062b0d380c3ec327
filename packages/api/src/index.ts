// @roamdesk/api: the contract between the server, the CLI and the web UI. Schemas (TypeBox, so JSON Schema
// for fastify and OpenAPI), their static types, name/id validators and the error catalog. No runtime I/O.
// Code that must not load TypeBox (the device, the CLI) imports values from '@roamdesk/api/core' instead.

export * from './core.ts';
export * from './names.ts';
export * from './errors.ts';
export * from './schemas/auth.ts';
export * from './schemas/users.ts';
export * from './schemas/images.ts';
export * from './schemas/desktops.ts';
export * from './schemas/events.ts';
export * from './schemas/console.ts';
export * from './schemas/transfer.ts';
export * from './schemas/leases.ts';
