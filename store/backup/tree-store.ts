import type { Db } from '../db.js';
import * as repo from './backup.repository.js';
import {
  TreeBuilder,
  addDeltaChange,
  applyDelta,
  compareUtf8,
  decodeTree,
  encodeTree,
  newDeltaNode,
  totalsOf,
  type DeltaNode,
  type EncodedTree,
  type FileEntry,
  type TreeEntry,
} from './tree.js';

/** A file of a snapshot, as listed in path order. */
export interface SnapshotFile {
  path: string;
  size: number;
  mtime: number;
  sha256: Buffer;
}

const TREE_BATCH = 1000;

/** Loads trees by hash in batches and checks each against its hash. */
export class TreeLoader {
  constructor(private readonly db: Db) {}

  async loadMany(hashes: Buffer[]): Promise<Map<string, TreeEntry[]>> {
    const out = new Map<string, TreeEntry[]>();
    const want = [...new Map(hashes.map((h) => [h.toString('hex'), h])).values()];
    for (let i = 0; i < want.length; i += TREE_BATCH) {
      const rows = await repo.loadTrees(this.db, want.slice(i, i + TREE_BATCH));
      for (const r of rows) out.set(r.hash.toString('hex'), decodeTree(r.hash, r.content));
    }
    for (const h of want) if (!out.has(h.toString('hex'))) throw new MissingTree(h.toString('hex'));
    return out;
  }

  async load(hash: Buffer): Promise<TreeEntry[]> {
    return (await this.loadMany([hash])).get(hash.toString('hex'))!;
  }
}

export class MissingTree extends Error {
  override name = 'MissingTree';
  constructor(readonly hash: string) {
    super(`tree ${hash} is missing from the store`);
  }
}

/** Collects finished trees and stores them in multi-row batches (bounded in rows and bytes). */
class TreeSink {
  private pending: EncodedTree[] = [];
  private bytes = 0;
  count = 0;
  constructor(private readonly db: Db) {}
  add = (t: EncodedTree) => {
    this.pending.push(t);
    this.bytes += t.content.length;
    this.count++;
  };
  get full() {
    return this.pending.length >= 2000 || this.bytes >= 4 * 1024 * 1024;
  }
  async flush(): Promise<void> {
    const batch = this.pending;
    this.pending = [];
    this.bytes = 0;
    await repo.insertTrees(this.db, batch);
  }
}

export interface BuiltTree {
  root: Buffer;
  files: number;
  bytes: number;
  trees: number;
}

/**
 * Builds the trees of a full manifest from the staging table, streaming in path order. Trees
 * are stored as they finish (content-addressed, so an interrupted build leaves only unreferenced
 * trees behind); the snapshot that names the root is written later, atomically.
 */
export async function buildFromStaging(db: Db, uploadId: string, page = 20_000): Promise<BuiltTree> {
  const sink = new TreeSink(db);
  const builder = new TreeBuilder(sink.add);
  let after: string | undefined;
  for (;;) {
    const rows = await repo.pageStagedEntries(db, uploadId, after, page);
    if (rows.length === 0) break;
    for (const r of rows) builder.add(r.path, { size: r.size!, mtime: r.mtime!, sha256: r.sha256! });
    after = rows[rows.length - 1]!.path;
    if (sink.full) await sink.flush();
    if (rows.length < page) break;
  }
  const done = builder.finish();
  await sink.flush();
  return { ...done, trees: sink.count };
}

type StagedBatch = readonly { path: string; size: number | null; mtime: number | null; sha256: Buffer | null; deleted: boolean }[];

/**
 * Builds a full upload's trees while its manifest arrives, so that the commit does not have to
 * read the whole manifest back and build them then (at 1M files, about a minute in which the
 * uploader waits). The uploader sends its batches in path order, but with several requests in
 * flight they may be stored in another order: the last HELD stored batches wait, sorted by
 * their first path, and a batch goes to the builder when HELD others have been stored after
 * it (the rest at the commit). A batch that still does not continue the byte order of paths,
 * or any error, gives up for good, and the commit then builds from the staging table as before
 * (`result` answers undefined). The trees are stored as they finish, as buildFromStaging does:
 * content-addressed, and named by nothing until the snapshot's transaction commits.
 */
export class StreamingBuild {
  /** Stored batches held back (10,000 entries at most each): the reordering it absorbs. */
  static readonly HELD = 6;
  private readonly sink: TreeSink;
  private readonly builder: TreeBuilder;
  private queue: Promise<void> = Promise.resolve();
  private lastPath: string | undefined;
  private entries = 0;
  private finished = false;
  /** Stored batches not yet built, sorted by first path. */
  private held: StagedBatch[] = [];
  /** Why it gave up (for tests and logs); undefined while usable. */
  brokenBy: string | undefined;

  constructor(db: Db) {
    this.sink = new TreeSink(db);
    this.builder = new TreeBuilder(this.sink.add);
  }

