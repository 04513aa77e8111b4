import fs from 'node:fs';
import path from 'node:path';
import { createPrivateKey } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createExchange, type Exchange } from '../viewer-api/exchange.js';
import { ConfigError, readConfig, testConfig } from '../viewer-api/config.js';
import { presentBlobs } from '../store/backup/backup.repository.js';
import { restoreSnapshot } from '../store/backup/restore.js';
import { verifyStore } from '../store/backup/verify.js';
import { searchAudit } from '../viewer-api/audit/audit.repository.js';
import { createDeleteGuard, generateDeleteKeyPair, signDeleteRequest, type SignedDeleteRequest } from '../store/retention/delete-authorization.js';
import { forgetSnapshots, planForget } from '../store/retention/forget.js';
import { authorizedPrune, prune, type PruneCheckpoint } from '../store/retention/prune.js';
import { parseRetentionPolicy } from '../store/retention/retention-policy.js';
import { journal } from '../store/retention/retention.repository.js';
import { uploadRouter } from '../store/backup/upload.routes.js';
import { createTestDatabase, type TestDatabase } from './support/postgres.js';
import { tempDir } from './support/tmp.js';
import { backdatePacks, backdateSnapshot, finishUpload, hashOf, randomFiles, sameTree, stageUpload, uploadTree, type TreeFile } from './retention.support.js';

const work = tempDir('hakobune-retention-');
const operator = generateDeleteKeyPair();
const operatorKey = createPrivateKey(operator.privateKeyPem);
const stranger = createPrivateKey(generateDeleteKeyPair().privateKeyPem);
const publicKeyFile = path.join(work.dir, 'delete.pub');
fs.writeFileSync(publicKeyFile, operator.publicKeyPem);
const policy = parseRetentionPolicy('daily=1');
const LOCK_DAYS = 30;
const who = { actor: { username: 'test-operator' }, endpoint: 'test' };

/**
 * A facility with four nights, 101..98 days ago. Night 0 holds only its own files (its pack dies
 * whole once forgotten); nights 1 and 2 share three files with night 3, the one kept; night 3
 * keeps two files of night 2. Each night's blobs went in one batch, so one pack a night.
 */
interface Store {
  pg: TestDatabase;
  ex: Exchange;
  nights: TreeFile[][];
  snaps: string[];
}

const stores: Store[] = [];

async function buildStore(name: string): Promise<Store> {
  const pg = await createTestDatabase('hkret');
  const ex = await createExchange(
    testConfig(path.join(work.dir, name), { databaseUrl: pg.url, retention: { policy, lockDays: LOCK_DAYS, deletePublicKeyFile: publicKeyFile, deleteKeyFile: undefined } }),
  );
  await ex.backup.addFacility({ id: 'F1', name: 'Kesennuma Hospital', kind: 'hospital' });
  const base = randomFiles('base', 3);
  const n2 = [...base, ...randomFiles('n2', 5)];
  const nights = [randomFiles('n0', 4), [...base, ...randomFiles('n1', 8)], n2, [...base, ...n2.slice(6), ...randomFiles('n3', 1)]];
  const snaps: string[] = [];
  for (const [i, files] of nights.entries()) {
    const id = await uploadTree(ex.backup, 'F1', files);
    await backdateSnapshot(ex.db, id, 101 - i);
    snaps.push(id);
  }
  await backdatePacks(ex.db, 400);
  const s = { pg, ex, nights, snaps };
  stores.push(s);
  return s;
}

const guardOf = (ex: Exchange, clock?: () => number) => createDeleteGuard(ex.config.retention, ex.db, ex.viewer.audit, clock);
const settings = () => ({ policy, lockDays: LOCK_DAYS, now: new Date() });

async function forget(ex: Exchange, req: SignedDeleteRequest) {
  return forgetSnapshots(ex.db, { guard: guardOf(ex), audit: ex.viewer.audit, settings: settings() }, req, who);
}

async function forgetAll(s: Store) {
  const plan = await planForget(s.ex.db, settings());
  await forget(s.ex, signDeleteRequest(operatorKey, { action: 'forget', facility: null, snapshotIds: plan.forget.map((d) => d.id) }));
}

