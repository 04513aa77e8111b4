import { sql } from 'kysely';
import type { Db } from '../db.js';
import type { FacilityTable } from './backup.tables.js';

/**
 * Every SQL statement of the backup store. Functions that must run inside a transaction take
 * it as their first argument (a Kysely transaction is a Db). Bulk writes go through unnest()
 * of arrays: one statement and a handful of parameters for thousands of rows.
 */

export type FacilityKind = FacilityTable['kind'];

export interface FacilityRow {
  id: string;
  name: string;
  kind: FacilityKind;
  createdAt: Date;
}

export interface UploadRow {
  id: string;
  facilityId: string;
  clientSession: string;
  baseSnapshotId: string | null;
  state: 'open' | 'committed' | 'aborted';
  entries: number;
  blobsStored: number;
  bytesStored: number;
  snapshotId: string | null;
  createdAt: Date;
  updatedAt: Date;
}

export interface SnapshotRow {
  id: string;
  facilityId: string;
  rootTree: Buffer;
  files: number;
  bytes: number;
  newBlobs: number;
  newBytes: number;
  uploadId: string;
  nightlyDate: string;
  createdAt: Date;
}

export interface StagedEntry {
  path: string;
  size: number | null;
  mtime: number | null;
  sha256: Buffer | null;
  deleted: boolean;
}

export interface BlobLocation {
  sha256: Buffer;
  size: number;
  packId: number;
  objectName: string;
  offset: number;
  length: number;
  codec: number;
  dictionaryId: number | null;
}

export interface NewBlob {
  sha256: Buffer;
  size: number;
  offset: number;
  length: number;
  codec: number;
  dictionaryId: number | null;
}

/**
 * Array parameters written as PostgreSQL array literals here, once, instead of by the driver.
 * PGlite's serializer turns a bytea into hex one byte at a time (a string per byte: for a
 * 10,000-entry manifest, 320,000 of them) and quotes and escapes every element of an int
 * array with two regular expressions; node-postgres accepts the same literal text. A hash
 * becomes `"\\x<hex>"` (Buffer.toString('hex') is native), a number its decimal text, null NULL.
 */
export function byteaArray(xs: readonly (Buffer | null)[]): string {
  let out = '{';
  for (let i = 0; i < xs.length; i++) {
    const x = xs[i];
    if (i > 0) out += ',';
    out += x === null || x === undefined ? 'NULL' : `"\\\\x${x.toString('hex')}"`;
  }
  return out + '}';
}

/** An array literal of integers (each a safe integer) or nulls; see byteaArray. */
export function intArray(xs: readonly (number | null)[]): string {
  let out = '{';
  for (let i = 0; i < xs.length; i++) {
    const x = xs[i];
    if (i > 0) out += ',';
    if (x === null || x === undefined) out += 'NULL';
    else if (Number.isSafeInteger(x)) out += String(x);
    else throw new Error(`not an integer: ${x}`);
  }
  return out + '}';
}

/** A boolean array literal; see byteaArray. */
export function boolArray(xs: readonly boolean[]): string {
  return `{${xs.map((x) => (x ? 't' : 'f')).join(',')}}`;
}

// --- facilities and credentials -----------------------------------------------------------

export async function insertFacility(db: Db, f: { id: string; name: string; kind: FacilityKind }): Promise<FacilityRow> {
  const row = await db.insertInto('facility').values(f).returningAll().executeTakeFirstOrThrow();
  return { id: row.id, name: row.name, kind: row.kind, createdAt: row.created_at };
}

export async function findFacility(db: Db, id: string): Promise<FacilityRow | undefined> {
  const row = await db.selectFrom('facility').selectAll().where('id', '=', id).executeTakeFirst();
  return row && { id: row.id, name: row.name, kind: row.kind, createdAt: row.created_at };
}

export async function listFacilities(db: Db) {
  const rows = await db
    .selectFrom('facility as f')
    .select([
      'f.id',
      'f.name',
      'f.kind',
      'f.created_at',
      sql<number>`(select count(*) from snapshot s where s.facility_id = f.id)::int8`.as('snapshots'),
      sql<Date | null>`(select max(s.created_at) from snapshot s where s.facility_id = f.id)`.as('last_snapshot_at'),
      sql<number>`(select count(*) from uploader_credential c where c.facility_id = f.id and c.revoked_at is null)::int8`.as('active_tokens'),
    ])
    .orderBy('f.id')
    .execute();
  return rows.map((r) => ({
    id: r.id,
    name: r.name,
    kind: r.kind,
    createdAt: r.created_at,
    snapshots: r.snapshots,
    lastSnapshotAt: r.last_snapshot_at,
    activeTokens: r.active_tokens,
  }));
}

