import type { Device } from '@roamdesk/api';
import type { Kysely, Selectable } from 'kysely';
import type { Database, DevicesTable, UsersTable } from '../schema.ts';

export type DeviceRow = Selectable<DevicesTable>;
export type DeviceView = DeviceRow & { owner_name: string };

export function toApiDevice(row: DeviceView): Device {
  return {
    id: row.id,
    name: row.name,
    owner: row.owner_name,
    createdAt: row.created_at,
    lastSeenAt: row.last_seen_at,
    revokedAt: row.revoked_at,
  };
}

function selectView(db: Kysely<Database>) {
  return db.selectFrom('devices').innerJoin('users', 'users.id', 'devices.user_id').selectAll('devices').select('users.name as owner_name');
}

export async function insertDevice(db: Kysely<Database>, row: DeviceRow): Promise<void> {
  await db.insertInto('devices').values(row).execute();
}

export async function findDeviceById(db: Kysely<Database>, id: string): Promise<DeviceView | undefined> {
  return selectView(db).where('devices.id', '=', id).executeTakeFirst();
}

/** All devices (oldest first), or one user's. */
export async function listDevices(db: Kysely<Database>, filter: { userId?: string } = {}): Promise<DeviceView[]> {
  let q = selectView(db);
  if (filter.userId !== undefined) q = q.where('devices.user_id', '=', filter.userId);
  return q.orderBy('devices.created_at').orderBy('devices.id').execute();
}

export interface DeviceLookup {
  device: DeviceRow;
  user: Pick<Selectable<UsersTable>, 'id' | 'name' | 'role' | 'disabled'>;
}

/** The device with this credential hash and its user, whatever its state (the caller decides what is valid). */
export async function findDeviceByHash(db: Kysely<Database>, credentialHash: string): Promise<DeviceLookup | undefined> {
  const r = await db
    .selectFrom('devices')
    .innerJoin('users', 'users.id', 'devices.user_id')
    .selectAll('devices')
    .select(['users.name as user_name', 'users.role as user_role', 'users.disabled as user_disabled'])
    .where('devices.credential_hash', '=', credentialHash)
    .executeTakeFirst();
  if (r === undefined) return undefined;
  const { user_name, user_role, user_disabled, ...device } = r;
  return { device, user: { id: device.user_id, name: user_name, role: user_role, disabled: user_disabled } };
}

/** Revoke once: a second revoke keeps the first time. True when this call revoked it. */
export async function revokeDevice(db: Kysely<Database>, id: string, at: string): Promise<boolean> {
  const r = await db.updateTable('devices').set({ revoked_at: at }).where('id', '=', id).where('revoked_at', 'is', null).executeTakeFirst();
  return Number(r.numUpdatedRows) > 0;
}

export async function touchDevice(db: Kysely<Database>, id: string, at: string): Promise<void> {
  await db.updateTable('devices').set({ last_seen_at: at }).where('id', '=', id).execute();
}
