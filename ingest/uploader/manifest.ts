import { CacheCursor, type CacheBlock, type CacheReader, type CachedFile } from './cache.js';
import { compareDirs, compareNames, joinPath } from './order.js';

/** A manifest entry as PROTOCOL.md step 2 defines it. */
export type ManifestEntry =
  | { path: string; size: number; mtime: number; sha256: string }
  | { path: string; deleted: true };

export type FileEntry = Extract<ManifestEntry, { sha256: string }>;

function entryOf(dir: string, f: CachedFile): FileEntry {
  // The protocol carries integer milliseconds since the epoch.
  return { path: joinPath(dir, f.name), size: f.size, mtime: Math.floor(f.mtimeMs), sha256: f.sha256 };
}

function differs(a: CachedFile, b: CachedFile): boolean {
  return a.sha256 !== b.sha256 || a.size !== b.size || Math.floor(a.mtimeMs) !== Math.floor(b.mtimeMs);
}

/** A cache file's blocks, in order; the file is closed when the iteration ends. */
export async function* blocksOf(reader: CacheReader): AsyncGenerator<CacheBlock> {
  try {
    for (let b = await reader.next(); b; b = await reader.next()) yield b;
  } finally {
    reader.close();
  }
}

/**
 * The manifest to send, in walk order: every file of `next` (the blocks of a new cache: a
 * finished scan's file, or a scan as it runs) when there is no base, or, for a delta against the
 * committed snapshot that `base` describes, the added and changed files and a `deleted` entry
 * for each path that is gone. The sequence depends only on the two caches' contents: a resumed
 * upload skips exactly the entries the exchange says it already received.
 */
export async function* manifestEntries(next: AsyncIterable<CacheBlock>, base: CacheReader | null): AsyncGenerator<ManifestEntry> {
  const it = next[Symbol.asyncIterator]();
  let head: CacheBlock | null | undefined;
  const peek = async () => (head === undefined ? (head = (await it.next()).value ?? null) : head);
  const b = new CacheCursor(base);
  try {
    for (;;) {
      const nb = await peek();
      const bb = await b.peek();
      if (!nb && !bb) return;
      const c = !nb ? 1 : !bb ? -1 : compareDirs(nb.dir, bb.dir);
      if (c < 0) {
        head = undefined;
        for (const f of nb!.files) yield entryOf(nb!.dir, f);
      } else if (c > 0) {
        await b.take();
        for (const f of bb!.files) yield { path: joinPath(bb!.dir, f.name), deleted: true };
      } else {
        head = undefined;
        await b.take();
        yield* diffBlock(nb!, bb!);
      }
    }
  } finally {
    await it.return?.();
    b.close();
  }
}

function* diffBlock(next: CacheBlock, base: CacheBlock): Generator<ManifestEntry> {
  let i = 0;
  let j = 0;
  const nf = next.files;
  const bf = base.files;
  while (i < nf.length || j < bf.length) {
    const c = i >= nf.length ? 1 : j >= bf.length ? -1 : compareNames(nf[i]!.name, bf[j]!.name);
    if (c < 0) yield entryOf(next.dir, nf[i++]!);
    else if (c > 0) yield { path: joinPath(base.dir, bf[j++]!.name), deleted: true };
    else {
      if (differs(nf[i]!, bf[j]!)) yield entryOf(next.dir, nf[i]!);
      i++;
      j++;
    }
  }
}

/** Groups a stream into arrays of at most `size`. */
export async function* batches<T>(items: AsyncIterable<T>, size: number): AsyncGenerator<T[]> {
  let batch: T[] = [];
  for await (const item of items) {
    batch.push(item);
    if (batch.length >= size) {
      yield batch;
      batch = [];
    }
  }
  if (batch.length > 0) yield batch;
}