export async function insertCredential(db: Db, facilityId: string, tokenHash: Buffer): Promise<void> {
  await db.insertInto('uploader_credential').values({ facility_id: facilityId, token_hash: tokenHash }).execute();
}

export async function findCredential(db: Db, tokenHash: Buffer) {
  return db
    .selectFrom('uploader_credential')
    .select(['facility_id', 'token_hash', 'revoked_at'])
    .where('token_hash', '=', tokenHash)
    .executeTakeFirst();
}

export async function revokeCredentials(db: Db, facilityId: string): Promise<number> {
  const r = await db
    .updateTable('uploader_credential')
    .set({ revoked_at: new Date() })
    .where('facility_id', '=', facilityId)
    .where('revoked_at', 'is', null)
    .executeTakeFirst();
  return Number(r.numUpdatedRows);
}

// --- uploads ------------------------------------------------------------------------------

const uploadColumns = [
  'id',
  'facility_id',
  'client_session',
  'base_snapshot_id',
  'state',
  'entries',
  'blobs_stored',
  'bytes_stored',
  'snapshot_id',
  'created_at',
  'updated_at',
] as const;

function toUpload(r: {
  id: string;
  facility_id: string;
  client_session: string;
  base_snapshot_id: string | null;
  state: UploadRow['state'];
  entries: number;
  blobs_stored: number;
  bytes_stored: number;
  snapshot_id: string | null;
  created_at: Date;
  updated_at: Date;
}): UploadRow {
  return {
    id: r.id,
    facilityId: r.facility_id,
    clientSession: r.client_session,
    baseSnapshotId: r.base_snapshot_id,
    state: r.state,
    entries: r.entries,
    blobsStored: r.blobs_stored,
    bytesStored: r.bytes_stored,
    snapshotId: r.snapshot_id,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  };
}

export async function findUpload(db: Db, id: string, opts: { forUpdate?: boolean } = {}): Promise<UploadRow | undefined> {
  let q = db.selectFrom('upload').select(uploadColumns).where('id', '=', id);
  if (opts.forUpdate) q = q.forUpdate();
  const r = await q.executeTakeFirst();
  return r && toUpload(r);
}

export async function findOpenUpload(db: Db, facilityId: string): Promise<UploadRow | undefined> {
  const r = await db
    .selectFrom('upload')
    .select(uploadColumns)
    .where('facility_id', '=', facilityId)
    .where('state', '=', 'open')
    .forUpdate()
    .executeTakeFirst();
  return r && toUpload(r);
}

/** The facility's latest upload opened under a client session, whatever its state. */
export async function findUploadBySession(db: Db, facilityId: string, clientSession: string): Promise<UploadRow | undefined> {
  const r = await db
    .selectFrom('upload')
    .select(uploadColumns)
    .where('facility_id', '=', facilityId)
    .where('client_session', '=', clientSession)
    .orderBy('created_at', 'desc')
    .limit(1)
    .executeTakeFirst();
  return r && toUpload(r);
}

export async function insertUpload(
  db: Db,
  u: { id: string; facilityId: string; clientSession: string; baseSnapshotId: string | null },
): Promise<UploadRow> {
  const r = await db
    .insertInto('upload')
    .values({
      id: u.id,
      facility_id: u.facilityId,
      client_session: u.clientSession,
      base_snapshot_id: u.baseSnapshotId,
      state: 'open',
    })
    .returning(uploadColumns)
    .executeTakeFirstOrThrow();
  return toUpload(r);
}

export async function finishUpload(
  db: Db,
  id: string,
  state: 'committed' | 'aborted',
  snapshotId: string | null,
): Promise<void> {
  await db
    .updateTable('upload')
    .set({ state, snapshot_id: snapshotId, finished_at: new Date(), updated_at: new Date() })
    .where('id', '=', id)
    .execute();
}

export async function deleteStagedEntries(db: Db, uploadId: string): Promise<void> {
  await db.deleteFrom('upload_entry').where('upload_id', '=', uploadId).execute();
}

