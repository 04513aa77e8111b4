import { createHash } from 'node:crypto';
import path from 'node:path';
import { Migrator, sql } from 'kysely';
import { afterAll, describe, expect, it } from 'vitest';
import { openDatabase, type DatabaseHandle } from '../store/db.js';
import { migrateToLatest } from '../store/migrate.js';
import { migrations } from '../store/migrations/index.js';
import { blobLocations, blobLocationsInPacks, insertBlobs, insertPack, insertTrees, loadTrees, nextPackRange, presentBlobs } from '../store/backup/backup.repository.js';
import { pageRows, REPLICATED_TABLES } from '../store/dr/replica.repository.js';
import { createTestDatabase, type TestDatabase } from './support/postgres.js';
import { tempDir } from './support/tmp.js';
import { createExchange } from '../viewer-api/exchange.js';
import { readConfig } from '../viewer-api/config.js';
import { verifyStore } from '../store/backup/verify.js';
import { randomFiles, uploadTree } from './retention.support.js';

const work = tempDir('hk-blob-index-');
const opened: { handle: DatabaseHandle; pg?: TestDatabase }[] = [];
afterAll(async () => {
  for (const o of opened) {
    await o.handle.close();
    await o.pg?.drop();
  }
  work.remove();
});

const h = (s: string) => createHash('sha256').update(s).digest();

/** A database migrated up to (and including) `last`. */
async function databaseAt(kind: 'postgres' | 'embedded', last: string) {
  const pg = kind === 'postgres' ? await createTestDatabase('hkblob') : undefined;
  const handle = await openDatabase({ dataDir: path.join(work.dir, `db-${opened.length}`), databaseUrl: pg?.url });
  opened.push({ handle, pg });
  const upTo = Object.fromEntries(Object.entries(migrations).filter(([name]) => name <= last));
  const r = await new Migrator({
    db: handle.db,
    provider: { getMigrations: async () => upTo },
    migrationTableName: 'hakobune_migration',
    migrationLockTableName: 'hakobune_migration_lock',
    allowUnorderedMigrations: true,
  }).migrateToLatest();
  if (r.error) throw r.error;
  return handle.db;
}

