import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { SAMPLES_ROOT } from '../test/support/tmp.js';
import { decodeIso2022jp } from '../ingest/hl7/decode.js';
import { readMessage } from '../ingest/hl7/reader.js';
import { mapMessage } from '../ingest/records/map.js';
import type { PatientRecord } from '../ingest/records/types.js';
import { identityRecordOf } from './identity-feed.js';

function adt00(): PatientRecord {
  const dir = path.join(SAMPLES_ROOT, '999/901/9999013/-/ADT-00');
  const [file] = fs.readdirSync(dir);
  const d = decodeIso2022jp(fs.readFileSync(path.join(dir, file!)));
  if (!d.ok) throw new Error(d.reason);
  return mapMessage('ADT-00', readMessage(d.text)) as PatientRecord;
}

describe('the identity feed', () => {
  it("turns the guideline's ADT-00 into what the matcher reads", () => {
    expect(identityRecordOf('F001', '9999013', adt00())).toEqual({
      facilityId: 'F001',
      localId: '9999013',
      familyKanji: '患者',
      givenKanji: '太郎',
      familyKana: 'カンジャ',
      givenKana: 'タロウ',
      birthDate: '19480405',
      sex: 'M',
      postalCode: '422-8033',
      address: '静岡県静岡市登呂１－３－５',
      // The primary residence number (PRN) is preferred over emergency and work numbers.
      phone: '054-000-0000',
    });
  });

  it('leaves what a message does not say empty, never invented', () => {
    const r = identityRecordOf('F002', 'X1', { kind: 'patient', identifier: 'X1', name: {}, phones: [], insurance: [], observations: [], allergies: [], deleted: false } as PatientRecord);
    expect(r).toMatchObject({ familyKanji: '', givenKana: '', birthDate: '', sex: 'U', postalCode: '', address: '', phone: '' });
  });

  it('falls back to the first phone when no residence number is given', () => {
    const p = { ...adt00(), phones: [{ use: 'WPN', number: '03-1111-2222' }, { number: '090-0000-0000' }] };
    expect(identityRecordOf('F001', '9999013', p).phone).toBe('03-1111-2222');
  });
});
