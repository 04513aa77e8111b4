import type { BackupService } from '../backup/backup.service.js';
import * as repo from '../backup/backup.repository.js';
import { walkFiles } from '../backup/tree-store.js';

/**
 * Every snapshot (of every facility) that holds one of these blobs, with the paths where it
 * does: the reach of a damaged blob. Snapshots sharing a root tree are walked once.
 */
export async function snapshotsHoldingBlobs(backup: BackupService, hashes: string[]): Promise<{ snapshotId: string; facilityId: string; paths: string[] }[]> {
  if (!hashes.length) return [];
  const wanted = new Set(hashes);
  const byRoot = new Map<string, string[]>();
  const out: { snapshotId: string; facilityId: string; paths: string[] }[] = [];
  for (const s of await repo.listSnapshots(backup.db)) {
    const key = s.rootTree.toString('hex');
    let paths = byRoot.get(key);
    if (!paths) {
      paths = [];
      for await (const f of walkFiles(backup.trees, s.rootTree)) if (wanted.has(f.sha256.toString('hex'))) paths.push(f.path);
      byRoot.set(key, paths);
    }
    if (paths.length) out.push({ snapshotId: s.id, facilityId: s.facilityId, paths });
  }
  return out;
}
