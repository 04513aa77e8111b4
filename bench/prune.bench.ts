/**
 * Retention benchmark: a year of nightly snapshots of a generated facility, then forget by the
 * default policy, prune, and verify --read-data. Prints the figures recorded in bench/README.md
 * ("Disaster recovery storage").
 *
 *   npx tsx bench/prune.bench.ts --patients 100 --days 30 --nights 365 --verify-mb 128
 *
 * Steps: generate one facility (fixtures generate), upload it, then for each night `fixtures
 * evolve` and a delta upload through the upload protocol's service calls (only changed files
 * re-hashed, as the uploader does); the snapshots are then dated one night apart ending today
 * and the packs moved out of the delete lock; `forget` (daily=30,monthly=24,yearly=all, signed
 * delete request), `prune --dry-run`, `prune`, a second `prune`, `prune --repack-below 100%`
 * (every pack with a dead blob rewritten), `verify --read-data`. Then verify throughput on a
 * bigger store: --verify-mb of random 64 KiB blobs (incompressible, stored as they are).
 * Wall time, this process's CPU time and the CPU time of the PostgreSQL backends of the bench
 * database (from /proc) are printed with the load average: the machine is shared.
 */
import { createHash, createPrivateKey, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { sql } from 'kysely';
import { generateFixtures } from '../fixtures/generate.js';
import { evolveFacility } from '../fixtures/evolve.js';
import { createExchange, type Exchange } from '../viewer-api/exchange.js';
import { testConfig } from '../viewer-api/config.js';
import { storeStats } from '../store/backup/backup.repository.js';
import { verifyStore } from '../store/backup/verify.js';
import { createDeleteGuard, generateDeleteKeyPair, signDeleteRequest } from '../store/retention/delete-authorization.js';
import { forgetSnapshots, planForget } from '../store/retention/forget.js';
import { prune } from '../store/retention/prune.js';
import { parseRetentionPolicy } from '../store/retention/retention-policy.js';
import { createTestDatabase } from '../test/support/postgres.js';
import { tempDir } from '../test/support/tmp.js';
import { backdatePacks, backdateSnapshot } from '../test/retention.support.js';

const args = process.argv.slice(2);
const arg = (name: string, def: number) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : def;
};
const PATIENTS = arg('patients', 300);
const DAYS = arg('days', 60);
const NIGHTS = arg('nights', 365);
const VERIFY_MB = arg('verify-mb', 128);
const FACILITY = 'F001';

interface Known {
  size: number;
  mtime: number;
  sha256: string;
}

/** One night's upload: a full manifest the first time, then the changes against the latest snapshot. */
async function uploadNight(ex: Exchange, root: string, known: Map<string, Known>, base: string | null): Promise<{ snapshotId: string; changed: number }> {
  const seen = new Set<string>();
  const changes: ({ path: string; size: number; mtime: number; sha256: string } | { path: string; deleted: true })[] = [];
  const bytesOf = new Map<string, string>();
  const walk = (dir: string, rel: string) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const abs = path.join(dir, e.name);
      if (e.isDirectory()) walk(abs, `${rel}${e.name}/`);
      else if (e.isFile()) {
        const p = rel + e.name;
        seen.add(p);
        const st = fs.statSync(abs);
        const mtime = Math.floor(st.mtimeMs);
        const k = known.get(p);
        if (base && k && k.size === st.size && k.mtime === mtime) continue;
        const sha256 = createHash('sha256').update(fs.readFileSync(abs)).digest('hex');
        known.set(p, { size: st.size, mtime, sha256 });
        bytesOf.set(sha256, abs);
        changes.push({ path: p, size: st.size, mtime, sha256 });
      }
    }
  };
  walk(root, 'standard/');
  if (base) for (const p of [...known.keys()]) if (!seen.has(p)) {
    known.delete(p);
    changes.push({ path: p, deleted: true });
  }
  const open = await ex.backup.openUpload(FACILITY, { facilityId: FACILITY, clientSession: randomBytes(8).toString('hex'), baseSnapshotId: base });
  const uploadId = String(open.body.uploadId);
  const missing = new Set<string>();
  for (let i = 0; i < changes.length; i += 10_000) {
    for (const h of (await ex.backup.addManifest(FACILITY, uploadId, changes.slice(i, i + 10_000))).missing) missing.add(h);
  }
  let parts: Buffer[] = [];
  let size = 0;
  const send = async () => {
    if (parts.length) await ex.backup.addBlobs(FACILITY, uploadId, Buffer.concat(parts));
    parts = [];
    size = 0;
  };
  for (const h of missing) {
    const data = fs.readFileSync(bytesOf.get(h)!);
    if (size + data.length + 36 > 16 * 1024 * 1024) await send();
    const head = Buffer.alloc(36);
    Buffer.from(h, 'hex').copy(head);
    head.writeUInt32BE(data.length, 32);
    parts.push(head, data);
    size += data.length + 36;
  }
  await send();
  const c = await ex.backup.commit(FACILITY, uploadId, changes.length);
  return { snapshotId: c.snapshotId, changed: changes.length };
}

