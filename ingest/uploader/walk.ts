import fs, { type Dirent, type Stats } from 'node:fs';
import path from 'node:path';
import { compareNames, joinPath } from './order.js';

/**
 * The few filesystem calls the uploader makes (tests wrap them to count reads). They are
 * synchronous: on a local disk a walk is millions of calls that each take a few microseconds in
 * the kernel, and a promise per call (a thread-pool round trip, a FileHandle, a microtask) cost
 * 3-4x the CPU of the call itself (bench/README.md "Uploader"). The uploader's process does
 * nothing else meanwhile; the send phase reads the next blob batch in slices between turns of
 * the event loop, so the request in flight keeps moving.
 */
export interface TreeFs {
  readdir(dir: string, opts: { withFileTypes: true }): Dirent[];
  lstat(file: string): Stats;
  /** Opens for reading; returns the file descriptor. */
  open(file: string): number;
  fstat(fd: number): Stats;
  read(fd: number, buf: Buffer, offset: number, length: number, position: number): number;
  close(fd: number): void;
}

export const nodeTreeFs: TreeFs = {
  readdir: (dir, opts) => fs.readdirSync(dir, opts),
  lstat: (file) => fs.lstatSync(file),
  open: (file) => fs.openSync(file, 'r'),
  fstat: (fd) => fs.fstatSync(fd),
  read: (fd, buf, offset, length, position) => fs.readSync(fd, buf, offset, length, position),
  close: (fd) => fs.closeSync(fd),
};

/** `dir`/`name` for a name just listed in `dir` (path.join's normalizing cost more than the lstat's call). */
export function childPath(dir: string, name: string): string {
  return dir.endsWith(path.sep) ? dir + name : dir + path.sep + name;
}

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

interface Pending {
  dir: string;
  abs: string;
}

/**
 * Walks the tree below `abs` (known to the exchange as `dir`) in walk order (order.ts):
 * yields each directory with its file names, then descends into its subdirectories by name.
 * Only the directories on the current path and their pending siblings are held in memory.
 * Symlinks, special files and names that are not valid UTF-8 are reported, never followed.
 */
export function* walkDirs(dir: string, abs: string, fs: TreeFs, onProblem: ProblemSink): Generator<ListedDir> {
  // Pending directories; the end of the array is the next in walk order.
  const stack: Pending[] = [{ dir, abs }];
  while (stack.length > 0) {
    const cur = stack.pop()!;
    let entries: Dirent[];
    try {
      entries = fs.readdir(cur.abs, { withFileTypes: true });
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      // A folder deleted while we walk (or a feed-named folder that no longer exists) is
      // simply gone from this night's tree.
      if (err.code === 'ENOENT') continue;
      onProblem({ kind: 'unreadable-dir', path: cur.dir, detail: `${err.code ?? 'error'}: ${err.message}` });
      continue;
    }
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
          const st = fs.lstat(childPath(cur.abs, d.name));
          kind = st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : 'special';
        } catch {
          kind = 'gone';
        }
      }
      if (kind === 'file') names.push(d.name);
      else if (kind === 'dir') subdirs.push({ dir: rel, abs: childPath(cur.abs, d.name) });
      else if (kind === 'symlink') onProblem({ kind: 'symlink', path: rel, detail: 'symbolic links are not followed or backed up' });
      else if (kind === 'special') onProblem({ kind: 'special', path: rel, detail: 'not a regular file (device, FIFO or socket)' });
    }
    yield { dir: cur.dir, abs: cur.abs, names };
    for (let i = subdirs.length - 1; i >= 0; i--) stack.push(subdirs[i]!);
  }
}