/**
 * Reclaims the staging rows of finished uploads for reuse. PGlite runs no autovacuum, so
 * without this the staging table would grow by a whole manifest every night; on PostgreSQL it
 * only does early what autovacuum would do. Must run outside a transaction.
 */
export async function vacuumStaging(db: Db): Promise<void> {
  if (await truncateEmptyStaging(db)) return;
  await sql`vacuum upload_entry`.execute(db);
}

/**
 * When no upload has anything staged, gives the staging table's space (heap and index, a
 * manifest's worth: ~18 MB at 100k files) back to the file system: vacuum only makes it
 * reusable, and a B-tree index never shrinks. Holds the table's lock for the check and the
 * truncate, so no staging row can arrive in between; gives up at once when the table is busy.
 */
async function truncateEmptyStaging(db: Db): Promise<boolean> {
  try {
    return await db.transaction().execute(async (trx) => {
      await sql`lock table upload_entry in access exclusive mode nowait`.execute(trx);
      const busy = await sql<{ busy: boolean }>`select exists (select 1 from upload_entry) as busy`.execute(trx);
      if (busy.rows[0]!.busy) return false;
      await sql`truncate upload_entry`.execute(trx);
      return true;
    });
  } catch (e) {
    if ((e as { code?: string }).code === '55P03') return false; // lock not available
    throw e;
  }
}

/**
 * Stages a manifest batch. Paths already staged are left alone and returned, so that the caller
 * can tell a retried batch (same values) from a second, different entry for one path.
 */
export async function stageEntries(db: Db, uploadId: string, entries: StagedEntry[]): Promise<{ inserted: number; clashes: StagedEntry[] }> {
  if (entries.length === 0) return { inserted: 0, clashes: [] };
  const inserted = await sql<{ path: string }>`
    insert into upload_entry (upload_id, path, size, mtime, sha256, deleted)
    select ${uploadId}, u.path, u.size, u.mtime, u.sha256, u.deleted
    from unnest(${entries.map((e) => e.path)}::text[], ${intArray(entries.map((e) => e.size))}::int8[],
                ${intArray(entries.map((e) => e.mtime))}::int8[], ${byteaArray(entries.map((e) => e.sha256))}::bytea[],
                ${boolArray(entries.map((e) => e.deleted))}::boolean[]) as u(path, size, mtime, sha256, deleted)
    on conflict (upload_id, path) do nothing
    returning path`.execute(db);
  const count = inserted.rows.length;
  if (count === entries.length) return { inserted: count, clashes: [] };
  const fresh = new Set(inserted.rows.map((r) => r.path));
  const others = entries.filter((e) => !fresh.has(e.path)).map((e) => e.path);
  const rows = await db
    .selectFrom('upload_entry')
    .select(['path', 'size', 'mtime', 'sha256', 'deleted'])
    .where('upload_id', '=', uploadId)
    .where(sql<boolean>`path = any(${others}::text[])`)
    .execute();
  return { inserted: count, clashes: rows };
}

export async function touchUpload(db: Db, id: string, add: { entries?: number; blobs?: number; bytes?: number }): Promise<void> {
  await db
    .updateTable('upload')
    .set((eb) => ({
      entries: eb('entries', '+', add.entries ?? 0),
      blobs_stored: eb('blobs_stored', '+', add.blobs ?? 0),
      bytes_stored: eb('bytes_stored', '+', add.bytes ?? 0),
      updated_at: new Date(),
    }))
    .where('id', '=', id)
    .execute();
}

/** Of these hashes, the ones the blob index holds. */
export async function presentBlobs(db: Db, hashes: Buffer[]): Promise<Buffer[]> {
  if (hashes.length === 0) return [];
  const r = await sql<{ sha256: Buffer }>`select sha256 from blob where sha256 = any(${byteaArray(hashes)}::bytea[])`.execute(db);
  return r.rows.map((x) => x.sha256);
}

