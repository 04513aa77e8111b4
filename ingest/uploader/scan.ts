import type { Stats } from 'node:fs';
import { CacheCursor, type CacheBlock, type CacheReader, type CacheWriter, type CachedFile } from './cache.js';
import { hashFile } from './hash.js';
import { compareDirs, isWithin, joinPath } from './order.js';
import { childPath, walkDirs, type ProblemSink, type TreeFs } from './walk.js';

/** A storage root as the exchange knows it: `standard/...` or `extended/...` (PROTOCOL.md step 2). */
export interface Mount {
  prefix: 'standard' | 'extended';
  root: string;
}

/** A subtree to walk: `dir` as the exchange names it, `abs` on disk. */
export interface WalkRoot {
  dir: string;
  abs: string;
}

export interface ScanStats {
  /** Files listed by the walk (or taken from the cache unwalked). */
  files: number;
  bytes: number;
  /** Files whose bytes were read and hashed. */
  hashed: number;
  hashedBytes: number;
  /** Files taken from the cache without reading: unchanged metadata. */
  unchanged: number;
  /** Files found under a new name with the inode, size and mtime of a cached one (`_1` -> `_2`). */
  renamed: number;
  /** Files copied from the cache without being looked at (outside the walked subtrees). */
  copied: number;
  problems: number;
}

export interface ScanOptions {
  mounts: Mount[];
  /** Subtrees to walk; the rest of each mount is taken from `previous` as it was. Default: the mounts. */
  walkRoots?: WalkRoot[];
  /** The committed cache: reused hashes, and the state of everything not walked. */
  previous: CacheReader | null;
  /** Another cache whose hashes may be reused but whose entries are never copied (an interrupted run's). */
  extra?: CacheReader | null;
  out: CacheWriter;
  fs: TreeFs;
  maxBlobBytes: number;
  onProblem: ProblemSink;
  onProgress?: (s: Readonly<ScanStats>) => void;
  /** Hands over the bytes of each file read for hashing of at most `keepUpTo` bytes (to send them unread). */
  keep?: { upTo: number; take: (sha256: string, bytes: Buffer) => boolean };
  /** Called with each block once it is written to `out`, with the bytes handed to `keep` for it; awaited. */
  onBlock?: (block: CacheBlock, keptBytes: number) => Promise<void>;
}

function unchanged(c: CachedFile, st: Stats): boolean {
  return c.size === st.size && c.mtimeMs === st.mtimeMs && c.ino === st.ino;
}

/**
 * Walks the tree(s) beside the previous cache and writes the new cache: every regular file with
 * its size, mtime, inode and SHA-256. A file is read only when no cached entry in its folder has
 * its name (or, for a rename, its inode) with the same size and mtime. Memory holds the
 * directories on the walk's current path, never the tree.
 */
