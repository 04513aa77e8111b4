import type { Kysely } from 'kysely';

/**
 * The AI service registry and the analysis requests sent through the exchange.
 *
 * Secrets (bearer tokens, OAuth client secrets) and what only the exchange may read (the
 * re-identification key of a request, the de-identified bundle waiting to be sent) are stored
 * sealed (AES-256-GCM under the exchange's secret key file, see viewer-api/auth/secret-box.ts).
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('ai_service')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('base_url', 'text', (c) => c.notNull())
    .addColumn('operation', 'text', (c) => c.notNull())
    .addColumn('auth_kind', 'text', (c) => c.notNull())
    // tokenUrl, clientId, scope: not secret, shown to administrators.
    .addColumn('auth_public', 'jsonb', (c) => c.notNull())
    .addColumn('auth_secret_enc', 'bytea')
    .addColumn('categories', 'jsonb', (c) => c.notNull())
    .addColumn('facilities', 'jsonb', (c) => c.notNull())
    .addColumn('roles', 'jsonb', (c) => c.notNull())
    .addColumn('timeout_ms', 'integer', (c) => c.notNull())
    .addColumn('rate_per_minute', 'integer', (c) => c.notNull())
    .addColumn('rate_burst', 'integer', (c) => c.notNull())
    .addColumn('country', 'text', (c) => c.notNull())
    .addColumn('region', 'text')
    .addColumn('allow_outside_japan', 'boolean', (c) => c.notNull())
    .addColumn('birth_date', 'text', (c) => c.notNull())
    .addColumn('enabled', 'boolean', (c) => c.notNull())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull())
    .addColumn('updated_at', 'timestamptz', (c) => c.notNull())
    .addColumn('updated_by', 'text', (c) => c.notNull())
    .execute();

  await db.schema
    .createTable('ai_request')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('service_id', 'text', (c) => c.notNull().references('ai_service.id'))
    .addColumn('regional_id', 'text', (c) => c.notNull())
    .addColumn('user_id', 'bigint', (c) => c.notNull())
    .addColumn('facility_id', 'text', (c) => c.notNull())
    .addColumn('role', 'text', (c) => c.notNull())
    .addColumn('status', 'text', (c) => c.notNull())
    .addColumn('status_detail', 'text')
    .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('categories', 'jsonb', (c) => c.notNull())
    .addColumn('records', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('report', 'jsonb')
    .addColumn('outgoing_enc', 'bytea')
    .addColumn('reid_key_enc', 'bytea')
    .addColumn('sent_sha256', 'text')
    .addColumn('sent_bytes', 'integer')
    .addColumn('received_bytes', 'integer')
    .addColumn('result', 'jsonb')
    .addColumn('created_at', 'timestamptz', (c) => c.notNull())
    .addColumn('updated_at', 'timestamptz', (c) => c.notNull())
    .addColumn('completed_at', 'timestamptz')
    .execute();
  await db.schema.createIndex('ai_request_patient').on('ai_request').columns(['regional_id', 'created_at']).execute();
  await db.schema.createIndex('ai_request_user').on('ai_request').columns(['user_id', 'created_at']).execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('ai_request').ifExists().execute();
  await db.schema.dropTable('ai_service').ifExists().execute();
}
