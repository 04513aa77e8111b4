import { createHash } from 'node:crypto';
import zlib from 'node:zlib';

/**
 * Content-addressed directory trees (as git and restic keep them): a snapshot is the hash of
 * its root tree; a tree lists its entries (files with size, mtime and blob hash; folders with
 * the hash of their own tree and their totals). Unchanged folders keep their hash from night to
 * night, so a night with 1% change adds only the trees on the paths to what changed.
 * This module is pure: encoding, ordering, building from a sorted file list, applying a delta.
 */

export interface FileEntry {
  kind: 'file';
  name: string;
  size: number;
  /** Milliseconds since the epoch. */
  mtime: number;
  sha256: Buffer;
}

export interface DirEntry {
  kind: 'dir';
  name: string;
  /** SHA-256 of the folder's canonical encoding, whether it is stored on its own or inline. */
  hash: Buffer;
  /** Files and bytes in the whole subtree, so a snapshot's totals need no walk. */
  files: number;
  bytes: number;
  /**
   * Present when the folder is small and travels inside its parent's encoding instead of a
   * tree row of its own: its entries and its canonical encoding (whose hash is `hash`).
   */
  inline?: InlineTree;
}

export interface InlineTree {
  entries: TreeEntry[];
  raw: Buffer;
}

export type TreeEntry = FileEntry | DirEntry;

/** A tree ready to store: its hash (of the canonical encoding) and the stored form (deflated). */
export interface EncodedTree {
  hash: Buffer;
  content: Buffer;
  /** The canonical encoding itself (what `hash` hashes). */
  raw: Buffer;
}

/**
 * A folder whose canonical encoding is at most this many bytes travels inline in its parent's
 * tree instead of a tree row of its own. SS-MIX2 has a folder per patient, date and data type,
 * most type folders holding one message: stored on their own they made 1.3 tree rows per file,
 * each row's overhead (tuple header, index entry) larger than the entry it holds. The parent's
 * hash covers the inline bytes, so content addressing is unchanged: an untouched folder keeps
 * its hash, a change rewrites the stored trees on its path. The limit weighs the two: measured
 * on a 100k-file facility, 2048 (a patient's whole folder in one row) stored 1,425 trees in
 * 6.5 MB but rewrote ~4.5 KB per changed patient each night; 256 (a type folder inline in its
 * date, a date with one or two types inline in the patient) stores 23k trees in 10 MB and keeps
 * a night's rewrite near that of separate trees; with no inlining, 135k trees took 25 MB.
 */
export const INLINE_MAX = 256;

/** A manifest entry path, checked: relative, `/`-separated, no empty, `.` or `..` segment. */
export function pathProblem(p: string): string | undefined {
  if (p.length === 0) return 'is empty';
  if (p.includes('\0')) return 'contains NUL';
  if (/[\uD800-\uDFFF]/u.test(p)) return 'is not valid Unicode'; // a lone surrogate has no UTF-8 form
  if (p.startsWith('/')) return 'is absolute';
  if (/^[A-Za-z]:/.test(p) || p.startsWith('\\')) return 'is absolute';
  if (Buffer.byteLength(p) > 4096) return 'is longer than 4096 bytes';
  for (const seg of p.split('/')) {
    if (seg === '') return 'has an empty segment';
    if (seg === '.' || seg === '..') return `has a "${seg}" segment`;
    if (Buffer.byteLength(seg) > 255) return 'has a name longer than 255 bytes';
  }
  return undefined;
}

/**
 * Orders strings as their UTF-8 bytes do (what PostgreSQL's "C" collation does), which is code
 * point order; JavaScript's `<` compares UTF-16 code units and differs for astral characters.
 */
export function compareUtf8(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x === y) continue;
    const sx = x >= 0xd800 && x <= 0xdfff;
    const sy = y >= 0xd800 && y <= 0xdfff;
    if (sx !== sy) return sx ? 1 : -1;
    return x - y;
  }
  return a.length - b.length;
}

/**
 * Folders sort as "name/" (as in git): then a depth-first walk of the trees yields full paths in
 * byte order, the order of the staging table, of listings and of keyset pagination.
 */
export function entrySortKey(e: TreeEntry): string {
  return e.kind === 'dir' ? e.name + '/' : e.name;
}