/** The staged entries whose blob the store does not hold: a count and the first few. */
export async function missingBlobsOfUpload(db: Db, uploadId: string, limit: number): Promise<{ count: number; first: Buffer[] }> {
  const first = await sql<{ sha256: Buffer }>`
    select distinct e.sha256 from upload_entry e
    where e.upload_id = ${uploadId} and not e.deleted
      and not exists (select 1 from blob b where b.sha256 = e.sha256)
    limit ${limit}`.execute(db);
  if (first.rows.length === 0) return { count: 0, first: [] };
  const count = await sql<{ n: number }>`
    select count(distinct e.sha256)::int8 as n from upload_entry e
    where e.upload_id = ${uploadId} and not e.deleted
      and not exists (select 1 from blob b where b.sha256 = e.sha256)`.execute(db);
  return { count: count.rows[0]!.n, first: first.rows.map((r) => r.sha256) };
}

/** A page of staged entries in byte order of path (keyset pagination: PGlite has no cursors). */
export async function pageStagedEntries(db: Db, uploadId: string, afterPath: string | undefined, limit: number): Promise<StagedEntry[]> {
  let q = db
    .selectFrom('upload_entry')
    .select(['path', 'size', 'mtime', 'sha256', 'deleted'])
    .where('upload_id', '=', uploadId);
  if (afterPath !== undefined) q = q.where('path', '>', afterPath);
  return q.orderBy('path').limit(limit).execute();
}

// --- packs, blobs, dictionaries -----------------------------------------------------------

/**
 * Records a pack, or finds the row of the same pack (same bytes, so same hash and object name)
 * that another upload recorded: two uploads sending the same new blobs at once write identical
 * packs. The conflict clause has no target so that both unique keys (hash and object name) are
 * arbiters: with `on conflict (hash)` alone, the insert that loses the race can collide on the
 * object name instead, which is an error rather than a conflict handled.
 */
export async function insertPack(db: Db, p: { hash: string; objectName: string; size: number; blobCount: number }): Promise<number> {
  const r = await db
    .insertInto('pack')
    .values({ hash: p.hash, object_name: p.objectName, size: p.size, blob_count: p.blobCount })
    .onConflict((oc) => oc.doNothing())
    .returning('id')
    .executeTakeFirst();
  if (r) return r.id;
  const existing = await db.selectFrom('pack').select(['id', 'object_name']).where('hash', '=', p.hash).executeTakeFirst();
  if (!existing || existing.object_name !== p.objectName) throw new Error(`pack ${p.hash} conflicts with a recorded pack of another name`);
  return existing.id;
}

/** Claims blobs: a hash already indexed (by another upload, at the same time) keeps its row. */
export async function insertBlobs(db: Db, packId: number, blobs: NewBlob[]): Promise<Buffer[]> {
  if (blobs.length === 0) return [];
  const r = await sql<{ sha256: Buffer }>`
    insert into blob (sha256, size, pack_id, "offset", length, codec, dictionary_id)
    select u.sha256, u.size, ${packId}, u.off, u.len, u.codec, u.dict
    from unnest(${byteaArray(blobs.map((b) => b.sha256))}::bytea[], ${intArray(blobs.map((b) => b.size))}::int4[],
                ${intArray(blobs.map((b) => b.offset))}::int4[], ${intArray(blobs.map((b) => b.length))}::int4[],
                ${intArray(blobs.map((b) => b.codec))}::int2[], ${intArray(blobs.map((b) => b.dictionaryId))}::int4[])
         as u(sha256, size, off, len, codec, dict)
    on conflict on constraint blob_sha256 do nothing
    returning sha256`.execute(db);
  return r.rows.map((x) => x.sha256);
}

type BlobLocationRow = {
  sha256: Buffer;
  size: number;
  pack_id: number;
  object_name: string;
  offset: number;
  length: number;
  codec: number;
  dictionary_id: number | null;
};

const toBlobLocation = (x: BlobLocationRow): BlobLocation => ({
  sha256: x.sha256,
  size: x.size,
  packId: x.pack_id,
  objectName: x.object_name,
  offset: x.offset,
  length: x.length,
  codec: x.codec,
  dictionaryId: x.dictionary_id,
});

export async function blobLocations(db: Db, hashes: Buffer[]): Promise<BlobLocation[]> {
  if (hashes.length === 0) return [];
  const r = await sql<BlobLocationRow>`
    select b.sha256, b.size, b.pack_id, p.object_name, b."offset", b.length, b.codec, b.dictionary_id
    from blob b join pack p on p.id = b.pack_id
    where b.sha256 = any(${byteaArray(hashes)}::bytea[])`.execute(db);
  return r.rows.map(toBlobLocation);
}

