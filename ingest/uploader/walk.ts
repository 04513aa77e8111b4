import type { Dirent, Stats } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { compareNames, joinPath } from './order.js';

/** The few filesystem calls the uploader makes (tests wrap them to count reads). */
export interface TreeFs {
  readdir(dir: string, opts: { withFileTypes: true }): Promise<Dirent[]>;
  lstat(file: string): Promise<Stats>;
  open(file: string, flags: 'r'): Promise<FileHandle>;
}

export const nodeTreeFs: TreeFs = {
  readdir: (dir, opts) => fsp.readdir(dir, opts),
  lstat: (file) => fsp.lstat(file),
  open: (file, flags) => fsp.open(file, flags),
};

/** What the walk could not back up, each reported (never skipped silently). */
export type ProblemKind =
  | 'symlink'
  | 'special'
  | 'unreadable'
  | 'unreadable-dir'
  | 'bad-name'
  | 'unstable'
  | 'vanished'
  | 'too-large';

export interface Problem {
  kind: ProblemKind;
  /** Path as sent to the exchange (`standard/...`). */
  path: string;
  detail: string;
}

export type ProblemSink = (p: Problem) => void;

/** One directory as listed: its regular-file names in name order. */
export interface ListedDir {
  dir: string;
  abs: string;
  names: string[];
}

type Listing = { ok: true; entries: Dirent[] } | { ok: false; err: NodeJS.ErrnoException };

interface Pending {
  dir: string;
  abs: string;
  listing?: Promise<Listing>;
}

/** How many directory listings are read ahead of the walk (SS-MIX2 trees have ~1.4 folders per file). */
const READ_AHEAD = 32;

/**
 * Walks the tree below `abs` (known to the exchange as `dir`) in walk order (order.ts):
 * yields each directory with its file names, then descends into its subdirectories by name.
 * Only the directories on the current path, their pending siblings and a bounded read-ahead
 * of listings are held in memory. The next directories in walk order are listed concurrently,
 * so the walk is not one readdir round trip per folder.
 * Symlinks, special files and names that are not valid UTF-8 are reported, never followed.
 */
export async function* walkDirs(dir: string, abs: string, fs: TreeFs, onProblem: ProblemSink): AsyncGenerator<ListedDir> {
  const list = (p: Pending): Promise<Listing> =>
    fs.readdir(p.abs, { withFileTypes: true }).then(
      (entries) => ({ ok: true as const, entries }),
      (err: NodeJS.ErrnoException) => ({ ok: false as const, err }),
    );
  // Pending directories; the end of the array is the next in walk order.
  const stack: Pending[] = [{ dir, abs }];
  while (stack.length > 0) {
    // Start the listings of the next few directories the walk will visit.
    for (let i = stack.length - 1, n = 0; i >= 0 && n < READ_AHEAD; i--, n++) stack[i]!.listing ??= list(stack[i]!);
    const cur = stack.pop()!;
    const listing = await cur.listing!;
    if (!listing.ok) {
      const err = listing.err;
      // A folder deleted while we walk (or a feed-named folder that no longer exists) is
      // simply gone from this night's tree.
      if (err.code === 'ENOENT') continue;
      onProblem({ kind: 'unreadable-dir', path: cur.dir, detail: `${err.code ?? 'error'}: ${err.message}` });
      continue;
    }
    const entries = listing.entries;
    entries.sort((a, b) => compareNames(a.name, b.name));
    const names: string[] = [];
    const subdirs: Pending[] = [];
    for (const d of entries) {
      const rel = joinPath(cur.dir, d.name);
      // readdir decodes names as UTF-8; a name that is not valid UTF-8 cannot be sent as-is.
      if (d.name.includes('\uFFFD')) {
        onProblem({ kind: 'bad-name', path: rel, detail: 'the name is not valid UTF-8' });
        continue;
      }
      let kind: 'file' | 'dir' | 'symlink' | 'special' | 'gone';
      if (d.isFile()) kind = 'file';
      else if (d.isDirectory()) kind = 'dir';
      else if (d.isSymbolicLink()) kind = 'symlink';
      else if (d.isFIFO() || d.isSocket() || d.isBlockDevice() || d.isCharacterDevice()) kind = 'special';
      else {
        // Some filesystems do not report the type in readdir (DT_UNKNOWN): ask.
        try {
          const st = await fs.lstat(path.join(cur.abs, d.name));
          kind = st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : 'special';
        } catch {
          kind = 'gone';
        }
      }
      if (kind === 'file') names.push(d.name);
      else if (kind === 'dir') subdirs.push({ dir: rel, abs: path.join(cur.abs, d.name) });
      else if (kind === 'symlink') onProblem({ kind: 'symlink', path: rel, detail: 'symbolic links are not followed or backed up' });
      else if (kind === 'special') onProblem({ kind: 'special', path: rel, detail: 'not a regular file (device, FIFO or socket)' });
    }
    yield { dir: cur.dir, abs: cur.abs, names };
    for (let i = subdirs.length - 1; i >= 0; i--) stack.push(subdirs[i]!);
  }
}

/** Bounds how many filesystem operations run at once. */
export class Limiter {
  private active = 0;
  private waiting: (() => void)[] = [];
  constructor(private readonly max: number) {}

  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.active >= this.max) await new Promise<void>((r) => this.waiting.push(r));
    this.active++;
    try {
      return await fn();
    } finally {
      this.active--;
      this.waiting.shift()?.();
    }
  }
}