export function sortEntries(entries: TreeEntry[]): TreeEntry[] {
  return entries.sort((a, b) => compareUtf8(entrySortKey(a), entrySortKey(b)));
}

// --- canonical encoding -------------------------------------------------------------------

// Version 1: entries of kind 1 (file) and 2 (folder by hash). Version 2 adds kind 3, a folder
// inline: its name, the length of its canonical encoding, then that encoding. Both decode.
const VERSION = 2;

class Writer {
  private buf = Buffer.allocUnsafe(4096);
  private len = 0;
  private room(n: number) {
    if (this.len + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.len + n));
    this.buf.copy(next, 0, 0, this.len);
    this.buf = next;
  }
  byte(b: number) {
    this.room(1);
    this.buf[this.len++] = b;
  }
  uvarint(n: number) {
    if (!Number.isSafeInteger(n) || n < 0) throw new Error(`cannot encode ${n}`);
    this.room(10);
    while (n >= 0x80) {
      this.buf[this.len++] = (n % 0x80) | 0x80;
      n = Math.floor(n / 0x80);
    }
    this.buf[this.len++] = n;
  }
  svarint(n: number) {
    this.uvarint(n >= 0 ? n * 2 : -n * 2 - 1);
  }
  bytes(b: Buffer) {
    this.room(b.length);
    b.copy(this.buf, this.len);
    this.len += b.length;
  }
  done(): Buffer {
    return this.buf.subarray(0, this.len);
  }
}

class Reader {
  pos = 0;
  constructor(private readonly buf: Buffer) {}
  byte(): number {
    if (this.pos >= this.buf.length) throw new Error('tree encoding truncated');
    return this.buf[this.pos++]!;
  }
  uvarint(): number {
    let n = 0;
    let mul = 1;
    for (;;) {
      const b = this.byte();
      n += (b & 0x7f) * mul;
      if (b < 0x80) return n;
      mul *= 0x80;
      if (mul > 2 ** 56) throw new Error('tree encoding: varint too long');
    }
  }
  svarint(): number {
    const u = this.uvarint();
    return u % 2 === 0 ? u / 2 : -(u + 1) / 2;
  }
  bytes(n: number): Buffer {
    if (this.pos + n > this.buf.length) throw new Error('tree encoding truncated');
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }
  get atEnd() {
    return this.pos === this.buf.length;
  }
}

/** Encodes sorted entries; the hash is SHA-256 of this canonical form, the stored form is deflated. */
export function encodeTree(entries: TreeEntry[]): EncodedTree {
  const raw = encodeRaw(entries);
  return { hash: createHash('sha256').update(raw).digest(), content: storedForm(raw), raw };
}

function encodeRaw(entries: TreeEntry[]): Buffer {
  const w = new Writer();
  w.byte(VERSION);
  w.uvarint(entries.length);
  let prev: string | undefined;
  for (const e of entries) {
    const key = entrySortKey(e);
    if (prev !== undefined && compareUtf8(prev, key) >= 0) throw new Error(`tree entries out of order at ${e.name}`);
    prev = key;
    const name = Buffer.from(e.name, 'utf8');
    w.byte(e.kind === 'file' ? 1 : e.inline ? 3 : 2);
    w.uvarint(name.length);
    w.bytes(name);
    if (e.kind === 'file') {
      w.uvarint(e.size);
      w.svarint(e.mtime);
      w.bytes(e.sha256);
    } else if (e.inline) {
      w.uvarint(e.inline.raw.length);
      w.bytes(e.inline.raw);
    } else {
      w.bytes(e.hash);
      w.uvarint(e.files);
      w.uvarint(e.bytes);
    }
  }
  return w.done();
}

// Stored form: one byte of format, then the encoding raw (0) or deflated (1). Most folders of
// an SS-MIX2 tree hold one or two files; deflating those costs more time than it saves bytes.
function storedForm(raw: Buffer): Buffer {
  if (raw.length > 160) {
    const z = zlib.deflateRawSync(raw, { level: 6 });
    if (z.length + 8 < raw.length) return Buffer.concat([Buffer.from([1]), z]);
  }
  return Buffer.concat([Buffer.from([0]), raw]);
}

