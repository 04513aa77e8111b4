import zlib from 'node:zlib';
import { createHash } from 'node:crypto';
import { promisify } from 'node:util';

const deflateRawAsync = promisify(zlib.deflateRaw) as (buf: Buffer, opts: zlib.ZlibOptions) => Promise<Buffer>;

/**
 * Per-blob compression. Each blob is deflated on its own (raw deflate, RFC 1951) so that any
 * single message can be read without its neighbours; a preset dictionary (RFC 1950 §2.2 FDICT,
 * Node's `dictionary` option, at most 32 KiB: the deflate window) trained on SS-MIX2 messages
 * gives the small, alike messages the context they lack on their own (~3x -> ~8x).
 */
export const MAX_DICTIONARY = 32 * 1024;

export interface Dictionary {
  /** The store's short id for it. */
  id: number;
  /** Hex SHA-256 of `content`: a dictionary is content-addressed and never changes. */
  hash: string;
  content: Buffer;
}

/** 0: stored as is; 1: raw deflate, with the dictionary when one is named. */
export type Codec = 0 | 1;
export const CODEC_RAW: Codec = 0;
export const CODEC_DEFLATE: Codec = 1;

export interface Compressed {
  codec: Codec;
  dictionaryId: number | null;
  data: Buffer;
}

export function dictionaryHash(content: Buffer): string {
  if (content.length === 0 || content.length > MAX_DICTIONARY) {
    throw new Error(`a dictionary holds 1..${MAX_DICTIONARY} bytes, got ${content.length}`);
  }
  return createHash('sha256').update(content).digest('hex');
}

/**
 * Deflate level of blobs. Measured on the 103,187 messages of the 100k bench tree with its
 * trained dictionary (one thread, load ~10): level 9 stores 19.41 MB in 109 us a blob, 8 the
 * same in 103 us, 7 19.58 MB (+0.9%) in 90-94 us, 6 19.83 MB (+2.2%) in 85-87 us. About 45 us
 * of each is zlib taking in the 32 KiB dictionary, whatever the level. Level 7 keeps the store
 * at 32.7-32.8% of restic's (target: a third) for 15% less deflate time than 9.
 */
export const BLOB_LEVEL = 7;

/** Compresses one blob; keeps it raw when deflate would not make it smaller. */
export function compressBlob(data: Buffer, dict: Dictionary | undefined): Compressed {
  if (data.length < 16) return { codec: CODEC_RAW, dictionaryId: null, data };
  const out = zlib.deflateRawSync(data, dict ? { level: BLOB_LEVEL, dictionary: dict.content } : { level: BLOB_LEVEL });
  if (out.length >= data.length) return { codec: CODEC_RAW, dictionaryId: null, data };
  return { codec: CODEC_DEFLATE, dictionaryId: dict ? dict.id : null, data: out };
}

/**
 * compressBlob on libuv's thread pool: loading a 32 KiB dictionary costs zlib more than the
 * message itself, so a batch's blobs are compressed in parallel, off the event loop.
 */
export async function compressBlobAsync(data: Buffer, dict: Dictionary | undefined): Promise<Compressed> {
  if (data.length < 16) return { codec: CODEC_RAW, dictionaryId: null, data };
  const out = await deflateRawAsync(data, dict ? { level: BLOB_LEVEL, dictionary: dict.content } : { level: BLOB_LEVEL });
  if (out.length >= data.length) return { codec: CODEC_RAW, dictionaryId: null, data };
  return { codec: CODEC_DEFLATE, dictionaryId: dict ? dict.id : null, data: out };
}

/** Inverse of compressBlob; throws when the stored bytes do not inflate to `size` bytes. */
export function decompressBlob(
  stored: Buffer,
  codec: number,
  dictionary: Buffer | undefined,
  size: number,
): Buffer {
  if (codec === CODEC_RAW) {
    if (stored.length !== size) throw new Error(`stored ${stored.length} bytes, expected ${size}`);
    return stored;
  }
  if (codec !== CODEC_DEFLATE) throw new Error(`unknown codec ${codec}`);
  const out = zlib.inflateRawSync(stored, {
    ...(dictionary ? { dictionary } : {}),
    maxOutputLength: Math.max(size, 1),
  });
  if (out.length !== size) throw new Error(`inflated to ${out.length} bytes, expected ${size}`);
  return out;
}