async function restoresAs(ex: Exchange, snapshotId: string, files: TreeFile[]): Promise<boolean> {
  const to = fs.mkdtempSync(path.join(work.dir, 'restore-'));
  const r = await restoreSnapshot(ex.backup, await ex.backup.getSnapshot(snapshotId), { to, force: true });
  return r.failed.length === 0 && sameTree(to, files);
}

const authorizedPruneOf = (s: Store, opts: { checkpoint?: (at: PruneCheckpoint) => void } = {}) =>
  authorizedPrune(
    { db: s.ex.db, packs: s.ex.backup.packs, guard: guardOf(s.ex), audit: s.ex.viewer.audit },
    signDeleteRequest(operatorKey, { action: 'prune', facility: null, snapshotIds: [] }),
    who,
    { lockDays: LOCK_DAYS, ...opts },
  );

afterAll(async () => {
  for (const s of stores) {
    await s.ex.stop();
    await s.pg.drop();
  }
  work.remove();
});

describe('forget: the retention policy and the delete privilege', () => {
  let s: Store;
  beforeAll(async () => {
    s = await buildStore('forget');
  });

  it('plans by night and says why each snapshot stays or goes', async () => {
    const plan = await planForget(s.ex.db, settings(), 'F1');
    expect(plan.forget.map((d) => d.id)).toEqual(s.snaps.slice(0, 3));
    expect(plan.keep).toEqual([expect.objectContaining({ id: s.snaps[3], reasons: ['the latest snapshot of the facility'] })]);
    expect(plan.forget[0]!.reasons[0]).toMatch(/outside every rule \(daily=1\)/);
    await expect(planForget(s.ex.db, settings(), 'NOPE')).rejects.toThrow('no facility NOPE');
  });

  it('refuses a forged, an expired, a replayed request and one inside the delete lock, each audited', async () => {
    const forged = signDeleteRequest(stranger, { action: 'forget', facility: 'F1', snapshotIds: [s.snaps[0]!] });
    await expect(forget(s.ex, forged)).rejects.toMatchObject({ status: 403, message: expect.stringMatching(/signature is not valid/) });
    const tampered = { ...signDeleteRequest(operatorKey, { action: 'forget', facility: 'F1', snapshotIds: [s.snaps[0]!] }), snapshotIds: [s.snaps[1]!] };
    await expect(forget(s.ex, tampered)).rejects.toThrow(/signature is not valid/);
    const expired = signDeleteRequest(operatorKey, { action: 'forget', facility: 'F1', snapshotIds: [s.snaps[0]!] }, new Date(Date.now() - 10 * 60_000));
    await expect(forget(s.ex, expired)).rejects.toThrow(/has expired/);

    const good = signDeleteRequest(operatorKey, { action: 'forget', facility: 'F1', snapshotIds: [s.snaps[0]!] });
    expect(await forget(s.ex, good)).toEqual({ forgotten: [s.snaps[0]] });
    await expect(forget(s.ex, good)).rejects.toThrow(/used already/);
    await expect(s.ex.backup.getSnapshot(s.snaps[0]!)).rejects.toThrow(/no snapshot/);

    // Inside the lock: a second facility's older snapshot of 10 days ago.
    await s.ex.backup.addFacility({ id: 'F2', name: 'Onagawa Clinic', kind: 'clinic' });
    const young = await uploadTree(s.ex.backup, 'F2', randomFiles('f2a', 1));
    await backdateSnapshot(s.ex.db, young, 10);
    await backdateSnapshot(s.ex.db, await uploadTree(s.ex.backup, 'F2', randomFiles('f2b', 1)), 2);
    const locked = signDeleteRequest(operatorKey, { action: 'forget', facility: 'F2', snapshotIds: [young] });
    await expect(forget(s.ex, locked)).rejects.toMatchObject({ status: 409, message: expect.stringMatching(/is kept and cannot be forgotten: locked: younger than the 30-day delete lock/) });
    await expect(s.ex.backup.getSnapshot(young)).resolves.toMatchObject({ id: young });

    const unknown = signDeleteRequest(operatorKey, { action: 'forget', facility: 'F1', snapshotIds: ['S-no-such'] });
    await expect(forget(s.ex, unknown)).rejects.toMatchObject({ status: 404, message: 'no snapshot S-no-such of facility F1' });

    const denied = await searchAudit(s.ex.db, { action: 'retention.forget', limit: 100 });
    expect(denied.filter((e) => e.outcome === 'denied').map((e) => e.reason)).toEqual([
      expect.stringMatching(/signature is not valid/),
      expect.stringMatching(/signature is not valid/),
      expect.stringMatching(/has expired/),
      expect.stringMatching(/used already/),
    ]);
    expect(denied.filter((e) => e.outcome === 'failure').map((e) => e.reason)).toEqual([expect.stringMatching(/locked/), expect.stringMatching(/no snapshot S-no-such/)]);
    expect(denied.filter((e) => e.outcome === 'success')).toHaveLength(1);
  });

  it('refuses every delete when no public delete key is configured', async () => {
    const guard = createDeleteGuard({ deletePublicKeyFile: undefined }, s.ex.db, s.ex.viewer.audit);
    const req = signDeleteRequest(operatorKey, { action: 'forget', facility: 'F1', snapshotIds: [s.snaps[1]!] });
    await expect(forgetSnapshots(s.ex.db, { guard, audit: s.ex.viewer.audit, settings: settings() }, req, who)).rejects.toThrow(/deletes are not enabled/);
    const pruneReq = signDeleteRequest(stranger, { action: 'prune', facility: null, snapshotIds: [] });
    await expect(authorizedPrune({ db: s.ex.db, packs: s.ex.backup.packs, guard: guardOf(s.ex), audit: s.ex.viewer.audit }, pruneReq, who, { lockDays: LOCK_DAYS })).rejects.toThrow(/signature is not valid/);
  });
});

