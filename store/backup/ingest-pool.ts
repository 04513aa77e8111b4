import { Worker } from 'node:worker_threads';
import os from 'node:os';
import type { Dictionary } from './compression.js';

/**
 * Checking and compressing blob batches on worker threads (ingest-worker.ts). The exchange's
 * own thread then keeps only the database work of a batch; before, it hashed every frame and
 * made a zlib call, a promise and a callback per blob, and was the upload's slowest stage.
 * A batch is cut into one slice per worker; each slice travels as one copied buffer and comes
 * back as one buffer of compressed blobs. The workers are shared by the process, started on
 * first use and do not keep it alive.
 */
export interface SliceRequest {
  id: number;
  /** The frames of the slice, as sent (32 bytes of SHA-256, 4 of length, data). */
  bytes: ArrayBuffer;
  /** Offset of each frame in `bytes`, and its data's length. */
  starts: Int32Array;
  lengths: Int32Array;
  /** 1: compress this frame (the others are only checked). */
  compress: Uint8Array;
  dictionary: { id: number; content: Uint8Array } | undefined;
}

/**
 * Restoring (restore.ts): neighbouring blobs of one pack, as read, to inflate, check against
 * their hashes and write to every file that holds them (open, write, set mtime, close, all
 * synchronous on the worker; a folder made when a worker first needs it).
 */
export interface RestoreRequest {
  kind: 'restore';
  id: number;
  /** The restore root; every file's path is checked to stay below it. */
  root: string;
  bytes: ArrayBuffer;
  blobs: RestoreBlob[];
  dictionaries: { id: number; content: Uint8Array }[];
}

export interface RestoreBlob {
  /** Where its stored bytes are in `bytes` (past the end: the pack was cut short). */
  from: number;
  length: number;
  size: number;
  codec: number;
  dictionaryId: number | null;
  sha256: Uint8Array;
  objectName: string;
  /** The files to write with its bytes: `/`-separated paths below the root, mtimes in ms. */
  files: { path: string; mtime: number }[];
}

/** Files written, or the blobs that could not be read (by index, with why); `error`: a write failed. */
export type RestoreReply = { id: number; files: number; bytes: number; failed: { blob: number; reason: string }[] } | { id: number; error: string };

export type SliceReply =
  | { id: number; out: Uint8Array; ends: Int32Array; codecs: Int8Array; dictIds: Int32Array }
  | { id: number; bad: number }
  | { id: number; error: string };

/** What came of a batch: the first frame that does not match its hash, or each compressed frame. */
export type CheckedBatch =
  | { bad: number }
  | { blobs: ({ codec: 0 | 1; dictionaryId: number | null; data: Buffer } | undefined)[] };

export interface IngestFrame {
  /** Offset of the frame (its hash) in the batch body. */
  start: number;
  length: number;
  compress: boolean;
}

class IngestPool {
  private readonly workers: Worker[];
  private readonly pending = new Map<number, { resolve: (r: SliceReply & RestoreReply) => void; reject: (e: Error) => void; worker: number }>();
  /** Messages in work per worker. */
  private readonly busy: number[];
  private next = 0;

  constructor(size: number) {
    this.busy = new Array<number>(size).fill(0);
    this.workers = Array.from({ length: size }, () => {
      const w = new Worker(new URL('./ingest.worker.mjs', import.meta.url), { execArgv: [] });
      w.on('message', (m: SliceReply & RestoreReply) => {
        const p = this.pending.get(m.id);
        this.pending.delete(m.id);
        if (p) this.busy[p.worker]! -= 1;
        if (this.pending.size === 0) for (const x of this.workers) x.unref();
        p?.resolve(m);
      });
      w.on('error', (e) => this.failAll(e));
      w.on('exit', (code) => this.failAll(new Error(`a blob ingest worker stopped (exit ${code})`)));
      // Idle workers do not keep the process alive; a batch in work does (run refs them).
      w.unref();
      return w;
    });
  }

  private failAll(e: Error): void {
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
    for (const x of this.workers) x.unref();
    if (shared === this) shared = undefined; // the next batch starts new workers
  }