describe.each(['postgres', 'embedded'] as const)('the blob and tree indexes (%s)', (kind) => {
  it('migration 0013 keeps every row of an existing store; the hash stays unique; readers walk it pack by pack', async () => {
    const db = await databaseAt(kind, '0012_record_content_json');
    await sql`insert into compression_dictionary (hash, content, sample_blobs) values ('d1', '\\x00'::bytea, 1)`.execute(db);
    for (const n of [1, 2, 3]) {
      await sql`insert into pack (hash, object_name, size, blob_count) values (${`p${n}`}, ${`data/p${n}`}, 1000, 2)`.execute(db);
    }
    // Pack 2's blobs were all claimed by another upload: a pack with no indexed blob.
    await sql`
      insert into blob (sha256, size, pack_id, "offset", length, codec, dictionary_id) values
        (${h('a')}, 10, 1, 0, 10, 0, null), (${h('b')}, 300, 1, 10, 90, 1, 1),
        (${h('c')}, 20, 3, 0, 20, 0, null), (${h('d')}, 400, 3, 20, 80, 1, 1)`.execute(db);

    await migrateToLatest(db);

    const locs = await blobLocations(db, [h('b'), h('c'), h('x')]);
    expect(locs.map((l) => [l.sha256.toString('hex'), l.size, l.packId, l.objectName, l.offset, l.length, l.codec, l.dictionaryId]).sort()).toEqual(
      [
        [h('b').toString('hex'), 300, 1, 'data/p1', 10, 90, 1, 1],
        [h('c').toString('hex'), 20, 3, 'data/p3', 0, 20, 0, null],
      ].sort(),
    );
    expect((await presentBlobs(db, [h('a'), h('x'), h('d')])).map((b) => b.toString('hex')).sort()).toEqual([h('a'), h('d')].map((b) => b.toString('hex')).sort());

    // A second row for a hash is refused by the database, and a claim of it is a no-op.
    await expect(sql`insert into blob (sha256, size, pack_id, "offset", length, codec) values (${h('a')}, 1, 3, 100, 1, 0)`.execute(db)).rejects.toMatchObject({
      code: '23P01',
    });
    const packId = await insertPack(db, { hash: 'p4', objectName: 'data/p4', size: 100, blobCount: 2 });
    const claimed = await insertBlobs(db, packId, [
      { sha256: h('a'), size: 1, offset: 0, length: 1, codec: 0, dictionaryId: null },
      { sha256: h('e'), size: 5, offset: 1, length: 5, codec: 0, dictionaryId: null },
    ]);
    expect(claimed.map((b) => b.toString('hex'))).toEqual([h('e').toString('hex')]);
    expect((await blobLocations(db, [h('a')]))[0]!.packId).toBe(1);

    // Pack ranges of about `limit` blobs, whole packs, at least one pack each.
    expect(await nextPackRange(db, 0, 4)).toEqual({ from: 1, to: 2 });
    expect(await nextPackRange(db, 0, 1)).toEqual({ from: 1, to: 1 });
    expect(await nextPackRange(db, 2, 100)).toEqual({ from: 3, to: 4 });
    expect(await nextPackRange(db, 4, 100)).toBeUndefined();
    const walked: string[] = [];
    for (let r = await nextPackRange(db, 0, 2); r; r = await nextPackRange(db, r.to, 2)) {
      walked.push(...(await blobLocationsInPacks(db, r)).map((l) => `${l.packId}@${l.offset}`));
    }
    expect(walked).toEqual(['1@0', '1@10', '3@0', '3@20', '4@1']);

    // Replication exports every blob once, across the pack with none.
    const blobTable = REPLICATED_TABLES.find((t) => t.table === 'blob')!;
    const exported: unknown[] = [];
    let after: unknown;
    for (;;) {
      const page = await pageRows(db, blobTable, after, 2);
      if (!page.rows.length) break;
      after = page.last;
      exported.push(...page.rows.map((r) => r.sha256));
    }
    expect(exported.sort()).toEqual(['a', 'b', 'c', 'd', 'e'].map((s) => h(s).toString('base64')).sort());
  }, 300_000);

  it('migration 0014 keeps trees unique by hash; replication walks them block range by block range', async () => {
    const db = await databaseAt(kind, '0013_blob_index_hash');
    const trees = Array.from({ length: 300 }, (_, i) => ({ hash: h(`t${i}`), content: Buffer.alloc(200 + (i % 50), i) }));
    for (const t of trees.slice(0, 100)) await sql`insert into tree (hash, content) values (${t.hash}, ${t.content})`.execute(db);
    await migrateToLatest(db);
    await insertTrees(db, trees.slice(50)); // 50 already stored: kept as they are
    await expect(sql`insert into tree (hash, content) values (${h('t1')}, '\\x00'::bytea)`.execute(db)).rejects.toMatchObject({ code: '23P01' });
    const loaded = await loadTrees(db, [h('t0'), h('t299'), h('nope')]);
    expect(loaded.map((t) => t.content.length).sort()).toEqual([200, 249]);

    const treeTable = REPLICATED_TABLES.find((t) => t.table === 'tree')!;
    const exported: string[] = [];
    let after: unknown;
    let pages = 0;
    for (;;) {
      const page = await pageRows(db, treeTable, after, 64); // one heap block a page
      if (!page.rows.length) break;
      after = page.last;
      pages++;
      exported.push(...page.rows.map((r) => String(r.hash)));
    }
    expect(pages).toBeGreaterThan(1);
    expect(exported.sort()).toEqual(trees.map((t) => t.hash.toString('base64')).sort());
  }, 300_000);
});

describe('a snapshot whose root tree is gone', () => {
  it('is reported by verify (no foreign key keeps it since migration 0014)', async () => {
    const pg = await createTestDatabase('hkblobv');
    const ex = await createExchange(readConfig({ DATABASE_URL: pg.url, HAKOBUNE_DATA_DIR: path.join(work.dir, 'verify'), LOG_LEVEL: 'silent' }));
    try {
      await ex.backup.addFacility({ id: 'F1', name: 'Kesennuma Clinic', kind: 'clinic' });
      const snapshotId = await uploadTree(ex.backup, 'F1', randomFiles('v', 3, 2000));
      expect((await verifyStore(ex.backup)).ok).toBe(true);
      await sql`delete from tree where hash = (select root_tree from snapshot where id = ${snapshotId})`.execute(ex.db);
      const report = await verifyStore(ex.backup);
      expect(report.ok).toBe(false);
      expect(report.damagedSnapshots).toEqual([expect.objectContaining({ snapshotId, facilityId: 'F1' })]);
    } finally {
      await ex.stop();
      await pg.drop();
    }
  }, 300_000);
});
