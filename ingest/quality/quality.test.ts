import fs from 'node:fs';
import path from 'node:path';
import Encoding from 'encoding-japanese';
import { describe, expect, it } from 'vitest';
import { SAMPLES_ROOT } from '../../test/support/tmp.js';
import { readStoredFile, type StoredFile } from '../records/read.js';
import type { Finding } from './findings.js';

const BROKEN = '000/000/0000001/20000401';
const file = (rel: string, bytes?: Uint8Array): StoredFile => ({
  facilityId: 'F1',
  path: rel,
  sha256: 'a'.repeat(64),
  bytes: bytes ?? fs.readFileSync(path.join(SAMPLES_ROOT, rel)),
});
const codes = (f: Finding[]) => f.map((x) => `${x.severity}:${x.code}`);

/** A minimal valid OMP-01 message for patient 1234567, as ISO-2022-JP bytes (ASCII here). */
function rde(over: { pid?: string; msh9?: string; orc9?: string; rxe2?: string; obx?: string; eol?: string } = {}) {
  const eol = over.eol ?? '\r';
  const segs = [
    `MSH|^~\\&|HIS|S|GW|R|20240401101010||${over.msh9 ?? 'RDE^O11^RDE_O11'}|1|P|2.5||||||~ISO IR87||ISO 2022-1994`,
    `PID|0001||${over.pid ?? '1234567'}^^^^PI||ヤマダ^ハナコ^^^^^L^P||19800101|F`,
    `ORC|NW|000000000000001||1|||||${over.orc9 ?? '20240401093000'}`,
    `RXE||${over.rxe2 ?? '108665201^ダーゼン錠^HOT9'}|1||TAB^錠^MR9P`,
    ...(over.obx ? [over.obx] : []),
  ];
  return jis(segs.join(eol) + eol + '\x1c');
}
/** ISO-2022-JP bytes, as facilities write them. */
function jis(text: string): Uint8Array {
  return Uint8Array.from(Encoding.convert(Encoding.stringToCode(text), { to: 'JIS', from: 'UNICODE', fallback: 'error' }) as number[]);
}
const RDE_PATH = '123/456/1234567/20240401/OMP-01/1234567_20240401_OMP-01_000000000000001_20240401101010000_01_1';

describe('quality findings on the deliberately broken samples', () => {
  it('undecodable bytes in a misplaced file: decode failure with its offset, and three path disagreements', () => {
    const o = readStoredFile(file(`${BROKEN}/ADT-31/9999013_20110630_OMP-11_123456789012345_20110701113813225_01_1`));
    expect(o.status).toBe('flagged');
    expect(o.record).toBeUndefined();
    expect(o.findings[0]).toMatchObject({ severity: 'error', code: 'decode-failed', byteOffset: 0 });
    const path = o.findings.filter((f) => f.code === 'path-disagreement').map((f) => f.reason);
    expect(path).toEqual([
      expect.stringContaining("patient ID 9999013 differs from the folder's 0000001"),
      expect.stringContaining("care date 20110630 differs from the folder's 20000401"),
      expect.stringContaining("data type OMP-11 differs from the folder's ADT-31"),
    ]);
  });

  it('garbage lines after the last segment: flagged, with the garbage and the second MSH named', () => {
    const o = readStoredFile(file(`${BROKEN}/OMP-11/0000001_20000401_OMP-11_123456789012345_20110701113813225_01_1`));
    expect(o.status).toBe('flagged');
    expect(codes(o.findings)).toEqual(expect.arrayContaining(['error:multiple-messages', 'error:empty-segment', 'error:invalid-value', 'error:patient-id-mismatch']));
    expect(o.findings.find((f) => f.code === 'empty-segment')!.reason).toMatch(/lines 10-35 are bare segment names/);
    expect(o.findings.find((f) => f.code === 'invalid-value' && f.severity === 'error')).toMatchObject({ field: 'OBX[1]-5', reason: expect.stringContaining('"ccc" is not a number') });
    expect(o.findings.find((f) => f.field === 'MSH-13')).toMatchObject({ severity: 'warning', reason: expect.stringContaining('番号') });
  });

  it('the cancelled twin with another order number: order-number mismatch on top of the garbage', () => {
    const o = readStoredFile(file(`${BROKEN}/OMP-11/0000001_20000401_OMP-11_123456789012346_20110701113813226_01_0`));
    expect(o.status).toBe('flagged');
    expect(o.source?.condition).toBe('0');
    expect(o.findings.find((f) => f.code === 'order-number-mismatch')!.reason).toContain('123456789012346');
    // Only the _1 file has a third MSH: the twin's garbage is one message shorter.
    expect(o.findings.filter((f) => f.code === 'multiple-messages')).toHaveLength(1);
  });
});

