/**
 * The one order in which the uploader walks trees and keeps its cache: directories in preorder
 * (a directory, then its subdirectories by name), names compared by UTF-16 code unit. The walk
 * emits each directory's files together, before its subdirectories, so the cache can be read
 * one directory block at a time beside the walk and merged without holding the tree in memory.
 */

/**
 * Compares two `/`-separated directory paths segment by segment: a directory sorts before its
 * descendants, and siblings by name. ('' is the virtual root, before everything.)
 */
export function compareDirs(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const ca = a.charCodeAt(i);
    const cb = b.charCodeAt(i);
    if (ca === cb) continue;
    // A segment that ends first is a prefix of the other segment, so it sorts first.
    if (ca === 47 /* / */) return -1;
    if (cb === 47) return 1;
    return ca < cb ? -1 : 1;
  }
  return a.length === b.length ? 0 : a.length < b.length ? -1 : 1;
}

/** Compares two names inside one directory (the order the walk lists them in). */
export function compareNames(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** True when `dir` is `root` or lies below it. */
export function isWithin(dir: string, root: string): boolean {
  if (root === '') return true;
  return dir === root || (dir.length > root.length && dir.startsWith(root) && dir.charCodeAt(root.length) === 47);
}

/** Joins a directory path and a name ('' is the root). */
export function joinPath(dir: string, name: string): string {
  return dir === '' ? name : `${dir}/${name}`;
}

// The cache is a tab-separated text file; these four characters are the only ones a file name
// can hold (POSIX forbids only `/` and NUL) that would break a line, so they are %-escaped.
const NEEDS_ESCAPE = /[%\t\n\r]/;

export function escapeField(s: string): string {
  if (!NEEDS_ESCAPE.test(s)) return s;
  return s.replace(/[%\t\n\r]/g, (c) => `%${c.charCodeAt(0).toString(16).padStart(2, '0').toUpperCase()}`);
}

export function unescapeField(s: string): string {
  if (!s.includes('%')) return s;
  return s.replace(/%(25|09|0A|0D)/g, (_m, h: string) => String.fromCharCode(parseInt(h, 16)));
}
