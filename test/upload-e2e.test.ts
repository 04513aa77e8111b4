import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createExchange, type Exchange } from '../viewer-api/exchange.js';
import { testConfig } from '../viewer-api/config.js';
import { restoreSnapshot } from '../store/backup/restore.js';
import { uploadTree, type UploadOptions } from '../ingest/uploader/upload.js';
import { httpTransport } from '../ingest/uploader/transport.js';
import { createTestDatabase, type TestDatabase } from './support/postgres.js';
import { SAMPLES_ROOT, tempDir } from './support/tmp.js';

/** Every regular file under `root`: relative path -> bytes and mtime (ms). */
function treeOf(root: string): Map<string, { bytes: Buffer; mtime: number }> {
  const out = new Map<string, { bytes: Buffer; mtime: number }>();
  const walk = (d: string, rel: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      const abs = path.join(d, e.name);
      if (e.isDirectory()) walk(abs, r);
      else out.set(r, { bytes: fs.readFileSync(abs), mtime: Math.floor(fs.statSync(abs).mtimeMs) });
    }
  };
  walk(root, '');
  return out;
}

function expectSameTree(restored: string, original: string) {
  const a = treeOf(restored);
  const b = treeOf(original);
  expect([...a.keys()].sort()).toEqual([...b.keys()].sort());
  for (const [p, f] of b) {
    expect(a.get(p)!.bytes.equals(f.bytes), p).toBe(true);
    expect(a.get(p)!.mtime, p).toBe(f.mtime);
  }
}

describe.each([
  ['embedded PGlite', false],
  ['PostgreSQL', true],
])('upload to a real exchange (%s), then restore', (_name, usePostgres) => {
  const tmp = tempDir('hakobune-e2e-');
  let pg: TestDatabase | undefined;
  let exchange: Exchange;
  let url: string;
  let token: string;
  let opts: UploadOptions;
  let firstSnapshot = '';
  const deps = () => ({ transport: httpTransport({ server: url, token }) });

  beforeAll(async () => {
    if (usePostgres) pg = await createTestDatabase();
    exchange = await createExchange(testConfig(path.join(tmp.dir, 'exchange'), pg ? { databaseUrl: pg.url } : {}));
    url = await exchange.listen();
    ({ token } = await exchange.backup.addFacility({ id: 'F001', name: 'Test Hospital', kind: 'hospital' }));
    opts = { server: url, facilityId: 'F001', root: SAMPLES_ROOT, cacheFile: path.join(tmp.dir, 'cache', 'F001.cache') };
  });
  afterAll(async () => {
    await exchange.stop();
    await pg?.drop();
    tmp.remove();
  });

  it('backs up the samples (broken files included) and restores them byte for byte', async () => {
    const s = await uploadTree(opts, deps());
    expect(s).toMatchObject({ files: 22, manifest: 'full', hashedFiles: 22 });
    expect(s.newBlobs).toBe(s.blobsSent);
    firstSnapshot = s.snapshotId;
    const to = path.join(tmp.dir, 'restored-1');
    const r = await restoreSnapshot(exchange.backup, await exchange.backup.getSnapshot(s.snapshotId), { to });
    expect(r.failed).toEqual([]);
    expectSameTree(path.join(to, 'standard'), SAMPLES_ROOT);
  });

  it('a second upload of the unchanged tree reads and sends nothing; a rename sends no blob; old nights restore', async () => {
    const unchanged = await uploadTree(opts, deps());
    expect(unchanged).toMatchObject({ manifest: 'delta', manifestEntries: 0, blobsSent: 0, hashedFiles: 0, newBlobs: 0 });

    // The next night: a writable copy of the tree where one order was superseded (_1 -> _2).
    const night2 = path.join(tmp.dir, 'night2');
    fs.cpSync(SAMPLES_ROOT, night2, { recursive: true, preserveTimestamps: true });
    fs.chmodSync(path.join(night2, '999/901/9999013/20111220/OMG-01'), 0o755);
    const old = path.join(night2, '999/901/9999013/20111220/OMG-01/9999013_20111220_OMG-01_000201101200100_20111220224447339_-_1');
    fs.renameSync(old, old.replace(/_1$/, '_2'));
    // A different root is a different tree for the cache: its first upload is read in full,
    // but the exchange already holds every byte, so no blob moves.
    const s2 = await uploadTree({ ...opts, root: night2, cacheFile: path.join(tmp.dir, 'cache', 'night2.cache') }, deps());
    expect(s2).toMatchObject({ files: 22, blobsSent: 0, newBlobs: 0 });
    const to2 = path.join(tmp.dir, 'restored-2');
    expect((await restoreSnapshot(exchange.backup, await exchange.backup.getSnapshot(s2.snapshotId), { to: to2 })).failed).toEqual([]);
    expectSameTree(path.join(to2, 'standard'), night2);

    // The first night is still there as it was.
    const to1 = path.join(tmp.dir, 'restored-first-again');
    expect((await exchange.backup.listSnapshots('F001')).length).toBe(3);
    expect((await restoreSnapshot(exchange.backup, await exchange.backup.getSnapshot(firstSnapshot), { to: to1 })).failed).toEqual([]);
    expectSameTree(path.join(to1, 'standard'), SAMPLES_ROOT);
  });
});
