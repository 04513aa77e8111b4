import { sql, type Kysely } from 'kysely';

/**
 * Disaster-recovery storage: the data keys of encrypted pack objects, wrapped by a master key.
 * They live here, outside the immutable objects, so that a master key rotation re-wraps every
 * data key without rewriting any pack. Frozen: later changes are new migrations.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('pack_key')
    .addColumn('object_name', 'text', (c) => c.primaryKey())
    .addColumn('key_id', 'text', (c) => c.notNull().check(sql`key_id ~ '^[A-Za-z0-9_-]{1,64}$'`))
    .addColumn('wrapped_dek', 'bytea', (c) => c.notNull())
    .addColumn('plain_size', 'int8', (c) => c.notNull().check(sql`plain_size >= 0`))
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('rotated_at', 'timestamptz')
    .execute();
  // Rotation pages through the keys not yet under the current master key.
  await db.schema.createIndex('pack_key_key_id').on('pack_key').columns(['key_id', 'object_name']).execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('pack_key').ifExists().execute();
}
