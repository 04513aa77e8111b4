import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { compareDirs, compareNames, escapeField, unescapeField } from './order.js';

/**
 * The uploader's local cache: for every file of the last committed snapshot, its size, mtime,
 * inode and SHA-256, so that a file whose metadata did not change is not read again.
 *
 * A text file, one directory block after another in walk order (see order.ts), so it is read
 * as a stream beside the walk with flat memory however many millions of files it lists:
 *
 *     hakobune-upload-cache 1
 *     facility<TAB>F001
 *     server<TAB>https://exchange.example
 *     snapshot<TAB><id, padded with spaces so it can be filled in place after commit>
 *     feed<TAB><name of the last change-feed file taken into account, or ->
 *     <empty line>
 *     /standard/999/901/9999013/-/ADT-00
 *     <name><TAB><size><TAB><mtimeMs><TAB><inode><TAB><sha256>
 *     ...
 *     //end<TAB><files><TAB><bytes>
 *
 * Directory lines start with `/` (a path never does); `//end` cannot be a directory (empty
 * segment), so a file without it was cut short and is not trusted. The file is only ever
 * replaced whole: written beside, fsynced, renamed.
 */

export const CACHE_MAGIC = 'hakobune-upload-cache 1';
const SNAPSHOT_FIELD_WIDTH = 200;

export interface CachedFile {
  name: string;
  size: number;
  /** As stat reports it (may carry a fraction): compared exactly to detect a change. */
  mtimeMs: number;
  ino: number;
  sha256: string;
}

export interface CacheBlock {
  /** Directory path, `standard/...` or `extended/...`. */
  dir: string;
  /** In name order. */
  files: CachedFile[];
}

export interface CacheHeader {
  facilityId: string;
  server: string;
  /** The snapshot this cache describes, once committed. */
  snapshotId: string | null;
  /** The last transaction-storage feed file taken into account (TR_... name). */
  feedPosition: string | null;
}

export interface CacheTotals {
  files: number;
  bytes: number;
}

export class CacheCorruptError extends Error {
  override name = 'CacheCorruptError';
  constructor(
    readonly file: string,
    detail: string,
  ) {
    super(`the upload cache ${file} is damaged (${detail}); it will be rebuilt by a full scan`);
  }
}

/** Bytes read from a cache file at a time (the read buffer grows only for a longer line). */
const READ_CHUNK = 1 << 20;

const NL = 10;
const TAB = 9;
const SLASH = 47;
const END_MARKER = Buffer.from('//end\t');

/** Buffer's decoders without toString's argument checks (every Node Buffer has them; the typings leave them out). */
type DecodingBuffer = Buffer & { latin1Slice(start: number, end: number): string; utf8Slice(start: number, end: number): string };

/**
 * Reads a cache file block by block, in order.
 *
 * Lines are parsed from the bytes of the read buffer, and every string handed out (names,
 * directories, hashes) is decoded from its own bytes. Strings cut from a decoded chunk (split,
 * slice) would be views that keep the whole chunk alive: a delta manifest batch holding 10,000
 * entries from all over a 1M-file cache then held every 1 MiB chunk of both caches.
 */
export class CacheReader {
  private lastDir: string | null = null;
  private done = false;
  private lineNo: number;
  private buf = Buffer.allocUnsafe(READ_CHUNK) as DecodingBuffer;
  /** The unparsed bytes are buf[at, end). */
  private at = 0;
  private end = 0;
  private readonly tabs = new Int32Array(4);
  private fd: number | null;

  private constructor(
    readonly file: string,
    readonly header: CacheHeader,
    readonly totals: CacheTotals,
    fd: number,
    private position: number,
    headerLines: number,
  ) {
    this.fd = fd;
    this.lineNo = headerLines;
  }

