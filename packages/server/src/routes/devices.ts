// POST /devices (a user session registers this machine), GET /devices (own; admins: all),
// DELETE /devices/:id (revoke: admin or owner), GET /grant-key (the key that verifies offline grants).
// The heartbeat (POST /devices/heartbeat) is a lease call: routes/leases.ts.

import { DeviceIdParams, DeviceListResponse, GrantKeyResponse, RegisterDeviceRequest, RegisterDeviceResponse } from '@roamdesk/api';
import { generateDeviceToken, hashToken } from '../auth/secrets.ts';
import { findDeviceById, insertDevice, listDevices, revokeDevice, toApiDevice } from '../db/repositories/devices.ts';
import { notFound } from '../errors.ts';
import { callerOf } from '../http/hooks.ts';
import { errorResponses, NoContent, type RoutePlugin } from './common.ts';

const tags = ['devices'];

export const deviceRoutes: RoutePlugin = (ctx) => (app, _options, done) => {
  app.post(
    '/devices',
    {
      // A device does not register devices: registering takes the user's session (roamdesk login).
      config: { credential: 'session' },
      schema: {
        tags,
        summary: 'Register this machine as a device; the credential is shown once',
        body: RegisterDeviceRequest,
        response: { 201: RegisterDeviceResponse, ...errorResponses },
      },
    },
    async (request, reply) => {
      const caller = callerOf(request);
      const id = ctx.ids.uuid();
      const name = request.body.name ?? `device-${id.slice(0, 8)}`;
      const credential = generateDeviceToken();
      const created = await ctx.audit.run({ actor: caller, action: 'device.register', target: name, detail: { device: id } }, async () => {
        await insertDevice(ctx.db, {
          id, user_id: caller.userId, name, credential_hash: hashToken(credential), created_at: ctx.nowIso(), last_seen_at: null, revoked_at: null,
        });
        const d = await findDeviceById(ctx.db, id);
        if (d === undefined) throw new Error('device vanished after insert');
        return d;
      });
      return reply.status(201).send({ device: toApiDevice(created), credential, grantKey: await ctx.grants.publicKeyPem() });
    },
  );

  app.get(
    '/devices',
    { schema: { tags, summary: 'Devices: your own, or all for admins', response: { 200: DeviceListResponse, ...errorResponses } } },
    async (request) => {
      const caller = callerOf(request);
      const rows = await listDevices(ctx.db, caller.role === 'admin' ? {} : { userId: caller.userId });
      return { devices: rows.map(toApiDevice) };
    },
  );

  app.delete(
    '/devices/:id',
    {
      schema: {
        tags,
        summary: "Revoke a device's credential (admin or owner); its later calls get 403 DEVICE_REVOKED and change nothing",
        params: DeviceIdParams,
        response: { 204: NoContent, ...errorResponses },
      },
    },
    async (request, reply) => {
      const caller = callerOf(request);
      const { id } = request.params;
      const d = await findDeviceById(ctx.db, id);
      // Someone else's device answers like a missing one.
      if (d === undefined || (caller.role !== 'admin' && d.user_id !== caller.userId)) throw notFound('device', id);
      await ctx.audit.run({ actor: caller, action: 'device.revoke', target: d.name, detail: { device: id, owner: d.owner_name } }, async () => {
        // Revoking twice is not an error; the first time stays.
        await revokeDevice(ctx.db, id, ctx.nowIso());
      });
      return reply.status(204).send(null);
    },
  );

  app.get(
    '/grant-key',
    { schema: { tags, summary: "The server's Ed25519 public key (PEM) that verifies offline grants", response: { 200: GrantKeyResponse, ...errorResponses } } },
    async () => ({ grantKey: await ctx.grants.publicKeyPem() }),
  );

  done();
};
