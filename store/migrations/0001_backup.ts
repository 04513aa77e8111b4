import { sql, type Kysely } from 'kysely';

/**
 * The deduplicated backup store: facilities and their uploader credentials, the blob index and
 * its packs, compression dictionaries, content-addressed directory trees, snapshots, and the
 * staging of uploads in progress. Frozen: later changes are new migrations.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('facility')
    .addColumn('id', 'text', (c) => c.primaryKey().check(sql`id ~ '^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$'`))
    .addColumn('name', 'text', (c) => c.notNull().check(sql`length(name) between 1 and 200`))
    .addColumn('kind', 'text', (c) => c.notNull().check(sql`kind in ('hospital', 'clinic', 'pharmacy', 'care_home')`))
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();

  // Tokens are 32 random bytes: a single SHA-256 is the right hash for such entropy (no
  // password stretching needed), looked up by its hash and compared in constant time.
  await db.schema
    .createTable('uploader_credential')
    .addColumn('id', 'bigserial', (c) => c.primaryKey())
    .addColumn('facility_id', 'text', (c) => c.notNull().references('facility.id'))
    .addColumn('token_hash', 'bytea', (c) => c.notNull().unique())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('revoked_at', 'timestamptz')
    .execute();
  await db.schema.createIndex('uploader_credential_facility').on('uploader_credential').column('facility_id').execute();

  // Dictionaries are content-addressed (hash) and never change, so old packs stay readable;
  // blobs refer to them by a small serial id to keep the blob index row short.
  await db.schema
    .createTable('compression_dictionary')
    .addColumn('id', 'serial', (c) => c.primaryKey())
    .addColumn('hash', 'text', (c) => c.notNull().unique()) // hex SHA-256 of the content
    .addColumn('content', 'bytea', (c) => c.notNull().check(sql`length(content) between 1 and 32768`))
    .addColumn('sample_blobs', 'integer', (c) => c.notNull())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();

  await db.schema
    .createTable('pack')
    .addColumn('id', 'serial', (c) => c.primaryKey())
    .addColumn('hash', 'text', (c) => c.notNull().unique()) // hex SHA-256 of the pack object
    .addColumn('object_name', 'text', (c) => c.notNull().unique())
    .addColumn('size', 'int8', (c) => c.notNull())
    .addColumn('blob_count', 'integer', (c) => c.notNull())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();

  // One row per distinct blob (hundreds of millions at region scale): kept narrow on purpose.
  // codec 0 = stored raw, 1 = raw deflate (RFC 1951) with the optional preset dictionary.
  await db.schema
    .createTable('blob')
    .addColumn('sha256', 'bytea', (c) => c.primaryKey().check(sql`length(sha256) = 32`))
    .addColumn('size', 'integer', (c) => c.notNull().check(sql`size >= 0`))
    .addColumn('pack_id', 'integer', (c) => c.notNull().references('pack.id'))
    .addColumn('offset', 'integer', (c) => c.notNull())
    .addColumn('length', 'integer', (c) => c.notNull())
    .addColumn('codec', 'smallint', (c) => c.notNull().check(sql`codec in (0, 1)`))
    .addColumn('dictionary_id', 'integer', (c) => c.references('compression_dictionary.id'))
    .execute();

  await db.schema
    .createTable('tree')
    .addColumn('hash', 'bytea', (c) => c.primaryKey().check(sql`length(hash) = 32`))
    .addColumn('content', 'bytea', (c) => c.notNull()) // deflate-raw of the canonical encoding
    .execute();

  await db.schema
    .createTable('upload')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('facility_id', 'text', (c) => c.notNull().references('facility.id'))
    .addColumn('client_session', 'text', (c) => c.notNull())
    .addColumn('base_snapshot_id', 'text')
    .addColumn('state', 'text', (c) => c.notNull().check(sql`state in ('open', 'committed', 'aborted')`))
    .addColumn('entries', 'int8', (c) => c.notNull().defaultTo(0))
    .addColumn('blobs_stored', 'int8', (c) => c.notNull().defaultTo(0))
    .addColumn('bytes_stored', 'int8', (c) => c.notNull().defaultTo(0))
    .addColumn('snapshot_id', 'text')
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('finished_at', 'timestamptz')
    .execute();
  // One open upload per facility, enforced by the database (not by a read-then-write race).
  await sql`create unique index upload_one_open on upload (facility_id) where state = 'open'`.execute(db);
  await db.schema.createIndex('upload_facility_session').on('upload').columns(['facility_id', 'client_session']).execute();

  await db.schema
    .createTable('snapshot')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('facility_id', 'text', (c) => c.notNull().references('facility.id'))
    .addColumn('root_tree', 'bytea', (c) => c.notNull().references('tree.hash'))
    .addColumn('files', 'int8', (c) => c.notNull())
    .addColumn('bytes', 'int8', (c) => c.notNull())
    .addColumn('new_blobs', 'int8', (c) => c.notNull())
    .addColumn('new_bytes', 'int8', (c) => c.notNull())
    .addColumn('upload_id', 'text', (c) => c.notNull().unique().references('upload.id'))
    // The Asia/Tokyo calendar date 'YYYY-MM-DD' (text: compares in date order, no time-zone parsing).
    .addColumn('nightly_date', 'text', (c) => c.notNull().check(sql`nightly_date ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}$'`))
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
  await db.schema.createIndex('snapshot_facility_time').on('snapshot').columns(['facility_id', 'created_at', 'id']).execute();

  // Staging of an open upload's manifest; removed when the upload commits or aborts.
  // Paths compare byte-wise ("C"), the order trees are built and walked in.
  await sql`
    create table upload_entry (
      upload_id text not null references upload (id) on delete cascade,
      path text collate "C" not null,
      size int8,
      mtime int8,
      sha256 bytea,
      deleted boolean not null default false,
      primary key (upload_id, path),
      check (deleted or (size is not null and mtime is not null and length(sha256) = 32))
    )`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  for (const t of ['upload_entry', 'snapshot', 'upload', 'tree', 'blob', 'pack', 'compression_dictionary', 'uploader_credential', 'facility']) {
    await db.schema.dropTable(t).ifExists().execute();
  }
}