describe('quality checks on valid and constructed messages', () => {
  it('a clean message is ok with no findings, and its source comes from the path', () => {
    const o = readStoredFile(file(RDE_PATH, rde()));
    expect(o.findings).toEqual([]);
    expect(o.status).toBe('ok');
    expect(o.source).toEqual({
      facilityId: 'F1', patientId: '1234567', dataType: 'OMP-01', careDate: '2024-04-01', orderNo: '000000000000001',
      timestamp: '20240401101010000', department: '01', condition: '1', sha256: 'a'.repeat(64), path: RDE_PATH,
    });
    expect(o.record?.subject?.name.kana).toEqual({ family: 'ヤマダ', given: 'ハナコ' });
  });

  it('tolerates LF and CRLF line ends', () => {
    expect(readStoredFile(file(RDE_PATH, rde({ eol: '\n' }))).status).toBe('ok');
    expect(readStoredFile(file(RDE_PATH, rde({ eol: '\r\n' }))).status).toBe('ok');
  });

  it('patient ID, data type and care date disagreements', () => {
    const pid = readStoredFile(file(RDE_PATH, rde({ pid: '7654321' })));
    expect(pid.status).toBe('flagged');
    expect(pid.findings).toEqual([expect.objectContaining({ code: 'patient-id-mismatch', field: 'PID-3' })]);
    const type = readStoredFile(file(RDE_PATH, rde({ msh9: 'RAS^O17^RAS_O17' })));
    expect(codes(type.findings)).toContain('error:data-type-mismatch');
    const day = readStoredFile(file(RDE_PATH, rde({ orc9: '20240402093000' })));
    expect(day.status).toBe('ok'); // a date disagreement is reported, the record still served
    expect(day.findings).toEqual([expect.objectContaining({ severity: 'warning', code: 'care-date-mismatch' })]);
  });

  it('invalid dates are errors; hours 24-47 are warnings', () => {
    const bad = readStoredFile(file(RDE_PATH, rde({ orc9: '20240231093000' })));
    expect(bad.findings).toContainEqual(expect.objectContaining({ severity: 'error', code: 'invalid-date', field: 'ORC-9' }));
    const late = readStoredFile(file(RDE_PATH, rde({ orc9: '20240331253000' })));
    expect(late.status).toBe('ok');
    expect(late.findings).toEqual([expect.objectContaining({ severity: 'warning', code: 'next-day-hour', field: 'ORC-9' })]);
  });

  it('missing drug code is an error; a malformed HOT9 code is a warning', () => {
    expect(codes(readStoredFile(file(RDE_PATH, rde({ rxe2: '' }))).findings)).toContain('error:missing-field');
    const mal = readStoredFile(file(RDE_PATH, rde({ rxe2: '10866^ダーゼン錠^HOT9' })));
    expect(mal.status).toBe('ok');
    expect(mal.findings).toEqual([expect.objectContaining({ severity: 'warning', code: 'malformed-code', field: 'RXE-2' })]);
  });

  it('a path outside the layout and an unknown data type are errors', () => {
    expect(codes(readStoredFile(file('notes.txt', rde())).findings)).toEqual(['error:unrecognised-path']);
    const unknown = readStoredFile(file('123/456/1234567/20240401/XYZ-99/1234567_20240401_XYZ-99_1_20240401101010000_01_1', rde()));
    expect(unknown.status).toBe('flagged');
    expect(codes(unknown.findings)).toContain('error:unknown-data-type');
  });

  it('a file name the SS-MIX2 parser rejects is flagged with its reason', () => {
    const flag = readStoredFile(file(RDE_PATH.replace(/_1$/, '_7'), rde()));
    expect(flag.findings).toEqual([expect.objectContaining({ severity: 'error', code: 'condition-flag-invalid', reason: expect.stringContaining('condition flag') })]);
    const short = readStoredFile(file(RDE_PATH.replace('_01_1', '_1'), rde()));
    expect(short.findings).toEqual([expect.objectContaining({ code: 'unrecognised-path', reason: expect.stringContaining('7') })]);
  });

  it('a parse failure names the bad line', () => {
    const o = readStoredFile(file(RDE_PATH, new TextEncoder().encode('this is not hl7\r')));
    expect(o.findings[0]).toMatchObject({ code: 'parse-failed', reason: expect.stringContaining('MSH') });
  });

  it('the valid guideline messages whose PID-3 is another patient are flagged, the others served', () => {
    const root = path.join(SAMPLES_ROOT, '999/901/9999013');
    const walk = (d: string): string[] => fs.readdirSync(d, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(path.join(d, e.name)) : [path.join(d, e.name)]));
    const outcomes = walk(root).map((f) => readStoredFile(file(path.relative(SAMPLES_ROOT, f))));
    expect(outcomes).toHaveLength(19);
    for (const o of outcomes) {
      const errors = o.findings.filter((f) => f.severity === 'error');
      // The only errors in the guideline's own samples are PID-3 values of other patients.
      expect(errors.every((e) => e.code === 'patient-id-mismatch'), o.source?.path).toBe(true);
      expect(o.status).toBe(errors.length ? 'flagged' : 'ok');
    }
    expect(outcomes.filter((o) => o.status === 'ok').map((o) => o.source!.dataType).sort()).toEqual(
      ['ADT-00', 'ADT-22', 'ADT-42', 'ADT-52', 'OML-01', 'OMP-01', 'OMP-02', 'OMP-11', 'OMP-12'],
    );
  });
});
