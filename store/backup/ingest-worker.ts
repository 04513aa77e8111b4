import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { parentPort } from 'node:worker_threads';
import { compressBlob, unpackBlob } from './compression.js';
import type { RestoreReply, RestoreRequest, SliceReply, SliceRequest } from './ingest-pool.js';

/**
 * The body of a blob ingest worker (ingest-pool.ts): checks every frame of a slice of a blob
 * batch against its SHA-256 and compresses the frames asked for, all in one message each way.
 */
if (!parentPort) throw new Error('ingest-worker.ts runs only as a worker thread of ingest-pool.ts');
const port = parentPort;

port.on('message', (req: SliceRequest | RestoreRequest) => {
  let reply: SliceReply | RestoreReply;
  try {
    reply = 'kind' in req ? restore(req) : handle(req);
  } catch (e) {
    reply = { id: req.id, error: e instanceof Error ? (e.stack ?? e.message) : String(e) };
  }
  const transfer = 'out' in reply ? [reply.out.buffer as ArrayBuffer] : [];
  port.postMessage(reply, transfer);
});

function handle(req: SliceRequest): SliceReply {
  const bytes = Buffer.from(req.bytes);
  const n = req.starts.length;
  const dict = req.dictionary ? { id: req.dictionary.id, hash: '', content: Buffer.from(req.dictionary.content) } : undefined;
  // Every frame is checked first: one bad frame rejects the batch before any work is kept.
  for (let i = 0; i < n; i++) {
    const start = req.starts[i]!;
    const data = bytes.subarray(start + 36, start + 36 + req.lengths[i]!);
    if (!createHash('sha256').update(data).digest().equals(bytes.subarray(start, start + 32))) return { id: req.id, bad: i };
  }
  const parts: Buffer[] = [];
  const ends = new Int32Array(n);
  const codecs = new Int8Array(n);
  const dictIds = new Int32Array(n);
  let at = 0;
  for (let i = 0; i < n; i++) {
    if (req.compress[i]) {
      const start = req.starts[i]!;
      const c = compressBlob(bytes.subarray(start + 36, start + 36 + req.lengths[i]!), dict);
      parts.push(c.data);
      at += c.data.length;
      codecs[i] = c.codec;
      dictIds[i] = c.dictionaryId ?? -1;
    }
    ends[i] = at;
  }
  const out = new Uint8Array(at);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return { id: req.id, out, ends, codecs, dictIds };
}

/** Folders this worker made or found (the other workers make theirs: mkdir is idempotent). */
const made = new Set<string>();

/** Opens a file for writing, making its folder first when this worker has not seen it. */
function create(target: string): number {
  const dir = path.dirname(target);
  if (!made.has(dir)) {
    fs.mkdirSync(dir, { recursive: true });
    made.add(dir);
  }
  try {
    return fs.openSync(target, 'w', 0o644);
  } catch (e) {
    // A folder seen in an earlier restore and removed since.
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    fs.mkdirSync(dir, { recursive: true });
    return fs.openSync(target, 'w', 0o644);
  }
}

/**
 * Restores one span of blobs (RestoreRequest): each blob inflated and checked against its hash,
 * then written to each of its files. A blob that cannot be read is reported and its files are
 * skipped; a write that fails answers the error (the restore stops).
 */
function restore(req: RestoreRequest): RestoreReply {
  const bytes = Buffer.from(req.bytes);
  const dicts = new Map(req.dictionaries.map((d) => [d.id, Buffer.from(d.content.buffer, d.content.byteOffset, d.content.byteLength)]));
  const failed: { blob: number; reason: string }[] = [];
  let files = 0;
  let written = 0;
  const write = (f: { path: string; mtime: number }, data: Buffer) => {
    // Paths were checked at upload (no "..", not absolute); check again before writing.
    const target = path.join(req.root, ...f.path.split('/'));
    if (!target.startsWith(req.root + path.sep)) throw new Error(`refusing to write outside ${req.root}: ${f.path}`);
    const fd = create(target);
    try {
      let at = 0;
      while (at < data.length) at += fs.writeSync(fd, data, at, data.length - at);
      // The manifest has whole milliseconds; a time in seconds as a double can fall a hair
      // below the millisecond and truncate to the one before, so aim at its middle.
      const t = (f.mtime + 0.5) / 1000;
      fs.futimesSync(fd, t, t);
    } finally {
      fs.closeSync(fd);
    }
    files += 1;
    written += data.length;
  };
  for (let i = 0; i < req.blobs.length; i++) {
    const b = req.blobs[i]!;
    let data: Buffer;
    try {
      const stored = bytes.subarray(Math.min(b.from, bytes.length), Math.min(b.from + b.length, bytes.length));
      data = unpackBlob(b, stored, b.dictionaryId === null ? undefined : dicts.get(b.dictionaryId));
    } catch (e) {
      failed.push({ blob: i, reason: (e as Error).message });
      continue;
    }
    try {
      for (const f of b.files) write(f, data);
    } catch (e) {
      // A write that failed: its message as the file system gave it (the restore stops).
      return { id: req.id, error: (e as Error).message };
    }
  }
  return { id: req.id, files, bytes: written, failed };
}