  /** Opens a cache file; null when there is none. Throws CacheCorruptError on a damaged file. */
  static async open(file: string): Promise<CacheReader | null> {
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(file, 'r');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw e;
    }
    let totals: CacheTotals;
    let header: CacheHeader;
    let headerLines = 0;
    let bodyStart = 0;
    try {
      const { size } = await fh.stat();
      // The trailer proves the file was written to the end.
      const tailLen = Math.min(size, 200);
      const tail = Buffer.alloc(tailLen);
      await fh.read(tail, 0, tailLen, size - tailLen);
      const m = /\n\/\/end\t(\d+)\t(\d+)\n$/.exec(tail.toString('utf8'));
      if (!m) throw new CacheCorruptError(file, 'no end marker: it was cut short');
      totals = { files: Number(m[1]), bytes: Number(m[2]) };
      const headLen = Math.min(size, 4096);
      const head = Buffer.alloc(headLen);
      await fh.read(head, 0, headLen, 0);
      const text = head.toString('utf8');
      const end = text.indexOf('\n\n');
      if (end < 0) throw new CacheCorruptError(file, 'no header');
      const lines = text.slice(0, end).split('\n');
      if (lines[0] !== CACHE_MAGIC) throw new CacheCorruptError(file, `unknown format "${lines[0]?.slice(0, 40)}"`);
      const kv = new Map(lines.slice(1).map((l) => [l.slice(0, l.indexOf('\t')), l.slice(l.indexOf('\t') + 1)]));
      const opt = (v: string | undefined) => {
        const t = (v ?? '').trim();
        return t === '' || t === '-' ? null : t;
      };
      const facilityId = kv.get('facility');
      if (!facilityId) throw new CacheCorruptError(file, 'no facility in the header');
      header = {
        facilityId,
        server: kv.get('server') ?? '',
        snapshotId: opt(kv.get('snapshot')),
        feedPosition: opt(kv.get('feed')),
      };
      headerLines = lines.length + 1;
      bodyStart = Buffer.byteLength(text.slice(0, end + 2), 'utf8');
    } finally {
      await fh.close();
    }
    // Read in large synchronous chunks and parsed here: a promise per line (readline's
    // iterator) cost more than the parsing, and a nightly run reads a 1M-line cache three times.
    return new CacheReader(file, header, totals, fs.openSync(file, 'r'), bodyStart, headerLines);
  }

  /**
   * Makes sure a whole line starts at `at`; returns the index of its newline, or -1 at the end
   * of the file.
   */
  private lineEnd(): number {
    for (let from = this.at; ; ) {
      const nl = this.buf.indexOf(NL, from);
      // Bytes past `end` are left over from an earlier read.
      if (nl >= 0 && nl < this.end) return nl;
      from = this.end;
      if (this.fd === null) {
        if (this.at < this.end) throw this.corrupt('unexpected end');
        return -1;
      }
      // Keep the unparsed piece at the front, then read after it (a line longer than the
      // buffer grows it).
      const left = this.end - this.at;
      if (this.at > 0) this.buf.copy(this.buf, 0, this.at, this.end);
      if (left === this.buf.length) {
        const bigger = Buffer.allocUnsafe(this.buf.length * 2) as DecodingBuffer;
        this.buf.copy(bigger, 0, 0, left);
        this.buf = bigger;
      }
      from -= this.at;
      this.at = 0;
      this.end = left;
      let n: number;
      try {
        n = fs.readSync(this.fd, this.buf, left, this.buf.length - left, this.position);
      } catch (e) {
        this.closeFile();
        throw new CacheCorruptError(this.file, `cannot be read: ${(e as Error).message}`);
      }
      this.position += n;
      this.end += n;
      if (n === 0) this.closeFile();
    }
  }

  private closeFile(): void {
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
  }

  private corrupt(detail: string): CacheCorruptError {
    this.close();
    return new CacheCorruptError(this.file, `line ${this.lineNo}: ${detail}`);
  }

  /** A field's text, decoded into a string of its own (never a view of a larger one). */
  private text(from: number, to: number): string {
    const b = this.buf;
    let i = from;
    while (i < to && b[i]! < 0x80) i++;
    return i === to ? b.latin1Slice(from, to) : b.utf8Slice(from, to);
  }

  /** A decimal field; integers are read here, anything else (fractions, exponents) by Number. */
  private number(from: number, to: number): number {
    const b = this.buf;
    let v = 0;
    if (to - from > 0 && to - from <= 15) {
      let i = from;
      for (; i < to; i++) {
        const d = b[i]! - 48;
        if (d < 0 || d > 9) break;
        v = v * 10 + d;
      }
      if (i === to) return v;
    }
    return to > from ? Number(b.latin1Slice(from, to)) : NaN;
  }

  private isSha256(from: number, to: number): boolean {
    if (to - from !== 64) return false;
    const b = this.buf;
    for (let i = from; i < to; i++) {
      const c = b[i]!;
      if (!((c >= 48 && c <= 57) || (c >= 97 && c <= 102))) return false;
    }
    return true;
  }

  /** Parses the file line buf[at, nl). */
  private fileLine(nl: number): CachedFile {
    const b = this.buf;
    const tabs = this.tabs;
    let n = 0;
    for (let i = this.at; i < nl; i++) {
      if (b[i] === TAB) {
        if (n === 4) throw this.corrupt('expected 5 fields');
        tabs[n++] = i;
      }
    }
    if (n !== 4) throw this.corrupt('expected 5 fields');
    const t1 = tabs[0]!;
    const t2 = tabs[1]!;
    const t3 = tabs[2]!;
    const t4 = tabs[3]!;
    const size = this.number(t1 + 1, t2);
    const mtimeMs = this.number(t2 + 1, t3);
    if (!Number.isSafeInteger(size) || size < 0 || !Number.isFinite(mtimeMs) || !this.isSha256(t4 + 1, nl)) throw this.corrupt('bad field');
    return { name: unescapeField(this.text(this.at, t1)), size, mtimeMs, ino: this.number(t3 + 1, t4), sha256: b.latin1Slice(t4 + 1, nl) };
  }

  /** The next directory block, or null at the end. */
  async next(): Promise<CacheBlock | null> {
    if (this.done) return null;
    let nl = this.lineEnd();
    this.lineNo++;
    if (nl < 0) throw this.corrupt('unexpected end');
    const b0 = this.buf;
    if (nl - this.at >= END_MARKER.length && b0.compare(END_MARKER, 0, END_MARKER.length, this.at, this.at + END_MARKER.length) === 0) {
      this.done = true;
      this.close();
      return null;
    }
    if (b0[this.at] !== SLASH) throw this.corrupt('expected a directory line');
    const dir = unescapeField(this.text(this.at + 1, nl));
    if (this.lastDir !== null && compareDirs(this.lastDir, dir) >= 0) throw this.corrupt(`directories out of order at ${dir}`);
    this.lastDir = dir;
    this.at = nl + 1;
    const files: CachedFile[] = [];
    for (;;) {
      nl = this.lineEnd();
      if (nl < 0) {
        this.lineNo++;
        throw this.corrupt('unexpected end');
      }
      // The next directory line (or the end marker) starts the next block.
      if (this.buf[this.at] === SLASH) break;
      this.lineNo++;
      const file = this.fileLine(nl);
      const prev = files[files.length - 1];
      if (prev && compareNames(prev.name, file.name) >= 0) throw this.corrupt(`names out of order at ${file.name}`);
      files.push(file);
      this.at = nl + 1;
    }
    return { dir, files };
  }

  close(): void {
    this.done = true;
    this.closeFile();
  }
}

