import { sql, type Kysely } from 'kysely';

/**
 * Runs of the identity matcher over the whole region (consent/match-runs.ts): asked for over
 * HTTP, done by a background job, polled for status and progress. At most one run is queued or
 * running at a time across the network: the partial unique index says so, whichever process
 * asks. Frozen: later changes are new migrations.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('identity_match_run')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('status', 'text', (c) => c.notNull().check(sql`status in ('queued', 'running', 'done', 'failed')`))
    .addColumn('reason', 'text')
    .addColumn('user_id', 'bigint')
    .addColumn('username', 'text', (c) => c.notNull())
    .addColumn('user_facility_id', 'text')
    .addColumn('role', 'text', (c) => c.notNull())
    // reading, searching, applying (null while queued and once finished)
    .addColumn('phase', 'text')
    .addColumn('local_patients', 'integer', (c) => c.notNull().defaultTo(0))
    // blocks of the candidate search: searched of all (null until the search has them)
    .addColumn('blocks_searched', 'integer')
    .addColumn('blocks', 'integer')
    .addColumn('candidates', 'integer')
    .addColumn('applied', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('auto_linked', 'integer')
    .addColumn('queued', 'integer')
    .addColumn('skipped', 'integer')
    .addColumn('error', 'text')
    .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('created_at', 'timestamptz', (c) => c.notNull())
    .addColumn('started_at', 'timestamptz')
    // The last sign of life of the process running it: a run silent for too long is abandoned.
    .addColumn('updated_at', 'timestamptz', (c) => c.notNull())
    .addColumn('finished_at', 'timestamptz')
    .execute();
  await sql`create unique index identity_match_run_one_active on identity_match_run ((true)) where status in ('queued', 'running')`.execute(db);
  await db.schema.createIndex('identity_match_run_created').on('identity_match_run').columns(['created_at']).execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('identity_match_run').ifExists().execute();
}
