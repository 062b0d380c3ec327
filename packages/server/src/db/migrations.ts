// Schema migrations, in code (kysely Migrator with an in-memory provider), so the server binary carries
// its own schema. Written with kysely's schema builder only, so the same migration runs on SQLite and on
// PostgreSQL; the one place the dialects differ (auto-increment ids) goes through autoIncrementId().
//
// Rules: never edit a migration once released; add a new one. Names sort in order of application.
// Room left for later migrations: desktop_layers.
//
// 0001_initial: users, tokens, images, desktops, events.
// 0002_image_versions: image_versions, one row per published version; existing images are backfilled as their
//   own version 1 with one INSERT … SELECT in plain SQL that both dialects read the same way.
// 0004_leases: devices; the lease columns of desktops (lease_state, lease_device_id, lease_since,
//   replicated_top_object_id, replicated_at; lease_since backfilled from created_at); operations.

import { type Kysely, type Migration, type MigrationResultSet, Migrator, PostgresAdapter, sql } from 'kysely';
import type { Database } from './schema.ts';

// Migrations see the database as it was when they were written, not as `Database` says today.
type AnyDb = Kysely<Record<string, never>>;

function isPostgres(db: AnyDb): boolean {
  return db.getExecutor().adapter instanceof PostgresAdapter;
}

const m0001_initial: Migration = {
  async up(db: AnyDb) {
    await db.schema
      .createTable('users')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('name', 'text', (c) => c.notNull().unique())
      .addColumn('password_hash', 'text', (c) => c.notNull())
      .addColumn('role', 'text', (c) => c.notNull().check(sql`role in ('admin', 'user')`))
      .addColumn('created_at', 'text', (c) => c.notNull())
      .addColumn('disabled', 'integer', (c) => c.notNull().defaultTo(0))
      .execute();

    await db.schema
      .createTable('images')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('name', 'text', (c) => c.notNull().unique())
      .addColumn('format', 'text', (c) => c.notNull().check(sql`format in ('raw', 'qcow2')`))
      .addColumn('size', 'bigint', (c) => c.notNull())
      .addColumn('virtual_size', 'bigint', (c) => c.notNull())
      .addColumn('created_at', 'text', (c) => c.notNull())
      .addColumn('created_by', 'text', (c) => c.references('users.id').onDelete('set null'))
      .execute();

    await db.schema
      .createTable('desktops')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('name', 'text', (c) => c.notNull().unique())
      // A user who owns desktops, or an image desktops use, cannot disappear under them. The default
      // action (NO ACTION) rather than RESTRICT: same effect here, and SQLite then reports the violation
      // as SQLITE_CONSTRAINT_FOREIGNKEY (RESTRICT reports SQLITE_CONSTRAINT_TRIGGER).
      .addColumn('owner_id', 'text', (c) => c.notNull().references('users.id'))
      .addColumn('image_id', 'text', (c) => c.notNull().references('images.id'))
      .addColumn('memory_mib', 'integer', (c) => c.notNull())
      .addColumn('cpus', 'integer', (c) => c.notNull())
      .addColumn('kernel', 'text')
      .addColumn('initrd', 'text')
      .addColumn('append', 'text')
      .addColumn('state', 'text', (c) =>
        c.notNull().check(sql`state in ('stopped', 'starting', 'running', 'stopping', 'error')`),
      )
      .addColumn('location', 'text', (c) => c.notNull().defaultTo('server'))
      .addColumn('lease_generation', 'integer', (c) => c.notNull().defaultTo(1))
      .addColumn('top_object_id', 'text', (c) => c.notNull())
      .addColumn('overlay_path', 'text')
      .addColumn('created_at', 'text', (c) => c.notNull())
      .addColumn('updated_at', 'text', (c) => c.notNull())
      .execute();
    await db.schema.createIndex('desktops_owner_id').on('desktops').column('owner_id').execute();
    await db.schema.createIndex('desktops_image_id').on('desktops').column('image_id').execute();

    await db.schema
      .createTable('tokens')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('user_id', 'text', (c) => c.notNull().references('users.id').onDelete('cascade'))
      .addColumn('token_hash', 'text', (c) => c.notNull().unique())
      .addColumn('kind', 'text', (c) => c.notNull().check(sql`kind in ('session', 'console')`))
      .addColumn('created_at', 'text', (c) => c.notNull())
      .addColumn('expires_at', 'text', (c) => c.notNull())
      .addColumn('revoked_at', 'text')
      .addColumn('last_used_at', 'text')
      .addColumn('desktop_id', 'text', (c) => c.references('desktops.id').onDelete('cascade'))
      .addColumn('used_at', 'text')
      .execute();
    await db.schema.createIndex('tokens_user_id').on('tokens').column('user_id').execute();

    const events = db.schema.createTable('events');
    await (isPostgres(db)
      ? events.addColumn('id', 'bigint', (c) => c.primaryKey().generatedByDefaultAsIdentity())
      : events.addColumn('id', 'integer', (c) => c.primaryKey().autoIncrement())
    )
      .addColumn('at', 'text', (c) => c.notNull())
      .addColumn('actor_id', 'text')
      .addColumn('actor_name', 'text')
      .addColumn('action', 'text', (c) => c.notNull())
      .addColumn('desktop_id', 'text')
      .addColumn('target', 'text')
      .addColumn('result', 'text', (c) => c.notNull().check(sql`result in ('ok', 'error')`))
      .addColumn('detail', 'text', (c) => c.notNull())
      .execute();
    await db.schema.createIndex('events_desktop_id').on('events').columns(['desktop_id', 'id']).execute();
  },

  async down(db: AnyDb) {
    for (const table of ['events', 'tokens', 'desktops', 'images', 'users']) {
      await db.schema.dropTable(table).execute();
    }
  },
};

