import zlib from 'node:zlib';
import { createHash } from 'node:crypto';

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

/** Compresses one blob; keeps it raw when deflate would not make it smaller. */
export function compressBlob(data: Buffer, dict: Dictionary | undefined): Compressed {
  if (data.length < 16) return { codec: CODEC_RAW, dictionaryId: null, data };
  const out = zlib.deflateRawSync(data, dict ? { level: 6, dictionary: dict.content } : { level: 6 });
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

/**
 * Trains a preset dictionary from sample messages. HL7 v2 messages are segments (split on CR)
 * of `|`-separated fields; what recurs across messages is whole segments (MSH of one sender),
 * segment prefixes up to a field boundary ("PID|1||") and long field values (profile ids,
 * coding-system names). Each candidate is scored by how many messages hold it times the bytes
 * it would save; the best are packed into at most 32 KiB with the most valuable last, where
 * deflate reaches them with the shortest distances.
 */
export function trainDictionary(samples: Buffer[], maxSize = MAX_DICTIONARY): Buffer {
  const df = new Map<string, number>();
  for (const sample of samples) {
    const seen = new Set<string>();
    const text = sample.toString('latin1');
    for (const segment of text.split(/[\r\n]+/)) {
      if (segment.length < 4) continue;
      if (segment.length <= 1024) seen.add(segment + '\r');
      let start = 0;
      for (let i = segment.indexOf('|'); i !== -1 && i < 1024; i = segment.indexOf('|', i + 1)) {
        seen.add(segment.slice(0, i + 1));
        const field = segment.slice(start, i);
        if (field.length >= 6 && field.length <= 256) seen.add(field);
        start = i + 1;
      }
    }
    for (const c of seen) df.set(c, (df.get(c) ?? 0) + 1);
  }
  const minCount = Math.max(2, Math.floor(samples.length / 200));
  const scored: { text: string; score: number }[] = [];
  for (const [text, count] of df) {
    if (count < minCount || text.length < 4) continue;
    scored.push({ text, score: count * (text.length - 3) });
  }
  scored.sort((a, b) => b.score - a.score || (a.text < b.text ? -1 : 1));
  const picked: string[] = [];
  let joined = '';
  let size = 0;
  for (const c of scored.slice(0, 8000)) {
    if (size + c.text.length > maxSize) continue;
    if (joined.includes(c.text)) continue;
    picked.push(c.text);
    joined += '\0' + c.text;
    size += c.text.length;
    if (size >= maxSize - 4) break;
  }
  picked.reverse(); // most valuable last
  return Buffer.from(picked.join(''), 'latin1');
}
