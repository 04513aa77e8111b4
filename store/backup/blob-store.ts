import { createHash } from 'node:crypto';
import type { Db } from '../db.js';
import { ExchangeError } from '../errors.js';
import type { PackStore } from './pack-store.js';
import { compressBlobAsync, dictionaryHash, trainDictionary, unpackBlob, type Dictionary } from './compression.js';
import * as repo from './backup.repository.js';
import { ingestPool } from './ingest-pool.js';

/** One frame of a blob batch: the hash the client claims and the bytes it sent. */
export interface BlobFrame {
  sha256: Buffer;
  data: Buffer;
}

/** A frame of a blob batch located in its body, its hash not yet checked. */
export interface FrameRef {
  sha256: Buffer;
  /** Offset of the frame (its 32 bytes of hash) in the body. */
  start: number;
  length: number;
}

/**
 * Splits a blob batch (PROTOCOL.md §3: 32 bytes SHA-256, 4-byte big-endian length, bytes)
 * without hashing: a truncated frame or a blob over the limit is an error here; the hashes are
 * checked by BlobStore.storeBatch (on the ingest workers) before anything is stored.
 */
export function frameHeaders(body: Buffer, maxBlob: number): FrameRef[] {
  const frames: FrameRef[] = [];
  let pos = 0;
  while (pos < body.length) {
    if (body.length - pos < 36) {
      throw new ExchangeError('unprocessable', `truncated frame header at byte ${pos}`, { offset: pos });
    }
    const sha256 = body.subarray(pos, pos + 32);
    const length = body.readUInt32BE(pos + 32);
    if (length > maxBlob) {
      const hex = sha256.toString('hex');
      throw new ExchangeError('unprocessable', `blob ${hex} is ${length} bytes, over the limit of ${maxBlob}`, { sha256: hex, limit: maxBlob });
    }
    if (pos + 36 + length > body.length) {
      const hex = sha256.toString('hex');
      throw new ExchangeError('unprocessable', `blob ${hex} is truncated: ${length} bytes announced, ${body.length - pos - 36} sent`, { sha256: hex });
    }
    frames.push({ sha256, start: pos, length });
    pos += 36 + length;
  }
  return frames;
}

const mismatch = (sha256: Buffer) => {
  const hex = sha256.toString('hex');
  return new ExchangeError('unprocessable', `blob ${hex} does not match its hash`, { sha256: hex });
};

/** The blobs a compression dictionary is trained from: messages, not tiny or large files. */
const trainable = (b: Buffer) => b.length >= 64 && b.length <= 64 * 1024;

export interface BlobStoreOptions {
  /** Target size of a pack object (bytes, compressed). */
  packTarget?: number;
  /** Train a dictionary from the first batch holding at least this many small blobs. */
  trainAfter?: number;
}

/** readMany reads neighbouring blobs of a pack in one span when they are this close... */
const SPAN_GAP = 256 * 1024;
/** ...and the span stays under this size. */
const SPAN_MAX = 16 * 1024 * 1024;

/** A blob ready for a pack: its hash and size, and its stored (compressed) form. */
interface Compressed {
  sha256: Buffer;
  size: number;
  codec: number;
  dictionaryId: number | null;
  data: Buffer;
}

export type BlobRead = { sha256: Buffer; data: Buffer } | { sha256: Buffer; error: string };

/** Neighbouring blobs of one pack and their stored bytes read at once (`start`: the pack offset of `bytes`), or hashes the index lacks. */
export type BlobSpan =
  | { missing: Buffer[] }
  | { blobs: repo.BlobLocation[]; start: number; bytes: Buffer; error?: undefined }
  | { blobs: repo.BlobLocation[]; start: number; bytes?: undefined; error: string };

/**
 * The content-addressed blob store: blobs compressed one by one into immutable packs of a few
 * MiB, indexed in PostgreSQL. A pack is written and fsynced before its index rows commit, so
 * the index never names bytes that are not on disk; a crash in between leaves an orphan pack
 * that nothing refers to (harmless; verify reports it).
 */
export class BlobStore {
  private dictionary: Dictionary | undefined | null = null; // null: not loaded yet
  private readonly dictionaries = new Map<number, Buffer>();
  /** The first dictionary being trained: batches stored meanwhile wait for it instead of training their own. */
  private training: Promise<Dictionary | undefined> | undefined;
  private readonly packTarget: number;
  private readonly trainAfter: number;

