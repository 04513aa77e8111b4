import { createHash, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import readline from 'node:readline';
import { CacheCorruptError, CacheReader, CacheWriter, replaceFile, setCacheSnapshotId, type CacheBlock } from './cache.js';
import { FeedError, listFeedFiles, readFeedChanges } from './feed.js';
import { readVerifiedInto } from './hash.js';
import { blocksOf, manifestEntries, type FileEntry, type ManifestEntry } from './manifest.js';
import { escapeField, unescapeField } from './order.js';
import { DEFAULT_RETRY, RetriesExhaustedError, withRetry, type RetryDeps, type RetryPolicy } from './retry.js';
import { scanTree, type Mount, type ScanStats, type WalkRoot } from './scan.js';
import { FRAME_OVERHEAD, UploadHttpError, writeFrameHead, type CommitAnswer, type UploadTransport } from './transport.js';
import { nodeTreeFs, type Problem, type ProblemKind, type TreeFs } from './walk.js';

/** PROTOCOL.md step 2 and 3 limits. */
export const MAX_MANIFEST_BATCH = 10_000;
export const MAX_BLOB_BATCH_BYTES = 32 * 1024 * 1024;
/** What a blob batch is filled to: small enough to keep the uploader's memory low, big enough that requests stay few. */
const BLOB_BATCH_TARGET = 8 * 1024 * 1024;
/** Files read for a blob batch between two turns of the event loop (so the request in flight moves on). */
const READ_SLICE = 256;
/**
 * With `overlap`, the scan sends as it goes. Files of at most KEEP_FILE_BYTES keep the bytes read
 * for hashing until sent (so a first upload reads each file once), at most KEPT_BYTES_LIMIT in all
 * (past it, files are read again when sent). The scan runs ahead of the sender by at
 * most one manifest batch or LOOKAHEAD_BYTES of kept bytes, and a manifest batch is sent once its
 * files kept MANIFEST_BATCH_KEPT_BYTES: about three times that is kept at once (queued, being
 * batched, being sent), under the limit. (8 MiB batches measured 253 MiB peak RSS on the 100k
 * tree against 209 MiB with 4 MiB; the sequential upload before measured 203-208 MiB.)
 */
const KEEP_FILE_BYTES = 512 * 1024;
const KEPT_BYTES_LIMIT = 16 * 1024 * 1024;
const LOOKAHEAD_BYTES = 4 * 1024 * 1024;
const MANIFEST_BATCH_KEPT_BYTES = 4 * 1024 * 1024;
/** The scan lets the event loop turn at least this often, so answers arrive and requests go out. */
const SCAN_TURN_MS = 10;

export interface UploadOptions {
  /** Exchange base URL: recorded in the cache, whose base snapshot is only valid for that exchange. */
  server: string;
  facilityId: string;
  /** The standardized-storage root. */
  root: string;
  /** The extended-storage root, if the facility has one. */
  extended?: string;
  /** The cache file; its session and journal files sit beside it. */
  cacheFile: string;
  /** A transaction-storage feed folder (TR_*.DAT): rescan only the folders it names. */
  changesDir?: string;
  manifestBatch?: number;
  /** The largest blob request (PROTOCOL.md: 32 MiB); files larger than it less framing are reported, not sent. */
  blobBatchBytes?: number;
  /**
   * Scan and send at the same time (the manifest goes out as the scan produces it). Off by
   * default for now: on the 2-core machine faster at load 2-4, slower at load 8-14 (see
   * bench/README.md, "Sending while scanning").
   */
  overlap?: boolean;
  /** With `overlap`: files of at most this many bytes are sent from the bytes the scan read (default 512 KiB; 0: every file is read again to send it). */
  keepBytesUpTo?: number;
  retry?: RetryPolicy;
}

export type UploadPhase = 'scan' | 'manifest' | 'blobs' | 'commit' | 'done';

export interface UploadProgress {
  phase: UploadPhase;
  scan: Readonly<ScanStats>;
  /** Files the previous snapshot had: the expected scan total, when known. */
  expectedFiles: number | null;
  /** Entries of a full manifest; 0 for a delta, whose size is known only once it is sent. */
  manifestTotal: number;
  manifestSent: number;
  blobsSent: number;
  bytesSent: number;
}

export interface UploadDeps {
  transport: UploadTransport;
  fs?: TreeFs;
  sleep?: (ms: number) => Promise<void>;
  now?: () => number;
  random?: () => number;
  onProblem?: (p: Problem) => void;
  /** Called often; throttling is the listener's business. */
  onProgress?: (p: Readonly<UploadProgress>) => void;
  /** Operational notes (retries, fall-backs, resumptions). */
  onNote?: (message: string) => void;
}

export interface UploadSummary {
  facilityId: string;
  snapshotId: string;
  createdAt: string;
  /** full: every entry sent; delta: only changes against the base snapshot. */
  manifest: 'full' | 'delta';
  baseSnapshotId: string | null;
  /** full: the whole tree walked; feed: only folders named by the change feed; none: resumed from a finished scan. */
  scan: 'full' | 'feed' | 'none';
  resumed: boolean;
  files: number;
  bytes: number;
  hashedFiles: number;
  hashedBytes: number;
  unchangedFiles: number;
  renamedFiles: number;
  manifestEntries: number;
  deletedEntries: number;
  blobsSent: number;
  bytesSent: number;
  newBlobs: number;
  newBytes: number;
  problems: Partial<Record<ProblemKind, number>>;
  /** Time spent walking and hashing (0 when resumed from a finished scan). */
  scanSeconds: number;
  seconds: number;
}

/** Bad input: the caller must change something (exit 2). */
export class UploadInputError extends Error {
  override name = 'UploadInputError';
}

/** The upload did not complete (exit 1); running it again resumes. */
export class UploadFailedError extends Error {
  override name = 'UploadFailedError';
}

/** A file's bytes no longer match the manifest already sent: the upload must start over. */
class FileChangedError extends Error {
  override name = 'FileChangedError';
}

/** The base snapshot stopped being the latest before commit: start over (the next open falls back to full). */
class BaseMovedError extends Error {
  override name = 'BaseMovedError';
}

interface SessionState {
  version: 1;
  server: string;
  facilityId: string;
  clientSession: string;
  uploadId: string | null;
  manifest: 'full' | 'delta';
  base: string | null;
  scan: 'full' | 'feed';
  /** The roots that were scanned: a resumed run must read the same files. */
  mounts: Mount[];
  /** Identifies the finished scan (.next) this session sends; null while the scan runs (a resumed run scans again). */
  next: { size: number; mtimeMs: number } | null;
  startedAt: string;
}

const MAX_RESTARTS = 2;

/**
 * Backs up one facility's tree: open an upload, scan (with the cache) into a new cache file,
 * send the manifest in batches and the blobs the exchange lacks (with `overlap`: as the scan
 * produces them, small files from the bytes the scan read), commit, and make the new cache current.
 * Every step is recorded beside the cache, so a run that is killed at any point resumes the same
 * upload and sends nothing the exchange already has (a scan cut short is run again, and must
 * reproduce the entries already sent: the journal holds their digest).
 */
export async function uploadTree(opts: UploadOptions, deps: UploadDeps): Promise<UploadSummary> {
  const started = (deps.now ?? Date.now)();
  const mounts = await checkInput(opts);
  const files = {
    cache: opts.cacheFile,
    next: `${opts.cacheFile}.next`,
    partial: `${opts.cacheFile}.next.partial`,
    session: `${opts.cacheFile}.session`,
    journal: `${opts.cacheFile}.journal`,
  };
  const ctx: Ctx = {
    opts,
    deps,
    fs: deps.fs ?? nodeTreeFs,
    mounts,
    files,
    retry: opts.retry ?? DEFAULT_RETRY,
    retryDeps: {
      sleep: deps.sleep ?? ((ms) => new Promise((r) => setTimeout(r, ms))),
      now: deps.now ?? Date.now,
      random: deps.random ?? Math.random,
      onRetry: ({ step, attempt, delayMs, error }) =>
        deps.onNote?.(`${error.message}; retry ${attempt} of ${step} in ${(delayMs / 1000).toFixed(1)} s`),
    },
    problems: {},
    scanMs: 0,
    scanning: false,
    kept: new KeptBytes(KEPT_BYTES_LIMIT),
    progress: {
      phase: 'scan',
      scan: { files: 0, bytes: 0, hashed: 0, hashedBytes: 0, unchanged: 0, renamed: 0, copied: 0, problems: 0 },
      expectedFiles: null,
      manifestTotal: 0,
      manifestSent: 0,
      blobsSent: 0,
      bytesSent: 0,
    },
  };
  await fsp.mkdir(path.dirname(path.resolve(opts.cacheFile)), { recursive: true });
  const unlock = await lockCache(`${opts.cacheFile}.lock`);
  try {
    return await runWithRestarts(ctx, started);
  } finally {
    await unlock();
  }
}

/**
 * One uploader per cache at a time (a nightly job that overran meets the next night's): the
 * lock file holds the owner's pid; a lock whose process is gone is taken over.
 */
async function lockCache(file: string): Promise<() => Promise<void>> {
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fh = await fsp.open(file, 'wx', 0o600);
      await fh.writeFile(`${process.pid}\n`);
      await fh.close();
      return () => fsp.rm(file, { force: true });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const pid = Number((await fsp.readFile(file, 'utf8').catch(() => '')).trim());
      let alive = false;
      if (Number.isSafeInteger(pid) && pid > 0) {
        try {
          process.kill(pid, 0);
          alive = true;
        } catch (k) {
          alive = (k as NodeJS.ErrnoException).code === 'EPERM';
        }
      }
      if (alive) throw new UploadInputError(`another upload with the cache ${file.slice(0, -'.lock'.length)} is running (process ${pid})`);
      await fsp.rm(file, { force: true });
    }
  }
  throw new UploadFailedError(`cannot take the lock ${file}`);
}