describe('prune', () => {
  it('keeps what kept snapshots and an open upload need, reclaims the rest, and restores byte for byte', async () => {
    const s = await buildStore('prune');
    const [n0, n1, , n3] = s.nights as [TreeFile[], TreeFile[], TreeFile[], TreeFile[]];
    // An upload still open has staged a file whose blob only forgotten nights hold: the store
    // answered it present, so the client will never send it.
    const next = [...n3, n1[5]!];
    const staged = await stageUpload(s.ex.backup, 'F1', next);
    expect(staged.missing).toEqual([]);
    await forgetAll(s);
    expect((await s.ex.backup.listSnapshots('F1')).map((x) => x.id)).toEqual([s.snaps[3]]);

    const packsBefore = (await s.ex.db.selectFrom('pack').select('id').execute()).length;
    const dry = await prune({ db: s.ex.db, packs: s.ex.backup.packs }, { lockDays: LOCK_DAYS, dryRun: true });
    expect(dry).toMatchObject({ dryRun: true, packs: { total: 4, repack: 2, delete: 1, untouched: 1, young: 0 } });
    expect(dry.bytesReclaimed).toBeGreaterThan(12 * 20_000);
    expect((await s.ex.db.selectFrom('pack').select('id').execute()).length).toBe(packsBefore);

    const stages = new Set<string>();
    const r = await authorizedPrune(
      { db: s.ex.db, packs: s.ex.backup.packs, guard: guardOf(s.ex), audit: s.ex.viewer.audit },
      signDeleteRequest(operatorKey, { action: 'prune', facility: null, snapshotIds: [] }),
      who,
      { lockDays: LOCK_DAYS, onProgress: (p) => stages.add(p.stage) },
    );
    expect(r).toMatchObject({ packsWritten: 1, objectsDeleted: 3, skipped: [] });
    // Night 0's four, night 1's own eight less the staged one, night 2's own five less the two night 3 kept.
    expect(r.blobsRemoved).toBe(4 + 7 + 3);
    expect(r.bytesReclaimed).toBe(r.bytesDeleted - r.bytesWritten);
    // Random bytes are stored raw: each removed blob gives back exactly its 20,000 bytes.
    expect(r.bytesReclaimed).toBe(14 * 20_000);
    expect([...stages]).toEqual(expect.arrayContaining(['mark', 'plan', 'repack', 'delete']));
    expect(await presentBlobs(s.ex.db, n0.map((f) => Buffer.from(hashOf(f.data), 'hex')))).toEqual([]);

    const v = await verifyStore(s.ex.backup, { readData: 1 });
    expect(v).toMatchObject({ ok: true, orphanPacks: [], missingPacks: [] });
    expect(await restoresAs(s.ex, s.snaps[3]!, n3)).toBe(true);
    // The open upload commits: the blob it relied on is still there.
    const committed = await finishUpload(s.ex.backup, 'F1', staged, next);
    expect(await restoresAs(s.ex, committed, next)).toBe(true);

    const audited = await searchAudit(s.ex.db, { action: 'retention.prune', limit: 10 });
    expect(audited).toEqual([expect.objectContaining({ outcome: 'success' })]);
    // A second prune finds nothing more to do.
    expect(await prune({ db: s.ex.db, packs: s.ex.backup.packs }, { lockDays: LOCK_DAYS })).toMatchObject({ objectsDeleted: 0, packsWritten: 0, blobsRemoved: 0 });
  });

  it('keeps the blobs an open upload has sent but not committed, even in packs older than the lock', async () => {
    const s = await buildStore('open-upload');
    const fresh = randomFiles('fresh', 2);
    const next = [...s.nights[3]!, ...fresh];
    const staged = await stageUpload(s.ex.backup, 'F1', next);
    expect(staged.missing.sort()).toEqual(fresh.map((f) => hashOf(f.data)).sort());
    // Send the new blobs now (they land in a pack of their own, nothing names them yet) and
    // age every pack past the lock, so only the open upload protects them.
    const frames = Buffer.concat(fresh.flatMap((f) => {
      const head = Buffer.alloc(36);
      Buffer.from(hashOf(f.data), 'hex').copy(head);
      head.writeUInt32BE(f.data.length, 32);
      return [head, f.data];
    }));
    await s.ex.backup.addBlobs('F1', staged.uploadId, frames);
    await backdatePacks(s.ex.db, 400);
    await forgetAll(s);
    const r = await authorizedPruneOf(s);
    expect(r.objectsDeleted).toBeGreaterThan(0);
    expect(r.skipped).toEqual([]); // kept by the mark, not only by the re-check at the switch
    expect((await presentBlobs(s.ex.db, fresh.map((f) => Buffer.from(hashOf(f.data), 'hex')))).length).toBe(2);
    const committed = await finishUpload(s.ex.backup, 'F1', { ...staged, missing: [] }, next);
    expect(await restoresAs(s.ex, committed, next)).toBe(true);
  });

  it('leaves packs inside the delete lock alone', async () => {
    const s = await buildStore('young');
    await forgetAll(s);
    const r = await prune({ db: s.ex.db, packs: s.ex.backup.packs }, { lockDays: 500 });
    expect(r).toMatchObject({ packs: { young: 4, repack: 0, delete: 0 }, objectsDeleted: 0, blobsRemoved: 0 });
  });

  it.each(['after-new-pack-written', 'after-index-switch', 'mid-delete'] as const)('interrupted %s: the store stays consistent and a rerun finishes', async (point) => {
    const s = await buildStore(`crash-${point}`);
    await forgetAll(s);
    const n3 = s.nights[3]!;
    await expect(
      authorizedPruneOf(s, {
        checkpoint: (at) => {
          if (at === point) throw new Error(`simulated crash ${at}`);
        },
      }),
    ).rejects.toThrow(`simulated crash ${point}`);

    const mid = await verifyStore(s.ex.backup, { readData: 1 });
    expect(mid).toMatchObject({ ok: true, missingPacks: [], damagedBlobs: [] });
    expect(await restoresAs(s.ex, s.snaps[3]!, n3)).toBe(true);
    expect((await journal(s.ex.db)).length).toBeGreaterThan(0);

    const again = await authorizedPruneOf(s);
    expect(again.finishedFromEarlierRun).toBeGreaterThan(0);
    expect(await journal(s.ex.db)).toEqual([]);
    const after = await verifyStore(s.ex.backup, { readData: 1 });
    expect(after).toMatchObject({ ok: true, orphanPacks: [], missingPacks: [] });
    expect(await restoresAs(s.ex, s.snaps[3]!, n3)).toBe(true);
    // Only the kept night's blobs are left: the three shared, two of night 2, its own one.
    expect((await s.ex.db.selectFrom('blob').select('sha256').execute()).length).toBe(6);
    const objects: string[] = [];
    for await (const o of s.ex.backup.packs.list('data')) objects.push(o.name);
    const indexed = (await s.ex.db.selectFrom('pack').select('object_name').execute()).map((p) => p.object_name);
    expect(objects.sort()).toEqual(indexed.sort());
  });
});