  constructor(
    private readonly db: Db,
    private readonly packs: PackStore,
    opts: BlobStoreOptions = {},
  ) {
    this.packTarget = opts.packTarget ?? 4 * 1024 * 1024;
    this.trainAfter = opts.trainAfter ?? 200;
  }

  private async currentDictionary(): Promise<Dictionary | undefined> {
    if (this.dictionary === null) {
      const d = await repo.latestDictionary(this.db);
      this.dictionary = d && { id: d.id, hash: d.hash, content: d.content };
      if (d) this.dictionaries.set(d.id, d.content);
    }
    return this.dictionary;
  }

  /** Trains a new dictionary from sample messages and makes it the current one. */
  async installDictionary(samples: Buffer[]): Promise<Dictionary | undefined> {
    const content = trainDictionary(samples);
    if (content.length < 256) return undefined; // too little in common to help
    const d = await repo.insertDictionary(this.db, { hash: dictionaryHash(content), content, sampleBlobs: samples.length });
    this.dictionary = { id: d.id, hash: d.hash, content: d.content };
    this.dictionaries.set(d.id, d.content);
    return this.dictionary;
  }

  /** Retrains the dictionary from a random sample of stored small blobs. */
  async retrainDictionary(sampleSize = 1000): Promise<{ dictionaryId: number; bytes: number; samples: number } | undefined> {
    const hashes = await repo.sampleSmallBlobs(this.db, sampleSize, 64 * 1024);
    const samples: Buffer[] = [];
    for await (const r of this.readMany(hashes)) if ('data' in r) samples.push(r.data);
    const d = await this.installDictionary(samples);
    return d && { dictionaryId: d.id, bytes: d.content.length, samples: samples.length };
  }

  /**
   * Stores verified frames. `inTransaction` runs in the same transaction as the index rows (the
   * upload's counters move with the blobs they count).
   */
  async store(
    frames: BlobFrame[],
    inTransaction?: (trx: Db, stored: { blobs: number; bytes: number }) => Promise<void>,
  ): Promise<{ stored: number; alreadyPresent: number; storedBytes: number }> {
    const unique = new Map<string, BlobFrame>();
    for (const f of frames) unique.set(f.sha256.toString('hex'), f);
    const present = new Set((await repo.presentBlobs(this.db, [...unique.values()].map((f) => f.sha256))).map((h) => h.toString('hex')));
    const todo = [...unique.entries()].filter(([h]) => !present.has(h)).map(([, f]) => f);
    const dict = await this.dictionaryFor(todo.map((f) => f.data));
    const compressed = new Array<Awaited<ReturnType<typeof compressBlobAsync>>>(todo.length);
    let next = 0;
    const worker = async () => {
      while (next < todo.length) {
        const i = next++;
        compressed[i] = await compressBlobAsync(todo[i]!.data, dict);
      }
    };
    await Promise.all(Array.from({ length: Math.min(16, todo.length) }, worker));
    const r = await this.writeAndIndex(todo.map((f, i) => ({ sha256: f.sha256, size: f.data.length, ...compressed[i]! })), inTransaction);
    return { ...r, alreadyPresent: frames.length - r.stored };
  }

  /**
   * Stores a framed blob batch as received (PROTOCOL.md §3): every frame is checked against its
   * hash and the new ones compressed on the ingest workers; any frame that does not match
   * rejects the whole batch before anything is written.
   */
  async storeBatch(
    body: Buffer,
    maxBlob: number,
    inTransaction?: (trx: Db, stored: { blobs: number; bytes: number }) => Promise<void>,
  ): Promise<{ stored: number; alreadyPresent: number; storedBytes: number }> {
    const frames = frameHeaders(body, maxBlob);
    const first = new Map<string, number>();
    frames.forEach((f, i) => {
      const h = f.sha256.toString('hex');
      if (!first.has(h)) first.set(h, i);
    });
    const present = new Set((await repo.presentBlobs(this.db, [...first.values()].map((i) => frames[i]!.sha256))).map((h) => h.toString('hex')));
    const todo = new Set<number>();
    for (const [h, i] of first) if (!present.has(h)) todo.add(i);
    const pool = ingestPool();
    const data = (f: FrameRef) => body.subarray(f.start + 36, f.start + 36 + f.length);
    let dict = await this.currentDictionary();
    if (!dict && this.wouldTrain([...todo].map((i) => data(frames[i]!)))) {
      // The dictionary is trained from checked bytes only: check the batch first.
      const checked = await pool.run(body, frames.map((f) => ({ ...f, compress: false })), undefined);
      if ('bad' in checked) throw mismatch(frames[checked.bad]!.sha256);
      dict = await this.dictionaryFor([...todo].map((i) => data(frames[i]!)));
    }
    const checked = await pool.run(body, frames.map((f, i) => ({ start: f.start, length: f.length, compress: todo.has(i) })), dict);
    if ('bad' in checked) throw mismatch(frames[checked.bad]!.sha256);
    const blobs: Compressed[] = [];
    frames.forEach((f, i) => {
      const c = checked.blobs[i];
      if (c) blobs.push({ sha256: f.sha256, size: f.length, ...c });
    });
    const r = await this.writeAndIndex(blobs, inTransaction);
    return { ...r, alreadyPresent: frames.length - r.stored };
  }