async function runWithRestarts(ctx: Ctx, started: number): Promise<UploadSummary> {
  const { deps } = ctx;
  for (let restart = 0; ; restart++) {
    try {
      const s = await runOnce(ctx);
      const secs = (ms: number) => Math.round(ms / 100) / 10;
      return { ...s, problems: ctx.problems, scanSeconds: secs(ctx.scanMs), seconds: secs((deps.now ?? Date.now)() - started) };
    } catch (e) {
      if ((e instanceof FileChangedError || e instanceof BaseMovedError) && restart < MAX_RESTARTS) {
        deps.onNote?.(`${e.message}; starting the upload over with a fresh scan`);
        await discardSession(ctx);
        continue;
      }
      if (e instanceof FileChangedError) throw new UploadFailedError(`${e.message}; the tree keeps changing, run the upload again later`);
      throw e;
    }
  }
}

interface Ctx {
  opts: UploadOptions;
  deps: UploadDeps;
  fs: TreeFs;
  mounts: Mount[];
  files: { cache: string; next: string; partial: string; session: string; journal: string };
  retry: RetryPolicy;
  retryDeps: RetryDeps;
  problems: Partial<Record<ProblemKind, number>>;
  progress: UploadProgress;
  scanMs: number;
  /** True while a scan runs beside the sending (progress shows the scan). */
  scanning: boolean;
  kept: KeptBytes;
}

