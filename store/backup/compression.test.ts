import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { CODEC_DEFLATE, CODEC_RAW, USABLE_DICTIONARY, compressBlob, compressBlobAsync, decompressBlob, trainDictionary } from './compression.js';

/** HL7 v2-shaped messages that share structure and differ in ids, names and times. */
function messages(n: number): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < n; i++) {
    const pid = String(1000000 + ((i * 7919) % 900000));
    out.push(
      Buffer.from(
        `MSH|^~\\&|HIS123|SEND|GW|RCV|2025040${i % 9}1200${i % 60}||RDE^O11^RDE_O11|2025${i}|P|2.5||||||~ISO IR87||ISO 2022-1994|SS-MIX2_1.20^SS-MIX2^1.2.392.200250.2.1.100.1.2.120^ISO\r` +
          `PID|0001||${pid}^^^^PI||PATIENT^${i}^^^^^L^I||19${50 + (i % 50)}0101|${i % 2 ? 'M' : 'F'}\r` +
          `ORC|NW|${i}||${i}_01_001|||||2025040112000${i % 10}|058^DOCTOR^^^^^^^L^^^^^I||110^DOC^^^^^^^L^^^^^I|||||01^INTERNAL^99XY1|PC01^^99XY2\r` +
          `RXE||${620000000 + i}^DRUG ${i % 40}^HOT|1||TAB^^MR9P|TAB^^MR9P|^^^^^^^^^^^^\r` +
          `TQ1|||1013044400000000&^JAMISDP01|||7^D|20250401\r\x1c`,
        'latin1',
      ),
    );
  }
  return out;
}

describe('per-blob compression', () => {
  it('round-trips with and without a dictionary, raw when deflate does not help', async () => {
    const data = messages(300);
    const dict = trainDictionary(data.slice(0, 200));
    expect(dict.length).toBeGreaterThan(1000);
    expect(dict.length).toBeLessThanOrEqual(USABLE_DICTIONARY);
    const d = { id: 1, hash: 'x', content: dict };
    for (const m of data.slice(200)) {
      const c = compressBlob(m, d);
      expect(c.codec).toBe(CODEC_DEFLATE);
      expect(decompressBlob(c.data, c.codec, dict, m.length).equals(m)).toBe(true);
      const a = await compressBlobAsync(m, d);
      expect(a.data.equals(c.data)).toBe(true);
    }
    const noise = createHash('sha512').update('x').digest();
    const r = compressBlob(noise, d);
    expect(r.codec).toBe(CODEC_RAW);
    expect(decompressBlob(r.data, r.codec, undefined, noise.length).equals(noise)).toBe(true);
  });

  it('compresses alike messages far better with a trained dictionary than alone', () => {
    const data = messages(400);
    const dict = { id: 1, hash: 'x', content: trainDictionary(data.slice(0, 200)) };
    const test = data.slice(200);
    const raw = test.reduce((a, m) => a + m.length, 0);
    const alone = test.reduce((a, m) => a + compressBlob(m, undefined).data.length, 0);
    const withDict = test.reduce((a, m) => a + compressBlob(m, dict).data.length, 0);
    expect(raw / withDict).toBeGreaterThan(1.5 * (raw / alone));
  });

  it('refuses damaged stored bytes and a wrong size', () => {
    const m = messages(1)[0]!;
    const c = compressBlob(m, undefined);
    expect(() => decompressBlob(c.data.subarray(0, 10), c.codec, undefined, m.length)).toThrow();
    expect(() => decompressBlob(c.data, c.codec, undefined, m.length - 1)).toThrow();
  });
});