  private wouldTrain(blobs: Buffer[]): boolean {
    let small = 0;
    for (const b of blobs) if (trainable(b)) small++;
    return small >= this.trainAfter;
  }

  /** The current dictionary; without one, trains one from these blobs when enough are small. */
  private async dictionaryFor(blobs: Buffer[]): Promise<Dictionary | undefined> {
    const dict = (await this.currentDictionary()) ?? (await this.training);
    if (dict) return dict;
    const small = blobs.filter(trainable);
    if (small.length < this.trainAfter) return undefined;
    this.training ??= this.installDictionary(small.slice(0, 1000)).finally(() => {
      this.training = undefined;
    });
    return this.training;
  }

  /** Cuts compressed blobs into packs, writes each durably, then indexes them in one transaction. */
  private async writeAndIndex(
    blobs: Compressed[],
    inTransaction?: (trx: Db, stored: { blobs: number; bytes: number }) => Promise<void>,
  ): Promise<{ stored: number; storedBytes: number }> {
    // Cut into packs of about packTarget bytes; a blob bigger than that gets a pack of its own
    // (the pack layout needs no special case for large files).
    interface Pending {
      parts: Buffer[];
      size: number;
      blobs: repo.NewBlob[];
    }
    const packs: Pending[] = [];
    let cur: Pending = { parts: [], size: 0, blobs: [] };
    for (const c of blobs) {
      if (cur.size > 0 && cur.size + c.data.length > this.packTarget) {
        packs.push(cur);
        cur = { parts: [], size: 0, blobs: [] };
      }
      cur.blobs.push({ sha256: c.sha256, size: c.size, offset: cur.size, length: c.data.length, codec: c.codec, dictionaryId: c.dictionaryId });
      cur.parts.push(c.data);
      cur.size += c.data.length;
    }
    if (cur.blobs.length) packs.push(cur);

    const written: { hash: string; objectName: string; size: number; blobs: repo.NewBlob[] }[] = [];
    for (const p of packs) {
      const data = Buffer.concat(p.parts, p.size);
      const hash = createHash('sha256').update(data).digest('hex');
      const objectName = `data/${hash.slice(0, 2)}/${hash}`;
      await this.packs.put(objectName, data); // durable before any index row names it
      written.push({ hash, objectName, size: data.length, blobs: p.blobs });
    }

    let storedBlobs = 0;
    let storedBytes = 0;
    await this.db.transaction().execute(async (trx) => {
      for (const w of written) {
        const packId = await repo.insertPack(trx, { hash: w.hash, objectName: w.objectName, size: w.size, blobCount: w.blobs.length });
        const claimed = new Set((await repo.insertBlobs(trx, packId, w.blobs)).map((h) => h.toString('hex')));
        for (const b of w.blobs) {
          if (claimed.has(b.sha256.toString('hex'))) {
            storedBlobs += 1;
            storedBytes += b.size;
          }
        }
      }
      if (inTransaction) await inTransaction(trx, { blobs: storedBlobs, bytes: storedBytes });
    });
    return { stored: storedBlobs, storedBytes };
  }

  private async dictionaryContent(id: number): Promise<Buffer> {
    let d = this.dictionaries.get(id);
    if (!d) {
      const row = await repo.dictionaryById(this.db, id);
      if (!row) throw new Error(`dictionary ${id} is missing`);
      d = row.content;
      this.dictionaries.set(id, d);
    }
    return d;
  }

