import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import type { Db } from '../store/db.js';
import { ExchangeError, badRequest } from '../store/errors.js';
import type { BackupService } from '../store/backup/backup.service.js';
import { patientPrefixes, restoreSnapshot } from '../store/backup/restore.js';
import { walkFiles, type SnapshotFile } from '../store/backup/tree-store.js';
import * as requests from '../store/backup/restore-requests.repository.js';
import { createAuditLog } from '../viewer-api/audit/audit.service.js';
import { PermanentJobError, type JobContext } from './runner.js';

export interface RestoreJobDeps {
  db: Db;
  backup: BackupService;
  log: Logger;
  /** HAKOBUNE_RESTORE_ROOT of this process: a path restore is written only below it. */
  restoreRoot: string | undefined;
  clock?: () => number;
}

/**
 * Where a path restore may go: `requested` (absolute, or relative to the root) must resolve to a
 * folder strictly below the restore root, through no symbolic link leaving it, and be absent or
 * empty. Checked when the request is made and again by the job before it writes.
 */
export function restoreTarget(root: string | undefined, requested: string): string {
  if (!root) throw badRequest('restores to a path are not enabled on this exchange (HAKOBUNE_RESTORE_ROOT is not set); ask for a download');
  if (requested.includes('\0') || requested.length > 1024) throw badRequest('the restore path is not a valid path');
  if (requested.split(/[\\/]/).includes('..')) throw badRequest('the restore path may not contain ".."');
  const realRoot = fs.realpathSync(root);
  const target = path.resolve(realRoot, requested);
  if (!target.startsWith(realRoot + path.sep)) throw badRequest(`the restore path must be a folder under the restore root ${realRoot}`);
  // The deepest existing ancestor must still be under the root once symbolic links are followed.
  let probe = target;
  while (!fs.existsSync(probe)) probe = path.dirname(probe);
  const real = fs.realpathSync(probe);
  if (real !== realRoot && !real.startsWith(realRoot + path.sep)) throw badRequest('the restore path leaves the restore root through a symbolic link');
  if (fs.existsSync(target)) {
    const st = fs.lstatSync(target);
    if (!st.isDirectory()) throw badRequest(`${target} exists and is not a folder`);
    if (fs.readdirSync(target).length > 0) throw badRequest(`${target} is not empty; restore into a new or empty folder`);
  }
  return target;
}

/**
 * Prepares a restore request. Download: reads (and so re-hashes) every blob of the selection and
 * records the totals; the tar is streamed from the store when it is downloaded. Path: writes the
 * tree below the restore root with restoreSnapshot. Progress goes on the request row. A missing
 * or damaged blob fails the request, naming the files; any other error fails it too (the
 * operator asks again), since a half-written folder must not be retried into.
 */
export async function runRestoreRequest(deps: RestoreJobDeps, requestId: string, ctx: Pick<JobContext, 'progress'>): Promise<requests.RestoreState> {
  const clock = deps.clock ?? Date.now;
  const audit = createAuditLog(deps.db, clock);
  const now = () => new Date(clock());
  const req = await requests.findRestoreRequest(deps.db, requestId);
  if (!req) throw new PermanentJobError(`restore request ${requestId} does not exist`);
  if (req.state === 'ready' || req.state === 'failed') return req.state;
  if (!(await requests.startRestoreRequest(deps.db, req.id, now()))) return req.state;
  const trail = {
    actor: req.requestedBy,
    endpoint: 'job restore',
    detail: { requestId: req.id, facility: req.facilityId, snapshot: req.snapshotId, mode: req.mode, path: req.path, patients: req.patients },
  };
  await audit.record({ ...trail, action: 'restore.start', outcome: 'success' });

  const fail = async (reason: string) => {
    await requests.finishRestoreRequest(deps.db, req.id, 'failed', reason, now());
    await audit.record({ ...trail, action: 'restore.finish', outcome: 'failure', reason });
    return 'failed' as const;
  };

  try {
    const snapshot = await deps.backup.getSnapshot(req.snapshotId);
    const prefixes = req.patients?.length ? req.patients.flatMap(patientPrefixes) : undefined;
    let total = { files: snapshot.files, bytes: snapshot.bytes };
    if (prefixes) {
      // Only some patients: count them first (trees only, no blob is read).
      total = { files: 0, bytes: 0 };
      for await (const f of walkFiles(deps.backup.trees, snapshot.rootTree, { prefixes })) {
        total.files++;
        total.bytes += f.size;
      }
    }
    await requests.setRestoreProgress(deps.db, req.id, { files: 0, bytes: 0, totalFiles: total.files, totalBytes: total.bytes }, now());
    const report = async (files: number, bytes: number) => {
      await requests.setRestoreProgress(deps.db, req.id, { files, bytes }, now());
      await ctx.progress({ files, bytes, totalFiles: total.files, totalBytes: total.bytes });
    };

    let failed: { path: string; sha256: string; reason: string }[] = [];
    let done = { files: 0, bytes: 0 };
    if (req.mode === 'path') {
      const target = restoreTarget(deps.restoreRoot, req.path ?? '');
      const r = await restoreSnapshot(deps.backup, snapshot, {
        to: target,
        patients: req.patients ?? undefined,
        onProgress: (p) => void report(p.files, p.bytes).catch((err: unknown) => deps.log.warn({ err }, 'restore progress not recorded')),
      });
      failed = r.failed;
      done = { files: r.files, bytes: r.bytes };
    } else {
      const check = async (batch: SnapshotFile[]) => {
        const byHash = new Map<string, SnapshotFile[]>();
        for (const f of batch) {
          const k = f.sha256.toString('hex');
          const l = byHash.get(k);
          if (l) l.push(f);
          else byHash.set(k, [f]);
        }
        for await (const r of deps.backup.blobs.readMany([...byHash.values()].map((l) => l[0]!.sha256))) {
          const files = byHash.get(r.sha256.toString('hex')) ?? [];
          for (const f of files) {
            if ('error' in r) failed.push({ path: f.path, sha256: r.sha256.toString('hex'), reason: r.error });
            else {
              done.files++;
              done.bytes += f.size;
            }
          }
        }
        await report(done.files, done.bytes);
      };
      let batch: SnapshotFile[] = [];
      for await (const f of walkFiles(deps.backup.trees, snapshot.rootTree, { prefixes })) {
        batch.push(f);
        if (batch.length >= 2000) {
          await check(batch);
          batch = [];
        }
      }
      await check(batch);
    }
    await requests.setRestoreProgress(deps.db, req.id, done, now());
    if (failed.length) {
      const named = failed.slice(0, 20).map((f) => `${f.path} (${f.reason})`).join('; ');
      return await fail(`${failed.length} file(s) of snapshot ${snapshot.id} cannot be read: ${named}${failed.length > 20 ? '; ...' : ''}`);
    }
    await requests.finishRestoreRequest(deps.db, req.id, 'ready', null, now());
    await audit.record({ ...trail, action: 'restore.finish', outcome: 'success', detail: { ...trail.detail, files: done.files, bytes: done.bytes } });
    return 'ready';
  } catch (e) {
    deps.log.warn({ err: e, requestId }, 'restore request failed');
    const reason = e instanceof ExchangeError ? e.message : `restore failed: ${(e as Error).message}`;
    return await fail(reason);
  }
}
