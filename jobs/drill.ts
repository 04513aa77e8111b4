import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { notFound } from '../store/errors.js';
import type { BackupService } from '../store/backup/backup.service.js';
import * as backupRepo from '../store/backup/backup.repository.js';
import { restoreSnapshot } from '../store/backup/restore.js';
import { walkFiles } from '../store/backup/tree-store.js';
import { verifyStore } from '../store/backup/verify.js';
import { snapshotsHoldingBlobs } from '../store/dr/blob-holders.js';
import { drillCandidates, insertDrill, type DrillDamage, type DrillRecord } from '../store/dr/drill.repository.js';

export interface DrillDeps {
  backup: BackupService;
  /** Folder the drill restores into (a fresh sub-folder each time, removed after). */
  scratchDir: string;
  /** Uniform in [0, 1): picks the facility and the night (tests fix it). */
  random?: () => number;
  clock?: () => number;
}

/** A drill's record before it runs: passed until something is found, counted as it goes. */
function newDrill(kind: DrillRecord['kind'], started: number, what: Pick<DrillRecord, 'facilityId' | 'snapshotId' | 'nightlyDate'>): Omit<DrillRecord, 'id'> {
  return { kind, ...what, outcome: 'passed', startedAt: new Date(started), durationMs: 0, files: 0, bytes: 0, damage: null, detail: null };
}

/**
 * A restore drill: a random facility and night (its last snapshot of that night) restored into
 * scratch space, then every file checked on disk against the snapshot (name, bytes, mtime; no
 * file more, no file less). Damage names the files and every snapshot that holds the damaged
 * blobs. The result goes to the drill history whatever it is.
 */
export async function runRestoreDrill(deps: DrillDeps, pick: { facilityId?: string; night?: string } = {}): Promise<DrillRecord> {
  const random = deps.random ?? Math.random;
  const clock = deps.clock ?? Date.now;
  const started = clock();
  const candidates = await drillCandidates(deps.backup.db);
  const choice = pick.facilityId ? candidates.find((c) => c.facilityId === pick.facilityId) : candidates[Math.floor(random() * candidates.length)];
  if (!choice) throw notFound(pick.facilityId ? `facility ${pick.facilityId} has no snapshot to drill` : 'no facility has a snapshot to drill');
  const night = pick.night ?? choice.nights[Math.floor(random() * choice.nights.length)]!;
  if (!choice.nights.includes(night)) throw notFound(`facility ${choice.facilityId} has no snapshot of night ${night}`);
  const snapshot = (await backupRepo.snapshotAt(deps.backup.db, choice.facilityId, night))!;

  fs.mkdirSync(deps.scratchDir, { recursive: true });
  const dir = fs.mkdtempSync(path.join(deps.scratchDir, 'drill-'));
  const record = newDrill('restore', started, { facilityId: snapshot.facilityId, snapshotId: snapshot.id, nightlyDate: snapshot.nightlyDate });
  try {
    const restored = await restoreSnapshot(deps.backup, snapshot, { to: dir });
    const damaged = new Map(restored.failed.map((f) => [f.path, f]));
    const onDisk = new Set(listFiles(dir));
    for await (const f of walkFiles(deps.backup.trees, snapshot.rootTree)) {
      const hex = f.sha256.toString('hex');
      onDisk.delete(f.path);
      if (damaged.has(f.path)) continue;
      const file = path.join(dir, ...f.path.split('/'));
      const problem = checkFile(file, hex, f.size, f.mtime);
      if (problem) damaged.set(f.path, { path: f.path, sha256: hex, reason: problem });
      else {
        record.files += 1;
        record.bytes += f.size;
      }
    }
    const files = [...damaged.values()];
    for (const extra of onDisk) files.push({ path: extra, sha256: '', reason: 'restored but not in the snapshot' });
    if (files.length) {
      const damage: DrillDamage = { files, snapshots: await snapshotsHoldingBlobs(deps.backup, [...new Set(files.map((f) => f.sha256).filter(Boolean))]) };
      record.outcome = 'damaged';
      record.damage = damage;
      record.detail = `${files.length} file(s) of ${snapshot.files} not restored as stored; ${damage.snapshots.length} snapshot(s) hold the damaged content`;
    }
  } catch (e) {
    record.outcome = 'failed';
    record.detail = `the drill could not run: ${(e as Error).message}`;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  record.durationMs = Math.round(clock() - started);
  return insertDrill(deps.backup.db, record);
}

function checkFile(file: string, sha256: string, size: number, mtime: number): string | undefined {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch {
    return 'missing after the restore';
  }
  if (st.size !== size) return `${st.size} bytes instead of ${size}`;
  if (createHash('sha256').update(fs.readFileSync(file)).digest('hex') !== sha256) return 'content differs from the snapshot';
  if (Math.floor(st.mtimeMs) !== mtime) return `modification time ${Math.floor(st.mtimeMs)} instead of ${mtime}`;
  return undefined;
}

function listFiles(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string, rel: string) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      if (e.isDirectory()) walk(path.join(dir, e.name), `${rel}${e.name}/`);
      else out.push(rel + e.name);
    }
  };
  walk(root, '');
  return out;
}

/** A sampled verification of the store (verify --read-data-subset), kept in the same history. */
export async function runVerifyDrill(deps: Pick<DrillDeps, 'backup' | 'clock'>, subset: number): Promise<DrillRecord> {
  const clock = deps.clock ?? Date.now;
  const started = clock();
  const record = newDrill('verify', started, { facilityId: null, snapshotId: null, nightlyDate: null });
  try {
    const r = await verifyStore(deps.backup, { readData: subset });
    record.files = r.blobsRead;
    record.detail = `${r.packs} packs, ${r.blobsRead} blobs read back (${Math.round(subset * 1000) / 10}% of the packs), ${r.snapshots} snapshots checked`;
    if (!r.ok) {
      const bySnapshot = new Map<string, { snapshotId: string; facilityId: string; paths: string[] }>();
      for (const b of r.damagedBlobs) {
        for (const h of b.heldBy) {
          const s = bySnapshot.get(h.snapshotId) ?? { snapshotId: h.snapshotId, facilityId: h.facilityId, paths: [] };
          s.paths.push(h.path);
          bySnapshot.set(h.snapshotId, s);
        }
      }
      for (const d of r.damagedSnapshots) if (!bySnapshot.has(d.snapshotId)) bySnapshot.set(d.snapshotId, { snapshotId: d.snapshotId, facilityId: d.facilityId, paths: [] });
      record.outcome = 'damaged';
      record.damage = {
        files: r.damagedBlobs.flatMap((b) => b.heldBy.map((h) => ({ path: h.path, sha256: b.sha256, reason: b.reason }))),
        snapshots: [...bySnapshot.values()],
        missingPacks: r.missingPacks,
      };
      record.detail += `; ${r.damagedBlobs.length} damaged blob(s), ${r.damagedSnapshots.length} damaged snapshot tree(s), ${r.missingPacks.length} missing pack(s)`;
    }
  } catch (e) {
    record.outcome = 'failed';
    record.detail = `the verification could not run: ${(e as Error).message}`;
  }
  record.durationMs = Math.round(clock() - started);
  return insertDrill(deps.backup.db, record);
}