describe('uploader credentials can only add', () => {
  it('the only DELETE of the upload protocol aborts an open upload', () => {
    const deletes = uploadRouter(undefined as never).stack.filter((l) => l.methods.includes('DELETE')).map((l) => l.path);
    expect(deletes).toEqual(['/ingest/v1/uploads/:uploadId']);
  });

  it('a DELETE with an uploader token on /ingest/v1 removes nothing', async () => {
    const s = await buildStore('ingest');
    const { token } = await s.ex.backup.rotateToken('F1');
    const url = await s.ex.listen();
    const snapshot = s.snaps[3]!;
    const blob = hashOf(s.nights[3]![0]!.data);
    for (const p of [`/snapshots/${snapshot}`, `/blobs/${blob}`, '/uploads', `/facilities/F1`, `/snapshots`]) {
      const res = await fetch(`${url}/ingest/v1${p}`, { method: 'DELETE', headers: { authorization: `Bearer ${token}` } });
      expect([404, 405], p).toContain(res.status);
    }
    // Aborting the upload that made a snapshot is refused.
    const made = (await s.ex.backup.getSnapshot(snapshot)).uploadId;
    const abort = await fetch(`${url}/ingest/v1/uploads/${made}`, { method: 'DELETE', headers: { authorization: `Bearer ${token}` } });
    expect(abort.status).toBe(409);
    expect(await s.ex.backup.getSnapshot(snapshot)).toMatchObject({ id: snapshot });
    expect(await restoresAs(s.ex, snapshot, s.nights[3]!)).toBe(true);
  });
});

