import { sql, type Kysely } from 'kysely';

/**
 * Retention and drills: the pack objects that prune is writing or has taken out of the index
 * (so that an interrupted prune is finished by the next one), the nonces of signed delete
 * requests (a nonce is accepted once), and the history of restore drills and sampled verifies.
 * Frozen: later changes are new migrations.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('prune_object')
    .addColumn('object_name', 'text', (c) => c.primaryKey())
    // writing: a repacked pack being written, not yet in the index; condemned: out of the index, to delete.
    .addColumn('state', 'text', (c) => c.notNull().check(sql`state in ('writing', 'condemned')`))
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();

  await db.schema
    .createTable('delete_nonce')
    .addColumn('nonce', 'text', (c) => c.primaryKey().check(sql`nonce ~ '^[A-Za-z0-9_-]{16,128}$'`))
    .addColumn('action', 'text', (c) => c.notNull())
    .addColumn('signed_at', 'timestamptz', (c) => c.notNull())
    .addColumn('used_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();

  await db.schema
    .createTable('drill')
    .addColumn('id', 'bigserial', (c) => c.primaryKey())
    .addColumn('kind', 'text', (c) => c.notNull().check(sql`kind in ('restore', 'verify')`))
    .addColumn('facility_id', 'text')
    .addColumn('snapshot_id', 'text')
    .addColumn('nightly_date', 'text')
    .addColumn('outcome', 'text', (c) => c.notNull().check(sql`outcome in ('passed', 'damaged', 'failed')`))
    .addColumn('started_at', 'timestamptz', (c) => c.notNull())
    .addColumn('duration_ms', 'integer', (c) => c.notNull())
    .addColumn('files', 'int8', (c) => c.notNull().defaultTo(0))
    .addColumn('bytes', 'int8', (c) => c.notNull().defaultTo(0))
    // Damaged files and the snapshots that hold them, or what failed.
    .addColumn('damage', 'jsonb')
    .addColumn('detail', 'text')
    .execute();
  await db.schema.createIndex('drill_started').on('drill').columns(['started_at', 'id']).execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  for (const t of ['drill', 'delete_nonce', 'prune_object']) await db.schema.dropTable(t).ifExists().execute();
}