  /** Adds one stored manifest batch (all of it newly staged). Never throws: a failure only ends the build. */
  feed(batch: StagedBatch): Promise<void> {
    this.queue = this.queue.then(async () => {
      if (this.brokenBy !== undefined || batch.length === 0) return;
      try {
        if (this.finished) throw new Error('manifest entries after the build finished');
        const first = batch[0]!.path;
        let at = this.held.length;
        while (at > 0 && compareUtf8(this.held[at - 1]![0]!.path, first) > 0) at--;
        this.held.splice(at, 0, batch);
        await this.drain(StreamingBuild.HELD);
      } catch (e) {
        this.brokenBy = (e as Error).message;
        this.held = [];
      }
    });
    return this.queue;
  }

  /** Builds held batches, in order, until at most `keep` remain. */
  private async drain(keep: number): Promise<void> {
    while (this.held.length > keep) {
      for (const e of this.held.shift()!) {
        if (e.deleted || e.sha256 === null || e.size === null || e.mtime === null) throw new Error('a deleted entry in a full manifest');
        if (this.lastPath !== undefined && compareUtf8(this.lastPath, e.path) >= 0) throw new Error('manifest not in path order');
        this.builder.add(e.path, { size: e.size, mtime: e.mtime, sha256: e.sha256 });
        this.lastPath = e.path;
        this.entries++;
      }
      if (this.sink.full) await this.sink.flush();
    }
  }

  /** Marks the build unusable (e.g. a batch only partly new). */
  giveUp(reason: string): void {
    this.queue = this.queue.then(() => {
      this.brokenBy ??= reason;
      this.held = [];
    });
  }

  /**
   * The built tree when the build saw exactly `entries` entries and nothing went wrong; else
   * undefined (the caller builds from the staging table).
   */
  async result(entries: number): Promise<BuiltTree | undefined> {
    let out: BuiltTree | undefined;
    this.queue = this.queue.then(async () => {
      if (this.brokenBy !== undefined || this.finished) return;
      try {
        await this.drain(0);
        if (this.entries !== entries) {
          this.brokenBy = `saw ${this.entries} entries of ${entries}`;
          return;
        }
        this.finished = true;
        const done = this.builder.finish();
        await this.sink.flush();
        out = { ...done, trees: this.sink.count };
      } catch (e) {
        this.brokenBy = (e as Error).message;
      }
    });
    await this.queue;
    return out;
  }
}

/**
 * Builds the trees of a delta manifest on top of a base snapshot: the touched folders' base
 * trees are loaded level by level (one query per level and thousand folders), rebuilt in
 * memory, and every untouched folder keeps its hash. Memory grows with the size of the delta,
 * not of the tree.
 */
export async function buildFromDelta(db: Db, uploadId: string, baseRoot: Buffer, page = 20_000): Promise<BuiltTree> {
  const root = newDeltaNode();
  let after: string | undefined;
  for (;;) {
    const rows = await repo.pageStagedEntries(db, uploadId, after, page);
    if (rows.length === 0) break;
    for (const r of rows) {
      addDeltaChange(root, r.path, r.deleted ? { kind: 'delete' } : { kind: 'put', size: r.size!, mtime: r.mtime!, sha256: r.sha256! });
    }
    after = rows[rows.length - 1]!.path;
    if (rows.length < page) break;
  }
  const loader = new TreeLoader(db);
  let level: { node: DeltaNode; hash: Buffer }[] = [{ node: root, hash: baseRoot }];
  while (level.length) {
    const trees = await loader.loadMany(level.map((l) => l.hash));
    const next: { node: DeltaNode; hash: Buffer }[] = [];
    // A folder inline in its parent's tree has its base at hand; its own stored subfolders
    // are loaded with the next level.
    const visit = (node: DeltaNode, base: TreeEntry[]) => {
      node.base = base;
      for (const e of base) {
        const sub = e.kind === 'dir' ? node.dirs.get(e.name) : undefined;
        if (!sub || e.kind !== 'dir') continue;
        if (e.inline) visit(sub, e.inline.entries);
        else next.push({ node: sub, hash: e.hash });
      }
    };
    for (const { node, hash } of level) visit(node, trees.get(hash.toString('hex'))!);
    level = next;
  }
  const sink = new TreeSink(db);
  const entries = applyDelta(root, '', sink.add);
  const rootTree = encodeTree(entries);
  sink.add(rootTree);
  await sink.flush();
  return { root: rootTree.hash, ...totalsOf(entries), trees: sink.count };
}

interface Frame {
  prefix: string;
  entries: TreeEntry[];
  i: number;
}

export interface WalkOptions {
  /** Only paths strictly after this one (keyset pagination). */
  afterPath?: string;
  /** Only paths under one of these folders (each ending in "/"). */
  prefixes?: string[];
}

function underPrefixes(dirPath: string, prefixes: string[] | undefined): 'all' | 'some' | 'none' {
  if (!prefixes) return 'all';
  let some = false;
  for (const p of prefixes) {
    if (dirPath.startsWith(p)) return 'all';
    if (p.startsWith(dirPath)) some = true;
  }
  return some ? 'some' : 'none';
}

