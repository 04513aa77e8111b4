import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sql } from 'kysely';
import { createExchange, type Exchange } from '../viewer-api/exchange.js';
import { testConfig } from '../viewer-api/config.js';
import { createTestDatabase, type TestDatabase } from './support/postgres.js';
import { SAMPLES_ROOT, tempDir } from './support/tmp.js';
import { restoreSnapshot } from '../store/backup/restore.js';
import { verifyStore } from '../store/backup/verify.js';
import { Client, frames, readTree, scan } from './backup.support.js';

// Opening PGlite and running every migration takes seconds, and far longer on a busy machine.
const STARTUP_MS = 240_000;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const entry = (p: string, data = Buffer.from(p)) => ({ path: p, size: data.length, mtime: 1_700_000_000_000, sha256: sha(data) });

async function counts(ex: Exchange) {
  const r = await sql<{ blobs: number; packs: number; snapshots: number; entries: number }>`
    select (select count(*) from blob)::int8 as blobs, (select count(*) from pack)::int8 as packs,
           (select count(*) from snapshot)::int8 as snapshots, (select count(*) from upload_entry)::int8 as entries`.execute(ex.db);
  return r.rows[0]!;
}

describe('the upload protocol refuses bad input (PGlite)', () => {
  const tmp = tempDir('hakobune-backup-bad-');
  let ex: Exchange;
  let url: string;
  let a: Client; // facility F001
  let b: Client; // facility F002
  let n = 0;

  beforeAll(async () => {
    ex = await createExchange(testConfig(path.join(tmp.dir, 'data')));
    url = await ex.listen();
    const f1 = await ex.backup.addFacility({ id: 'F001', name: 'Umibe Hospital', kind: 'hospital' });
    const f2 = await ex.backup.addFacility({ id: 'F002', name: 'Yama Pharmacy', kind: 'pharmacy' });
    a = new Client(url, 'F001', f1.token);
    b = new Client(url, 'F002', f2.token);
  }, STARTUP_MS);
  afterAll(async () => {
    await ex?.stop();
    tmp.remove();
  }, STARTUP_MS);

  /** Opens a fresh upload for F001 (aborting any left open by a previous test). */
  async function fresh(c = a, base?: string): Promise<string> {
    const open = await c.open(`s${++n}`, base);
    if (open.status === 409 && !open.body.latestSnapshotId) throw new Error('an upload is still open');
    expect([200, 201]).toContain(open.status);
    return open.body.uploadId;
  }
  async function abort(c: Client, id: string) {
    await c.call('DELETE', `/uploads/${id}`);
  }

  it('refuses unsafe or malformed paths, each with a 400 that names it, staging nothing', async () => {
    const id = await fresh();
    const bad = ['../etc/passwd', 'standard/../../x', '/abs/file', 'standard/a\0b', 'standard//x', 'standard/./x', '', 'standard/x/', 'C:/windows', 'standard/\ud800x'];
    for (const p of bad) {
      const r = await a.call('POST', `/uploads/${id}/manifest`, { entries: [entry('standard/ok'), { ...entry('x'), path: p }] });
      expect(r.status, p).toBe(400);
      expect(r.body.detail).toMatch(/entries\[1\]: path/);
    }
    expect((await a.call('GET', `/uploads/${id}`)).body.received.entries).toBe(0);
    // A sha256 that is not 64 hex, a negative size, a fractional mtime, unknown fields.
    for (const e of [
      { ...entry('standard/a'), sha256: 'xyz' },
      { ...entry('standard/a'), size: -1 },
      { ...entry('standard/a'), mtime: 1.5 },
      { ...entry('standard/a'), extra: 1 },
    ]) {
      expect((await a.call('POST', `/uploads/${id}/manifest`, { entries: [e] })).status).toBe(400);
    }
    // Not JSON at all.
    const res = await fetch(`${url}/ingest/v1/uploads/${id}/manifest`, {
      method: 'POST',
      headers: { authorization: `Bearer ${a.token}`, 'content-type': 'application/json' },
      body: '{"entries": [',
    });
    expect(res.status).toBe(400);
    expect((await counts(ex)).entries).toBe(0);
    await abort(a, id);
  });

  it('refuses duplicate paths, but accepts the same batch sent again after a lost answer', async () => {
    const id = await fresh();
    const dup = await a.call('POST', `/uploads/${id}/manifest`, { entries: [entry('standard/a'), entry('standard/a')] });
    expect(dup.status).toBe(400);
    expect(dup.body.detail).toMatch(/listed twice/);
    const batch = { entries: [entry('standard/a'), entry('standard/b')] };
    expect((await a.call('POST', `/uploads/${id}/manifest`, batch)).status).toBe(200);
    expect((await a.call('POST', `/uploads/${id}/manifest`, batch)).status).toBe(200); // a retry
    const clash = await a.call('POST', `/uploads/${id}/manifest`, { entries: [entry('standard/c'), entry('standard/a', Buffer.from('other'))] });
    expect(clash.status).toBe(400);
    expect(clash.body.detail).toMatch(/already sent in this upload with other content/);
    // Nothing of the refused batch was kept (standard/c neither).
    expect((await a.call('GET', `/uploads/${id}`)).body.received.entries).toBe(2);
    await abort(a, id);
  });

  it('refuses a blob whose bytes do not match its hash, a truncated frame and an oversized blob, storing none of the batch', async () => {
    const id = await fresh();
    const good = Buffer.from('MSH|^~\\&|good\r');
    const before = await counts(ex);
    const mismatch = await a.call('POST', `/uploads/${id}/blobs`, undefined, frames([{ data: good }, { data: Buffer.from('evil'), sha256: sha(Buffer.from('good')) }]));
    expect(mismatch.status).toBe(422);
    expect(mismatch.body.detail).toContain(sha(Buffer.from('good')));
    expect(mismatch.body.detail).toMatch(/does not match its hash/);
    expect(mismatch.body.sha256).toBe(sha(Buffer.from('good')));
    const whole = frames([{ data: good }]);
    const truncated = await a.call('POST', `/uploads/${id}/blobs`, undefined, whole.subarray(0, whole.length - 3));
    expect(truncated.status).toBe(422);
    expect(truncated.body.detail).toMatch(/truncated/);
    const head = Buffer.alloc(36);
    head.writeUInt32BE(40 * 1024 * 1024, 32);
    const huge = await a.call('POST', `/uploads/${id}/blobs`, undefined, head);
    expect(huge.status).toBe(422);
    expect(huge.body.detail).toMatch(/over the limit/);
    expect(await counts(ex)).toEqual(before);
    // A manifest entry too large to ever be sent is refused up front.
    const big = await a.call('POST', `/uploads/${id}/manifest`, { entries: [{ ...entry('standard/big.pdf'), size: 64 * 1024 * 1024 }] });
    expect(big.status).toBe(422);
    expect(big.body.path).toBe('standard/big.pdf');
    await abort(a, id);
  });

  it('refuses a request body over 32 MiB with 413', async () => {
    const id = await fresh();
    const r = await a.call('POST', `/uploads/${id}/blobs`, undefined, Buffer.alloc(32 * 1024 * 1024 + 1));
    expect(r.status).toBe(413);
    await abort(a, id);
  });

  it('refuses a missing, wrong or revoked token and another facility\'s upload', async () => {
    const nobody = new Client(url, 'F001', 'hkb_' + randomBytes(32).toString('base64url'));
    expect((await nobody.open('x')).status).toBe(401);
    const res = await fetch(`${url}/ingest/v1/uploads`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toBe('Bearer');
    // F002's token cannot open for F001, nor touch F001's upload.
    const asOther = new Client(url, 'F001', b.token);
    expect((await asOther.open('x')).status).toBe(403);
    const id = await fresh();
    expect((await b.call('GET', `/uploads/${id}`)).status).toBe(404);
    expect((await b.call('POST', `/uploads/${id}/manifest`, { entries: [entry('standard/x')] })).status).toBe(404);
    await abort(a, id);
    // Revoked: the old token stops working, the new one works.
    const { token } = await ex.backup.rotateToken('F002');
    expect((await b.open('y')).status).toBe(401);
    expect((await b.open('y')).body.detail).toMatch(/revoked/);
    const b2 = new Client(url, 'F002', token);
    const opened = await b2.open('y');
    expect(opened.status).toBe(201);
    await abort(b2, opened.body.uploadId);
    b = b2;
  });

  it('refuses a commit before every blob arrived, or with a wrong entry count', async () => {
    const data = [Buffer.from('one\r'), Buffer.from('two\r')];
    const id = await fresh();
    const m = await a.call('POST', `/uploads/${id}/manifest`, { entries: data.map((d, i) => entry(`standard/f${i}`, d)) });
    expect(m.body.missing.sort()).toEqual(data.map(sha).sort());
    await a.call('POST', `/uploads/${id}/blobs`, undefined, frames([{ data: data[0]! }]));
    const early = await a.call('POST', `/uploads/${id}/commit`, { entries: 2 });
    expect(early.status).toBe(409);
    expect(early.body).toMatchObject({ missingBlobs: 1, missing: [sha(data[1]!)] });
    const miscount = await a.call('POST', `/uploads/${id}/commit`, { entries: 3 });
    expect(miscount.status).toBe(409);
    expect((await counts(ex)).snapshots).toBe(0);
    await a.call('POST', `/uploads/${id}/blobs`, undefined, frames([{ data: data[1]! }]));
    const ok = await a.call('POST', `/uploads/${id}/commit`, { entries: 2 });
    expect(ok.status).toBe(200);
    // Idempotent: the same snapshot again.
    const again = await a.call('POST', `/uploads/${id}/commit`, { entries: 2 });
    expect(again.body).toEqual(ok.body);
    expect((await a.call('POST', `/uploads/${id}/manifest`, { entries: [entry('standard/late')] })).status).toBe(409);
    // Reopening the committed session (its client lost the answer) gives that upload back,
    // committed; committing it again answers the same snapshot and makes no second one.
    const before = (await counts(ex)).snapshots;
    const reopened = await a.open(`s${n}`);
    expect(reopened.status).toBe(200);
    expect(reopened.body).toMatchObject({ uploadId: id, resumed: true, state: 'committed', snapshotId: ok.body.snapshotId });
    const recommit = await a.call('POST', `/uploads/${id}/commit`, { entries: 2 });
    expect(recommit.body).toEqual(ok.body);
    expect((await counts(ex)).snapshots).toBe(before);
    // No upload was left open by it: another session opens at once.
    const next = await a.open(`s${++n}`);
    expect(next.status).toBe(201);
    await abort(a, next.body.uploadId);
  });

  it('allows one open upload per facility; the same client session resumes it', async () => {
    const first = await a.open('session-A');
    expect(first.status).toBe(201);
    const second = await a.open('session-B');
    expect(second.status).toBe(409);
    const resumed = await a.open('session-A');
    expect(resumed.status).toBe(200);
    expect(resumed.body).toMatchObject({ uploadId: first.body.uploadId, resumed: true, received: { entries: 0, blobs: 0 } });
    // Another facility is not held up.
    const other = await b.open('session-B');
    expect(other.status).toBe(201);
    await abort(b, other.body.uploadId);
    await abort(a, first.body.uploadId);
    expect((await a.call('GET', `/uploads/${first.body.uploadId}`)).body.state).toBe('aborted');
    expect((await a.call('POST', `/uploads/${first.body.uploadId}/commit`, { entries: 0 })).status).toBe(409);
  });

  it('refuses a stale base snapshot (the client then sends a full manifest)', async () => {
    const r = await a.open('stale', 'S19990101T000000Z-000000');
    expect(r.status).toBe(409);
    expect(r.body.latestSnapshotId).toMatch(/^S/);
  });

  it('resumes a client killed after the manifest and after part of the blobs, re-sending nothing received', async () => {
    const tree = path.join(tmp.dir, 'resume');
    fs.cpSync(SAMPLES_ROOT, tree, { recursive: true, preserveTimestamps: true });
    const files = scan(tree).map((f) => ({ ...f, path: f.path.replace('standard/', 'standard/resume/') }));
    // Killed after the manifest batches.
    const killed = await a.upload(files, { session: 'nightly-1', stopAfter: 'manifest', batch: 5 });
    const missing = killed.missing!;
    // Killed again after sending some blobs (by hand: the first three).
    const some = files.filter((f) => missing.has(f.sha256)).slice(0, 3);
    await a.call('POST', `/uploads/${killed.id}/blobs`, undefined, frames(some.map((f) => ({ data: fs.readFileSync(f.abs) }))));
    const sentBefore = a.blobsSent;
    const resumed = await a.upload(files, { session: 'nightly-1', batch: 5 });
    expect(resumed.opened.status).toBe(200);
    expect(resumed.opened.body.received).toEqual({ entries: files.length, blobs: 3 });
    expect(resumed.id).toBe(killed.id);
    expect(resumed.commit!.status).toBe(200);
    expect(a.blobsSent - sentBefore).toBe(missing.size - 3);
  });

  it('leaves no snapshot when the commit dies half-way, and commits whole afterwards', async () => {
    const id = await fresh();
    const d = Buffer.from('crash test\r');
    await a.call('POST', `/uploads/${id}/manifest`, { entries: [entry('standard/crash', d)] });
    await a.call('POST', `/uploads/${id}/blobs`, undefined, frames([{ data: d }]));
    const before = (await counts(ex)).snapshots;
    // The last step of the commit transaction fails after the snapshot row was written.
    await sql`create function fail_commit() returns trigger language plpgsql as $$
      begin if new.state = 'committed' then raise exception 'simulated crash'; end if; return new; end $$`.execute(ex.db);
    await sql`create trigger fail_commit before update on upload for each row execute function fail_commit()`.execute(ex.db);
    const failed = await a.call('POST', `/uploads/${id}/commit`, { entries: 1 });
    expect(failed.status).toBe(500);
    expect((await counts(ex)).snapshots).toBe(before);
    expect((await a.call('GET', `/uploads/${id}`)).body.state).toBe('open');
    await sql`drop trigger fail_commit on upload`.execute(ex.db);
    const ok = await a.call('POST', `/uploads/${id}/commit`, { entries: 1 });
    expect(ok.status).toBe(200);
    expect((await counts(ex)).snapshots).toBe(before + 1);
  });

  it('refuses a delta that deletes a path its base does not have', async () => {
    const latest = (await ex.backup.listSnapshots('F001')).at(-1)!;
    const id = await fresh(a, latest.id);
    await a.call('POST', `/uploads/${id}/manifest`, { entries: [{ path: 'standard/never-was', deleted: true }] });
    const r = await a.call('POST', `/uploads/${id}/commit`, { entries: 1 });
    expect(r.status).toBe(422);
    expect(r.body.path).toBe('standard/never-was');
    await abort(a, id);
  });

  it('names the files and snapshots a damaged pack breaks; restore writes every intact file and names the rest', async () => {
    // A snapshot of the samples for F002, then damage: one pack bit-flipped, one truncated.
    const files = scan(SAMPLES_ROOT);
    const up = await b.upload(files);
    expect(up.commit!.status).toBe(200);
    const snap = await ex.backup.getSnapshot(up.commit!.body.snapshotId);
    const packs = await sql<{ object_name: string; size: number }>`
      select distinct p.object_name, p.size from pack p join blob bl on bl.pack_id = p.id
      where bl.sha256 = any(${files.map((f) => Buffer.from(f.sha256, 'hex'))}::bytea[])`.execute(ex.db);
    expect(packs.rows.length).toBeGreaterThan(0);
    const file = path.join(ex.config.packDir, packs.rows[0]!.object_name);
    const bytes = fs.readFileSync(file);
    bytes[Math.floor(bytes.length / 2)]! ^= 0x40;
    fs.writeFileSync(file, bytes);

    const quick = await verifyStore(ex.backup);
    expect(quick.ok).toBe(true); // a flipped bit needs the data read to be seen
    const rep = await verifyStore(ex.backup, { readData: 1 });
    expect(rep.ok).toBe(false);
    expect(rep.damagedBlobs.length).toBeGreaterThan(0);
    const damagedPaths = rep.damagedBlobs.flatMap((d) => d.heldBy.filter((h) => h.snapshotId === snap.id).map((h) => h.path));
    expect(damagedPaths.length).toBeGreaterThan(0);

    const out = path.join(tmp.dir, 'damaged-restore');
    const res = await restoreSnapshot(ex.backup, snap, { to: out });
    expect(res.failed.map((f) => f.path).sort()).toEqual([...new Set(damagedPaths)].sort());
    expect(res.files + res.failed.length).toBe(files.length);
    // Every intact file is byte-identical.
    const restored = readTree(out);
    for (const f of files) {
      if (damagedPaths.includes(f.path)) expect(restored.has(f.path)).toBe(false);
      else expect(Buffer.from(restored.get(f.path)!.data, 'base64').equals(fs.readFileSync(f.abs))).toBe(true);
    }

    // Truncation is seen without reading data.
    fs.truncateSync(file, 10);
    const cut = await verifyStore(ex.backup);
    expect(cut.ok).toBe(false);
    expect(cut.damagedBlobs.some((d) => /truncated/.test(d.reason) && d.heldBy.length > 0)).toBe(true);
    // A pack file that is gone.
    fs.rmSync(file);
    const gone = await verifyStore(ex.backup);
    expect(gone.missingPacks).toEqual([packs.rows[0]!.object_name]);
  });

  it('reports an orphan pack (written, never indexed) without calling the store damaged', async () => {
    await ex.backup.packs.put('data/ff/ff00orphan', Buffer.from('orphan'));
    const rep = await verifyStore(ex.backup);
    expect(rep.orphanPacks).toContain('data/ff/ff00orphan');
  });

  it('builds the same trees while the manifest arrives as from the staging table, in any batch order and with retries', async () => {
    // Byte order puts "p/b-c/" before "p/b/", and "p/b/z" after the folder "p/b/y/": not the
    // order of a directory walk, so some of these uploads give up building as they receive.
    const names = ['p/b/x', 'p/b/y/1', 'p/b/y/2', 'p/b/z', 'p/b-c/x', 'p/a', 'q/1', 'q/2/3', 'r'];
    const files = names.map((n, i) => ({ e: entry(`standard/${n}`, Buffer.from(`content ${i} of ${n}`)), data: Buffer.from(`content ${i} of ${n}`) }));
    const sorted = [...files].sort((x, y) => (Buffer.compare(Buffer.from(x.e.path), Buffer.from(y.e.path))));
    const commitWith = async (batches: (typeof files)[], retry = false) => {
      const id = await fresh();
      for (const batch of batches) {
        const body = { entries: batch.map((f) => f.e) };
        expect((await a.call('POST', `/uploads/${id}/manifest`, body)).status).toBe(200);
        if (retry) expect((await a.call('POST', `/uploads/${id}/manifest`, body)).status).toBe(200);
      }
      expect((await a.call('POST', `/uploads/${id}/blobs`, undefined, frames(files.map((f) => ({ data: f.data }))))).status).toBe(200);
      const c = await a.call('POST', `/uploads/${id}/commit`, { entries: files.length });
      expect(c.status).toBe(200);
      expect(c.body.files).toBe(files.length);
      return (await ex.backup.getSnapshot(c.body.snapshotId)).rootTree.toString('hex');
    };
    const streamed0 = ex.backup.treesBuiltWhileReceiving;
    const inOrder = await commitWith([sorted.slice(0, 4), sorted.slice(4)], true);
    expect(ex.backup.treesBuiltWhileReceiving).toBe(streamed0 + 1);
    const walkOrder = await commitWith([files.slice(0, 5), files.slice(5)]);
    expect(ex.backup.treesBuiltWhileReceiving).toBe(streamed0 + 1);
    // Batches stored out of order (requests in flight together) are put back in order.
    const reversed = await commitWith([sorted.slice(5), sorted.slice(0, 5)]);
    expect(ex.backup.treesBuiltWhileReceiving).toBe(streamed0 + 2);
    // A batch partly sent before: the build cannot tell what it holds.
    const id = await fresh();
    expect((await a.call('POST', `/uploads/${id}/manifest`, { entries: sorted.slice(0, 3).map((f) => f.e) })).status).toBe(200);
    expect((await a.call('POST', `/uploads/${id}/manifest`, { entries: sorted.slice(0, 6).map((f) => f.e) })).status).toBe(200);
    expect((await a.call('POST', `/uploads/${id}/manifest`, { entries: sorted.slice(6).map((f) => f.e) })).status).toBe(200);
    const c = await a.call('POST', `/uploads/${id}/commit`, { entries: files.length });
    expect(c.status).toBe(200);
    const partly = (await ex.backup.getSnapshot(c.body.snapshotId)).rootTree.toString('hex');
    expect(ex.backup.treesBuiltWhileReceiving).toBe(streamed0 + 2);
    expect(new Set([inOrder, walkOrder, reversed, partly]).size).toBe(1);
    // What a restore gives back is the files sent.
    const out = path.join(tmp.dir, 'restore-streamed');
    const res = await restoreSnapshot(ex.backup, await ex.backup.getSnapshot(c.body.snapshotId), { to: out });
    expect(res.failed).toEqual([]);
    for (const f of files) expect(fs.readFileSync(path.join(out, ...f.e.path.split('/')))).toEqual(f.data);
  });

  it('takes the manifest and blob batches of one upload sent all at once, and builds its trees while they arrive', async () => {
    const files = Array.from({ length: 60 }, (_, i) => {
      const data = Buffer.from(`MSH|^~\\&|concurrent ${i}|${'x'.repeat(i)}`);
      return { e: entry(`standard/c${String(i % 7).padStart(2, '0')}/d${String(i).padStart(3, '0')}/m`, data), data };
    });
    files.sort((x, y) => Buffer.compare(Buffer.from(x.e.path), Buffer.from(y.e.path)));
    const rootOf = async (concurrent: boolean) => {
      const id = await fresh();
      const batches = Array.from({ length: 6 }, (_, k) => files.slice(k * 10, k * 10 + 10));
      const send = (b: typeof files) => a.call('POST', `/uploads/${id}/manifest`, { entries: b.map((f) => f.e) });
      const manifests = concurrent ? await Promise.all(batches.map(send)) : await (async () => { const r = []; for (const b of batches) r.push(await send(b)); return r; })();
      expect(manifests.map((m) => m.status)).toEqual(batches.map(() => 200));
      const sendBlobs = (b: typeof files) => a.call('POST', `/uploads/${id}/blobs`, undefined, frames(b.map((f) => ({ data: f.data }))));
      const blobs = await Promise.all(batches.map(sendBlobs));
      expect(blobs.map((r) => r.status)).toEqual(batches.map(() => 200));
      const c = await a.call('POST', `/uploads/${id}/commit`, { entries: files.length });
      expect(c.status).toBe(200);
      expect(c.body.files).toBe(files.length);
      return (await ex.backup.getSnapshot(c.body.snapshotId)).rootTree.toString('hex');
    };
    const streamed0 = ex.backup.treesBuiltWhileReceiving;
    const one = await rootOf(false);
    const all = await rootOf(true);
    expect(all).toBe(one);
    expect(ex.backup.treesBuiltWhileReceiving).toBe(streamed0 + 2);
  });

  it('refuses a path that is both a file and a folder at commit, also when the trees are built as the manifest arrives', async () => {
    const id = await fresh();
    const fs1 = [entry('standard/k/l'), entry('standard/k/l/m')];
    expect((await a.call('POST', `/uploads/${id}/manifest`, { entries: fs1 })).status).toBe(200);
    expect((await a.call('POST', `/uploads/${id}/blobs`, undefined, frames([{ data: Buffer.from('standard/k/l') }, { data: Buffer.from('standard/k/l/m') }]))).status).toBe(200);
    const c = await a.call('POST', `/uploads/${id}/commit`, { entries: 2 });
    expect(c.status).toBe(422);
    expect(c.body.detail).toMatch(/both a file and a folder/);
    await abort(a, id);
  });
});

describe('the upload protocol on PostgreSQL', () => {
  const tmp = tempDir('hakobune-backup-pg-');
  let pg: TestDatabase;
  let ex: Exchange;
  let url: string;
  let token: string;
  beforeAll(async () => {
    pg = await createTestDatabase('hkbb');
    ex = await createExchange(testConfig(path.join(tmp.dir, 'data'), { databaseUrl: pg.url }));
    url = await ex.listen();
    ({ token } = await ex.backup.addFacility({ id: 'F001', name: 'Umibe Hospital', kind: 'clinic' }));
  }, STARTUP_MS);
  afterAll(async () => {
    await ex?.stop();
    await pg?.drop();
    tmp.remove();
  }, STARTUP_MS);

  it('lets exactly one of two simultaneous openers for a facility win', async () => {
    const c = new Client(url, 'F001', token);
    const results = await Promise.all(Array.from({ length: 6 }, (_, i) => c.open(`racer-${i}`)));
    expect(results.filter((r) => r.status === 201)).toHaveLength(1);
    expect(results.filter((r) => r.status === 409)).toHaveLength(5);
    const winner = results.find((r) => r.status === 201)!;
    await c.call('DELETE', `/uploads/${winner.body.uploadId}`);
  });

  it('stores a blob sent by two uploads at once only once', async () => {
    const f2 = await ex.backup.addFacility({ id: 'F002', name: 'Other', kind: 'care_home' });
    const c1 = new Client(url, 'F001', token);
    const c2 = new Client(url, 'F002', f2.token);
    const data = Buffer.from('MSH|^~\\&|same bytes at two facilities\r');
    const [u1, u2] = await Promise.all([c1.open('p1'), c2.open('p2')]);
    // Both requests write the same pack (same bytes) and race to record it and its blob. The
    // race is narrow: run it many times, each with bytes no earlier round stored.
    for (let round = 0; round < 25; round++) {
      const bytes = Buffer.concat([data, Buffer.from(`round ${round}\r`)]);
      const [r1, r2] = await Promise.all([
        c1.call('POST', `/uploads/${u1.body.uploadId}/blobs`, undefined, frames([{ data: bytes }])),
        c2.call('POST', `/uploads/${u2.body.uploadId}/blobs`, undefined, frames([{ data: bytes }])),
      ]);
      expect([r1.status, r2.status, round]).toEqual([200, 200, round]);
      expect(r1.body.stored + r2.body.stored).toBe(1);
      expect(r1.body.alreadyPresent + r2.body.alreadyPresent).toBe(1);
      const n = await sql<{ n: number }>`select count(*)::int8 as n from blob where sha256 = ${Buffer.from(sha(bytes), 'hex')}`.execute(ex.db);
      expect(n.rows[0]!.n).toBe(1);
    }
    // Each upload counted only what it stored.
    const [s1, s2] = await Promise.all([c1.call('GET', `/uploads/${u1.body.uploadId}`), c2.call('GET', `/uploads/${u2.body.uploadId}`)]);
    expect(s1.body.received.blobs + s2.body.received.blobs).toBe(25);
  });
});