function rawForm(content: Buffer): Buffer {
  if (content[0] === 0) return content.subarray(1);
  if (content[0] === 1) return zlib.inflateRawSync(content.subarray(1));
  throw new Error('unknown stored tree format');
}

/** Decodes a stored tree and checks it against its hash (a damaged tree is never trusted). */
export function decodeTree(hash: Buffer, content: Buffer): TreeEntry[] {
  const raw = rawForm(content);
  if (!createHash('sha256').update(raw).digest().equals(hash)) {
    throw new Error(`tree ${hash.toString('hex')} does not match its hash`);
  }
  return decodeRaw(raw, 0);
}

function decodeRaw(raw: Buffer, depth: number): TreeEntry[] {
  if (depth > 256) throw new Error('tree encoding nested too deep');
  const r = new Reader(raw);
  const version = r.byte();
  if (version !== 1 && version !== 2) throw new Error('unknown tree version');
  const n = r.uvarint();
  const out: TreeEntry[] = [];
  for (let i = 0; i < n; i++) {
    const kind = r.byte();
    const name = r.bytes(r.uvarint()).toString('utf8');
    if (kind === 1) {
      const size = r.uvarint();
      const mtime = r.svarint();
      out.push({ kind: 'file', name, size, mtime, sha256: Buffer.from(r.bytes(32)) });
    } else if (kind === 2) {
      const h = Buffer.from(r.bytes(32));
      out.push({ kind: 'dir', name, hash: h, files: r.uvarint(), bytes: r.uvarint() });
    } else if (kind === 3 && version >= 2) {
      const sub = Buffer.from(r.bytes(r.uvarint()));
      const entries = decodeRaw(sub, depth + 1);
      out.push({ kind: 'dir', name, hash: createHash('sha256').update(sub).digest(), ...totalsOf(entries), inline: { entries, raw: sub } });
    } else throw new Error(`unknown tree entry kind ${kind}`);
  }
  if (!r.atEnd) throw new Error('trailing bytes after tree');
  return out;
}

/**
 * The entry of a finished folder in its parent: inline when its encoding is small (nothing to
 * store), else by hash, its tree handed to `emit` to be stored.
 */
export function dirEntry(name: string, entries: TreeEntry[], emit: (tree: EncodedTree) => void): DirEntry {
  const raw = encodeRaw(entries);
  const hash = createHash('sha256').update(raw).digest();
  const totals = totalsOf(entries);
  if (raw.length <= INLINE_MAX) return { kind: 'dir', name, hash, ...totals, inline: { entries, raw } };
  emit({ hash, content: storedForm(raw), raw });
  return { kind: 'dir', name, hash, ...totals };
}

/** The totals of a folder's tree, for its entry in the parent. */
export function totalsOf(entries: TreeEntry[]): { files: number; bytes: number } {
  let files = 0;
  let bytes = 0;
  for (const e of entries) {
    if (e.kind === 'file') {
      files += 1;
      bytes += e.size;
    } else {
      files += e.files;
      bytes += e.bytes;
    }
  }
  return { files, bytes };
}

/** A manifest entry path that cannot be turned into a tree (file and folder of one name). */
export class TreeConflict extends Error {
  override name = 'TreeConflict';
  constructor(
    readonly path: string,
    message: string,
  ) {
    super(`${path}: ${message}`);
  }
}

// --- building from a sorted file list -----------------------------------------------------

interface OpenDir {
  name: string;
  entries: TreeEntry[];
}

/**
 * Builds the trees of a full file list given in byte order of paths, one folder in memory per
 * level: memory is bounded by the depth and the widest folder, not by the number of files.
 * Each finished tree goes to `emit` (the caller stores them in batches).
 */
export class TreeBuilder {
  private readonly stack: OpenDir[] = [{ name: '', entries: [] }];
  private lastPath: string | undefined;

  constructor(private readonly emit: (tree: EncodedTree) => void) {}

