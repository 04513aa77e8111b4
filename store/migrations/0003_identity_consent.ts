import { sql, type Kysely } from 'kysely';

/** Patient identity across facilities, consent, facility participation, break-glass, disasters. */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('regional_patient')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull())
    .addColumn('created_by', 'text', (c) => c.notNull())
    .addColumn('merged_into', 'text', (c) => c.references('regional_patient.id'))
    .addColumn('merged_at', 'timestamptz')
    .execute();
  await db.schema.createIndex('regional_patient_merged_into').on('regional_patient').column('merged_into').execute();

  await db.schema
    .createTable('identity_local_patient')
    .addColumn('facility_id', 'text', (c) => c.notNull())
    .addColumn('local_id', 'text', (c) => c.notNull())
    .addColumn('family_kanji', 'text', (c) => c.notNull())
    .addColumn('given_kanji', 'text', (c) => c.notNull())
    .addColumn('family_kana', 'text', (c) => c.notNull())
    .addColumn('given_kana', 'text', (c) => c.notNull())
    .addColumn('birth_date', 'text', (c) => c.notNull())
    .addColumn('sex', 'text', (c) => c.notNull())
    .addColumn('postal_code', 'text', (c) => c.notNull())
    .addColumn('address', 'text', (c) => c.notNull())
    .addColumn('phone', 'text', (c) => c.notNull())
    .addColumn('kana_key', 'text', (c) => c.notNull())
    .addColumn('kanji_key', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'timestamptz', (c) => c.notNull())
    .addPrimaryKeyConstraint('identity_local_patient_pk', ['facility_id', 'local_id'])
    .execute();
  // The matcher's blocks: birth date + sex, and the names with part of the birth date.
  await db.schema.createIndex('identity_local_patient_birth').on('identity_local_patient').columns(['birth_date', 'sex']).execute();
  await db.schema.createIndex('identity_local_patient_kana').on('identity_local_patient').column('kana_key').execute();
  await db.schema.createIndex('identity_local_patient_kanji').on('identity_local_patient').column('kanji_key').execute();

  await db.schema
    .createTable('identity_link')
    .addColumn('facility_id', 'text', (c) => c.notNull())
    .addColumn('local_id', 'text', (c) => c.notNull())
    .addColumn('regional_id', 'text', (c) => c.notNull().references('regional_patient.id'))
    .addColumn('method', 'text', (c) => c.notNull().check(sql`method in ('manual', 'matcher')`))
    .addColumn('score', 'double precision')
    .addColumn('linked_by', 'text', (c) => c.notNull())
    .addColumn('linked_at', 'timestamptz', (c) => c.notNull())
    .addColumn('evidence', 'text')
    .addPrimaryKeyConstraint('identity_link_pk', ['facility_id', 'local_id'])
    .execute();
  await db.schema.createIndex('identity_link_regional').on('identity_link').column('regional_id').execute();

  await db.schema
    .createTable('identity_link_event')
    .addColumn('id', 'bigserial', (c) => c.primaryKey())
    .addColumn('at', 'timestamptz', (c) => c.notNull())
    .addColumn('actor', 'text', (c) => c.notNull())
    .addColumn('action', 'text', (c) => c.notNull().check(sql`action in ('link', 'unlink', 'relink')`))
    .addColumn('operation', 'text', (c) => c.notNull())
    .addColumn('facility_id', 'text', (c) => c.notNull())
    .addColumn('local_id', 'text', (c) => c.notNull())
    .addColumn('regional_id', 'text')
    .addColumn('previous_regional_id', 'text')
    .addColumn('method', 'text')
    .addColumn('score', 'double precision')
    .addColumn('evidence', 'text')
    .addColumn('reason', 'text', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('identity_link_event_local').on('identity_link_event').columns(['facility_id', 'local_id']).execute();
  await db.schema.createIndex('identity_link_event_regional').on('identity_link_event').column('regional_id').execute();
  await db.schema.createIndex('identity_link_event_previous').on('identity_link_event').column('previous_regional_id').execute();

  await db.schema
    .createTable('identity_match')
    .addColumn('id', 'bigserial', (c) => c.primaryKey())
    .addColumn('a_facility_id', 'text', (c) => c.notNull())
    .addColumn('a_local_id', 'text', (c) => c.notNull())
    .addColumn('b_facility_id', 'text', (c) => c.notNull())
    .addColumn('b_local_id', 'text', (c) => c.notNull())
    .addColumn('score', 'double precision', (c) => c.notNull())
    .addColumn('reasons', 'jsonb', (c) => c.notNull())
    .addColumn('status', 'text', (c) => c.notNull().check(sql`status in ('open', 'accepted', 'rejected', 'superseded')`))
    .addColumn('created_at', 'timestamptz', (c) => c.notNull())
    .addColumn('decided_by', 'text')
    .addColumn('decided_at', 'timestamptz')
    .addColumn('decision_reason', 'text')
    .addUniqueConstraint('identity_match_pair', ['a_facility_id', 'a_local_id', 'b_facility_id', 'b_local_id'])
    .execute();
  await db.schema.createIndex('identity_match_status').on('identity_match').columns(['status', 'score']).execute();
  await db.schema.createIndex('identity_match_b').on('identity_match').columns(['b_facility_id', 'b_local_id']).execute();

  await db.schema
    .createTable('identity_audit')
    .addColumn('id', 'bigserial', (c) => c.primaryKey())
    .addColumn('at', 'timestamptz', (c) => c.notNull())
    .addColumn('actor', 'text', (c) => c.notNull())
    .addColumn('action', 'text', (c) => c.notNull())
    .addColumn('target_kind', 'text', (c) => c.notNull())
    .addColumn('target_id', 'text', (c) => c.notNull())
    .addColumn('reason', 'text')
    .addColumn('details', 'jsonb', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('identity_audit_target').on('identity_audit').columns(['target_kind', 'target_id']).execute();
  await db.schema.createIndex('identity_audit_at').on('identity_audit').column('at').execute();

  await db.schema
    .createTable('consent_version')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('regional_id', 'text', (c) => c.notNull().references('regional_patient.id'))
    .addColumn('version', 'integer', (c) => c.notNull())
    .addColumn('recorded_at', 'timestamptz', (c) => c.notNull())
    .addColumn('recorded_by', 'text', (c) => c.notNull())
    .addColumn('status', 'text', (c) => c.notNull().check(sql`status in ('opted-in', 'opted-out', 'withdrawn')`))
    .addColumn('terms', 'jsonb', (c) => c.notNull())
    .addColumn('valid_from', 'timestamptz', (c) => c.notNull())
    .addColumn('valid_to', 'timestamptz')
    .addColumn('evidence_sha256', 'text')
    .addColumn('evidence_media_type', 'text')
    .addColumn('note', 'text')
    .addUniqueConstraint('consent_version_unique', ['regional_id', 'version'])
    .execute();

  await db.schema
    .createTable('facility_participation')
    .addColumn('facility_id', 'text', (c) => c.primaryKey())
    .addColumn('kind', 'text', (c) => c.notNull().check(sql`kind in ('hospital', 'clinic', 'pharmacy', 'care_home')`))
    .addColumn('discloses', 'boolean', (c) => c.notNull())
    .addColumn('views', 'boolean', (c) => c.notNull())
    .addColumn('updated_at', 'timestamptz', (c) => c.notNull())
    .addColumn('updated_by', 'text', (c) => c.notNull())
    .execute();

  await db.schema
    .createTable('break_glass_grant')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('user_id', 'text', (c) => c.notNull())
    .addColumn('facility_id', 'text', (c) => c.notNull())
    .addColumn('role', 'text', (c) => c.notNull())
    .addColumn('regional_id', 'text', (c) => c.notNull().references('regional_patient.id'))
    .addColumn('reason', 'text', (c) => c.notNull())
    .addColumn('granted_at', 'timestamptz', (c) => c.notNull())
    .addColumn('expires_at', 'timestamptz', (c) => c.notNull())
    .addColumn('revoked_at', 'timestamptz')
    .addColumn('revoked_by', 'text')
    .execute();
  await db.schema.createIndex('break_glass_grant_patient').on('break_glass_grant').columns(['regional_id', 'user_id', 'expires_at']).execute();

  await db.schema
    .createTable('disaster_declaration')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('facilities', 'jsonb', (c) => c.notNull())
    .addColumn('starts_at', 'timestamptz', (c) => c.notNull())
    .addColumn('ends_at', 'timestamptz', (c) => c.notNull())
    .addColumn('declared_by', 'text', (c) => c.notNull())
    .addColumn('declared_at', 'timestamptz', (c) => c.notNull())
    .addColumn('reason', 'text', (c) => c.notNull())
    .addColumn('ended_at', 'timestamptz')
    .addColumn('ended_by', 'text')
    .execute();
  await db.schema.createIndex('disaster_declaration_period').on('disaster_declaration').columns(['ends_at', 'starts_at']).execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  for (const t of [
    'disaster_declaration',
    'break_glass_grant',
    'facility_participation',
    'consent_version',
    'identity_audit',
    'identity_match',
    'identity_link_event',
    'identity_link',
    'identity_local_patient',
    'regional_patient',
  ]) {
    await db.schema.dropTable(t).ifExists().execute();
  }
}