const m0002_image_versions: Migration = {
  async up(db: AnyDb) {
    // Portable as written: a composite primary key, foreign keys with actions, bigint — the same on both.
    await db.schema
      .createTable('image_versions')
      // Versions belong to their image: deleting the image row (only ever when no desktop uses it) takes them along.
      .addColumn('image_id', 'text', (c) => c.notNull().references('images.id').onDelete('cascade'))
      .addColumn('version', 'integer', (c) => c.notNull().check(sql`version >= 1`))
      .addColumn('top_object_id', 'text', (c) => c.notNull())
      .addColumn('diff_size', 'bigint', (c) => c.notNull())
      .addColumn('created_at', 'text', (c) => c.notNull())
      .addColumn('created_by', 'text', (c) => c.references('users.id').onDelete('set null'))
      .addPrimaryKeyConstraint('image_versions_pkey', ['image_id', 'version'])
      .execute();
    // "Is this object still referenced?" asks by top_object_id before the store may drop an object.
    await db.schema.createIndex('image_versions_top_object_id').on('image_versions').column('top_object_id').execute();
    // Every existing image is its own version 1.
    await sql`
      INSERT INTO image_versions (image_id, version, top_object_id, diff_size, created_at, created_by)
      SELECT id, 1, id, size, created_at, created_by FROM images
    `.execute(db);
  },

  async down(db: AnyDb) {
    await db.schema.dropTable('image_versions').execute();
  },
};

const m0003_uploaded_objects: Migration = {
  async up(db: AnyDb) {
    // Objects a user uploaded (e.g. a device's sealed layers before replicate/check-in names them): readable by
    // that user, so a layer on top of their own earlier upload may be uploaded too.
    await db.schema
      .createTable('uploaded_objects')
      .addColumn('object_id', 'text', (c) => c.notNull())
      .addColumn('user_id', 'text', (c) => c.notNull().references('users.id').onDelete('cascade'))
      .addColumn('created_at', 'text', (c) => c.notNull())
      .addPrimaryKeyConstraint('uploaded_objects_pkey', ['object_id', 'user_id'])
      .execute();
  },

  async down(db: AnyDb) {
    await db.schema.dropTable('uploaded_objects').execute();
  },
};

