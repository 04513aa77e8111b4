import { sql, type Kysely } from 'kysely';

/**
 * The tree table's key, narrower, as the blob index's in 0013: the primary-key B-tree on a
 * random SHA-256 took 1.9 MB for 23k trees at 100k files (~83 bytes a tree); an exclusion
 * constraint over a hash index with fill factor 100 keeps the same uniqueness in ~33 bytes a
 * tree. A hash index cannot back a foreign key, so `snapshot.root_tree` no longer references
 * `tree`: a snapshot row is written after its trees (in the upload's commit) and trees are never
 * deleted; verify still reports a snapshot whose root tree is missing. Trees of up to ~8 KB now
 * stay in the table's own pages instead of TOAST (a stored tree is already deflated, so TOAST
 * only added its chunk rows and their index).
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`alter table snapshot drop constraint snapshot_root_tree_fkey`.execute(db);
  await sql`alter table tree drop constraint tree_pkey`.execute(db);
  await sql`alter table tree alter column hash set not null`.execute(db);
  await sql`alter table tree add constraint tree_hash exclude using hash (hash with =) with (fillfactor = 100)`.execute(db);
  await sql`alter table tree set (toast_tuple_target = 8160)`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`alter table tree reset (toast_tuple_target)`.execute(db);
  await sql`alter table tree drop constraint tree_hash`.execute(db);
  await sql`alter table tree add primary key (hash)`.execute(db);
  await sql`alter table snapshot add constraint snapshot_root_tree_fkey foreign key (root_tree) references tree (hash)`.execute(db);
}
