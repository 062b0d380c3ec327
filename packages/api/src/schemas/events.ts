import { Type, type Static } from 'typebox';
import { EVENTS_LIMIT_MAX } from '../limits.ts';
import { Name, Timestamp, Uuid } from '../names.ts';

/** What was done. Dotted `resource.verb`, stable: clients filter on these. */
export const EVENT_ACTIONS = [
  'auth.login',
  'auth.logout',
  'user.create',
  'user.delete',
  'image.import',
  'image.upload',
  'image.publish',
  'image.delete',
  'desktop.create',
  'desktop.delete',
  'desktop.start',
  'desktop.stop',
  'desktop.restart',
  'desktop.export',
  'desktop.reconcile',
  'desktop.pause',
  'desktop.resume',
  'desktop.console',
  'console.start',
  'console.end',
  'object.upload',
  'device.register',
  'device.revoke',
  'lease.checkout',
  'lease.confirm',
  'lease.cancel',
  'lease.replicate',
  'lease.checkin',
  'lease.rollback',
  'desktop.compact',
  'operation.start',
  'operation.finish',
] as const;
export type EventAction = (typeof EVENT_ACTIONS)[number];

export const EventResult = Type.Union([Type.Literal('ok'), Type.Literal('error')]);
export type EventResult = Static<typeof EventResult>;

export const Event = Type.Object({
  id: Type.Integer({ description: 'increasing; use as a cursor with ?before=' }),
  at: Timestamp,
  actor: Type.Union([Type.String(), Type.Null()], { description: 'user name as it was at the time; null for the server itself' }),
  action: Type.String(),
  desktop: Type.Union([Uuid, Type.Null()], { description: 'desktop id, when the action concerned a desktop' }),
  target: Type.Union([Type.String(), Type.Null()], { description: 'name of the desktop, image or user acted on' }),
  result: EventResult,
  detail: Type.Record(Type.String(), Type.Unknown()),
});
export type Event = Static<typeof Event>;


export const EventsQuery = Type.Object(
  {
    desktop: Type.Optional(Name),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: EVENTS_LIMIT_MAX })),
    before: Type.Optional(Type.Integer({ minimum: 1, description: 'only events with a smaller id' })),
  },
  { additionalProperties: false },
);
export type EventsQuery = Static<typeof EventsQuery>;

export const EventListResponse = Type.Object({ events: Type.Array(Event) });
export type EventListResponse = Static<typeof EventListResponse>;