const m0004_leases: Migration = {
  async up(db: AnyDb) {
    await db.schema
      .createTable('devices')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('user_id', 'text', (c) => c.notNull().references('users.id').onDelete('cascade'))
      .addColumn('name', 'text', (c) => c.notNull())
      .addColumn('credential_hash', 'text', (c) => c.notNull().unique())
      .addColumn('created_at', 'text', (c) => c.notNull())
      .addColumn('last_seen_at', 'text')
      .addColumn('revoked_at', 'text')
      .execute();
    await db.schema.createIndex('devices_user_id').on('devices').column('user_id').execute();

    // SQLite adds one column per ALTER TABLE; a NOT NULL column needs its default. No foreign key on
    // lease_device_id: SQLite could not drop such a column again, and devices are never deleted while they
    // can hold a lease (only with their user, who cannot be deleted while owning desktops).
    await db.schema
      .alterTable('desktops')
      .addColumn('lease_state', 'text', (c) =>
        c.notNull().defaultTo('server').check(sql`lease_state in ('server', 'checking-out', 'checked-out')`),
      )
      .execute();
    for (const column of ['lease_device_id', 'lease_since', 'replicated_top_object_id', 'replicated_at']) {
      await db.schema.alterTable('desktops').addColumn(column, 'text').execute();
    }
    await sql`UPDATE desktops SET lease_since = created_at`.execute(db);

    await db.schema
      .createTable('operations')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('kind', 'text', (c) => c.notNull().check(sql`kind in ('checkout', 'replicate', 'checkin', 'rollback')`))
      .addColumn('desktop_id', 'text', (c) => c.notNull().references('desktops.id').onDelete('cascade'))
      .addColumn('device_id', 'text')
      .addColumn('user_id', 'text')
      .addColumn('state', 'text', (c) => c.notNull().check(sql`state in ('running', 'succeeded', 'failed', 'cancelled')`))
      .addColumn('progress', 'text', (c) => c.notNull())
      .addColumn('result', 'text')
      .addColumn('error', 'text')
      .addColumn('created_at', 'text', (c) => c.notNull())
      .addColumn('updated_at', 'text', (c) => c.notNull())
      .execute();
    await db.schema.createIndex('operations_desktop_id').on('operations').columns(['desktop_id', 'created_at']).execute();
  },

  async down(db: AnyDb) {
    await db.schema.dropTable('operations').execute();
    for (const column of ['replicated_at', 'replicated_top_object_id', 'lease_since', 'lease_device_id', 'lease_state']) {
      await db.schema.alterTable('desktops').dropColumn(column).execute();
    }
    await db.schema.dropTable('devices').execute();
  },
};

/** Every migration, by name. */
export const MIGRATIONS: Readonly<Record<string, Migration>> = {
  '0001_initial': m0001_initial,
  '0002_image_versions': m0002_image_versions,
  '0003_uploaded_objects': m0003_uploaded_objects,
  '0004_leases': m0004_leases,
};

export class MigrationError extends Error {
  readonly code = 'DB_MIGRATION_FAILED';
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'MigrationError';
  }
}

function migrator(db: Kysely<Database>): Migrator {
  return new Migrator({
    db,
    provider: { getMigrations: () => Promise.resolve(MIGRATIONS) },
    migrationTableName: 'roamdesk_migrations',
    migrationLockTableName: 'roamdesk_migrations_lock',
  });
}

function applied({ error, results }: MigrationResultSet): string[] {
  if (error !== undefined) {
    const failed = results?.find((r) => r.status === 'Error')?.migrationName ?? 'unknown';
    throw new MigrationError(`database migration ${failed} failed`, { cause: error });
  }
  return (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName);
}

/** Bring the schema up to date. Running it again is a no-op. Returns the migrations applied now. */
export async function migrateToLatest(db: Kysely<Database>): Promise<string[]> {
  return applied(await migrator(db).migrateToLatest());
}

/** Migrate up (or down) to the named migration: for tests of a migration over data an older schema held. */
export async function migrateTo(db: Kysely<Database>, name: string): Promise<string[]> {
  return applied(await migrator(db).migrateTo(name));
}
