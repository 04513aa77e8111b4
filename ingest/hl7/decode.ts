/**
 * ISO-2022-JP decoding of SS-MIX2 messages (standardized storage spec Ver.1.2 §2: ASCII plus
 * JIS X 0208 behind escape sequences). Decoding happens BEFORE any splitting: 582 JIS X 0208
 * characters contain a byte equal to an HL7 delimiter (宮 holds `\`, マ holds `^`).
 */

export type DecodeResult =
  | { ok: true; text: string }
  | { ok: false; byteOffset: number; reason: string };

const strict = new TextDecoder('iso-2022-jp', { fatal: true });

/** Decodes the exact bytes; on invalid input reports the offset of the first bad byte. */
export function decodeIso2022jp(bytes: Uint8Array): DecodeResult {
  try {
    return { ok: true, text: strict.decode(bytes) };
  } catch {
    const byteOffset = firstInvalidByte(bytes);
    return {
      ok: false,
      byteOffset,
      reason: `not valid ISO-2022-JP: byte 0x${(bytes[byteOffset] ?? 0).toString(16).padStart(2, '0')} at offset ${byteOffset}`,
    };
  }
}

/**
 * Finds the first byte that the WHATWG ISO-2022-JP decoder rejects by feeding the bytes one at
 * a time in streaming mode. Only runs for messages that already failed, so its cost is moot.
 */
function firstInvalidByte(bytes: Uint8Array): number {
  const d = new TextDecoder('iso-2022-jp', { fatal: true });
  for (let i = 0; i < bytes.length; i++) {
    try {
      d.decode(bytes.subarray(i, i + 1), { stream: true });
    } catch {
      return i;
    }
  }
  // The stream ended in the middle of an escape sequence or a two-byte character.
  return Math.max(0, bytes.length - 1);
}

/**
 * Normalises segment terminators: CRLF and lone LF become CR (an LF-only file would otherwise
 * read as one segment), the trailing file separator 0x1C and blank lines are dropped, and a
 * missing final CR is tolerated. The stored bytes are never touched; this is for reading only.
 */
export function normaliseSegments(text: string): string[] {
  let t = text;
  if (t.includes('\n')) t = t.replace(/\r\n?|\n/g, '\r');
  if (t.includes('\x1c') || t.includes('\x0b')) t = t.replace(/[\x1c\x0b]/g, '\r');
  const out: string[] = [];
  for (const line of t.split('\r')) {
    // Stray spaces around a segment are a known variant of real exports.
    const s = line.trim();
    if (s !== '') out.push(s);
  }
  return out;
}