export async function scanTree(opts: ScanOptions): Promise<ScanStats> {
  const stats: ScanStats = { files: 0, bytes: 0, hashed: 0, hashedBytes: 0, unchanged: 0, renamed: 0, copied: 0, problems: 0 };
  const onProblem: ProblemSink = (p) => {
    stats.problems++;
    opts.onProblem(p);
  };
  const prev = new CacheCursor(opts.previous);
  const extra = new CacheCursor(opts.extra ?? null);
  const mountDirs = opts.mounts.map((m) => m.prefix);
  const underMount = (dir: string) => mountDirs.some((m) => isWithin(dir, m));
  const roots = [...(opts.walkRoots ?? opts.mounts.map((m) => ({ dir: m.prefix, abs: m.root })))].sort((a, b) =>
    compareDirs(a.dir, b.dir),
  );

  let keptBytes = 0;
  const write = async (block: CacheBlock) => {
    await opts.out.writeBlock(block);
    for (const f of block.files) {
      stats.files++;
      stats.bytes += f.size;
    }
    opts.onProgress?.(stats);
    const kept = keptBytes;
    keptBytes = 0;
    if (opts.onBlock && block.files.length > 0) await opts.onBlock(block, kept);
  };

  /** Takes cached blocks that sort before `limit` (null: all): copied if under a mount, else gone. */
  const passOutside = async (limit: string | null) => {
    for (;;) {
      const b = await prev.peek();
      if (!b || (limit !== null && compareDirs(b.dir, limit) >= 0)) return;
      await prev.take();
      if (underMount(b.dir)) {
        stats.copied += b.files.length;
        await write(b);
      }
    }
  };

  /** Advances a cursor to `dir`; returns its block when it has one. Earlier blocks are dropped. */
  const seek = async (cursor: CacheCursor, dir: string): Promise<CacheBlock | null> => {
    for (;;) {
      const b = await cursor.peek();
      if (!b) return null;
      const c = compareDirs(b.dir, dir);
      if (c > 0) return null;
      await cursor.take();
      if (c === 0) return b;
    }
  };

  const processDir = (dir: string, abs: string, names: string[], cached: CacheBlock | null, other: CacheBlock | null): CacheBlock => {
    const byName = new Map<string, CachedFile>();
    const byIno = new Map<number, CachedFile[]>();
    for (const block of [other, cached]) {
      for (const f of block?.files ?? []) {
        byName.set(f.name, f);
        const list = byIno.get(f.ino);
        if (list) list.push(f);
        else byIno.set(f.ino, [f]);
      }
    }
    const files: CachedFile[] = [];
    for (const name of names) {
      const file = childPath(abs, name);
      const rel = joinPath(dir, name);
      let st: Stats;
      try {
        st = opts.fs.lstat(file);
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        if (err.code === 'ENOENT') onProblem({ kind: 'vanished', path: rel, detail: 'deleted or renamed while the tree was read' });
        else onProblem({ kind: 'unreadable', path: rel, detail: `${err.code ?? 'error'}: ${err.message}` });
        continue;
      }
      if (!st.isFile()) {
        onProblem({ kind: st.isSymbolicLink() ? 'symlink' : 'special', path: rel, detail: 'replaced by a non-regular file while the tree was read' });
        continue;
      }
      const same = byName.get(name);
      if (same && unchanged(same, st)) {
        stats.unchanged++;
        files.push(same);
        continue;
      }
      const moved = byIno.get(st.ino)?.find((c) => unchanged(c, st));
      if (moved) {
        stats.renamed++;
        files.push({ ...moved, name });
        continue;
      }
      const h = hashFile(opts.fs, file, opts.maxBlobBytes, opts.keep?.upTo ?? 0);
      if (!h.ok) {
        onProblem({ kind: h.reason === 'not-a-file' ? 'special' : h.reason, path: rel, detail: h.detail });
        continue;
      }
      if (h.bytes && opts.keep?.take(h.sha256, h.bytes)) keptBytes += h.size;
      stats.hashed++;
      stats.hashedBytes += h.size;
      files.push({ name, size: h.size, mtimeMs: h.mtimeMs, ino: h.ino, sha256: h.sha256 });
    }
    return { dir, files };
  };

  try {
    for (const root of roots) {
      await passOutside(root.dir);
      for (const listed of walkDirs(root.dir, root.abs, opts.fs, onProblem)) {
        // Cached blocks between the last walked folder and this one were deleted folders.
        const cached = await seek(prev, listed.dir);
        const other = await seek(extra, listed.dir);
        if (listed.names.length > 0 || cached) await write(processDir(listed.dir, listed.abs, listed.names, cached, other));
      }
      // Whatever the cache still holds inside this subtree is gone from disk.
      for (let b = await prev.peek(); b && isWithin(b.dir, root.dir); b = await prev.peek()) await prev.take();
    }
    await passOutside(null);
  } finally {
    prev.close();
    extra.close();
  }
  return stats;
}
