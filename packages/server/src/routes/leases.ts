// The lease calls (contract: @roamdesk/api schemas/leases.ts; state machine: services/leases.ts):
//   POST /desktops/:name/checkout, /checkout/confirm, /checkout/cancel, /replicate, /checkin   (device)
//   POST /desktops/:name/operations   (device: announce a replicate or check-in before uploading)
//   POST /desktops/:name/rollback     (admin, or the owner when lease.allowUserRollback)
//   GET  /desktops/:name/lease
//   POST /devices/heartbeat           (device)

import {
  CheckoutResponse,
  GenerationRequest,
  HeartbeatRequest,
  HeartbeatResponse,
  LayersRequest,
  LeaseResponse,
  NameParams,
  OperationResponse,
  StartOperationRequest,
} from '@roamdesk/api';
import { callerOf } from '../http/hooks.ts';
import { visibleDesktop } from '../services/access.ts';
import { LeaseService } from '../services/leases.ts';
import { errorResponses, type RoutePlugin } from './common.ts';

const tags = ['leases'];
const device = { credential: 'device' } as const;

export const leaseRoutes: RoutePlugin = (ctx) => (app, _options, done) => {
  const leases = new LeaseService(ctx);

  app.post(
    '/desktops/:name/checkout',
    {
      config: device,
      schema: {
        tags,
        summary: 'Check the desktop out to this device: stop the server VM, seal its overlay, lease → checking-out (gen+1)',
        description: 'Called again by the same device while checking out, it answers the same (resume).',
        params: NameParams,
        response: { 201: CheckoutResponse, ...errorResponses },
      },
    },
    async (request, reply) => reply.status(201).send(await leases.checkout(callerOf(request), request.params.name)),
  );

  app.post(
    '/desktops/:name/checkout/confirm',
    {
      config: device,
      schema: { tags, summary: 'The device holds a verified chain: lease → checked-out, with an offline grant', params: NameParams, body: GenerationRequest, response: { 200: LeaseResponse, ...errorResponses } },
    },
    async (request) => leases.confirm(callerOf(request), request.params.name, request.body.generation),
  );

  app.post(
    '/desktops/:name/checkout/cancel',
    {
      config: device,
      schema: { tags, summary: 'Give up a check-out that is not confirmed yet: lease back to the server (gen+1)', params: NameParams, body: GenerationRequest, response: { 200: LeaseResponse, ...errorResponses } },
    },
    async (request) => leases.cancel(callerOf(request), request.params.name, request.body.generation),
  );

  app.post(
    '/desktops/:name/replicate',
    {
      config: device,
      schema: {
        tags,
        summary: "Record the device's uploaded top as the desktop's replicated state; the lease stays on the device",
        params: NameParams,
        body: LayersRequest,
        response: { 200: LeaseResponse, ...errorResponses },
      },
    },
    async (request) => leases.layers(callerOf(request), request.params.name, 'replicate', request.body),
  );

  app.post(
    '/desktops/:name/checkin',
    {
      config: device,
      schema: {
        tags,
        summary: "Check in: the device's uploaded top becomes the server's chain and the lease returns (gen+1), in one transaction",
        params: NameParams,
        body: LayersRequest,
        response: { 200: LeaseResponse, ...errorResponses },
      },
    },
    async (request) => leases.layers(callerOf(request), request.params.name, 'checkin', request.body),
  );

  app.post(
    '/desktops/:name/operations',
    {
      config: device,
      schema: {
        tags,
        summary: 'Start a replicate or check-in operation (to report upload progress on) before uploading its layers',
        params: NameParams,
        body: StartOperationRequest,
        response: { 201: OperationResponse, ...errorResponses },
      },
    },
    async (request, reply) => {
      const operation = await leases.startOperation(callerOf(request), request.params.name, request.body.kind, request.body.generation);
      return reply.status(201).send({ operation });
    },
  );

  app.post(
    '/desktops/:name/rollback',
    {
      schema: {
        tags,
        summary: "Roll back a check-out: the lease returns to the server at the last replicated state (gen+1); the device's later work is fenced",
        params: NameParams,
        response: { 200: LeaseResponse, ...errorResponses },
      },
    },
    async (request) => leases.rollback(callerOf(request), request.params.name),
  );

  app.get(
    '/desktops/:name/lease',
    { schema: { tags, summary: "The desktop's lease", params: NameParams, response: { 200: LeaseResponse, ...errorResponses } } },
    async (request) => leases.leaseResponse(await visibleDesktop(ctx.db, callerOf(request), request.params.name)),
  );

  app.post(
    '/devices/heartbeat',
    {
      config: device,
      schema: {
        tags: ['devices'],
        summary: "The device is online: fresh offline grants for the leases it still holds, valid:false for the others",
        body: HeartbeatRequest,
        response: { 200: HeartbeatResponse, ...errorResponses },
      },
    },
    async (request) => leases.heartbeat(callerOf(request), request.body),
  );

  done();
};