  /** Posts a message to worker `i`; the answer is the message back with the same id. */
  private post<R>(i: number, msg: { id: number }, transfer: ArrayBuffer[]): Promise<R> {
    const w = this.workers[i]!;
    w.ref();
    this.busy[i]! += 1;
    return new Promise<R>((resolve, reject) => {
      this.pending.set(msg.id, { resolve: resolve as (r: unknown) => void, reject, worker: i });
      w.postMessage(msg, transfer);
    });
  }

  /** Worker count. */
  get size(): number {
    return this.workers.length;
  }

  /** Inflates, checks and writes one span of blobs to their files, on the least busy worker. */
  restore(root: string, bytes: Buffer, blobs: RestoreBlob[], dictionaries: Map<number, Buffer>): Promise<RestoreReply> {
    const copy = new Uint8Array(bytes.length);
    copy.set(bytes);
    const used = new Set(blobs.map((b) => b.dictionaryId));
    const req: RestoreRequest = {
      kind: 'restore',
      id: this.next++,
      root,
      bytes: copy.buffer,
      blobs,
      dictionaries: [...dictionaries].filter(([id]) => used.has(id)).map(([id, content]) => ({ id, content })),
    };
    const i = this.busy.indexOf(Math.min(...this.busy));
    return this.post<RestoreReply>(i, req, [copy.buffer]);
  }

  private slice(i: number, body: Buffer, frames: IngestFrame[], dict: Dictionary | undefined): Promise<SliceReply> {
    const from = frames[0]!.start;
    const to = frames[frames.length - 1]!.start + 36 + frames[frames.length - 1]!.length;
    const copy = new Uint8Array(to - from);
    copy.set(body.subarray(from, to));
    const starts = new Int32Array(frames.length);
    const lengths = new Int32Array(frames.length);
    const compress = new Uint8Array(frames.length);
    frames.forEach((f, i) => {
      starts[i] = f.start - from;
      lengths[i] = f.length;
      compress[i] = f.compress ? 1 : 0;
    });
    const req: SliceRequest = { id: this.next++, bytes: copy.buffer, starts, lengths, compress, dictionary: dict && { id: dict.id, content: dict.content } };
    return this.post<SliceReply>(i, req, [copy.buffer]);
  }

  /** Checks every frame of a batch and compresses those marked, in frame order. */
  async run(body: Buffer, frames: IngestFrame[], dict: Dictionary | undefined): Promise<CheckedBatch> {
    if (frames.length === 0) return { blobs: [] };
    // Slices of about equal bytes, one per worker (small batches stay whole).
    let total = 0;
    for (const f of frames) total += 36 + f.length;
    const per = Math.max(total / this.workers.length, 256 * 1024);
    const slices: IngestFrame[][] = [];
    let cur: IngestFrame[] = [];
    let bytes = 0;
    for (const f of frames) {
      if (cur.length > 0 && bytes >= per && slices.length < this.workers.length - 1) {
        slices.push(cur);
        cur = [];
        bytes = 0;
      }
      cur.push(f);
      bytes += 36 + f.length;
    }
    slices.push(cur);
    const replies = await Promise.all(slices.map((s, i) => this.slice(i, body, s, dict)));
    const blobs: ({ codec: 0 | 1; dictionaryId: number | null; data: Buffer } | undefined)[] = [];
    let base = 0;
    for (let k = 0; k < replies.length; k++) {
      const r = replies[k]!;
      if ('error' in r) throw new Error(`blob ingest worker: ${r.error}`);
      if ('bad' in r) return { bad: base + r.bad };
      const out = Buffer.from(r.out.buffer, r.out.byteOffset, r.out.byteLength);
      let prev = 0;
      for (let i = 0; i < slices[k]!.length; i++) {
        const end = r.ends[i]!;
        blobs.push(slices[k]![i]!.compress ? { codec: r.codecs[i] as 0 | 1, dictionaryId: r.dictIds[i]! < 0 ? null : r.dictIds[i]!, data: out.subarray(prev, end) } : undefined);
        prev = end;
      }
      base += slices[k]!.length;
    }
    return { blobs };
  }
}

let shared: IngestPool | undefined;

/** The process's ingest workers: as many as cores, at most 4. */
export function ingestPool(): IngestPool {
  shared ??= new IngestPool(Math.max(1, Math.min(4, os.availableParallelism())));
  return shared;
}