  /** Reads and checks one stored blob at a known location. */
  async readAt(loc: repo.BlobLocation): Promise<Buffer> {
    const stored = await this.packs.get(loc.objectName, { offset: loc.offset, length: loc.length });
    return this.unpack(loc, stored);
  }

  /** Inflates and checks the stored bytes of one blob (read by the caller). */
  private async unpack(loc: repo.BlobLocation, stored: Buffer): Promise<Buffer> {
    return unpackBlob(loc, stored, loc.dictionaryId === null ? undefined : await this.dictionaryContent(loc.dictionaryId));
  }

  /** The dictionaries these blobs were compressed with, by id. */
  async dictionariesOf(locs: readonly repo.BlobLocation[]): Promise<Map<number, Buffer>> {
    const out = new Map<number, Buffer>();
    for (const l of locs) if (l.dictionaryId !== null && !out.has(l.dictionaryId)) out.set(l.dictionaryId, await this.dictionaryContent(l.dictionaryId));
    return out;
  }

  /**
   * Reads many blobs in pack order, as spans of stored bytes: the blobs of a pack are read a
   * span at a time (one read for neighbours less than SPAN_GAP apart, up to SPAN_MAX bytes),
   * not one read per blob, so restoring a tree reads each pack sequentially. A span that could
   * not be read comes with its error; hashes the index does not hold come as `missing`. The
   * stored bytes are not checked here (unpackBlob does that).
   */
  async *readSpans(hashes: Buffer[], batch = 5000): AsyncGenerator<BlobSpan> {
    for (let i = 0; i < hashes.length; i += batch) {
      const chunk = hashes.slice(i, i + batch);
      const locs = await repo.blobLocations(this.db, chunk);
      const found = new Set(locs.map((l) => l.sha256.toString('hex')));
      const missing = chunk.filter((h) => !found.has(h.toString('hex')));
      if (missing.length) yield { missing };
      locs.sort((a, b) => a.packId - b.packId || a.offset - b.offset);
      let j = 0;
      while (j < locs.length) {
        // One span: blobs of one pack, close together.
        const first = locs[j]!;
        let end = first.offset + first.length;
        let k = j + 1;
        while (k < locs.length) {
          const l = locs[k]!;
          if (l.packId !== first.packId || l.offset - end > SPAN_GAP || l.offset + l.length - first.offset > SPAN_MAX) break;
          end = Math.max(end, l.offset + l.length);
          k++;
        }
        const blobs = locs.slice(j, k);
        j = k;
        try {
          // A pack cut short on disk gives a short span: the blobs past its end are truncated.
          yield { blobs, start: first.offset, bytes: await this.packs.get(first.objectName, { offset: first.offset, length: end - first.offset }) };
        } catch (e) {
          yield { blobs, start: first.offset, error: (e as Error).message };
        }
      }
    }
  }

  /** Reads many blobs in pack order (readSpans), each comes back as its checked bytes or an error. */
  async *readMany(hashes: Buffer[], batch = 5000): AsyncGenerator<BlobRead> {
    for await (const s of this.readSpans(hashes, batch)) {
      if ('missing' in s) {
        for (const h of s.missing) yield { sha256: h, error: 'blob is not in the index' };
        continue;
      }
      for (const loc of s.blobs) {
        if (!s.bytes) {
          yield { sha256: loc.sha256, error: s.error };
          continue;
        }
        const from = loc.offset - s.start;
        const stored = s.bytes.subarray(Math.min(from, s.bytes.length), Math.min(from + loc.length, s.bytes.length));
        try {
          yield { sha256: loc.sha256, data: await this.unpack(loc, stored) };
        } catch (e) {
          yield { sha256: loc.sha256, error: (e as Error).message };
        }
      }
    }
  }

  /** The exact bytes of one blob; a missing or damaged blob is an error that says which. */
  async read(sha256: Buffer): Promise<Buffer> {
    const [loc] = await repo.blobLocations(this.db, [sha256]);
    if (!loc) throw new ExchangeError('not-found', `blob ${sha256.toString('hex')} is not in the store`);
    try {
      return await this.readAt(loc);
    } catch (e) {
      throw new Error(`blob ${sha256.toString('hex')} cannot be read: ${(e as Error).message}`);
    }
  }
}
