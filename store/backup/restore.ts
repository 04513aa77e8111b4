import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { ExchangeError, badRequest } from '../errors.js';
import type { BackupService } from './backup.service.js';
import type { SnapshotRow } from './backup.repository.js';
import { walkFiles, type SnapshotFile } from './tree-store.js';

export interface RestoreOptions {
  to: string;
  /** Only these patients' folders (`<id1-3>/<id4-6>/<pid>/` under standard/ and extended/). */
  patients?: string[];
  /** Write into a non-empty folder (existing files of the same name are replaced). */
  force?: boolean;
  onProgress?: (p: RestoreProgress) => void;
}

export interface RestoreProgress {
  files: number;
  bytes: number;
  totalFiles: number;
  totalBytes: number;
}

export interface RestoreResult {
  snapshotId: string;
  facilityId: string;
  files: number;
  bytes: number;
  failed: { path: string; sha256: string; reason: string }[];
}

/** A batch's files grouped by blob (hex SHA-256), so each blob is read once for all its names. */
export function groupByBlob(batch: SnapshotFile[]): Map<string, SnapshotFile[]> {
  const byHash = new Map<string, SnapshotFile[]>();
  for (const f of batch) {
    const k = f.sha256.toString('hex');
    const list = byHash.get(k);
    if (list) list.push(f);
    else byHash.set(k, [f]);
  }
  return byHash;
}

/** The folders of one patient in the standard and extended storage (SS-MIX2 layout). */
export function patientPrefixes(pid: string): string[] {
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(pid)) throw badRequest(`"${pid}" is not a patient id`);
  const rel = `${pid.slice(0, 3)}/${pid.slice(3, 6)}/${pid}/`;
  return [`standard/${rel}`, `extended/${rel}`];
}

/** Files written at once: enough to keep libuv's thread pool and the disk busy. */
const WRITE_CONCURRENCY = 32;
/** Files taken from the tree walk per round of blob reads (their blobs read in pack order). */
const RESTORE_BATCH = 10_000;

/**
 * Writes a snapshot's tree byte for byte: folders, file contents (each re-hashed before it is
 * written), mtimes. Streams: files come from the tree walk in batches, each batch's blobs are
 * read pack by pack in pack order (one read per span of a pack), and files are written by a
 * bounded number of concurrent writes (open, write, set mtime, close on libuv's thread pool)
 * while the next blobs are read. A file whose blob is missing or damaged is not written; it is
 * named in `failed` and every other file is still restored. A write that fails (disk full, no
 * permission) stops the restore with that error.
 */
export async function restoreSnapshot(backup: BackupService, snapshot: SnapshotRow, opts: RestoreOptions): Promise<RestoreResult> {
  const root = path.resolve(opts.to);
  if (fs.existsSync(root)) {
    if (!fs.statSync(root).isDirectory()) throw badRequest(`${opts.to} exists and is not a folder`);
    if (!opts.force && fs.readdirSync(root).length > 0) {
      throw new ExchangeError('conflict', `${opts.to} is not empty; restore into an empty folder or pass --force`);
    }
  }
  fs.mkdirSync(root, { recursive: true });
  const prefixes = opts.patients?.length ? opts.patients.flatMap(patientPrefixes) : undefined;
  const result: RestoreResult = { snapshotId: snapshot.id, facilityId: snapshot.facilityId, files: 0, bytes: 0, failed: [] };
  const progress = { files: 0, bytes: 0, totalFiles: snapshot.files, totalBytes: snapshot.bytes };

  // Folders: each made once; a folder's parent is made before it (mkdir without recursion).
  const made = new Map<string, Promise<void>>([[root, Promise.resolve()]]);
  const makeDir = (dir: string): Promise<void> => {
    let p = made.get(dir);
    if (!p) {
      p = makeDir(path.dirname(dir)).then(() =>
        fsp.mkdir(dir).catch((e: NodeJS.ErrnoException) => {
          if (e.code !== 'EEXIST') throw e;
        }),
      );
      made.set(dir, p);
    }
    return p;
  };

  const writeFile = async (f: SnapshotFile, data: Buffer): Promise<void> => {
    // Paths were checked at upload (no "..", not absolute); check again before writing.
    const target = path.join(root, ...f.path.split('/'));
    if (!target.startsWith(root + path.sep)) throw new Error(`refusing to write outside ${root}: ${f.path}`);
    await makeDir(path.dirname(target));
    const fh = await fsp.open(target, 'w', 0o644);
    try {
      await fh.writeFile(data);
      // The manifest has whole milliseconds; a time in seconds as a double can fall a hair
      // below the millisecond and truncate to the one before, so aim at its middle.
      const t = (f.mtime + 0.5) / 1000;
      await fh.utimes(t, t);
    } finally {
      await fh.close();
    }
    result.files += 1;
    result.bytes += f.size;
    progress.files += 1;
    progress.bytes += f.size;
  };

  // Bounded concurrent writes: a slot is awaited before each write is started.
  const inFlight = new Set<Promise<void>>();
  let writeError: unknown;
  const schedule = async (f: SnapshotFile, data: Buffer) => {
    while (inFlight.size >= WRITE_CONCURRENCY) await Promise.race(inFlight);
    if (writeError) throw writeError;
    const p: Promise<void> = writeFile(f, data)
      .catch((e) => {
        writeError ??= e;
      })
      .finally(() => inFlight.delete(p));
    inFlight.add(p);
  };

  const writeBatch = async (batch: SnapshotFile[]) => {
    const byHash = groupByBlob(batch);
    for await (const r of backup.blobs.readMany([...byHash.values()].map((l) => l[0]!.sha256))) {
      const files = byHash.get(r.sha256.toString('hex')) ?? [];
      for (const f of files) {
        if ('error' in r) {
          result.failed.push({ path: f.path, sha256: r.sha256.toString('hex'), reason: r.error });
          progress.files += 1;
        } else await schedule(f, r.data);
      }
    }
    opts.onProgress?.({ ...progress });
  };

  try {
    let batch: SnapshotFile[] = [];
    for await (const f of walkFiles(backup.trees, snapshot.rootTree, { prefixes })) {
      batch.push(f);
      if (batch.length >= RESTORE_BATCH) {
        await writeBatch(batch);
        batch = [];
      }
    }
    if (batch.length) await writeBatch(batch);
  } finally {
    await Promise.all(inFlight);
  }
  if (writeError) throw writeError;
  opts.onProgress?.({ ...progress });
  return result;
}