/** A cursor over a cache that hands out blocks in order, with one block of look-ahead. */
export class CacheCursor {
  private head: CacheBlock | null | undefined;
  constructor(private readonly reader: CacheReader | null) {}

  async peek(): Promise<CacheBlock | null> {
    if (this.head === undefined) this.head = this.reader ? await this.reader.next() : null;
    return this.head;
  }

  async take(): Promise<CacheBlock | null> {
    const b = await this.peek();
    this.head = undefined;
    return b;
  }

  close(): void {
    this.reader?.close();
  }
}

/** Writes a cache file beside its final place; `commit()` fsyncs and renames it into place. */
export class CacheWriter {
  private buf: string[] = [];
  private bufLen = 0;
  private lastDir: string | null = null;
  readonly totals: CacheTotals = { files: 0, bytes: 0 };
  private finished = false;

  private constructor(
    readonly file: string,
    private readonly fh: fsp.FileHandle,
  ) {}

  static async create(file: string, header: Omit<CacheHeader, 'snapshotId'>): Promise<CacheWriter> {
    await fsp.mkdir(path.dirname(file), { recursive: true });
    const fh = await fsp.open(file, 'w', 0o600);
    const w = new CacheWriter(file, fh);
    w.push(
      [
        CACHE_MAGIC,
        `facility\t${escapeField(header.facilityId)}`,
        `server\t${escapeField(header.server)}`,
        // Filled in place after commit (see setSnapshotId), so the width is reserved here.
        `snapshot\t${'-'.padEnd(SNAPSHOT_FIELD_WIDTH)}`,
        `feed\t${header.feedPosition ?? '-'}`,
        '',
        '',
      ].join('\n'),
    );
    return w;
  }