/** A run of consecutive pack ids, `from` to `to` inclusive. */
export interface PackRange {
  from: number;
  to: number;
}

/**
 * The packs after `afterPackId` holding about `limit` blobs (whole packs, at least one), or
 * undefined after the last pack. Readers that walk the whole blob index (verify, replication)
 * go pack range by pack range: the hash index on blobs has no order to page in, and the BRIN
 * index on `pack_id` finds a range's rows without reading the others.
 */
export async function nextPackRange(db: Db, afterPackId: number, limit: number): Promise<PackRange | undefined> {
  const r = await sql<{ first: number | null; last: number | null }>`
    select min(id) as first, max(id) filter (where upto <= ${limit}) as last
    from (select id, sum(blob_count) over (order by id) as upto
          from (select id, blob_count from pack where id > ${afterPackId} order by id limit ${limit}) p) w`.execute(db);
  const { first, last } = r.rows[0]!;
  return first === null ? undefined : { from: first, to: last ?? first };
}

/** The blobs of a pack range, in pack and offset order, with each blob's pack. */
export async function blobLocationsInPacks(db: Db, range: PackRange): Promise<BlobLocation[]> {
  const r = await sql<BlobLocationRow>`
    select b.sha256, b.size, b.pack_id, p.object_name, b."offset", b.length, b.codec, b.dictionary_id
    from blob b join pack p on p.id = b.pack_id
    where b.pack_id between ${range.from} and ${range.to}
    order by b.pack_id, b."offset"`.execute(db);
  return r.rows.map(toBlobLocation);
}

export async function listPacks(db: Db) {
  return db.selectFrom('pack').select(['id', 'hash', 'object_name', 'size', 'blob_count']).orderBy('id').execute();
}

export async function storeStats(db: Db) {
  const r = await sql<{ blobs: number; raw_bytes: number; stored_bytes: number; packs: number; pack_bytes: number; trees: number; tree_bytes: number }>`
    select (select count(*) from blob)::int8 as blobs,
           (select coalesce(sum(size), 0) from blob)::int8 as raw_bytes,
           (select coalesce(sum(length), 0) from blob)::int8 as stored_bytes,
           (select count(*) from pack)::int8 as packs,
           (select coalesce(sum(size), 0) from pack)::int8 as pack_bytes,
           (select count(*) from tree)::int8 as trees,
           (select coalesce(sum(length(content)), 0) from tree)::int8 as tree_bytes`.execute(db);
  return r.rows[0]!;
}

export async function latestDictionary(db: Db) {
  return db.selectFrom('compression_dictionary').select(['id', 'hash', 'content']).orderBy('id', 'desc').limit(1).executeTakeFirst();
}

export async function dictionaryById(db: Db, id: number) {
  return db.selectFrom('compression_dictionary').select(['id', 'hash', 'content']).where('id', '=', id).executeTakeFirst();
}

export async function insertDictionary(db: Db, d: { hash: string; content: Buffer; sampleBlobs: number }) {
  await db
    .insertInto('compression_dictionary')
    .values({ hash: d.hash, content: d.content, sample_blobs: d.sampleBlobs })
    .onConflict((oc) => oc.column('hash').doNothing())
    .execute();
  return db.selectFrom('compression_dictionary').select(['id', 'hash', 'content']).where('hash', '=', d.hash).executeTakeFirstOrThrow();
}

/** A random sample of small blobs, for training a dictionary. */
export async function sampleSmallBlobs(db: Db, n: number, maxSize: number): Promise<Buffer[]> {
  const r = await sql<{ sha256: Buffer }>`
    select sha256 from blob where size between 64 and ${maxSize} order by random() limit ${n}`.execute(db);
  return r.rows.map((x) => x.sha256);
}

// --- trees --------------------------------------------------------------------------------

