// GET /events?desktop=NAME&limit=&before=

import { EVENTS_LIMIT_DEFAULT, EventListResponse, EventsQuery } from '@roamdesk/api';
import { findDesktopByName } from '../db/repositories/desktops.ts';
import { type EventFilter, listEvents, toApiEvent } from '../db/repositories/events.ts';
import { callerOf } from '../http/hooks.ts';
import { visibleDesktop } from '../services/access.ts';
import { errorResponses, type RoutePlugin } from './common.ts';

export const eventRoutes: RoutePlugin = (ctx) => (app, _options, done) => {
  app.get(
    '/events',
    {
      schema: {
        tags: ['events'],
        summary: 'The event log, newest first: events of your desktops, or all for admins',
        querystring: EventsQuery,
        response: { 200: EventListResponse, ...errorResponses },
      },
    },
    async (request) => {
      const caller = callerOf(request);
      const { desktop, limit = EVENTS_LIMIT_DEFAULT, before } = request.query;
      const filter: EventFilter = { limit, ...(before === undefined ? {} : { before }) };
      if (caller.role === 'admin') {
        if (desktop !== undefined) {
          const d = await findDesktopByName(ctx.db, desktop);
          // A deleted desktop's history is still there for admins, found by the name it had.
          if (d === undefined) filter.desktopTarget = desktop;
          else filter.desktopId = d.id;
        }
      } else {
        filter.ownerId = caller.userId;
        if (desktop !== undefined) filter.desktopId = (await visibleDesktop(ctx.db, caller, desktop)).id;
      }
      return { events: (await listEvents(ctx.db, filter)).map(toApiEvent) };
    },
  );
  done();
};
