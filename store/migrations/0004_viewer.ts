import { sql, type Kysely } from 'kysely';

/**
 * Users, registered devices, sessions and the hash-chained audit trail of the viewer API.
 *
 * facility_id is plain text here: the facilities table of the backup store did not exist when this
 * migration was written, so the reference is checked by the application (a later migration may add
 * the foreign key once both have landed).
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('viewer_user')
    .addColumn('id', 'bigint', (c) => c.primaryKey().generatedAlwaysAsIdentity())
    .addColumn('facility_id', 'text', (c) => c.notNull())
    .addColumn('username', 'text', (c) => c.notNull())
    .addColumn('display_name', 'text', (c) => c.notNull())
    .addColumn('role', 'text', (c) => c.notNull())
    .addColumn('password_hash', 'text', (c) => c.notNull())
    .addColumn('totp_secret_enc', 'bytea', (c) => c.notNull())
    .addColumn('totp_last_step', 'bigint')
    .addColumn('failed_logins', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('locked_until', 'timestamptz')
    .addColumn('disabled_at', 'timestamptz')
    .addColumn('created_at', 'timestamptz', (c) => c.notNull())
    .addUniqueConstraint('viewer_user_facility_username', ['facility_id', 'username'])
    .execute();

  await db.schema
    .createTable('viewer_device')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('facility_id', 'text', (c) => c.notNull())
    .addColumn('label', 'text', (c) => c.notNull())
    .addColumn('credential_hash', 'text', (c) => c.notNull().unique())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull())
    .addColumn('created_by', 'text', (c) => c.notNull())
    .addColumn('revoked_at', 'timestamptz')
    .execute();

  await db.schema
    .createTable('viewer_session')
    .addColumn('token_hash', 'text', (c) => c.primaryKey())
    .addColumn('id', 'text', (c) => c.notNull().unique())
    .addColumn('user_id', 'bigint', (c) => c.notNull().references('viewer_user.id'))
    .addColumn('device_id', 'text', (c) => c.notNull().references('viewer_device.id'))
    .addColumn('address', 'text', (c) => c.notNull())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull())
    .addColumn('last_seen_at', 'timestamptz', (c) => c.notNull())
    .addColumn('expires_at', 'timestamptz', (c) => c.notNull())
    .addColumn('revoked_at', 'timestamptz')
    .addColumn('revoked_reason', 'text')
    .execute();
  await db.schema.createIndex('viewer_session_user').on('viewer_session').column('user_id').execute();

  await db.schema
    .createTable('audit_event')
    .addColumn('seq', 'bigint', (c) => c.primaryKey())
    .addColumn('at', 'timestamptz', (c) => c.notNull())
    .addColumn('action', 'text', (c) => c.notNull())
    .addColumn('outcome', 'text', (c) => c.notNull())
    .addColumn('reason', 'text')
    .addColumn('user_id', 'bigint')
    .addColumn('username', 'text')
    .addColumn('facility_id', 'text')
    .addColumn('role', 'text')
    .addColumn('address', 'text')
    .addColumn('device_id', 'text')
    .addColumn('endpoint', 'text')
    .addColumn('patient', 'text')
    .addColumn('purpose', 'text')
    .addColumn('break_glass_reason', 'text')
    .addColumn('detail', 'text', (c) => c.notNull())
    .addColumn('prev_hash', 'text', (c) => c.notNull())
    .addColumn('hash', 'text', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('audit_event_at').on('audit_event').column('at').execute();
  await db.schema.createIndex('audit_event_patient').on('audit_event').columns(['patient', 'at']).execute();
  await db.schema.createIndex('audit_event_user').on('audit_event').columns(['user_id', 'at']).execute();

  await db.schema
    .createTable('audit_head')
    .addColumn('id', 'integer', (c) => c.primaryKey().check(sql`id = 1`))
    .addColumn('count', 'bigint', (c) => c.notNull())
    .addColumn('last_hash', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'timestamptz', (c) => c.notNull())
    .execute();
  await sql`insert into audit_head (id, count, last_hash, updated_at) values (1, 0, ${'0'.repeat(64)}, now())`.execute(db);

  // Append-only by construction: the exchange never updates or deletes an audit row, and the
  // database refuses it too. This stops mistakes and the application's own role; an owner or
  // superuser can drop the trigger, which is why the chain and its anchored head exist.
  await sql`
    create function audit_event_append_only() returns trigger language plpgsql as $$
    begin
      raise exception 'audit_event is append-only';
    end $$`.execute(db);
  await sql`
    create trigger audit_event_no_change before update or delete on audit_event
    for each row execute function audit_event_append_only()`.execute(db);
  await sql`
    create trigger audit_event_no_truncate before truncate on audit_event
    for each statement execute function audit_event_append_only()`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('audit_head').execute();
  await db.schema.dropTable('audit_event').execute();
  await sql`drop function if exists audit_event_append_only()`.execute(db);
  await db.schema.dropTable('viewer_session').execute();
  await db.schema.dropTable('viewer_device').execute();
  await db.schema.dropTable('viewer_user').execute();
}
