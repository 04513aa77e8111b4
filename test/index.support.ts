import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import type { BackupService } from '../store/backup/backup.service.js';
import type { LocalFile as TreeFile } from './backup.support.js';

/** A file of a local tree, as an upload manifest lists it; the scanner is the backup tests' own. */
export { scan as scanTree, type LocalFile as TreeFile } from './backup.support.js';

function frames(datas: Buffer[]): Buffer {
  const parts: Buffer[] = [];
  for (const d of datas) {
    const head = Buffer.alloc(36);
    createHash('sha256').update(d).digest().copy(head);
    head.writeUInt32BE(d.length, 32);
    parts.push(head, d);
  }
  return Buffer.concat(parts);
}

/**
 * Backs up a whole tree as one full snapshot through the backup service's upload protocol
 * operations (the same calls the HTTP routes make). Returns the snapshot id.
 */
export async function backupTree(backup: BackupService, facilityId: string, files: TreeFile[]): Promise<string> {
  const opened = await backup.openUpload(facilityId, { facilityId, clientSession: randomBytes(8).toString('hex') });
  const uploadId = opened.body['uploadId'] as string;
  const missing = new Set<string>();
  for (let i = 0; i < files.length; i += 5000) {
    const r = await backup.addManifest(
      facilityId,
      uploadId,
      files.slice(i, i + 5000).map((f) => ({ path: f.path, size: f.size, mtime: f.mtime, sha256: f.sha256 })),
    );
    for (const h of r.missing) missing.add(h);
  }
  const byHash = new Map(files.map((f) => [f.sha256, f]));
  const todo = [...missing];
  for (let i = 0; i < todo.length; i += 500) {
    await backup.addBlobs(facilityId, uploadId, frames(todo.slice(i, i + 500).map((h) => fs.readFileSync(byHash.get(h)!.abs))));
  }
  const c = await backup.commit(facilityId, uploadId, files.length);
  return c.snapshotId;
}
