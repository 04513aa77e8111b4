import type { Kysely } from 'kysely';

/**
 * Restore requests (issue 7): what a disaster-recovery operator asked for, the snapshot chosen,
 * and the job's state and progress, so the operator can poll it and the download can be served.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('restore_request')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('facility_id', 'text', (c) => c.notNull())
    .addColumn('snapshot_id', 'text', (c) => c.notNull())
    .addColumn('patients', 'jsonb')
    .addColumn('mode', 'text', (c) => c.notNull())
    .addColumn('path', 'text')
    .addColumn('state', 'text', (c) => c.notNull())
    .addColumn('reason', 'text')
    .addColumn('priority', 'integer', (c) => c.notNull())
    .addColumn('files_done', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('bytes_done', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('files_total', 'bigint')
    .addColumn('bytes_total', 'bigint')
    .addColumn('user_id', 'bigint')
    .addColumn('username', 'text', (c) => c.notNull())
    .addColumn('user_facility_id', 'text')
    .addColumn('role', 'text', (c) => c.notNull())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull())
    .addColumn('updated_at', 'timestamptz', (c) => c.notNull())
    .addColumn('finished_at', 'timestamptz')
    .execute();
  await db.schema.createIndex('restore_request_facility').on('restore_request').columns(['facility_id', 'created_at']).execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('restore_request').ifExists().execute();
}
