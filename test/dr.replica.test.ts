import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createExchange, type Exchange } from '../viewer-api/exchange.js';
import { testConfig } from '../viewer-api/config.js';
import { openDatabase, type DatabaseHandle } from '../store/db.js';
import { migrateToLatest } from '../store/migrate.js';
import type { PackStore } from '../store/backup/pack-store.js';
import type { BackupService } from '../store/backup/backup.service.js';
import { EncryptedPackStore } from '../store/dr/encrypted-pack-store.js';
import { ConfiguredKeyProvider } from '../store/dr/key-provider.js';
import { listGenerations, replicate, restoreFromReplica } from '../store/dr/replication.js';
import { s3Store, startS3Server, type S3Server } from './dr.support.js';
import { createTestDatabase, type TestDatabase } from './support/postgres.js';
import { SAMPLES_ROOT, tempDir } from './support/tmp.js';

interface TreeFile {
  path: string;
  data: Buffer;
  mtime: number;
}

function readTree(root: string, prefix = ''): TreeFile[] {
  const out: TreeFile[] = [];
  const walk = (dir: string, rel: string) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const abs = path.join(dir, e.name);
      if (e.isDirectory()) walk(abs, `${rel}${e.name}/`);
      else if (e.isFile()) out.push({ path: rel + e.name, data: fs.readFileSync(abs), mtime: Math.floor(fs.statSync(abs).mtimeMs) });
    }
  };
  walk(root, prefix);
  return out;
}

/** Backs a tree up through the upload protocol's service calls (manifest, missing blobs, commit). */
async function upload(backup: BackupService, facilityId: string, files: TreeFile[]): Promise<string> {
  const open = await backup.openUpload(facilityId, { facilityId, clientSession: randomBytes(8).toString('hex') });
  const uploadId = String(open.body.uploadId);
  const byHash = new Map<string, Buffer>();
  const entries = files.map((f) => {
    const sha256 = createHash('sha256').update(f.data).digest('hex');
    byHash.set(sha256, f.data);
    return { path: f.path, size: f.data.length, mtime: f.mtime, sha256 };
  });
  const { missing } = await backup.addManifest(facilityId, uploadId, entries);
  const frames: Buffer[] = [];
  for (const h of missing) {
    const head = Buffer.alloc(36);
    Buffer.from(h, 'hex').copy(head);
    head.writeUInt32BE(byHash.get(h)!.length, 32);
    frames.push(head, byHash.get(h)!);
  }
  if (frames.length) await backup.addBlobs(facilityId, uploadId, Buffer.concat(frames));
  return (await backup.commit(facilityId, uploadId, entries.length)).snapshotId;
}

const masterKeys = [{ id: 'site-key-1', key: randomBytes(32) }];
const keys = new ConfiguredKeyProvider(masterKeys);
const work = tempDir('hakobune-replica-');
let pg: TestDatabase;
let s3: S3Server;
let exchange: Exchange | undefined;
const scratch: { handle: DatabaseHandle; pg?: TestDatabase }[] = [];
let snapshot1: string;
let night1: TreeFile[];
let night2: TreeFile[];

beforeAll(async () => {
  pg = await createTestDatabase('hkrep');
  s3 = await startS3Server(path.join(work.dir, 'second-site'));
  night1 = readTree(SAMPLES_ROOT, 'standard/');
  // The next night: one message replaced by its update (_1 -> _2) and a new one.
  const changed = night1.findIndex((f) => f.path.endsWith('_1'));
  night2 = night1.map((f, i) => (i === changed ? { ...f, path: f.path.replace(/_1$/, '_2'), data: Buffer.concat([f.data, Buffer.from('\r')]) } : f));
  night2.push({ path: 'standard/999/999/9999999999/20260101/OMP-01/9999999999_20260101120000000_OMP-01_20260101120000000_TEST_1', data: randomBytes(3000), mtime: 1_767_225_600_000 });

  exchange = await createExchange(testConfig(path.join(work.dir, 'first-site'), { databaseUrl: pg.url, masterKeys }));
  await exchange.backup.addFacility({ id: 'F-MIYAGI-01', name: 'Miyagi Coast Hospital', kind: 'hospital' });
  snapshot1 = await upload(exchange.backup, 'F-MIYAGI-01', night1);
  await upload(exchange.backup, 'F-MIYAGI-01', night2);
});
afterAll(async () => {
  await exchange?.stop();
  for (const d of scratch) {
    await d.handle.close();
    await d.pg?.drop();
  }
  await pg?.drop();
  await s3?.stop();
  work.remove();
});

/** The second site's own database, empty: PostgreSQL, or the embedded PGlite. */
async function scratchDb(kind: 'postgres' | 'embedded' = 'postgres') {
  const pgdb = kind === 'postgres' ? await createTestDatabase('hkrep') : undefined;
  const handle = await openDatabase({ dataDir: path.join(work.dir, `scratch-${scratch.length}`), databaseUrl: pgdb?.url });
  scratch.push({ handle, pg: pgdb });
  await migrateToLatest(handle.db);
  return handle.db;
}

function rawStore(p: PackStore): PackStore {
  return p instanceof EncryptedPackStore ? p.inner : p;
}

