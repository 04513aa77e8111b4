import fs from 'node:fs';
import path from 'node:path';
import { ExchangeError, badRequest } from '../errors.js';
import type { BackupService } from './backup.service.js';
import type { BlobLocation, SnapshotRow } from './backup.repository.js';
import { ingestPool, type RestoreBlob } from './ingest-pool.js';
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

/** Files taken from the tree walk per round of blob reads (their blobs read in pack order). */
const RESTORE_BATCH = 10_000;
/** Blobs handed to a worker at once, and spans in work per worker. */
const JOB_BLOBS = 256;
const JOBS_PER_WORKER = 3;

/**
 * Writes a snapshot's tree byte for byte: folders, file contents (each re-hashed before it is
 * written), mtimes. Streams: files come from the tree walk in batches, each batch's blobs are
 * read pack by pack in pack order (one read per span of a pack), and the ingest workers inflate,
 * check and write them (open, write, set mtime, close, synchronous on each worker) while this
 * thread reads the next spans and walks the trees. A file whose blob is missing or damaged is
 * not written; it is named in `failed` and every other file is still restored. A write that
 * fails (disk full, no permission) stops the restore with that error.
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
  const pool = ingestPool();

  const fail = (files: SnapshotFile[], reason: string) => {
    for (const f of files) result.failed.push({ path: f.path, sha256: f.sha256.toString('hex'), reason });
    progress.files += files.length;
  };

  // Spans in work on the workers, bounded: a slot is awaited before each is handed over.
  const inFlight = new Set<Promise<void>>();
  let writeError: unknown;
  const hand = async (bytes: Buffer, locs: BlobLocation[], start: number, byHash: Map<string, SnapshotFile[]>, dicts: Map<number, Buffer>) => {
    while (inFlight.size >= pool.size * JOBS_PER_WORKER) await Promise.race(inFlight);
    if (writeError) throw writeError;
    const held = locs.map((l) => byHash.get(l.sha256.toString('hex')) ?? []);
    const blobs: RestoreBlob[] = locs.map((l, i) => ({
      from: l.offset - start,
      length: l.length,
      size: l.size,
      codec: l.codec,
      dictionaryId: l.dictionaryId,
      sha256: l.sha256,
      objectName: l.objectName,
      files: held[i]!.map((f) => ({ path: f.path, mtime: f.mtime })),
    }));
    const p: Promise<void> = pool
      .restore(root, bytes, blobs, dicts)
      .then((r) => {
        if ('error' in r) throw new Error(r.error);
        for (const x of r.failed) fail(held[x.blob]!, x.reason);
        result.files += r.files;
        result.bytes += r.bytes;
        progress.files += r.files;
        progress.bytes += r.bytes;
      })
      .catch((e) => {
        writeError ??= e;
      })
      .finally(() => inFlight.delete(p));
    inFlight.add(p);
  };

  const writeBatch = async (batch: SnapshotFile[]) => {
    const byHash = groupByBlob(batch);
    for await (const s of backup.blobs.readSpans([...byHash.values()].map((l) => l[0]!.sha256))) {
      if ('missing' in s) {
        for (const h of s.missing) fail(byHash.get(h.toString('hex')) ?? [], 'blob is not in the index');
      } else if (!s.bytes) {
        for (const l of s.blobs) fail(byHash.get(l.sha256.toString('hex')) ?? [], s.error);
      } else {
        const dicts = await backup.blobs.dictionariesOf(s.blobs);
        for (let i = 0; i < s.blobs.length; i += JOB_BLOBS) {
          const locs = s.blobs.slice(i, i + JOB_BLOBS);
          const last = locs[locs.length - 1]!;
          // The job's part of the span (a span cut short on disk may end before its blobs do).
          const from = locs[0]!.offset - s.start;
          const bytes = s.bytes.subarray(Math.min(from, s.bytes.length), Math.min(last.offset + last.length - s.start, s.bytes.length));
          await hand(bytes, locs, locs[0]!.offset, byHash, dicts);
        }
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
