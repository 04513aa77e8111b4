import fs from 'node:fs';
import path from 'node:path';
import { HL7Message } from 'hl7v2';
import { describe, expect, it } from 'vitest';
import { SAMPLES_ROOT } from '../../test/support/tmp.js';
import { decodeIso2022jp, normaliseSegments } from './decode.js';
import { Hl7ParseError, readMessage, unescape, value } from './reader.js';

const VALID = path.join(SAMPLES_ROOT, '999/901/9999013');
const walk = (d: string): string[] =>
  fs.readdirSync(d, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(path.join(d, e.name)) : [path.join(d, e.name)]));

describe('decodeIso2022jp', () => {
  it('decodes JIS X 0208 names whose bytes contain HL7 delimiters', () => {
    // 宮 is JIS 0x355C: its second byte is "\\", the HL7 escape character.
    const bytes = Buffer.concat([Buffer.from('PID|1||1||'), Buffer.from([0x1b, 0x24, 0x42, 0x35, 0x5c, 0x1b, 0x28, 0x42]), Buffer.from('^X\r')]);
    const r = decodeIso2022jp(bytes);
    expect(r).toEqual({ ok: true, text: 'PID|1||1||宮^X\r' });
  });

  it('reports the byte offset of the first invalid byte', () => {
    const bytes = Buffer.concat([Buffer.from('MSH|^~\\&|A\r'), Buffer.from([0xfb, 0xfc])]);
    const r = decodeIso2022jp(bytes);
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.byteOffset).toBe(11);
      expect(r.reason).toContain('0xfb');
    }
  });

  it('normalises CRLF, LF, the trailing CR 0x1C and blank lines', () => {
    expect(normaliseSegments('MSH|a\r\nPID|b\nPV1|c\r\x1c')).toEqual(['MSH|a', 'PID|b', 'PV1|c']);
    expect(normaliseSegments('MSH|a\rPID|b')).toEqual(['MSH|a', 'PID|b']);
  });
});

describe('readMessage', () => {
  it('refuses what is not HL7', () => {
    expect(() => readMessage('')).toThrow(Hl7ParseError);
    expect(() => readMessage('hello world')).toThrow(/does not start with an MSH/);
    expect(() => readMessage('MSH|^~\\&|A\r12 garbage|x')).toThrow(/line 2 is not a segment/);
    expect(() => readMessage('MSH|abcd|A')).toThrow(/encoding characters/);
  });

  it('resolves escapes and keeps unknown ones', () => {
    expect(unescape('a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f')).toBe('a|b^c&d~e\\f');
    expect(unescape('line1\\.br\\line2\\H\\bold\\N\\')).toBe('line1\nline2bold');
    expect(unescape('\\X41\\\\Zfoo\\')).toBe('A\\Zfoo\\');
  });

  it('honours the delimiters the message declares', () => {
    const m = readMessage('MSH#$%\\@#A#B\rPID#1##id1$$$$PI#');
    expect(value(m.segments[1], 3)).toBe('id1');
    expect(value(m.segments[1], 3, 5)).toBe('PI');
  });

  // hl7v2 is the parser of record: the fast reader must read the same strings from every sample.
  it.each(walk(VALID).map((f) => [path.relative(VALID, f), f]))('agrees with hl7v2 on %s', (_rel, file) => {
    const d = decodeIso2022jp(fs.readFileSync(file));
    if (!d.ok) throw new Error(d.reason);
    const ours = readMessage(d.text);
    const theirs = HL7Message.parse(normaliseSegments(d.text).join('\r'));
    expect(theirs.segments.map((s) => s.segmentType)).toEqual(ours.segments.map((s) => s.id));
    let compared = 0;
    ours.segments.forEach((seg, i) => {
      if (seg.id === 'MSH') return;
      const t = theirs.segments[i]!;
      for (let n = 1; n < seg.fields.length; n++) {
        const reps = seg.fields[n]!.split('~');
        reps.forEach((rep, r) => {
          const comps = rep.split('^').length;
          for (let c = 1; c <= comps; c++) {
            const comp = t.field(n).repetition(r).component(c);
            // hl7v2 re-renders dates and numbers (truncated, 0001 -> 1): compare text fields only.
            if (['DTM', 'TS', 'DT', 'TM', 'NM', 'SI'].includes(comp.definition?.type ?? '')) continue;
            const tv: unknown = comp.getValue(1);
            if (typeof tv !== 'string' && tv !== undefined && tv !== null) continue;
            // A primitive component has no subcomponents: `&` in it is text (JAHIS 9A100&IMP).
            const ours = comp.isPrimitive ? unescape(rep.split('^')[c - 1] ?? '') : value(seg, n, c, 1, r);
            expect(ours, `${seg.id}-${n}.${c} rep ${r}`).toBe(tv ?? '');
            compared++;
          }
        });
      }
    });
    expect(compared).toBeGreaterThan(20);
  });
});