/** What a blob's index row says of its stored form (BlobLocation's fields, as plain values). */
export interface StoredBlob {
  sha256: Uint8Array;
  size: number;
  length: number;
  codec: number;
  objectName: string;
}

/**
 * The exact bytes of a blob from its stored form (read by the caller), inflated and checked
 * against its hash; throws a message that says what is wrong (truncated, damaged, mismatch).
 */
export function unpackBlob(loc: StoredBlob, stored: Buffer, dictionary: Buffer | undefined): Buffer {
  if (stored.length !== loc.length) throw new Error(`pack ${loc.objectName} is truncated`);
  let data: Buffer;
  try {
    data = decompressBlob(stored, loc.codec, dictionary, loc.size);
  } catch (e) {
    throw new Error(`stored bytes are damaged (${(e as Error).message})`);
  }
  if (!createHash('sha256').update(data).digest().equals(loc.sha256)) throw new Error('content does not match its hash');
  return data;
}

/**
 * zlib uses at most the window (32 KiB) less its lookahead (262 bytes) of a dictionary: any
 * more is silently cut from the front, and measured on SS-MIX2 messages a dictionary right at
 * 32 KiB then helped no more than none.
 */
export const USABLE_DICTIONARY = MAX_DICTIONARY - 262 - 6;

/**
 * Trains a preset dictionary from sample messages, in the manner of zstd's COVER trainer:
 * count how often each 8-byte substring (d-mer) occurs across the samples, then, epoch by
 * epoch over the samples, pick the segment of `segment` bytes whose not-yet-covered d-mers are
 * the most frequent, add it and mark its d-mers covered. HL7 v2 messages of one facility share
 * segment layouts, coding-system names and profile ids, which is what this collects. The best
 * segments go last, where deflate reaches them with the shortest distances.
 */
export function trainDictionary(samples: Buffer[], maxSize = USABLE_DICTIONARY, segment = 512): Buffer {
  const D = 8;
  const texts = samples.filter((s) => s.length >= 64).map((s) => s.toString('latin1'));
  if (texts.length === 0) return Buffer.alloc(0);
  const freq = new Map<string, number>();
  for (const t of texts) {
    const seen = new Set<string>();
    for (let i = 0; i + D <= t.length; i++) {
      const k = t.slice(i, i + D);
      if (seen.has(k)) continue;
      seen.add(k);
      freq.set(k, (freq.get(k) ?? 0) + 1);
    }
  }
  // A d-mer found in one message only is that message's own (a name, a number): worthless.
  for (const [k, v] of freq) if (v < 2) freq.delete(k);
  const count = Math.max(1, Math.floor(maxSize / segment));
  const perEpoch = Math.max(1, Math.floor(texts.length / count));
  const picked: { text: string; score: number }[] = [];
  for (let e = 0; e < count && picked.length < count; e++) {
    const from = (e * perEpoch) % texts.length;
    let best = { text: '', score: 0 };
    for (let j = from; j < Math.min(texts.length, from + perEpoch); j++) {
      const t = texts[j]!;
      const k = Math.min(segment, t.length); // a message shorter than a segment is one candidate
      const val = (i: number) => freq.get(t.slice(i, i + D)) ?? 0;
      let score = 0;
      for (let i = 0; i + D <= k; i++) score += val(i);
      let bestHere = score;
      let at = 0;
      for (let start = 1; start + k <= t.length; start++) {
        score += val(start + k - D) - val(start - 1);
        if (score > bestHere) {
          bestHere = score;
          at = start;
        }
      }
      if (bestHere > best.score) best = { text: t.slice(at, at + k), score: bestHere };
    }
    if (best.score === 0) continue;
    picked.push(best);
    for (let i = 0; i + D <= best.text.length; i++) freq.delete(best.text.slice(i, i + D));
  }
  picked.sort((a, b) => a.score - b.score); // most valuable last
  let out = picked.map((p) => p.text).join('');
  if (out.length > maxSize) out = out.slice(out.length - maxSize);
  return Buffer.from(out, 'latin1');
}
