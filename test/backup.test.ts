import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createExchange, type Exchange } from '../viewer-api/exchange.js';
import { testConfig } from '../viewer-api/config.js';
import { createTestDatabase, type TestDatabase } from './support/postgres.js';
import { SAMPLES_ROOT, tempDir } from './support/tmp.js';
import { restoreSnapshot } from '../store/backup/restore.js';
import { verifyStore } from '../store/backup/verify.js';

import { Client, copyTree, readTree, scan } from './backup.support.js';

// Opening PGlite and running every migration takes seconds, and far longer on a busy machine.
const STARTUP_MS = 240_000;

// --- the core path, on both databases -----------------------------------------------------

const backends: [string, () => Promise<{ databaseUrl?: string; done: () => Promise<void> }>][] = [
  ['PGlite', async () => ({ done: async () => {} })],
  [
    'PostgreSQL',
    async () => {
      const pg: TestDatabase = await createTestDatabase('hkbk');
      return { databaseUrl: pg.url, done: () => pg.drop() };
    },
  ],
];

describe.each(backends)('backup store on %s', (_name, backend) => {
  const tmp = tempDir('hakobune-backup-');
  let exchange: Exchange;
  let url: string;
  let done: () => Promise<void>;
  let token: string;
  let client: Client;
  const tree = path.join(tmp.dir, 'tree');

  beforeAll(async () => {
    const b = await backend();
    done = b.done;
    exchange = await createExchange(testConfig(path.join(tmp.dir, 'data'), b.databaseUrl ? { databaseUrl: b.databaseUrl } : {}));
    url = await exchange.listen();
    ({ token } = await exchange.backup.addFacility({ id: 'F001', name: '海辺総合病院', kind: 'hospital' }));
    client = new Client(url, 'F001', token);
    copyTree(SAMPLES_ROOT, tree);
  }, STARTUP_MS);
  afterAll(async () => {
    await exchange?.stop();
    await done?.();
    tmp.remove();
  }, STARTUP_MS);

  let first: string;
  it('uploads the real samples and restores them byte for byte, broken files included', async () => {
    const files = scan(tree);
    expect(files.length).toBeGreaterThan(20);
    const r = await client.upload(files);
    expect(r.opened.status).toBe(201);
    expect(r.commit!.status).toBe(200);
    expect(r.commit!.body).toMatchObject({ facilityId: 'F001', files: files.length, bytes: files.reduce((a, f) => a + f.size, 0) });
    first = r.commit!.body.snapshotId;
    // Identical files are one blob.
    expect(r.commit!.body.newBlobs).toBe(new Set(files.map((f) => f.sha256)).size);

    const out = path.join(tmp.dir, 'restore1');
    const snap = await exchange.backup.getSnapshot(first);
    const res = await restoreSnapshot(exchange.backup, snap, { to: out });
    expect(res.failed).toEqual([]);
    expect(readTree(path.join(out, 'standard'))).toEqual(readTree(tree));
  });

  it('sends no blob for an unchanged tree, and commits the same content as a new snapshot', async () => {
    const before = client.blobsSent;
    const r = await client.upload(scan(tree));
    expect(r.missing!.size).toBe(0);
    expect(client.blobsSent).toBe(before);
    expect(r.commit!.body).toMatchObject({ newBlobs: 0, newBytes: 0 });
    const a = await exchange.backup.getSnapshot(first);
    const b = await exchange.backup.getSnapshot(r.commit!.body.snapshotId);
    expect(b.rootTree.equals(a.rootTree)).toBe(true);
  });

  let renamed: string;
  it('sends no blob for a _1 -> _2 rename (delta manifest) and an older snapshot still restores that night', async () => {
    const latest = (await exchange.backup.listSnapshots('F001')).at(-1)!;
    const files = scan(tree);
    const victim = files.find((f) => f.path.endsWith('_1'))!;
    const newPath = victim.abs.replace(/_1$/, '_2');
    fs.renameSync(victim.abs, newPath);
    const moved = scan(tree).find((f) => f.abs === newPath)!;
    const before = client.blobsSent;
    const r = await client.upload([moved], { base: latest.id, deleted: [victim.path] });
    expect(r.commit!.status).toBe(200);
    expect(r.missing!.size).toBe(0);
    expect(client.blobsSent).toBe(before);
    renamed = r.commit!.body.snapshotId;
    expect(r.commit!.body.files).toBe(files.length);

    const outNew = path.join(tmp.dir, 'restore-new');
    await restoreSnapshot(exchange.backup, await exchange.backup.getSnapshot(renamed), { to: outNew });
    expect(readTree(path.join(outNew, 'standard'))).toEqual(readTree(tree));
    const outOld = path.join(tmp.dir, 'restore-old');
    await restoreSnapshot(exchange.backup, await exchange.backup.getSnapshot(first), { to: outOld });
    const old = readTree(path.join(outOld, 'standard'));
    expect(old.has(victim.path.slice('standard/'.length))).toBe(true);
    expect(old.has(moved.path.slice('standard/'.length))).toBe(false);

    // The indexer's read API: the renamed file carries no new content.
    const changed = [];
    for await (const c of exchange.backup.changedFiles(renamed)) changed.push(c);
    expect(changed).toEqual([]);
    const page1 = await exchange.backup.listSnapshotFiles(renamed, { limit: 5 });
    const page2 = await exchange.backup.listSnapshotFiles(renamed, { afterPath: page1.at(-1)!.path, limit: 1000 });
    const all = [...page1, ...page2].map((f) => f.path);
    expect(all).toEqual(scan(tree).map((f) => f.path).sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y))));
    expect((await exchange.backup.readBlob(moved.sha256)).equals(fs.readFileSync(newPath))).toBe(true);
  });

  it('reports a changed file as changed, and restores only one patient with --patient', async () => {
    const latest = (await exchange.backup.listSnapshots('F001')).at(-1)!;
    const f = scan(tree).find((x) => x.path.includes('/9999013/') && x.path.includes('ADT-00'))!;
    fs.appendFileSync(f.abs, 'ZZZ|changed\r');
    const changedFile = scan(tree).find((x) => x.abs === f.abs)!;
    const r = await client.upload([changedFile], { base: latest.id });
    expect(r.missing!.size).toBe(1);
    const changed = [];
    for await (const c of exchange.backup.changedFiles(r.commit!.body.snapshotId)) changed.push(c.path);
    expect(changed).toEqual([f.path]);
    const out = path.join(tmp.dir, 'restore-patient');
    const res = await restoreSnapshot(exchange.backup, await exchange.backup.getSnapshot(r.commit!.body.snapshotId), { to: out, patients: ['9999013'] });
    expect(res.failed).toEqual([]);
    const got = [...readTree(out).keys()];
    expect(got.length).toBeGreaterThan(5);
    expect(got.every((p) => p.startsWith('standard/999/901/9999013/'))).toBe(true);
  });

  it('refuses a non-empty target unless forced', async () => {
    const out = path.join(tmp.dir, 'busy');
    fs.mkdirSync(out);
    fs.writeFileSync(path.join(out, 'x'), 'x');
    const snap = await exchange.backup.getSnapshot(first);
    await expect(restoreSnapshot(exchange.backup, snap, { to: out })).rejects.toThrow(/not empty/);
    const res = await restoreSnapshot(exchange.backup, snap, { to: out, force: true });
    expect(res.files).toBe(snap.files);
  });

  it('verifies a healthy store', async () => {
    const rep = await verifyStore(exchange.backup, { readData: 1 });
    expect(rep.ok).toBe(true);
    expect(rep.blobsRead).toBeGreaterThan(0);
  });
});