  add(path: string, file: { size: number; mtime: number; sha256: Buffer }): void {
    if (this.lastPath !== undefined && compareUtf8(this.lastPath, path) >= 0) {
      throw new Error(`paths out of order: ${path} after ${this.lastPath}`);
    }
    this.lastPath = path;
    const segs = path.split('/');
    const dirs = segs.length - 1;
    let common = 0;
    while (common < dirs && common + 1 < this.stack.length && this.stack[common + 1]!.name === segs[common]) common++;
    while (this.stack.length > common + 1) this.close();
    for (let i = common; i < dirs; i++) {
      const top = this.stack[this.stack.length - 1]!;
      const last = top.entries[top.entries.length - 1];
      if (last && last.name === segs[i]) {
        throw new TreeConflict(segs.slice(0, i + 1).join('/'), 'is both a file and a folder');
      }
      this.stack.push({ name: segs[i]!, entries: [] });
    }
    this.stack[this.stack.length - 1]!.entries.push({ kind: 'file', name: segs[dirs]!, ...file });
  }

  private close(): void {
    const dir = this.stack.pop()!;
    this.stack[this.stack.length - 1]!.entries.push(dirEntry(dir.name, dir.entries, this.emit));
  }

  /** Closes every open folder; returns the root tree and the totals. */
  finish(): { root: Buffer; files: number; bytes: number } {
    while (this.stack.length > 1) this.close();
    const root = this.stack[0]!.entries;
    const tree = encodeTree(root);
    this.emit(tree);
    return { root: tree.hash, ...totalsOf(root) };
  }
}

// --- applying a delta ---------------------------------------------------------------------

export type DeltaChange = { kind: 'put'; size: number; mtime: number; sha256: Buffer } | { kind: 'delete' };

/** The changes of a delta manifest arranged as the folders they touch. */
export interface DeltaNode {
  files: Map<string, DeltaChange>;
  dirs: Map<string, DeltaNode>;
  /**
   * Filled while loading: the folder's entries in the base snapshot (undefined: absent, or
   * inline in the parent's base tree, which applyDelta takes from there).
   */
  base?: TreeEntry[];
}

export function newDeltaNode(): DeltaNode {
  return { files: new Map(), dirs: new Map() };
}

export function addDeltaChange(root: DeltaNode, path: string, change: DeltaChange): void {
  const segs = path.split('/');
  let node = root;
  for (let i = 0; i < segs.length - 1; i++) {
    let next = node.dirs.get(segs[i]!);
    if (!next) node.dirs.set(segs[i]!, (next = newDeltaNode()));
    node = next;
  }
  node.files.set(segs[segs.length - 1]!, change);
}

/**
 * Rebuilds the folders a delta touches (their base entries already loaded into `base`); every
 * untouched folder keeps its hash. Returns the new folder's entries, or undefined when it ends
 * up empty (folders exist only as the paths of their files).
 */
export function applyDelta(node: DeltaNode, prefix: string, emit: (tree: EncodedTree) => void): TreeEntry[] {
  const result = new Map<string, TreeEntry>();
  for (const e of node.base ?? []) result.set(e.name, e);
  for (const [name, change] of node.files) {
    if (change.kind !== 'delete') continue;
    const existing = result.get(name);
    if (!existing) throw new TreeConflict(prefix + name, 'is deleted but is not in the base snapshot');
    if (existing.kind === 'dir') throw new TreeConflict(prefix + name, 'is deleted but is a folder in the base snapshot');
    result.delete(name);
  }
  for (const [name, sub] of node.dirs) {
    const existing = result.get(name);
    if (existing?.kind === 'file') throw new TreeConflict(prefix + name, 'is a file in the base snapshot and a folder in the delta');
    if (sub.base === undefined && existing?.kind === 'dir') {
      // A folder inline in this one's tree has its base here; one stored on its own must
      // have been loaded by the caller (treating it as new would drop its other files).
      if (!existing.inline) throw new Error(`the base tree of ${prefix}${name}/ was not loaded`);
      sub.base = existing.inline.entries;
    }
    const entries = applyDelta(sub, `${prefix}${name}/`, emit);
    if (entries.length === 0) {
      result.delete(name);
      continue;
    }
    result.set(name, dirEntry(name, entries, emit));
  }
  for (const [name, change] of node.files) {
    if (change.kind !== 'put') continue;
    if (result.get(name)?.kind === 'dir') throw new TreeConflict(prefix + name, 'is a folder in the snapshot and a file in the delta');
    result.set(name, { kind: 'file', name, size: change.size, mtime: change.mtime, sha256: change.sha256 });
  }
  return sortEntries([...result.values()]);
}