describe('configuration of retention and drills', () => {
  it('reads the policy, the lock, the keys and the drill schedule; refuses malformed values naming them', () => {
    const c = readConfig({ HAKOBUNE_DATA_DIR: '/tmp/x', HAKOBUNE_RETENTION: 'daily=7,yearly=all', HAKOBUNE_DELETE_LOCK_DAYS: '45', HAKOBUNE_DELETE_PUBLIC_KEY_FILE: 'k.pub', HAKOBUNE_DRILL_INTERVAL_MINUTES: '1440', HAKOBUNE_VERIFY_SUBSET: '2.5%' });
    expect(c.retention).toMatchObject({ policy: { daily: 7, monthly: 0, yearly: 'all' }, lockDays: 45, deletePublicKeyFile: path.resolve('k.pub') });
    expect(c.drills).toEqual({ intervalMinutes: 1440, verifyIntervalMinutes: 0, verifySubset: 0.025, scratchDir: '/tmp/x/drills' });
    expect(readConfig({ HAKOBUNE_DATA_DIR: '/tmp/x' }).retention).toMatchObject({ policy: { daily: 30, monthly: 24, yearly: 'all' }, lockDays: 30 });
    expect(() => readConfig({ HAKOBUNE_RETENTION: 'daily=thirty' })).toThrow(/HAKOBUNE_RETENTION: "daily=thirty" is not a rule/);
    expect(() => readConfig({ HAKOBUNE_DELETE_LOCK_DAYS: '0' })).toThrow(ConfigError);
    expect(() => readConfig({ HAKOBUNE_VERIFY_SUBSET: '0.05' })).toThrow(/HAKOBUNE_VERIFY_SUBSET: must be a percentage/);
  });
});