async function checkInput(opts: UploadOptions): Promise<Mount[]> {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$/.test(opts.facilityId)) {
    throw new UploadInputError(`the facility ID "${opts.facilityId}" must be 1 to 32 letters, digits, ".", "_" or "-"`);
  }
  const mounts: Mount[] = [];
  const check = async (prefix: Mount['prefix'], dir: string, option: string) => {
    let st: fs.Stats;
    try {
      st = await fsp.stat(dir);
    } catch (e) {
      throw new UploadInputError(`${option} ${dir}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such folder' : (e as Error).message}`);
    }
    if (!st.isDirectory()) throw new UploadInputError(`${option} ${dir} is not a folder`);
    mounts.push({ prefix, root: path.resolve(dir) });
  };
  if (opts.extended !== undefined) await check('extended', opts.extended, '--extended');
  await check('standard', opts.root, '--root');
  if (opts.extended !== undefined) {
    const a = path.resolve(opts.root);
    const b = path.resolve(opts.extended);
    if (a === b || a.startsWith(b + path.sep) || b.startsWith(a + path.sep)) {
      throw new UploadInputError('--root and --extended must be separate folders, neither inside the other');
    }
  }
  if (opts.changesDir !== undefined) {
    const st = await fsp.stat(opts.changesDir).catch(() => null);
    if (!st?.isDirectory()) throw new UploadInputError(`--changes ${opts.changesDir}: no such folder`);
  }
  const mb = opts.manifestBatch ?? MAX_MANIFEST_BATCH;
  if (mb < 1 || mb > MAX_MANIFEST_BATCH) throw new UploadInputError(`manifest batches hold 1 to ${MAX_MANIFEST_BATCH} entries`);
  const bb = opts.blobBatchBytes ?? MAX_BLOB_BATCH_BYTES;
  if (bb < 1024 || bb > MAX_BLOB_BATCH_BYTES) throw new UploadInputError(`blob batches hold 1 KiB to ${MAX_BLOB_BATCH_BYTES} bytes`);
  return mounts.sort((x, y) => (x.prefix < y.prefix ? -1 : 1));
}

async function readSession(file: string): Promise<SessionState | null> {
  try {
    const s = JSON.parse(await fsp.readFile(file, 'utf8')) as SessionState;
    return s && s.version === 1 && typeof s.clientSession === 'string' ? s : null;
  } catch {
    return null;
  }
}

async function writeAtomic(file: string, text: string): Promise<void> {
  const tmp = `${file}.tmp`;
  const fh = await fsp.open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(text);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await replaceFile(tmp, file);
}

async function statOf(file: string): Promise<{ size: number; mtimeMs: number } | null> {
  const st = await fsp.stat(file).catch(() => null);
  return st ? { size: st.size, mtimeMs: st.mtimeMs } : null;
}

/** Gives up the recorded upload (best effort) and forgets it, keeping the finished scan for its hashes. */
async function discardSession(ctx: Ctx): Promise<void> {
  const s = await readSession(ctx.files.session);
  if (s?.uploadId) {
    await ctx.deps.transport.abort(s.uploadId).catch((e: Error) => ctx.deps.onNote?.(`could not abort the earlier upload: ${e.message}`));
  }
  await fsp.rm(ctx.files.session, { force: true });
  await fsp.rm(ctx.files.journal, { force: true });
}

async function openCache(file: string, note: UploadDeps['onNote']): Promise<CacheReader | null> {
  try {
    return await CacheReader.open(file);
  } catch (e) {
    if (e instanceof CacheCorruptError) {
      note?.(e.message);
      return null;
    }
    throw e;
  }
}

/** What a scan reads beside the tree, and where it walks. */
interface ScanPlan {
  prev: CacheReader | null;
  extra: CacheReader | null;
  walkRoots: WalkRoot[] | undefined;
  feedPosition: string | null;
  scanKind: 'full' | 'feed';
  /** The committed snapshot the cache describes, when a delta against it is possible. */
  base: string | null;
}

/** Opens the caches a scan reads and decides, from the change feed if any, what it walks. */
async function planScan(ctx: Ctx): Promise<ScanPlan> {
  const { opts, deps, files } = ctx;
  let prev = await openCache(files.cache, deps.onNote);
  const baseUsable = prev !== null && prev.header.snapshotId !== null && prev.header.facilityId === opts.facilityId && prev.header.server === opts.server;
  if (prev && prev.header.facilityId !== opts.facilityId) {
    // Another facility's cache says nothing about this tree.
    deps.onNote?.(`the cache ${files.cache} belongs to facility ${prev.header.facilityId}; scanning without it`);
    prev.close();
    prev = null;
  }
  const extra = await openCache(files.next, undefined);
  ctx.progress.expectedFiles = prev?.totals.files ?? null;

  let walkRoots: WalkRoot[] | undefined;
  let feedPosition: string | null = null;
  let scanKind: 'full' | 'feed' = 'full';
  if (opts.changesDir !== undefined) {
    try {
      if (baseUsable && prev!.header.feedPosition !== null) {
        const changes = await readFeedChanges(opts.changesDir, prev!.header.feedPosition);
        if (changes.needsFullScan) {
          deps.onNote?.(`change feed: ${changes.needsFullScan}; scanning the whole tree`);
          feedPosition = changes.lastFile;
        } else {
          const std = ctx.mounts.find((m) => m.prefix === 'standard')!;
          walkRoots = [
            ...ctx.mounts.filter((m) => m.prefix !== 'standard').map((m) => ({ dir: m.prefix, abs: m.root })),
            ...changes.folders.map((f) => ({ dir: `standard/${f}`, abs: path.join(std.root, ...f.split('/')) })),
          ];
          feedPosition = changes.lastFile;
          scanKind = 'feed';
          deps.onNote?.(`change feed: ${changes.files} new file(s), ${changes.records} record(s): rescanning ${changes.folders.length} folder(s)`);
        }
      } else {
        // No trusted starting point: scan everything and start following the feed from here.
        const { files: trFiles } = await listFeedFiles(opts.changesDir);
        feedPosition = trFiles.length > 0 ? trFiles[trFiles.length - 1]! : null;
        deps.onNote?.('change feed: no previous snapshot in the cache, so this run scans the whole tree');
      }
    } catch (e) {
      prev?.close();
      extra?.close();
      if (e instanceof FeedError) throw new UploadInputError(`${e.message}. Fix or move the file, or run without --changes for a full scan`);
      throw e;
    }
  }
  return { prev, extra, walkRoots, feedPosition, scanKind, base: baseUsable ? prev!.header.snapshotId : null };
}

