import { sql } from 'kysely';
import { isUniqueViolation, type Db } from '../db.js';

/** The SQL of retention, prune and drills. */

// --- what must be kept besides the retention policy ----------------------------------------

/** Snapshots something still needs, with the reason: a published index, an indexing run, a restore request. */
export async function pinnedSnapshots(db: Db): Promise<Map<string, string>> {
  const r = await sql<{ id: string; reason: string }>`
    select published_snapshot_id as id, 'the published record index of ' || facility_id as reason
      from record_index_state where published_snapshot_id is not null
    union all
    select snapshot_id, 'being indexed' from record_index_run where state = 'running'
    union all
    select snapshot_id, 'restore request ' || id || ' is ' || state from restore_request where state in ('queued', 'running', 'ready')`.execute(db);
  const out = new Map<string, string>();
  for (const row of r.rows) out.set(row.id, out.has(row.id) ? `${out.get(row.id)}; ${row.reason}` : row.reason);
  return out;
}

/**
 * Blobs that no snapshot names yet but that must stay: those staged by an upload still open
 * (the manifest came first; the client skips a blob the store already has), and the signed
 * consent forms kept as evidence.
 */
export async function blobsHeldOutsideSnapshots(db: Db): Promise<Buffer[]> {
  const r = await sql<{ sha256: Buffer }>`
    select distinct e.sha256 from upload_entry e join upload u on u.id = e.upload_id
      where u.state = 'open' and not e.deleted and e.sha256 is not null
    union
    select decode(evidence_sha256, 'hex') from consent_version where evidence_sha256 ~ '^[0-9a-f]{64}$'`.execute(db);
  return r.rows.map((x) => x.sha256);
}

/** Of these blobs, the ones an open upload has staged or consent evidence names (checked again at the index switch). */
export async function heldAmong(db: Db, hashes: Buffer[]): Promise<Buffer[]> {
  if (!hashes.length) return [];
  const r = await sql<{ sha256: Buffer }>`
    select distinct e.sha256 from upload_entry e join upload u on u.id = e.upload_id
      where u.state = 'open' and e.sha256 = any(${hashes}::bytea[])
    union
    select decode(evidence_sha256, 'hex') from consent_version
      where evidence_sha256 = any(${hashes.map((h) => h.toString('hex'))}::text[])`.execute(db);
  return r.rows.map((x) => x.sha256);
}

/**
 * Holds back the writes that could make a dropped blob needed again (staging a manifest,
 * committing a snapshot, recording consent evidence) until the index switch commits.
 */
export async function lockAgainstNewReferences(trx: Db): Promise<void> {
  await sql`lock table upload_entry, snapshot, consent_version in share mode`.execute(trx);
}

export async function deleteSnapshots(trx: Db, ids: string[]): Promise<number> {
  if (!ids.length) return 0;
  const r = await trx.deleteFrom('snapshot').where('id', 'in', ids).executeTakeFirst();
  return Number(r.numDeletedRows);
}

// --- packs and blobs for prune -------------------------------------------------------------

export interface PackInfo {
  id: number;
  objectName: string;
  size: number;
  blobCount: number;
  createdAt: Date;
}

export async function listPacksForPrune(db: Db): Promise<PackInfo[]> {
  const rows = await db.selectFrom('pack').select(['id', 'object_name', 'size', 'blob_count', 'created_at']).orderBy('id').execute();
  return rows.map((r) => ({ id: r.id, objectName: r.object_name, size: r.size, blobCount: r.blob_count, createdAt: r.created_at }));
}

export interface PackedBlob {
  sha256: Buffer;
  size: number;
  packId: number;
  offset: number;
  length: number;
  codec: number;
  dictionaryId: number | null;
}

export async function blobsOfPacks(db: Db, packIds: number[]): Promise<PackedBlob[]> {
  if (!packIds.length) return [];
  const rows = await db
    .selectFrom('blob')
    .select(['sha256', 'size', 'pack_id', 'offset', 'length', 'codec', 'dictionary_id'])
    .where('pack_id', 'in', packIds)
    .orderBy('pack_id')
    .orderBy('offset')
    .execute();
  return rows.map((r) => ({ sha256: r.sha256, size: r.size, packId: r.pack_id, offset: r.offset, length: r.length, codec: r.codec, dictionaryId: r.dictionary_id }));
}

/** Points blobs at their copy in a new pack. */
export async function moveBlobs(trx: Db, packId: number, moved: { sha256: Buffer; offset: number; length: number }[]): Promise<void> {
  if (!moved.length) return;
  await sql`
    update blob b set pack_id = ${packId}, "offset" = u.off, length = u.len
    from unnest(${moved.map((m) => m.sha256)}::bytea[], ${moved.map((m) => m.offset)}::int4[], ${moved.map((m) => m.length)}::int4[]) as u(sha256, off, len)
    where b.sha256 = u.sha256`.execute(trx);
}

/** Removes packs from the index with the blobs still in them; returns the blobs removed. */
export async function dropPacks(trx: Db, packIds: number[]): Promise<number> {
  if (!packIds.length) return 0;
  const r = await trx.deleteFrom('blob').where('pack_id', 'in', packIds).executeTakeFirst();
  await trx.deleteFrom('pack').where('id', 'in', packIds).execute();
  return Number(r.numDeletedRows);
}

export async function packIdByObject(db: Db, objectName: string): Promise<number | undefined> {
  return (await db.selectFrom('pack').select('id').where('object_name', '=', objectName).executeTakeFirst())?.id;
}

// --- prune's journal of objects ------------------------------------------------------------

export async function journalObjects(db: Db, names: string[], state: 'writing' | 'condemned'): Promise<void> {
  if (!names.length) return;
  await db
    .insertInto('prune_object')
    .values(names.map((object_name) => ({ object_name, state })))
    .onConflict((oc) => oc.column('object_name').doUpdateSet({ state }))
    .execute();
}

export async function clearJournal(db: Db, names: string[]): Promise<void> {
  if (!names.length) return;
  await db.deleteFrom('prune_object').where('object_name', 'in', names).execute();
}

export async function journal(db: Db): Promise<{ objectName: string; state: 'writing' | 'condemned' }[]> {
  const rows = await db.selectFrom('prune_object').select(['object_name', 'state']).orderBy('object_name').execute();
  return rows.map((r) => ({ objectName: r.object_name, state: r.state }));
}

// --- delete nonces -------------------------------------------------------------------------

/** Records a nonce; false when it was used before. */
export async function claimDeleteNonce(db: Db, n: { nonce: string; action: string; signedAt: Date }): Promise<boolean> {
  try {
    await db.insertInto('delete_nonce').values({ nonce: n.nonce, action: n.action, signed_at: n.signedAt }).execute();
    return true;
  } catch (e) {
    if (isUniqueViolation(e)) return false;
    throw e;
  }
}