  private push(s: string): void {
    this.buf.push(s);
    this.bufLen += s.length;
  }

  private async flushIfFull(): Promise<void> {
    if (this.bufLen >= 1 << 20) await this.flush();
  }

  private async flush(): Promise<void> {
    if (this.buf.length === 0) return;
    const data = this.buf.join('');
    this.buf = [];
    this.bufLen = 0;
    await this.fh.write(data, null, 'utf8');
  }

  /** Appends one directory block (blocks must come in walk order; empty blocks are skipped). */
  async writeBlock(block: CacheBlock): Promise<void> {
    if (block.files.length === 0) return;
    if (this.lastDir !== null && compareDirs(this.lastDir, block.dir) >= 0) {
      throw new Error(`cache blocks out of order: ${block.dir} after ${this.lastDir}`);
    }
    this.lastDir = block.dir;
    this.push(`/${escapeField(block.dir)}\n`);
    for (const f of block.files) {
      this.push(`${escapeField(f.name)}\t${f.size}\t${f.mtimeMs}\t${f.ino}\t${f.sha256}\n`);
      this.totals.files++;
      this.totals.bytes += f.size;
    }
    await this.flushIfFull();
  }

  /** Writes the end marker and fsyncs; the file is complete but not yet in place. */
  async finish(): Promise<void> {
    this.push(`//end\t${this.totals.files}\t${this.totals.bytes}\n`);
    await this.flush();
    await this.fh.sync();
    await this.fh.close();
    this.finished = true;
  }

  /** Closes without finishing (the partial file is left for the caller to remove). */
  async abandon(): Promise<void> {
    if (!this.finished) await this.fh.close().catch(() => undefined);
  }
}

/** Fills in the snapshot id of a finished cache file in place, then fsyncs it. */
export async function setCacheSnapshotId(file: string, snapshotId: string): Promise<void> {
  if (snapshotId.length > SNAPSHOT_FIELD_WIDTH || /[\t\n\r\s]/.test(snapshotId) || snapshotId.length === 0) {
    throw new Error(`the exchange answered a snapshot id the cache cannot hold: "${snapshotId.slice(0, 60)}"`);
  }
  const fh = await fsp.open(file, 'r+');
  try {
    const head = Buffer.alloc(4096);
    const { bytesRead } = await fh.read(head, 0, head.length, 0);
    const text = head.subarray(0, bytesRead).toString('latin1');
    const at = text.indexOf('\nsnapshot\t');
    if (at < 0) throw new Error(`${file}: no snapshot field`);
    const start = at + '\nsnapshot\t'.length;
    const field = Buffer.from(snapshotId.padEnd(SNAPSHOT_FIELD_WIDTH), 'utf8');
    if (field.length !== SNAPSHOT_FIELD_WIDTH) throw new Error('the snapshot id is not plain ASCII');
    await fh.write(field, 0, field.length, start);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Renames a finished file into place and fsyncs the directory, so the rename survives a crash. */
export async function replaceFile(from: string, to: string): Promise<void> {
  await fsp.rename(from, to);
  const dir = await fsp.open(path.dirname(to), 'r');
  try {
    await dir.sync();
  } catch {
    // Some filesystems refuse fsync on a directory; the rename itself is still atomic.
  } finally {
    await dir.close();
  }
}