/**
 * Scans into `.next`, handing each directory block to `queue` as it is written (the manifest is
 * sent from there while the scan goes on), then records the finished scan in the session.
 */
async function scanInto(ctx: Ctx, plan: ScanPlan, session: SessionState, queue: BlockQueue | null): Promise<void> {
  const { opts, deps, files } = ctx;
  const t0 = ctx.retryDeps.now();
  let out: CacheWriter;
  try {
    out = await CacheWriter.create(files.partial, { facilityId: opts.facilityId, server: opts.server, feedPosition: plan.feedPosition });
  } catch (e) {
    plan.prev?.close();
    plan.extra?.close();
    throw e;
  }
  let stats: ScanStats;
  let lastTurn = performance.now();
  try {
    stats = await scanTree({
      mounts: ctx.mounts,
      walkRoots: plan.walkRoots,
      previous: plan.prev,
      extra: plan.extra,
      out,
      fs: ctx.fs,
      maxBlobBytes: (opts.blobBatchBytes ?? MAX_BLOB_BATCH_BYTES) - FRAME_OVERHEAD,
      onProblem: (p) => {
        ctx.problems[p.kind] = (ctx.problems[p.kind] ?? 0) + 1;
        deps.onProblem?.(p);
      },
      onProgress: (s) => {
        ctx.progress.scan = s;
        deps.onProgress?.(ctx.progress);
      },
      ...(queue ? { keep: { upTo: opts.keepBytesUpTo ?? KEEP_FILE_BYTES, take: (sha256: string, bytes: Buffer) => ctx.kept.put(sha256, bytes) } } : {}),
      onBlock: async (block, keptBytes) => {
        if (!queue) return;
        await queue.put(block, keptBytes);
        // The scan reads synchronously: let answers in and requests out between folders.
        if (performance.now() - lastTurn >= SCAN_TURN_MS) {
          await new Promise<void>((r) => setImmediate(r));
          lastTurn = performance.now();
        }
      },
    });
    await out.finish();
  } catch (e) {
    await out.abandon();
    await fsp.rm(files.partial, { force: true });
    if (e instanceof CacheCorruptError) {
      // Found mid-way: the damaged cache goes and the next attempt scans without it.
      deps.onNote?.(e.message);
      await fsp.rm(files.cache, { force: true });
    }
    throw e;
  }
  ctx.progress.scan = stats;
  await replaceFile(files.partial, files.next);
  session.next = (await statOf(files.next))!;
  // From here a killed run resumes from the finished scan instead of scanning again.
  await writeAtomic(files.session, JSON.stringify(session));
  ctx.scanMs += ctx.retryDeps.now() - t0;
}

/**
 * Directory blocks on their way from the scan to the manifest. `put` waits while the queue
 * holds a manifest batch's worth of entries or LOOKAHEAD_BYTES of kept file bytes: the scan runs
 * that far ahead of the sender and no further, whatever the size of the tree.
 */
class BlockQueue implements AsyncIterable<CacheBlock> {
  private items: { block: CacheBlock; kept: number }[] = [];
  private entries = 0;
  private kept = 0;
  private ended = false;
  private error: unknown = null;
  private wakeReader: (() => void) | null = null;
  private wakeWriter: (() => void) | null = null;

  constructor(
    private readonly maxEntries: number,
    private readonly maxKept: number,
  ) {}

  async put(block: CacheBlock, kept: number): Promise<void> {
    while (!this.ended && this.items.length > 0 && (this.entries >= this.maxEntries || this.kept >= this.maxKept)) {
      await new Promise<void>((r) => (this.wakeWriter = r));
    }
    if (this.ended) throw this.error ?? new Error('the block queue was ended');
    this.items.push({ block, kept });
    this.entries += block.files.length;
    this.kept += kept;
    this.wake('reader');
  }

  /** No more blocks; with an error, the reader throws it (and a waiting writer too). */
  end(error?: unknown): void {
    this.ended = true;
    this.error = error ?? null;
    this.wake('reader');
    this.wake('writer');
  }

  private wake(who: 'reader' | 'writer'): void {
    const w = who === 'reader' ? this.wakeReader : this.wakeWriter;
    if (who === 'reader') this.wakeReader = null;
    else this.wakeWriter = null;
    w?.();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<CacheBlock> {
    for (;;) {
      const item = this.items.shift();
      if (item) {
        this.entries -= item.block.files.length;
        this.kept -= item.kept;
        this.wake('writer');
        yield item.block;
        continue;
      }
      if (this.ended) {
        if (this.error) throw this.error;
        return;
      }
      await new Promise<void>((r) => (this.wakeReader = r));
    }
  }
}

/**
 * Bytes the scan read for hashing, by SHA-256, kept to be sent without reading the file again.
 * Bounded: past `limit` bytes nothing more is kept (those files are read again when sent).
 */
class KeptBytes {
  private readonly map = new Map<string, Buffer>();
  private bytes = 0;
  constructor(private readonly limit: number) {}

  /** Keeps the bytes if there is room (else they are read again when sent); false if not kept. */
  put(sha256: string, bytes: Buffer): boolean {
    if (this.map.has(sha256)) return true;
    if (this.bytes + bytes.length > this.limit) return false;
    this.map.set(sha256, bytes);
    this.bytes += bytes.length;
    return true;
  }

  has(sha256: string): boolean {
    return this.map.has(sha256);
  }

  /** The bytes (forgotten here: each blob is sent once). */
  take(sha256: string): Buffer | undefined {
    const b = this.map.get(sha256);
    if (b) {
      this.map.delete(sha256);
      this.bytes -= b.length;
    }
    return b;
  }