export async function insertTrees(db: Db, trees: { hash: Buffer; content: Buffer }[]): Promise<void> {
  if (trees.length === 0) return;
  // The same folder can occur twice in one batch (identical subtrees): insert each hash once.
  const seen = new Set<string>();
  const unique = trees.filter((t) => {
    const k = t.hash.toString('hex');
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
  await sql`
    insert into tree (hash, content)
    select * from unnest(${byteaArray(unique.map((t) => t.hash))}::bytea[], ${byteaArray(unique.map((t) => t.content))}::bytea[])
    on conflict on constraint tree_hash do nothing`.execute(db);
}

export async function loadTrees(db: Db, hashes: Buffer[]): Promise<{ hash: Buffer; content: Buffer }[]> {
  if (hashes.length === 0) return [];
  const r = await sql<{ hash: Buffer; content: Buffer }>`select hash, content from tree where hash = any(${byteaArray(hashes)}::bytea[])`.execute(db);
  return r.rows;
}

// --- snapshots ----------------------------------------------------------------------------

const snapshotColumns = [
  'id',
  'facility_id',
  'root_tree',
  'files',
  'bytes',
  'new_blobs',
  'new_bytes',
  'upload_id',
  'nightly_date',
  'created_at',
] as const;

function toSnapshot(r: {
  id: string;
  facility_id: string;
  root_tree: Buffer;
  files: number;
  bytes: number;
  new_blobs: number;
  new_bytes: number;
  upload_id: string;
  nightly_date: string;
  created_at: Date;
}): SnapshotRow {
  return {
    id: r.id,
    facilityId: r.facility_id,
    rootTree: r.root_tree,
    files: r.files,
    bytes: r.bytes,
    newBlobs: r.new_blobs,
    newBytes: r.new_bytes,
    uploadId: r.upload_id,
    nightlyDate: r.nightly_date,
    createdAt: r.created_at,
  };
}

export async function insertSnapshot(db: Db, s: Omit<SnapshotRow, 'createdAt'>): Promise<SnapshotRow> {
  const r = await db
    .insertInto('snapshot')
    .values({
      id: s.id,
      facility_id: s.facilityId,
      root_tree: s.rootTree,
      files: s.files,
      bytes: s.bytes,
      new_blobs: s.newBlobs,
      new_bytes: s.newBytes,
      upload_id: s.uploadId,
      nightly_date: s.nightlyDate,
    })
    .returning(snapshotColumns)
    .executeTakeFirstOrThrow();
  return toSnapshot(r);
}

export async function findSnapshot(db: Db, id: string): Promise<SnapshotRow | undefined> {
  const r = await db.selectFrom('snapshot').select(snapshotColumns).where('id', '=', id).executeTakeFirst();
  return r && toSnapshot(r);
}

export async function latestSnapshot(db: Db, facilityId: string): Promise<SnapshotRow | undefined> {
  const r = await db
    .selectFrom('snapshot')
    .select(snapshotColumns)
    .where('facility_id', '=', facilityId)
    .orderBy('created_at', 'desc')
    .orderBy('id', 'desc')
    .limit(1)
    .executeTakeFirst();
  return r && toSnapshot(r);
}

/** The facility's last snapshot of a night on or before `date` (Asia/Tokyo calendar date). */
export async function snapshotAt(db: Db, facilityId: string, date: string): Promise<SnapshotRow | undefined> {
  const r = await db
    .selectFrom('snapshot')
    .select(snapshotColumns)
    .where('facility_id', '=', facilityId)
    .where('nightly_date', '<=', date)
    .orderBy('nightly_date', 'desc')
    .orderBy('created_at', 'desc')
    .orderBy('id', 'desc')
    .limit(1)
    .executeTakeFirst();
  return r && toSnapshot(r);
}

/** The snapshot of the same facility just before this one. */
export async function previousSnapshot(db: Db, s: SnapshotRow): Promise<SnapshotRow | undefined> {
  const r = await db
    .selectFrom('snapshot')
    .select(snapshotColumns)
    .where('facility_id', '=', s.facilityId)
    .where((eb) => eb.or([eb('created_at', '<', s.createdAt), eb.and([eb('created_at', '=', s.createdAt), eb('id', '<', s.id)])]))
    .orderBy('created_at', 'desc')
    .orderBy('id', 'desc')
    .limit(1)
    .executeTakeFirst();
  return r && toSnapshot(r);
}

export async function listSnapshots(db: Db, facilityId?: string): Promise<SnapshotRow[]> {
  let q = db.selectFrom('snapshot').select(snapshotColumns);
  if (facilityId !== undefined) q = q.where('facility_id', '=', facilityId);
  const rows = await q.orderBy('facility_id').orderBy('created_at').orderBy('id').execute();
  return rows.map(toSnapshot);
}
