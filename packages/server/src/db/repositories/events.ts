import type { Event, EventResult } from '@roamdesk/api';
import type { Kysely, Selectable } from 'kysely';
import type { Database, EventsTable } from '../schema.ts';

export type EventRow = Selectable<EventsTable>;

export interface NewEvent {
  at: string;
  actorId: string | null;
  actorName: string | null;
  action: string;
  desktopId: string | null;
  target: string | null;
  result: EventResult;
  /** The detail object, serialized. */
  detailJson: string;
}

export async function insertEvent(db: Kysely<Database>, e: NewEvent): Promise<void> {
  await db
    .insertInto('events')
    .values({
      at: e.at,
      actor_id: e.actorId,
      actor_name: e.actorName,
      action: e.action,
      desktop_id: e.desktopId,
      target: e.target,
      result: e.result,
      detail: e.detailJson,
    })
    .execute();
}

export function toApiEvent(row: EventRow): Event {
  let detail: Record<string, unknown> = {};
  try {
    const parsed: unknown = JSON.parse(row.detail);
    if (typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)) detail = parsed as Record<string, unknown>;
  } catch {
    // A row written by hand or a future version: show it without detail rather than fail the whole list.
  }
  return {
    id: Number(row.id),
    at: row.at,
    actor: row.actor_name,
    action: row.action,
    desktop: row.desktop_id,
    target: row.target,
    result: row.result,
    detail,
  };
}

export interface EventFilter {
  /** Only events about desktops this user owns now. */
  ownerId?: string;
  desktopId?: string;
  /** Only events about a desktop of this name (for deleted desktops, admins only). */
  desktopTarget?: string;
  before?: number;
  limit: number;
}

/** Newest first. */
export async function listEvents(db: Kysely<Database>, f: EventFilter): Promise<EventRow[]> {
  let q = db.selectFrom('events').selectAll('events');
  if (f.ownerId !== undefined) {
    const ownerId = f.ownerId;
    q = q.where('events.desktop_id', 'in', (eb) => eb.selectFrom('desktops').select('desktops.id').where('desktops.owner_id', '=', ownerId));
  }
  if (f.desktopId !== undefined) q = q.where('events.desktop_id', '=', f.desktopId);
  if (f.desktopTarget !== undefined) {
    q = q.where('events.target', '=', f.desktopTarget).where('events.desktop_id', 'is not', null);
  }
  if (f.before !== undefined) q = q.where('events.id', '<', f.before);
  return q.orderBy('events.id', 'desc').limit(f.limit).execute();
}