/** CPU seconds of the PostgreSQL backends serving the bench database. */
async function backendCpu(ex: Exchange): Promise<number> {
  const r = await sql<{ pid: number }>`select pid from pg_stat_activity where datname = current_database()`.execute(ex.db);
  let ticks = 0;
  for (const { pid } of r.rows) {
    try {
      const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
      ticks += Number(f[11]) + Number(f[12]);
    } catch {
      /* gone, or not on this machine */
    }
  }
  return ticks / 100;
}

async function measure<T>(ex: Exchange, what: string, fn: () => Promise<T>): Promise<T> {
  const pg0 = await backendCpu(ex);
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const r = await fn();
  const wall = (performance.now() - t0) / 1000;
  const c = process.cpuUsage(c0);
  const pg = (await backendCpu(ex)) - pg0;
  console.log(`${what}: ${wall.toFixed(2)} s wall, ${((c.user + c.system) / 1e6).toFixed(2)} s CPU (bench), ${pg.toFixed(2)} s CPU (PostgreSQL backends); load ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  return r;
}

async function main() {
  const work = tempDir('hakobune-prunebench-');
  const pg = await createTestDatabase('hkprunebench');
  const keys = generateDeleteKeyPair();
  fs.writeFileSync(path.join(work.dir, 'delete.pub'), keys.publicKeyPem);
  const policy = parseRetentionPolicy('daily=30,monthly=24,yearly=all');
  const ex = await createExchange(
    testConfig(path.join(work.dir, 'exchange'), { databaseUrl: pg.url, retention: { policy, lockDays: 30, deletePublicKeyFile: path.join(work.dir, 'delete.pub'), deleteKeyFile: undefined } }),
  );
  console.log(`machine: ${os.cpus().length} x ${os.cpus()[0]?.model}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, node ${process.version}, load ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  try {
    const gen = await generateFixtures({ out: path.join(work.dir, 'gen'), facilities: 1, patients: PATIENTS, days: DAYS, seed: 'prune-bench' });
    const root = path.join(work.dir, 'gen', FACILITY);
    console.log(`facility: ${gen.files} files, ${(gen.bytes / 1e6).toFixed(1)} MB (${PATIENTS} patients, ${DAYS} days)`);
    await ex.backup.addFacility({ id: FACILITY, name: 'Bench hospital', kind: 'hospital' });
    const known = new Map<string, Known>();
    const snaps: string[] = [];
    let changed = 0;
    await measure(ex, `${NIGHTS} nights of evolve + delta upload`, async () => {
      let base: string | null = null;
      for (let night = 0; night <= NIGHTS; night++) {
        if (night > 0) await evolveFacility({ root, day: night, seed: 'prune-bench' });
        const r = await uploadNight(ex, root, known, base);
        base = r.snapshotId;
        snaps.push(r.snapshotId);
        if (night > 0) changed += r.changed;
        if (night % 50 === 0) process.stderr.write(`night ${night}/${NIGHTS}: ${known.size} files\n`);
      }
    });
    console.log(`${snaps.length} snapshots, ${changed} changed entries over the nights (${(changed / NIGHTS).toFixed(0)} a night), ${known.size} files at the end`);
    const now = Date.now();
    for (const [i, id] of snaps.entries()) await backdateSnapshot(ex.db, id, snaps.length - 1 - i, now);
    await backdatePacks(ex.db, 400);
    const before = await storeStats(ex.db);
    console.log(`store before: ${before.packs} packs, ${(before.pack_bytes / 1e6).toFixed(1)} MB, ${before.blobs} blobs, ${before.trees} trees`);

    const settings = { policy, lockDays: 30, now: new Date() };
    const plan = await measure(ex, 'forget --dry-run (plan)', () => planForget(ex.db, settings));
    const guard = createDeleteGuard(ex.config.retention, ex.db, ex.viewer.audit);
    const key = createPrivateKey(keys.privateKeyPem);
    await measure(ex, `forget ${plan.forget.length} snapshots (kept ${plan.keep.length})`, () =>
      forgetSnapshots(ex.db, { guard, audit: ex.viewer.audit, settings }, signDeleteRequest(key, { action: 'forget', facility: null, snapshotIds: plan.forget.map((d) => d.id) }), { actor: { username: 'bench' }, endpoint: 'bench' }),
    );
    const dry = await measure(ex, 'prune --dry-run', () => prune({ db: ex.db, packs: ex.backup.packs }, { lockDays: 30, dryRun: true }));
    console.log(`  would reclaim ${(dry.bytesReclaimed / 1e6).toFixed(2)} MB: ${dry.packs.delete} packs to delete, ${dry.packs.repack} to repack, ${dry.blobsRemoved} blobs`);
    const r = await measure(ex, 'prune', () => prune({ db: ex.db, packs: ex.backup.packs }, { lockDays: 30 }));
    console.log(`  ${r.neededBlobs} blobs needed by the ${r.snapshots} kept snapshots, ${before.blobs - r.neededBlobs} dead`);
    console.log(`  reclaimed ${(r.bytesReclaimed / 1e6).toFixed(2)} MB: ${r.objectsDeleted} objects deleted, ${r.packsWritten} packs written, ${r.blobsRemoved} blobs removed, ${r.skipped.length} skipped`);
    await measure(ex, 'prune again (nothing to do)', () => prune({ db: ex.db, packs: ex.backup.packs }, { lockDays: 30 }));
    const full = await measure(ex, 'prune --repack-below 100%', () => prune({ db: ex.db, packs: ex.backup.packs }, { lockDays: 30, repackBelow: 1.01 }));
    console.log(`  reclaimed ${(full.bytesReclaimed / 1e6).toFixed(2)} MB: ${full.packs.repack} packs repacked into ${full.packsWritten}, ${full.packs.delete} deleted, ${full.blobsRemoved} blobs removed`);
    const after = await storeStats(ex.db);
    console.log(`store after: ${after.packs} packs, ${(after.pack_bytes / 1e6).toFixed(1)} MB, ${after.blobs} blobs`);
    let t0 = performance.now();
    const v = await measure(ex, 'verify --read-data', () => verifyStore(ex.backup, { readData: 1 }));
    let s = (performance.now() - t0) / 1000;
    console.log(`  ${v.ok ? 'OK' : 'DAMAGED'}: ${v.blobsRead} blobs read; ${(after.stored_bytes / 1e6 / s).toFixed(1)} MB/s stored, ${(after.raw_bytes / 1e6 / s).toFixed(1)} MB/s of file content`);
    if (!v.ok) throw new Error('the store does not verify after prune');

    // Verify throughput on a bigger store: random 64 KiB blobs in 4 MiB packs.
    const blob = 64 * 1024;
    for (let done = 0; done < VERIFY_MB * 1024 * 1024; done += 16 * 1024 * 1024) {
      const frames = Array.from({ length: 256 }, () => {
        const data = randomBytes(blob);
        return { sha256: createHash('sha256').update(data).digest(), data };
      });
      await ex.backup.blobs.store(frames);
    }
    const big = await storeStats(ex.db);
    t0 = performance.now();
    const vb = await measure(ex, `verify --read-data, ${(big.stored_bytes / 1e6).toFixed(0)} MB in ${big.packs} packs`, () => verifyStore(ex.backup, { readData: 1 }));
    s = (performance.now() - t0) / 1000;
    console.log(`  ${vb.ok ? 'OK' : 'DAMAGED'}: ${vb.blobsRead} blobs read; ${(big.stored_bytes / 1e6 / s).toFixed(1)} MB/s`);
    t0 = performance.now();
    await measure(ex, 'verify --read-data-subset 10%', () => verifyStore(ex.backup, { readData: 0.1 }));
  } finally {
    await ex.stop();
    await pg.drop();
    work.remove();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
