import { createHash } from 'node:crypto';
import type { Stats } from 'node:fs';
import type { TreeFs } from './walk.js';

export interface HashedFile {
  size: number;
  mtimeMs: number;
  ino: number;
  sha256: string;
}

export type HashOutcome =
  /** `bytes`: a copy of the file's bytes, when asked for (`keepUpTo`) and it was read in one call. */
  | ({ ok: true; bytes?: Buffer } & HashedFile)
  | { ok: false; reason: 'vanished' | 'unreadable' | 'unstable' | 'too-large' | 'not-a-file'; detail: string };

const CHUNK = 1 << 20;
const ATTEMPTS = 3;
/** One read buffer for every hash: the calls are synchronous, so never two at once. */
let scratch: Buffer | null = null;

function sameVersion(a: Stats, b: Stats): boolean {
  return a.size === b.size && a.mtimeMs === b.mtimeMs && a.ino === b.ino;
}

/**
 * Hashes a file's bytes with SHA-256 and the metadata they belong to. A file that changes while
 * it is read (size or mtime differ before and after, or more/fewer bytes than its size) is read
 * again, up to three times, then reported as unstable rather than recorded with a hash that
 * matches no version of it. A file of at most `keepUpTo` bytes (below the 1 MiB read buffer) that
 * one read returned whole comes back with a copy of its bytes, so they can be sent unread.
 */
export function hashFile(fs: TreeFs, abs: string, maxBytes: number, keepUpTo = 0): HashOutcome {
  let lastDetail = '';
  for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
    let fd: number;
    try {
      fd = fs.open(abs);
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      if (err.code === 'ENOENT') return { ok: false, reason: 'vanished', detail: 'deleted while the tree was read' };
      return { ok: false, reason: 'unreadable', detail: `${err.code ?? 'error'}: ${err.message}` };
    }
    try {
      const before = fs.fstat(fd);
      if (!before.isFile()) return { ok: false, reason: 'not-a-file', detail: 'no longer a regular file' };
      if (before.size > maxBytes) {
        return { ok: false, reason: 'too-large', detail: `${before.size} bytes, more than the ${maxBytes} bytes one upload batch can carry` };
      }
      const hash = createHash('sha256');
      // Read one byte past the size so a file that grew is noticed.
      const buf = (scratch ??= Buffer.allocUnsafe(CHUNK)).subarray(0, Math.min(before.size + 1, CHUNK));
      let total = 0;
      let reads = 0;
      for (;;) {
        const bytesRead = fs.read(fd, buf, 0, buf.length, total);
        if (bytesRead === 0) break;
        reads++;
        hash.update(buf.subarray(0, bytesRead));
        total += bytesRead;
        // Past the size: it grew. At the size after a short read: the end (saves one read call
        // per small file); a short read before the size (network filesystems) just reads on.
        if (total > before.size || (total === before.size && bytesRead < buf.length)) break;
      }
      const after = fs.fstat(fd);
      if (total === before.size && sameVersion(before, after)) {
        const hashed = { ok: true as const, size: total, mtimeMs: after.mtimeMs, ino: after.ino, sha256: hash.digest('hex') };
        // One read (or none, for an empty file) left the whole file at the start of the buffer.
        if (keepUpTo > 0 && total <= keepUpTo && total < CHUNK && reads <= 1) return { ...hashed, bytes: Buffer.from(buf.subarray(0, total)) };
        return hashed;
      }
      lastDetail = `changed while being read (size ${before.size} -> ${after.size}, read ${total} bytes)`;
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      return { ok: false, reason: 'unreadable', detail: `${err.code ?? 'error'}: ${err.message}` };
    } finally {
      try {
        fs.close(fd);
      } catch {
        // nothing was written: a failed close loses nothing
      }
    }
  }
  return { ok: false, reason: 'unstable', detail: `${lastDetail}, ${ATTEMPTS} times` };
}

/**
 * Reads a file whole into `buf` at `offset` and checks it still has the expected SHA-256 (for
 * sending its bytes). `buf` must have room for `size + 1` bytes there: the byte past the size
 * shows a file that grew (it may overwrite whatever follows; the caller writes that later).
 */
export function readVerifiedInto(fs: TreeFs, abs: string, sha256: string, size: number, buf: Buffer, offset: number): { ok: true } | { ok: false; detail: string } {
  let fd: number;
  try {
    fd = fs.open(abs);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    return { ok: false, detail: err.code === 'ENOENT' ? 'the file was deleted or renamed' : `${err.code ?? 'error'}: ${err.message}` };
  }
  try {
    const room = size + 1;
    if (buf.length - offset < room) throw new RangeError(`no room for ${room} bytes at ${offset} of ${buf.length}`);
    let total = 0;
    while (total < room) {
      const want = room - total;
      const bytesRead = fs.read(fd, buf, offset + total, want, total);
      if (bytesRead === 0) break;
      total += bytesRead;
      // A short read that ends at the size is the end (as in hashFile): one read call per file.
      if (total === size && bytesRead < want) break;
    }
    if (total !== size) return { ok: false, detail: `the file is now ${total > size ? 'larger' : `${total} bytes`}, it was ${size}` };
    const actual = createHash('sha256').update(buf.subarray(offset, offset + size)).digest('hex');
    if (actual !== sha256) return { ok: false, detail: 'the file changed since it was scanned' };
    return { ok: true };
  } catch (e) {
    if (e instanceof RangeError) throw e;
    const err = e as NodeJS.ErrnoException;
    return { ok: false, detail: `${err.code ?? 'error'}: ${err.message}` };
  } finally {
    try {
      fs.close(fd);
    } catch {
      // read-only: nothing lost
    }
  }
}
