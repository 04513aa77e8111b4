import type { BackupService } from './backup.service.js';
import type { SnapshotRow } from './backup.repository.js';
import { groupByBlob, patientPrefixes } from './restore.js';
import { walkFiles, type SnapshotFile } from './tree-store.js';

/**
 * A POSIX tar (ustar, IEEE Std 1003.1-2001 "pax" format) of a snapshot's tree, written as a
 * stream: 512-byte headers, file data padded to 512 bytes, two zero blocks at the end. Paths over
 * the 100 bytes of the ustar name field, and millisecond mtimes, go in a pax extended header
 * ('x') before the file's own header, which pax readers (GNU tar, bsdtar) apply.
 */

const BLOCK = 512;

function writeString(buf: Buffer, offset: number, length: number, value: string): void {
  const b = Buffer.from(value, 'utf8');
  b.copy(buf, offset, 0, Math.min(b.length, length));
}

/** An octal number field: digits padded with zeros, then NUL (ustar numeric fields). */
function writeOctal(buf: Buffer, offset: number, length: number, value: number): void {
  const digits = Math.floor(value).toString(8);
  if (digits.length > length - 1) throw new Error(`${value} does not fit a ${length}-byte tar field`);
  writeString(buf, offset, length - 1, digits.padStart(length - 1, '0'));
  buf[offset + length - 1] = 0;
}

/** One ustar header block. `name` must already fit 100 bytes (longer paths go in a pax header). */
export function ustarHeader(h: { name: string; size: number; mtimeSeconds: number; type: '0' | 'x' }): Buffer {
  const buf = Buffer.alloc(BLOCK, 0);
  writeString(buf, 0, 100, h.name);
  writeOctal(buf, 100, 8, 0o644);
  writeOctal(buf, 108, 8, 0);
  writeOctal(buf, 116, 8, 0);
  writeOctal(buf, 124, 12, h.size);
  writeOctal(buf, 136, 12, h.mtimeSeconds);
  buf.fill(0x20, 148, 156); // the checksum is computed with its own field as spaces
  writeString(buf, 156, 1, h.type);
  writeString(buf, 257, 6, 'ustar'); // "ustar\0"
  writeString(buf, 263, 2, '00');
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += buf[i]!;
  writeString(buf, 148, 6, sum.toString(8).padStart(6, '0'));
  buf[154] = 0;
  buf[155] = 0x20;
  return buf;
}

/** A pax record "<len> <key>=<value>\n", where len counts the whole record including itself. */
export function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  const bodyLen = Buffer.byteLength(body);
  let len = bodyLen + String(bodyLen).length;
  if (String(len).length !== String(len - bodyLen).length) len = bodyLen + String(len).length;
  return `${len}${body}`;
}

function padding(size: number): Buffer {
  const r = size % BLOCK;
  return r === 0 ? Buffer.alloc(0) : Buffer.alloc(BLOCK - r, 0);
}

/** The header block(s) of one regular file. */
export function fileHeaders(path: string, size: number, mtimeMs: number): Buffer[] {
  const seconds = Math.floor(mtimeMs / 1000);
  const ms = mtimeMs - seconds * 1000;
  const nameBytes = Buffer.byteLength(path);
  const ascii = /^[\x20-\x7e]*$/.test(path);
  const records: string[] = [];
  if (nameBytes > 100 || !ascii) records.push(paxRecord('path', path));
  if (ms !== 0) records.push(paxRecord('mtime', `${seconds}.${String(ms).padStart(3, '0')}`));
  const out: Buffer[] = [];
  if (records.length) {
    const data = Buffer.from(records.join(''), 'utf8');
    out.push(ustarHeader({ name: 'PaxHeaders/entry', size: data.length, mtimeSeconds: seconds, type: 'x' }), data, padding(data.length));
  }
  // The ustar name: the path itself when it fits, else its last 100 bytes' worth of ASCII (pax
  // readers use the extended path; only a reader without pax support would see this fallback).
  const fallback = nameBytes <= 100 && ascii ? path : path.replace(/[^\x20-\x7e]/g, '_').slice(-100);
  out.push(ustarHeader({ name: fallback, size, mtimeSeconds: seconds, type: '0' }));
  return out;
}

/** The end of an archive: two zero blocks. */
export const TAR_END = Buffer.alloc(2 * BLOCK, 0);

/** A blob of the snapshot could not be read or did not match its hash. */
export class DamagedBlobError extends Error {
  override name = 'DamagedBlobError';
  constructor(
    readonly path: string,
    readonly sha256: string,
    readonly reason: string,
  ) {
    super(`${path} (blob ${sha256}) cannot be read: ${reason}`);
  }
}

/**
 * The snapshot's files (or those of some patients) as tar chunks. Files come from the tree walk
 * in batches and blobs are read a batch at a time, so memory holds one batch's metadata and one
 * blob, never the tree. A damaged blob throws DamagedBlobError: the archive is left unfinished
 * (no end blocks), which a reader reports as a truncated archive.
 */
export async function* snapshotTar(
  backup: BackupService,
  snapshot: SnapshotRow,
  opts: { patients?: string[] | null; onFile?: (f: SnapshotFile) => void } = {},
): AsyncGenerator<Buffer> {
  const prefixes = opts.patients?.length ? opts.patients.flatMap(patientPrefixes) : undefined;
  async function* batchOut(batch: SnapshotFile[]): AsyncGenerator<Buffer> {
    const byHash = groupByBlob(batch);
    for await (const r of backup.blobs.readMany([...byHash.values()].map((l) => l[0]!.sha256))) {
      const files = byHash.get(r.sha256.toString('hex')) ?? [];
      if ('error' in r) throw new DamagedBlobError(files[0]?.path ?? '?', r.sha256.toString('hex'), r.error);
      for (const f of files) {
        if (r.data.length !== f.size) throw new DamagedBlobError(f.path, r.sha256.toString('hex'), `${r.data.length} bytes where the tree says ${f.size}`);
        yield Buffer.concat([...fileHeaders(f.path, f.size, f.mtime)]);
        yield r.data;
        const pad = padding(f.size);
        if (pad.length) yield pad;
        opts.onFile?.(f);
      }
    }
  }
  let batch: SnapshotFile[] = [];
  for await (const f of walkFiles(backup.trees, snapshot.rootTree, { prefixes })) {
    batch.push(f);
    if (batch.length >= 2000) {
      yield* batchOut(batch);
      batch = [];
    }
  }
  if (batch.length) yield* batchOut(batch);
  yield TAR_END;
}
