import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { sql } from 'kysely';
import type { Db } from '../store/db.js';
import type { BackupService } from '../store/backup/backup.service.js';
import { tokyoDate } from '../store/backup/backup.service.js';

/** A file of a facility's tree as the tests write and compare it. */
export interface TreeFile {
  path: string;
  data: Buffer;
  mtime: number;
}

/** `count` files of random (incompressible) bytes under one patient folder. */
export function randomFiles(tag: string, count: number, size = 20_000): TreeFile[] {
  return Array.from({ length: count }, (_, i) => ({
    path: `standard/000/000/0000000001/20260101/OMP-01/0000000001_2026010112000000${String(i).padStart(2, '0')}_OMP-01_${tag}_1`,
    data: randomBytes(size),
    mtime: 1_767_225_600_000 + i * 1000,
  }));
}

export function hashOf(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

function frames(blobs: Buffer[]): Buffer {
  const parts: Buffer[] = [];
  for (const b of blobs) {
    const head = Buffer.alloc(36);
    Buffer.from(hashOf(b), 'hex').copy(head);
    head.writeUInt32BE(b.length, 32);
    parts.push(head, b);
  }
  return Buffer.concat(parts);
}

/** Opens an upload and sends its manifest; answers the hashes the store lacks. */
export async function stageUpload(backup: BackupService, facilityId: string, files: TreeFile[]): Promise<{ uploadId: string; missing: string[] }> {
  const open = await backup.openUpload(facilityId, { facilityId, clientSession: randomBytes(8).toString('hex') });
  const uploadId = String(open.body.uploadId);
  const entries = files.map((f) => ({ path: f.path, size: f.data.length, mtime: f.mtime, sha256: hashOf(f.data) }));
  const { missing } = await backup.addManifest(facilityId, uploadId, entries);
  return { uploadId, missing };
}

/** Sends the missing blobs (one batch, so one pack) and commits. */
export async function finishUpload(backup: BackupService, facilityId: string, staged: { uploadId: string; missing: string[] }, files: TreeFile[]): Promise<string> {
  const byHash = new Map(files.map((f) => [hashOf(f.data), f.data]));
  if (staged.missing.length) await backup.addBlobs(facilityId, staged.uploadId, frames(staged.missing.map((h) => byHash.get(h)!)));
  return (await backup.commit(facilityId, staged.uploadId, files.length)).snapshotId;
}

/** A whole upload through the protocol's service calls. */
export async function uploadTree(backup: BackupService, facilityId: string, files: TreeFile[]): Promise<string> {
  return finishUpload(backup, facilityId, await stageUpload(backup, facilityId, files), files);
}

/** Moves a snapshot back in time (its night and creation), as if it had been taken then. */
export async function backdateSnapshot(db: Db, snapshotId: string, daysAgo: number, now = Date.now()): Promise<void> {
  const at = new Date(now - daysAgo * 86_400_000);
  await sql`update snapshot set created_at = ${at}, nightly_date = ${tokyoDate(at)} where id = ${snapshotId}`.execute(db);
}

/** Moves every pack back in time, out of the delete lock. */
export async function backdatePacks(db: Db, daysAgo: number): Promise<void> {
  await sql`update pack set created_at = now() - make_interval(days => ${daysAgo})`.execute(db);
}

/** Every file under a folder with its bytes and mtime (ms). */
export function readFolder(root: string): Map<string, { data: Buffer; mtime: number }> {
  const out = new Map<string, { data: Buffer; mtime: number }>();
  const walk = (dir: string, rel: string) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const abs = path.join(dir, e.name);
      if (e.isDirectory()) walk(abs, `${rel}${e.name}/`);
      else out.set(rel + e.name, { data: fs.readFileSync(abs), mtime: Math.floor(fs.statSync(abs).mtimeMs) });
    }
  };
  walk(root, '');
  return out;
}

/** True when a restored folder holds exactly these files, byte for byte, with their mtimes. */
export function sameTree(root: string, files: TreeFile[]): boolean {
  const got = readFolder(root);
  if (got.size !== files.length) return false;
  return files.every((f) => {
    const g = got.get(f.path);
    return !!g && g.data.equals(f.data) && g.mtime === f.mtime;
  });
}