/**
 * Yields a snapshot's files depth-first, which is byte order of their paths (folders sort as
 * "name/"). Trees ahead on the walk are fetched a thousand at a time; memory holds the path
 * from the root to the current folder and the prefetched trees.
 */
export async function* walkFiles(loader: TreeLoader, root: Buffer, opts: WalkOptions = {}): AsyncGenerator<SnapshotFile> {
  const cache = new Map<string, TreeEntry[]>();
  const stack: Frame[] = [{ prefix: '', entries: await loader.load(root), i: 0 }];
  const after = opts.afterPath;
  const wanted = (e: TreeEntry, prefix: string): boolean => {
    if (e.kind === 'file') {
      const p = prefix + e.name;
      if (after !== undefined && compareUtf8(p, after) <= 0) return false;
      return underPrefixes(prefix, opts.prefixes) === 'all';
    }
    const d = `${prefix}${e.name}/`;
    if (after !== undefined && !after.startsWith(d) && compareUtf8(d, after) < 0) return false;
    return underPrefixes(d, opts.prefixes) !== 'none';
  };
  // The stored trees ahead on the walk, looking through inline folders, up to a batch.
  const ahead = (entries: TreeEntry[], from: number, prefix: string, want: Buffer[]) => {
    for (let j = from; j < entries.length && want.length < TREE_BATCH; j++) {
      const e = entries[j]!;
      if (e.kind !== 'dir' || !wanted(e, prefix)) continue;
      if (e.inline) ahead(e.inline.entries, 0, `${prefix}${e.name}/`, want);
      else if (!cache.has(e.hash.toString('hex'))) want.push(e.hash);
    }
  };
  const prefetch = async (first: Buffer) => {
    const want: Buffer[] = [first];
    for (let f = stack.length - 1; f >= 0 && want.length < TREE_BATCH; f--) ahead(stack[f]!.entries, stack[f]!.i, stack[f]!.prefix, want);
    for (const [h, t] of await loader.loadMany(want)) cache.set(h, t);
  };
  while (stack.length) {
    const fr = stack[stack.length - 1]!;
    if (fr.i >= fr.entries.length) {
      stack.pop();
      continue;
    }
    const e = fr.entries[fr.i++]!;
    if (!wanted(e, fr.prefix)) continue;
    if (e.kind === 'file') {
      yield { path: fr.prefix + e.name, size: e.size, mtime: e.mtime, sha256: e.sha256 };
      continue;
    }
    if (e.inline) {
      stack.push({ prefix: `${fr.prefix}${e.name}/`, entries: e.inline.entries, i: 0 });
      continue;
    }
    const key = e.hash.toString('hex');
    if (!cache.has(key)) await prefetch(e.hash);
    const entries = cache.get(key)!;
    cache.delete(key);
    stack.push({ prefix: `${fr.prefix}${e.name}/`, entries, i: 0 });
  }
}

export interface FileChange {
  path: string;
  /** undefined when the file is gone. */
  now?: FileEntry;
  /** undefined when the file is new. */
  before?: FileEntry;
}

/**
 * The differences between two snapshots' trees, in path order; identical subtrees (same hash)
 * are skipped without being read.
 */
export async function* diffTrees(loader: TreeLoader, before: Buffer | undefined, now: Buffer): AsyncGenerator<FileChange> {
  type Dir = { hash: Buffer; inline?: { entries: TreeEntry[] } };
  const entriesOf = async (d: Dir | undefined): Promise<TreeEntry[]> => (!d ? [] : d.inline ? d.inline.entries : loader.load(d.hash));
  async function* walkDir(prefix: string, a: Dir | undefined, b: Dir | undefined): AsyncGenerator<FileChange> {
    if (a && b && a.hash.equals(b.hash)) return;
    const [ea, eb] = await Promise.all([entriesOf(a), entriesOf(b)]);
    const byA = new Map(ea.map((e) => [e.name, e]));
    const byB = new Map(eb.map((e) => [e.name, e]));
    const names = [...new Set([...byA.keys(), ...byB.keys()])].sort(compareUtf8);
    for (const name of names) {
      const x = byA.get(name);
      const y = byB.get(name);
      const p = prefix + name;
      const fx = x?.kind === 'file' ? x : undefined;
      const fy = y?.kind === 'file' ? y : undefined;
      if (fx && fy) {
        if (!fx.sha256.equals(fy.sha256) || fx.size !== fy.size || fx.mtime !== fy.mtime) yield { path: p, before: fx, now: fy };
      } else {
        if (fx) yield { path: p, before: fx };
        if (fy) yield { path: p, now: fy };
      }
      const dx = x?.kind === 'dir' ? x : undefined;
      const dy = y?.kind === 'dir' ? y : undefined;
      if (dx || dy) yield* walkDir(p + '/', dx, dy);
    }
  }
  yield* walkDir('', before && { hash: before }, { hash: now });
}