describe('replication to a second site', () => {
  let second: PackStore;

  it('copies every pack (as ciphertext) and a metadata generation; a rerun copies no pack again', async () => {
    second = s3Store(s3, { prefix: 'tohoku-2' });
    const ex = exchange!;
    expect(ex.backup.packs).toBeInstanceOf(EncryptedPackStore);
    // Without the master keys the metadata would leave in clear: refused before anything is written.
    await expect(replicate(ex.db, rawStore(ex.backup.packs), second)).rejects.toThrow(/the packs are encrypted but no master keys were given/);
    expect(await listGenerations(second)).toEqual([]);
    let written = 0;
    for await (const _ of second.list('')) written += 1;
    expect(written).toBe(0);

    const first = await replicate(ex.db, rawStore(ex.backup.packs), second, { keys });
    expect(first.packs).toBeGreaterThan(0);
    expect(first.packsCopied).toBe(first.packs);
    expect(first.damagedAtReplica).toEqual([]);
    expect(first.missingAtSource).toEqual([]);
    // What the second site holds is ciphertext: no SS-MIX2 segment header appears in it.
    for await (const o of second.list('data')) expect((await second.get(o.name)).includes(Buffer.from('MSH|'))).toBe(false);

    // The metadata (trees name patients' folders) is encrypted too; only the manifest is clear.
    for await (const o of second.list('meta')) {
      if (o.name.endsWith('/manifest.json')) continue;
      expect(o.name).toMatch(/\.jsonl\.gz\.enc$/);
      expect((await second.get(o.name)).subarray(0, 4).toString()).toBe('HKBE');
    }

    const again = await replicate(ex.db, rawStore(ex.backup.packs), second, { keys });
    expect(again.packsCopied).toBe(0);
    expect(again.packsAlreadyThere).toBe(first.packs);
    expect(await listGenerations(second)).toHaveLength(2);
  });

  it('restores a facility byte for byte from the second site alone, the first site gone', async () => {
    // Disaster: the first site's database and data folder are lost.
    await exchange!.stop();
    exchange = undefined;
    await pg.drop();
    fs.rmSync(path.join(work.dir, 'first-site'), { recursive: true, force: true });

    const to = path.join(work.dir, 'restored-latest');
    const r = await restoreFromReplica(second, await scratchDb('embedded'), { facilityId: 'F-MIYAGI-01', to, masterKeys });
    expect(r.failed).toEqual([]);
    expect(r.missingPacks).toEqual([]);
    const restored = readTree(to);
    expect(restored.map((f) => f.path)).toEqual([...night2].map((f) => f.path).sort());
    for (const f of restored) {
      const want = night2.find((x) => x.path === f.path)!;
      expect(f.data.equals(want.data), f.path).toBe(true);
      expect(f.mtime, f.path).toBe(want.mtime);
    }

    const older = path.join(work.dir, 'restored-night-1');
    const r1 = await restoreFromReplica(second, await scratchDb(), { facilityId: 'F-MIYAGI-01', snapshotId: snapshot1, to: older, masterKeys });
    expect(r1.failed).toEqual([]);
    expect(readTree(older).map((f) => f.path)).toEqual(night1.map((f) => f.path).sort());
  }, 300_000); // the embedded database starts and migrates slowly on a loaded 2-core machine

  it('refuses to restore encrypted packs without the master keys, and with the wrong ones names the key', async () => {
    await expect(restoreFromReplica(second, await scratchDb(), { facilityId: 'F-MIYAGI-01', to: path.join(work.dir, 'nokeys') })).rejects.toThrow(
      /the metadata at the second site is encrypted: set HAKOBUNE_MASTER_KEYS/,
    );
    await expect(
      restoreFromReplica(second, await scratchDb(), {
        facilityId: 'F-MIYAGI-01',
        to: path.join(work.dir, 'wrongkeys'),
        masterKeys: [{ id: 'site-key-1', key: randomBytes(32) }],
      }),
    ).rejects.toThrow(/master key "site-key-1" does not open the data key of replica generation G/);
    expect(fs.existsSync(path.join(work.dir, 'wrongkeys'))).toBe(false);
  });

  it('reports a pack missing at the second site, and the files it held', async () => {
    let victim: string | undefined;
    for await (const o of second.list('data')) victim ??= o.name;
    await second.delete(victim!);
    const to = path.join(work.dir, 'restored-damaged');
    const r = await restoreFromReplica(second, await scratchDb(), { facilityId: 'F-MIYAGI-01', to, masterKeys });
    expect(r.missingPacks).toEqual([victim]);
    expect(r.failed.length).toBeGreaterThan(0);
    for (const f of r.failed) expect(f.reason).toMatch(new RegExp(`pack object ${victim!.replace(/\//g, '\\/')} does not exist`));
    expect(r.files + new Set(r.failed.map((f) => f.path)).size).toBe(night2.length);
  });

  it('answers clearly when the second site has no metadata, or the facility is unknown', async () => {
    const empty = s3Store(s3, { prefix: 'empty-site' });
    await expect(restoreFromReplica(empty, await scratchDb(), { facilityId: 'F-MIYAGI-01', to: path.join(work.dir, 'x') })).rejects.toThrow(
      /the second site holds no complete metadata generation/,
    );
    await expect(restoreFromReplica(second, await scratchDb(), { facilityId: 'F-NOWHERE', to: path.join(work.dir, 'y'), masterKeys })).rejects.toThrow(/no facility F-NOWHERE/);
  });
});