  clear(): void {
    this.map.clear();
    this.bytes = 0;
  }
}

/** The journal: what the exchange acknowledged, so a resumed run sends only the rest. */
interface Journal {
  /** Manifest entries acknowledged. */
  acked: number;
  /** Blobs the exchange said it lacks and that were not acknowledged yet: sha -> entry. */
  pending: Map<string, { path: string; size: number }>;
  /** Entries sent (or being sent) -> digest of the manifest up to there (see ManifestDigest). */
  digests: Map<number, string>;
}

async function readJournal(file: string): Promise<Journal> {
  const j: Journal = { acked: 0, pending: new Map(), digests: new Map() };
  let stream: fs.ReadStream;
  try {
    await fsp.access(file);
    stream = fs.createReadStream(file, { encoding: 'utf8' });
  } catch {
    return j;
  }
  const rl = readline.createInterface({ input: stream, crlfDelay: Infinity });
  for await (const line of rl) {
    const f = line.split('\t');
    // A line cut short by a kill is ignored: the commit check finds anything it stood for.
    if (f[0] === 'A' && f.length === 2 && /^\d+$/.test(f[1]!)) j.acked = Number(f[1]);
    else if (f[0] === 'S' && f.length === 3 && /^\d+$/.test(f[1]!) && /^[0-9a-f]{64}$/.test(f[2]!)) j.digests.set(Number(f[1]), f[2]!);
    else if (f[0] === 'M' && f.length === 4 && /^[0-9a-f]{64}$/.test(f[1]!)) j.pending.set(f[1]!, { size: Number(f[2]), path: unescapeField(f[3]!) });
    else if (f[0] === 'B' && f.length === 2) j.pending.delete(f[1]!);
  }
  return j;
}

/**
 * A running SHA-256 of the manifest entries, one line each: the journal records it with every
 * batch sent, so a run that scans again after an interruption can prove that its entries start
 * with exactly those the exchange already has.
 */
class ManifestDigest {
  private readonly hash = createHash('sha256');
  private text = '';

  add(e: ManifestEntry): void {
    this.text += 'deleted' in e ? `${e.path}\t-\n` : `${e.path}\t${e.size}\t${e.mtime}\t${e.sha256}\n`;
    if (this.text.length >= 1 << 16) this.flush();
  }

  private flush(): void {
    this.hash.update(this.text);
    this.text = '';
  }

