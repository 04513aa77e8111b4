import { sql, type Kysely } from 'kysely';

/**
 * The blob index, narrower. One row per distinct blob, so its bytes per row are most of the
 * store's database at scale; at 100k blobs the table took 17.9 MB, ~175 bytes a blob, of which
 * the primary-key B-tree on a random SHA-256 was 8.3 MB (48-byte entries in leaves ~70% full
 * after random inserts). Now:
 * - uniqueness and lookups by hash come from an exclusion constraint over a hash index (hash
 *   indexes cannot be UNIQUE, an exclusion constraint with `=` is the same guarantee): it keeps
 *   a 4-byte hash code per row, not the 32-byte key, and with fill factor 100 takes ~30 bytes a
 *   blob instead of ~80. Inserts claim a hash with `on conflict on constraint blob_sha256 do
 *   nothing`, as they did with the primary key.
 * - `codec` (smallint) sits right after the 33-byte hash, in the two bytes that aligning the
 *   next integer wasted: 8 bytes less per row (88 -> 80 byte tuples).
 * - a BRIN index on `pack_id` (a few pages: rows are written pack by pack) serves the readers
 *   that walk the index pack by pack (verify, replication, prune), which no longer page in hash
 *   order since a hash index has none.
 * Rewrites the table once (rows copied in pack order).
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    create table blob_narrow (
      sha256 bytea not null check (length(sha256) = 32),
      codec smallint not null check (codec in (0, 1)),
      dictionary_id integer references compression_dictionary (id),
      size integer not null check (size >= 0),
      pack_id integer not null references pack (id),
      "offset" integer not null,
      length integer not null
    )`.execute(db);
  await sql`
    insert into blob_narrow (sha256, codec, dictionary_id, size, pack_id, "offset", length)
    select sha256, codec, dictionary_id, size, pack_id, "offset", length from blob order by pack_id, "offset"`.execute(db);
  await sql`drop table blob`.execute(db);
  await sql`alter table blob_narrow rename to blob`.execute(db);
  await sql`alter table blob add constraint blob_sha256 exclude using hash (sha256 with =) with (fillfactor = 100)`.execute(db);
  await sql`create index blob_pack on blob using brin (pack_id)`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`
    create table blob_wide (
      sha256 bytea primary key check (length(sha256) = 32),
      size integer not null check (size >= 0),
      pack_id integer not null references pack (id),
      "offset" integer not null,
      length integer not null,
      codec smallint not null check (codec in (0, 1)),
      dictionary_id integer references compression_dictionary (id)
    )`.execute(db);
  await sql`
    insert into blob_wide (sha256, size, pack_id, "offset", length, codec, dictionary_id)
    select sha256, size, pack_id, "offset", length, codec, dictionary_id from blob`.execute(db);
  await sql`drop table blob`.execute(db);
  await sql`alter table blob_wide rename to blob`.execute(db);
}
