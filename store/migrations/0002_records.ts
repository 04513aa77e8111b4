import { sql, type Kysely } from 'kysely';

/**
 * The record index: one row per version of a stored file of a facility (its path and bytes),
 * with the SS-MIX2 fields of its name, the mapped clinical content, and the data-quality
 * findings; plus the indexing runs per snapshot and, per facility, the last published run.
 *
 * Versions are valid from the run that added them (`added_seq`) until the run that removed them
 * (`removed_seq`); readers see a facility as of its published run, so a run in progress (or
 * one that died) is never half visible. Frozen: later changes are new migrations.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('record_index_state')
    .addColumn('facility_id', 'text', (c) => c.primaryKey())
    .addColumn('published_seq', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('published_snapshot_id', 'text')
    .addColumn('published_at', 'timestamptz')
    .execute();

  await db.schema
    .createTable('record_index_run')
    .addColumn('snapshot_id', 'text', (c) => c.primaryKey())
    .addColumn('facility_id', 'text', (c) => c.notNull())
    .addColumn('seq', 'integer', (c) => c.notNull())
    .addColumn('snapshot_created_at', 'timestamptz', (c) => c.notNull())
    .addColumn('state', 'text', (c) => c.notNull().check(sql`state in ('running', 'done', 'superseded')`))
    // Last path whose page is fully written: the resume point.
    .addColumn('checkpoint_path', 'text')
    .addColumn('files_seen', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('files_new', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('files_removed', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('records_ok', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('records_flagged', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('findings', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(1))
    .addColumn('started_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('heartbeat_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('finished_at', 'timestamptz')
    .addUniqueConstraint('record_index_run_facility_seq', ['facility_id', 'seq'])
    .execute();

  await db.schema
    .createTable('record')
    .addColumn('id', 'bigserial', (c) => c.primaryKey())
    .addColumn('facility_id', 'text', (c) => c.notNull())
    // Byte order ("C"), the order in which snapshots list their files: ranges of paths compare
    // the same way on both sides.
    .addColumn('path', sql`text collate "C"`, (c) => c.notNull())
    .addColumn('sha256', 'text', (c) => c.notNull().check(sql`sha256 ~ '^[0-9a-f]{64}$'`))
    .addColumn('added_seq', 'integer', (c) => c.notNull())
    .addColumn('removed_seq', 'integer')
    .addColumn('snapshot_id', 'text', (c) => c.notNull())
    .addColumn('patient_id', 'text')
    .addColumn('data_type', 'text')
    .addColumn('category', 'text')
    .addColumn('care_date', 'date')
    .addColumn('order_no', 'text')
    .addColumn('message_ts', 'text')
    .addColumn('department', 'text')
    .addColumn('condition_flag', 'text', (c) => c.check(sql`condition_flag in ('0', '1', '2')`))
    .addColumn('status', 'text', (c) => c.notNull().check(sql`status in ('ok', 'flagged')`))
    .addColumn('content', 'jsonb')
    .addUniqueConstraint('record_version', ['facility_id', 'path', 'added_seq'])
    .execute();
  // The present versions of a facility's files, in path order: what each run merges against.
  await sql`create index record_present on record (facility_id, path) where removed_seq is null`.execute(db);
  // A patient's timeline across facilities: (facility, local id) pairs, newest care date first.
  await sql`create index record_patient_timeline on record (facility_id, patient_id, care_date desc, id desc) where status = 'ok'`.execute(db);
  // A category over a date range (all facilities), e.g. lab results of a week.
  await sql`create index record_category_date on record (category, care_date, id) where status = 'ok'`.execute(db);

  await db.schema
    .createTable('record_finding')
    .addColumn('id', 'bigserial', (c) => c.primaryKey())
    .addColumn('record_id', 'bigint', (c) => c.notNull().references('record.id').onDelete('cascade'))
    .addColumn('facility_id', 'text', (c) => c.notNull())
    .addColumn('snapshot_id', 'text', (c) => c.notNull())
    .addColumn('path', 'text', (c) => c.notNull())
    .addColumn('severity', 'text', (c) => c.notNull().check(sql`severity in ('error', 'warning')`))
    .addColumn('code', 'text', (c) => c.notNull())
    .addColumn('reason', 'text', (c) => c.notNull())
    .addColumn('field', 'text')
    .addColumn('byte_offset', 'integer')
    .execute();
  await db.schema.createIndex('record_finding_run').on('record_finding').columns(['facility_id', 'snapshot_id']).execute();
  await db.schema.createIndex('record_finding_record').on('record_finding').column('record_id').execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('record_finding').execute();
  await db.schema.dropTable('record').execute();
  await db.schema.dropTable('record_index_run').execute();
  await db.schema.dropTable('record_index_state').execute();
}