  value(): string {
    this.flush();
    return this.hash.copy().digest('hex');
  }
}

async function runOnce(ctx: Ctx): Promise<Omit<UploadSummary, 'problems' | 'seconds' | 'scanSeconds'>> {
  const { opts, deps, files } = ctx;
  const t = deps.transport;
  let session = await readSession(files.session);
  const nextStat = await statOf(files.next);
  const resumable =
    session !== null &&
    session.server === opts.server &&
    session.facilityId === opts.facilityId &&
    // A scan that did not finish is done again; a finished one must be the file the session names.
    (session.next === null || (nextStat !== null && nextStat.size === session.next.size && nextStat.mtimeMs === session.next.mtimeMs)) &&
    JSON.stringify(session.mounts) === JSON.stringify(ctx.mounts);
  if (session && !resumable) {
    deps.onNote?.('an earlier upload was interrupted with other options or before its scan was kept; starting over');
    await discardSession(ctx);
    session = null;
  }
  if (session?.uploadId) {
    // Killed after the commit but before the cache was replaced? Then only the cache is left to do.
    const st = await withRetry('upload state', () => t.state(session!.uploadId!), ctx.retry, ctx.retryDeps).catch((e: unknown) => {
      if (e instanceof UploadHttpError && e.status === 404) return null;
      throw describe(e, opts);
    });
    if (st?.state === 'committed' && st.snapshotId && session.next !== null) {
      deps.onNote?.(`upload ${session.uploadId} was committed as snapshot ${st.snapshotId} before the interruption`);
      return finish(ctx, session, { snapshotId: st.snapshotId, createdAt: '', newBlobs: 0, newBytes: 0 }, 'none', true, 0, 0);
    }
    if (st && st.state !== 'open') {
      deps.onNote?.(`the interrupted upload ${session.uploadId} is ${st.state ?? 'gone'} on the exchange; starting a new one from the same scan`);
    }
  }
  // A scan to run (sending as it goes): always, except when resuming from a finished one.
  let plan: ScanPlan | null = null;
  if (session) {
    deps.onNote?.(`resuming the upload started ${session.startedAt}${session.next === null ? ' (its scan did not finish: scanning again)' : ''}`);
    if (session.next === null) plan = await planScan(ctx);
  } else {
    plan = await planScan(ctx);
    session = {
      version: 1,
      server: opts.server,
      facilityId: opts.facilityId,
      clientSession: randomUUID(),
      uploadId: null,
      manifest: plan.base ? 'delta' : 'full',
      base: plan.base,
      scan: plan.scanKind,
      mounts: ctx.mounts,
      next: null,
      startedAt: new Date().toISOString(),
    };
    // Before the exchange hears of the session, so a kill right after open still resumes it.
    await writeAtomic(files.session, JSON.stringify(session));
    await fsp.rm(files.journal, { force: true });
  }
  const scanKind: UploadSummary['scan'] = plan ? plan.scanKind : 'none';
  if (plan && !opts.overlap) {
    // Scan first (the upload is not held open meanwhile), then send from the finished scan's file.
    await scanInto(ctx, plan, session, null);
    plan = null;
  }
  const closePlan = () => {
    plan?.prev?.close();
    plan?.extra?.close();
  };

  // Open (or re-open) the upload.
  const open = async (s: SessionState) =>
    withRetry(
      'open upload',
      () => t.open({ facilityId: opts.facilityId, clientSession: s.clientSession, ...(s.base ? { baseSnapshotId: s.base } : {}) }),
      ctx.retry,
      ctx.retryDeps,
    );
  let opened;
  try {
    try {
      opened = await open(session);
    } catch (e) {
      if (e instanceof UploadHttpError && e.status === 409 && session.base !== null && 'latestSnapshotId' in e.problem) {
        // The exchange has a newer snapshot than ours (another machine uploaded, or a restore):
        // the delta would be against the wrong tree, so send everything.
        deps.onNote?.(`snapshot ${session.base} is not the facility's latest on the exchange; sending a full manifest`);
        session = { ...session, manifest: 'full', base: null };
        await writeAtomic(files.session, JSON.stringify(session));
        opened = await open(session).catch((e2: unknown) => {
          throw describe(e2, opts);
        });
      } else throw describe(e, opts);
    }
    session = { ...session, uploadId: opened.uploadId };
    await writeAtomic(files.session, JSON.stringify(session));
  } catch (e) {
    closePlan();
    throw e;
  }
  const uploadId = opened.uploadId;

  if (opened.committed && session.next !== null) {
    // Committed before (the answer was lost): the commit answers that snapshot again.
    deps.onNote?.(`upload ${uploadId} of this session was already committed`);
    closePlan();
    const entries = opened.received?.entries ?? 0;
    const commit = await withRetry('commit', () => t.commit(uploadId, entries), ctx.retry, ctx.retryDeps);
    return finish(ctx, session, commit, scanKind, true, entries, 0);
  }
  let journal: Journal = { acked: 0, pending: new Map(), digests: new Map() };
  let serverEntries = 0;
  let journalFh: fsp.FileHandle;
  try {
    if (opened.resumed) {
      journal = await readJournal(files.journal);
      serverEntries = opened.received?.entries ?? journal.acked;
      if (serverEntries < journal.acked) {
        throw new UploadFailedError(`the exchange has ${serverEntries} manifest entries of upload ${uploadId}, fewer than the ${journal.acked} it acknowledged; delete ${files.session} to start over`);
      }
    } else {
      await fsp.rm(files.journal, { force: true });
    }
    journalFh = await fsp.open(files.journal, 'a', 0o600);
  } catch (e) {
    closePlan();
    throw e;
  }
  const summary = await (async () => {
    try {
      return await sendAndCommit(ctx, session, uploadId, journal, serverEntries, journalFh, plan);
    } finally {
      ctx.kept.clear();
      await journalFh.close();
    }
  })();

  return finish(ctx, session, summary.commit, scanKind, opened.resumed, summary.entries, summary.deleted);
}

/** The snapshot exists: make the scan the current cache, then forget the session. */
async function finish(
  ctx: Ctx,
  session: SessionState,
  commit: Pick<CommitAnswer, 'snapshotId' | 'createdAt' | 'newBlobs' | 'newBytes'>,
  scanKind: UploadSummary['scan'],
  resumed: boolean,
  entries: number,
  deleted: number,
): Promise<Omit<UploadSummary, 'problems' | 'seconds' | 'scanSeconds'>> {
  const { opts, deps, files } = ctx;
  const summary = { commit, entries, deleted };
  await setCacheSnapshotId(files.next, summary.commit.snapshotId);
  await replaceFile(files.next, files.cache);
  await fsp.rm(files.session, { force: true });
  await fsp.rm(files.journal, { force: true });
  ctx.progress.phase = 'done';
  deps.onProgress?.(ctx.progress);
  const s = ctx.progress.scan;
  const next = await CacheReader.open(files.cache);
  const totals = next!.totals;
  next!.close();
  return {
    facilityId: opts.facilityId,
    snapshotId: summary.commit.snapshotId,
    createdAt: summary.commit.createdAt,
    manifest: session.manifest,
    baseSnapshotId: session.base,
    scan: scanKind,
    resumed,
    files: totals.files,
    bytes: totals.bytes,
    hashedFiles: s.hashed,
    hashedBytes: s.hashedBytes,
    unchangedFiles: s.unchanged + s.copied,
    renamedFiles: s.renamed,
    manifestEntries: summary.entries,
    deletedEntries: summary.deleted,
    blobsSent: ctx.progress.blobsSent,
    bytesSent: ctx.progress.bytesSent,
    newBlobs: summary.commit.newBlobs,
    newBytes: summary.commit.newBytes,
  };
}

/** Turns a final HTTP answer into the error the command shows. */
function describe(e: unknown, opts: UploadOptions): Error {
  if (e instanceof UploadHttpError) {
    if (e.status === 401 || e.status === 403) {
      return new UploadInputError(`the exchange refused the uploader token for facility ${opts.facilityId} (${e.status}): check --token or HAKOBUNE_UPLOAD_TOKEN`);
    }
    if (e.status === 404) return new UploadInputError(`${e.message} (is ${opts.server} a Hakobune exchange, and is facility ${opts.facilityId} registered?)`);
    if (e.status === 409) return new UploadFailedError(`${e.message}: another upload for facility ${opts.facilityId} is open (from another machine or cache); it must commit or be aborted first`);
    if (e.status === 400) return new UploadInputError(e.message);
    return new UploadFailedError(e.message);
  }
  if (e instanceof RetriesExhaustedError) return new UploadFailedError(`${e.message}; running the same command again resumes the upload`);
  return e as Error;
}

async function sendAndCommit(
  ctx: Ctx,
  session: SessionState,
  uploadId: string,
  journal: Journal,
  serverEntries: number,
  jfh: fsp.FileHandle,
  plan: ScanPlan | null,
): Promise<{ commit: CommitAnswer; entries: number; deleted: number }> {
  const { opts, deps, files } = ctx;
  const t = ctx.deps.transport;
  const p = ctx.progress;
  const batchSize = opts.manifestBatch ?? MAX_MANIFEST_BATCH;
  // Journal lines come from the manifest loop and from the blob request in flight: one write at a time.
  let journalWrites: Promise<unknown> = Promise.resolve();
  const write = (s: string) => (journalWrites = journalWrites.then(() => jfh.write(s)));
  const setPhase = (phase: UploadPhase) => {
    if (!ctx.scanning) p.phase = phase;
  };

  const openBase = async (): Promise<CacheReader | null> => {
    if (!session.base) return null;
    const base = await CacheReader.open(files.cache);
    if (base?.header.snapshotId !== session.base) {
      base?.close();
      throw new UploadFailedError(`the cache ${files.cache} changed during the upload; run again`);
    }
    return base;
  };
  /** The manifest from the finished scan's file. */
  const generate = async function* (): AsyncGenerator<ManifestEntry> {
    const next = await CacheReader.open(files.next);
    if (!next) throw new UploadFailedError(`the scan result ${files.next} disappeared`);
    if (session.manifest === 'full') p.manifestTotal = next.totals.files;
    let base: CacheReader | null;
    try {
      base = await openBase();
    } catch (e) {
      next.close();
      throw e;
    }
    yield* manifestEntries(blocksOf(next), base);
  };

  // The scan, when this run has one, runs beside the sending and hands its blocks over a queue.
  const queue = plan ? new BlockQueue(batchSize, LOOKAHEAD_BYTES) : null;
  let scanning: Promise<void> = Promise.resolve();
  if (plan) {
    ctx.scanning = true;
    p.phase = 'scan';
    scanning = scanInto(ctx, plan, session, queue!).then(
      () => {
        ctx.scanning = false;
        if (session.manifest === 'full') p.manifestTotal = p.scan.files;
        queue!.end();
      },
      (e: unknown) => {
        ctx.scanning = false;
        queue!.end(e);
        throw e;
      },
    );
    // Awaited below; this only keeps an early failure from being reported as unhandled.
    scanning.catch(() => undefined);
  }
  const firstPass = async function* (): AsyncGenerator<ManifestEntry> {
    if (!queue) return yield* generate();
    yield* manifestEntries(queue, await openBase());
  };

  // Counted while sending (not in a pass of its own: at 1M files each pass reads both caches).
  // A full manifest lists every file of the scan, which its trailer counts; a delta's size is
  // known at the end (0 meanwhile: progress shows no total).
  let total = 0;
  let deleted = 0;
  p.manifestSent = serverEntries;

  const run = async <T>(step: string, fn: () => Promise<T>, beforeRetry?: () => Promise<{ settled: T } | null>) => {
    try {
      return await withRetry(step, fn, ctx.retry, ctx.retryDeps, beforeRetry);
    } catch (e) {
      throw describe(e, opts);
    }
  };

  const absOf = (p: string): string => {
    const slash = p.indexOf('/');
    const mount = ctx.mounts.find((m) => m.prefix === p.slice(0, slash))!;
    return path.join(mount.root, ...p.slice(slash + 1).split('/'));
  };

  /**
   * Puts a batch's files into one framed request body: the bytes the scan kept, or read straight
   * into place (synchronous reads, in slices between turns of the event loop) and checked
   * against their hash. No buffer per read file and no copy to frame them.
   */
  const readBatch = async (group: { sha256: string; path: string; size: number }[]): Promise<Buffer> => {
    let total = 0;
    for (const it of group) total += FRAME_OVERHEAD + it.size;
    // One spare byte: each read asks for one byte past the size, to notice a file that grew.
    const body = Buffer.allocUnsafeSlow(total + 1);
    let at = 0;
    for (let n = 0; n < group.length; n++) {
      if (n > 0 && n % READ_SLICE === 0) await new Promise<void>((r) => setImmediate(r));
      const it = group[n]!;
      // Kept bytes hash to it.sha256 by construction: the scan hashed exactly these.
      const kept = ctx.kept.take(it.sha256);
      if (kept) kept.copy(body, at + FRAME_OVERHEAD);
      else {
        const r = readVerifiedInto(ctx.fs, absOf(it.path), it.sha256, it.size, body, at + FRAME_OVERHEAD);
        if (!r.ok) throw new FileChangedError(`${it.path}: ${r.detail}`);
      }
      // Written after the read, which may have put its extra byte over this place.
      writeFrameHead(body, at, it.sha256, it.size);
      at += FRAME_OVERHEAD + it.size;
    }
    return body.subarray(0, total);
  };

  // One blob request in flight while this process reads the next batch or sends the next
  // manifest batch: the exchange re-hashes and stores one batch while the next is read. Each
  // batch is acknowledged in the journal when its answer arrives, whatever comes meanwhile, so a
  // run killed at any point resends only what was never acknowledged.
  let inFlight: Promise<void> = Promise.resolve();
  const settle = async (): Promise<void> => {
    const f = inFlight;
    inFlight = Promise.resolve();
    await f;
  };
  /**
   * Runs `fn`, then waits for the blob request it left in flight; on an error, that request
   * still gets its answer (and journal lines) first, and a scan running beside stops.
   */
  const settled = async (fn: () => Promise<void>): Promise<void> => {
    try {
      await fn();
    } catch (e) {
      queue?.end(e);
      await scanning.catch(() => undefined);
      await settle().catch(() => undefined);
      throw e;
    }
    await settle();
  };

  /** Sends the given blobs (distinct hashes) in framed batches; returns with the last one still in flight. */
  const sendBlobs = async (items: { sha256: string; path: string; size: number }[]) => {
    if (items.length === 0) return;
    setPhase('blobs');
    // Batches aim at BLOB_BATCH_TARGET (memory: two batches, each held twice while framed and
    // sent); a single file up to the protocol's limit still goes, alone.
    const maxBytes = Math.min(opts.blobBatchBytes ?? MAX_BLOB_BATCH_BYTES, BLOB_BATCH_TARGET);
    let i = 0;
    while (i < items.length) {
      const group: typeof items = [];
      let bytes = 0;
      while (i < items.length && (group.length === 0 || bytes + items[i]!.size + FRAME_OVERHEAD <= maxBytes)) {
        bytes += items[i]!.size + FRAME_OVERHEAD;
        group.push(items[i++]!);
      }
      const body = await readBatch(group);
      await settle();
      inFlight = (async () => {
        // Re-sending a batch is harmless (the exchange counts what it already has), so plain retry.
        await run('send blobs', () => t.blobs(uploadId, body));
        await write(group.map((g) => `B\t${g.sha256}\n`).join(''));
        p.blobsSent += group.length;
        p.bytesSent += body.length;
        deps.onProgress?.(p);
      })();
      // Awaited by the next settle(); this only keeps an early failure from being reported as unhandled.
      inFlight.catch(() => undefined);
    }
  };

  // 1. Blobs the exchange asked for before the interruption (sent in step 2's loop below).
  const pending = [...journal.pending].map(([sha256, v]) => ({ sha256, ...v }));

  // 2. The rest of the manifest, batch by batch, each followed by the blobs it lacks.
  let sent = serverEntries;
  // Entries whose "missing" answer was lost (the batch arrived but its answer did not).
  const unanswered = new Map<string, FileEntry>();
  const digest = new ManifestDigest();
  /** The entries this run generates must start with the ones the exchange already has. */
  const checkResumedPrefix = () => {
    if (serverEntries === 0) return;
    const want = journal.digests.get(serverEntries);
    // Without a recorded digest only a finished scan's file (unchanged since) can be trusted.
    if (want === undefined && !plan) return;
    if (want !== digest.value() || total < serverEntries) {
      throw new FileChangedError(`the tree changed since the interrupted upload sent its first ${serverEntries} manifest entries`);
    }
  };
  let batch: ManifestEntry[] = [];
  let batchKept = 0;
  const flush = async () => {
    if (batch.length === 0) return;
    setPhase('manifest');
    const entries = batch;
    batch = [];
    batchKept = 0;
    const before = sent;
    // Recorded before sending: a resumed run that scans again checks its entries against it.
    await write(`S\t${before + entries.length}\t${digest.value()}\n`);
    const answer = await run<{ missing: string[] } | null>(
      'send manifest',
      () => t.manifest(uploadId, entries),
      async () => {
        // A retry would repeat paths if the batch did arrive (a 400): ask first.
        const got = (await t.state(uploadId)).entries;
        if (got !== null && got >= before + entries.length) return { settled: null };
        return null;
      },
    );
    sent += entries.length;
    const byHash = new Map<string, FileEntry>();
    for (const e of entries) if (!('deleted' in e)) byHash.set(e.sha256, e);
    let missing: FileEntry[] = [];
    if (answer === null) {
      for (const [h, e] of byHash) unanswered.set(h, e);
    } else {
      missing = answer.missing.map((h) => {
        const e = byHash.get(h);
        if (!e) throw new UploadFailedError(`the exchange asked for blob ${h}, which the batch did not list`);
        return e;
      });
    }
    await write(missing.map((m) => `M\t${m.sha256}\t${m.size}\t${escapeField(m.path)}\n`).join('') + `A\t${sent}\n`);
    p.manifestSent = sent;
    deps.onProgress?.(p);
    await sendBlobs(missing.map((m) => ({ sha256: m.sha256, path: m.path, size: m.size })));
  };
  await settled(async () => {
    await sendBlobs(pending);
    for await (const e of firstPass()) {
      if (total++ === serverEntries) checkResumedPrefix();
      digest.add(e);
      if ('deleted' in e) deleted++;
      if (total <= serverEntries) continue;
      batch.push(e);
      if (!('deleted' in e) && ctx.kept.has(e.sha256)) batchKept += e.size;
      if (batch.length >= batchSize || batchKept >= MANIFEST_BATCH_KEPT_BYTES) await flush();
    }
    if (total <= serverEntries) checkResumedPrefix();
    await flush();
    await scanning;
  });
  if (sent !== total) throw new UploadFailedError(`sent ${sent} manifest entries of ${total}; run again`);

  // 3. Commit; if the exchange still lacks blobs (answers lost to a kill or a network failure), send those and commit again.
  p.phase = 'commit';
  deps.onProgress?.(p);
  for (let round = 0; ; round++) {
    try {
      const commit = await withRetry('commit', () => t.commit(uploadId, total), ctx.retry, ctx.retryDeps);
      return { commit, entries: total, deleted };
    } catch (e) {
      const he = e instanceof UploadHttpError ? e : null;
      const missing = he && he.status === 409 && Array.isArray(he.problem.missing) ? (he.problem.missing as string[]) : null;
      const missingCount = String(he?.problem.missingBlobs ?? missing?.length ?? 0);
      if (!missing || missing.length === 0) {
        if (he && he.status === 409 && 'latestSnapshotId' in he.problem) {
          throw new BaseMovedError(`snapshot ${session.base} stopped being the facility's latest during the upload`);
        }
        if (he && he.status === 409) {
          throw new UploadFailedError(`${he.message}; the upload and this client disagree on what was sent, delete ${files.session} to start over`);
        }
        throw describe(e, opts);
      }
      if (round >= 1000) throw new UploadFailedError(`the exchange still lacks ${missingCount} blob(s) after ${round} rounds`);
      const found = new Map<string, FileEntry>();
      const want = new Set(missing);
      for (const h of missing) {
        const hit = unanswered.get(h);
        if (hit) found.set(h, hit);
      }
      if (found.size < want.size) {
        // Rare: look the hashes up in the whole manifest.
        for await (const m of generate()) {
          if (!('deleted' in m) && want.has(m.sha256) && !found.has(m.sha256)) found.set(m.sha256, m);
          if (found.size === want.size) break;
        }
      }
      if (found.size === 0) throw new UploadFailedError(`the exchange lacks blobs that no file of this upload has (${missing[0]}...)`);
      deps.onNote?.(`the exchange still lacks ${missingCount} blob(s); sending them`);
      await settled(() => sendBlobs([...found.values()].map((m) => ({ sha256: m.sha256, path: m.path, size: m.size }))));
    }
  }
}
