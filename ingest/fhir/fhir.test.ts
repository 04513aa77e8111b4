import fs from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { SAMPLES_ROOT } from '../../test/support/tmp.js';
import { decodeIso2022jp } from '../hl7/decode.js';
import { readMessage } from '../hl7/reader.js';
import { mapMessage, subjectOf } from '../records/map.js';
import { sourceOf } from '../records/read.js';
import { parseStoragePath } from '../records/storage-path.js';
import { categoryOf } from '../records/data-types.js';
import type { ClinicalRecord } from '../records/types.js';
import { loadFhirValidator, type SchemaIssue } from './schema.js';
import { patientResourceId, toFhir, type FhirResource } from './to-fhir.js';
import { patientIdSystem } from './systems.js';

const PATIENT = path.join(SAMPLES_ROOT, '999/901/9999013');
const walk = (d: string): string[] =>
  fs.readdirSync(d, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(path.join(d, e.name)) : [path.join(d, e.name)]));

/** Every valid sample as a record (mapping is independent of quality flags). */
function records(facilityId: string): ClinicalRecord[] {
  return walk(PATIENT).map((f) => {
    const rel = path.relative(SAMPLES_ROOT, f);
    const sp = parseStoragePath(rel)!;
    const d = decodeIso2022jp(fs.readFileSync(f));
    if (!d.ok) throw new Error(d.reason);
    const msg = readMessage(d.text);
    const source = sourceOf({ facilityId, path: rel, sha256: 'b'.repeat(64) }, sp)!;
    return { source, category: categoryOf(sp.folder.dataType), subject: subjectOf(msg), content: mapMessage(sp.folder.dataType, msg) };
  });
}

let validate: (r: unknown) => SchemaIssue[];
beforeAll(() => {
  validate = loadFhirValidator();
});

const byType = (rs: FhirResource[], t: string) => rs.filter((r) => r.resourceType === t) as Record<string, any>[];

describe('FHIR R4 / JP Core views of the guideline samples', () => {
  const all = records('1311234567');
  const resources = all.flatMap(toFhir);

  it('the validator rejects what is not FHIR (it can fail)', () => {
    expect(validate({ resourceType: 'Patient', id: 'x', gender: 'man' })).not.toEqual([]);
    expect(validate({ resourceType: 'Observation', id: 'x' })).not.toEqual([]); // status and code are required
    expect(validate({ resourceType: 'NoSuchThing', id: 'x' })).not.toEqual([]);
  });

  it('every produced resource validates against the official FHIR R4 JSON schema', () => {
    expect(resources.length).toBeGreaterThan(60);
    for (const r of resources) expect(validate(r), `${r.resourceType}/${r.id}`).toEqual([]);
  });

  it('covers the resource types of the mapping guide', () => {
    const types = new Set(resources.map((r) => r.resourceType));
    for (const t of ['Patient', 'Encounter', 'Condition', 'AllergyIntolerance', 'MedicationRequest', 'MedicationAdministration', 'ServiceRequest', 'Observation', 'DiagnosticReport', 'NutritionOrder']) {
      expect(types, t).toContain(t);
    }
    for (const r of resources) expect(r.id).toMatch(/^[A-Za-z0-9\-.]{1,64}$/);
  });

  it('Patient: JP_Patient with the facility OID, kanji (IDE) and kana (SYL) names', () => {
    const [p] = byType(resources, 'Patient');
    expect(p!.meta.profile).toEqual(['http://jpfhir.jp/fhir/core/StructureDefinition/JP_Patient']);
    expect(p!.identifier).toEqual([{ system: 'urn:oid:1.2.392.100495.20.3.51.11311234567', value: '9999013' }]);
    expect(p!.name.map((n: any) => [n.extension[0].valueCode, n.family, n.given[0]])).toEqual([
      ['IDE', '患者', '太郎'],
      ['SYL', 'カンジャ', 'タロウ'],
    ]);
    expect(p).toMatchObject({ gender: 'male', birthDate: '1948-04-05', address: [{ postalCode: '422-8033', text: '静岡県静岡市登呂１－３－５', use: 'home' }] });
    expect(p!.id).toBe(patientResourceId('1311234567', '9999013'));
  });

  it('MedicationRequest: HOT9 coding, dose, daily dose, frequency and days', () => {
    const rx = byType(resources, 'MedicationRequest').filter((r) => r.meta.profile[0].endsWith('JP_MedicationRequest'));
    expect(rx).toHaveLength(3);
    expect(rx[0]!.medicationCodeableConcept.coding[0]).toEqual({ system: 'urn:oid:1.2.392.200119.4.403.1', code: '108665201', display: 'ダーゼン錠（５mg)' });
    const dose = rx[0]!.dosageInstruction[0];
    expect(dose.doseAndRate[0].doseQuantity).toEqual({ value: 1, unit: '錠', system: 'urn:oid:1.2.392.100495.20.2.101', code: 'TAB' });
    expect(dose.doseAndRate[0].rateRatio.numerator.value).toBe(3);
    expect(dose.timing.code.coding[0]).toMatchObject({ system: 'urn:oid:1.2.392.200250.2.2.20', code: '1013044400000000' });
    expect(dose.timing.repeat.boundsDuration).toMatchObject({ value: 5, code: 'd' });
    expect(rx[0]!.identifier).toContainEqual({ system: 'urn:oid:1.2.392.100495.20.3.11.11311234567', value: '000000011000185' });
    expect(rx[2]!.dispenseRequest.quantity).toMatchObject({ value: 1400, code: 'MG' });
    const inj = byType(resources, 'MedicationRequest').filter((r) => r.meta.profile[0].endsWith('_Injection'));
    expect(inj[0]!.contained[0].ingredient.map((i: any) => i.itemCodeableConcept.coding[0].code)).toEqual(['620007329', '620002559']);
  });

  it('Observation / DiagnosticReport: JLAC10 lab values with units and ranges', () => {
    const obs = byType(resources, 'Observation').filter((o) => o.meta.profile[0].endsWith('JP_Observation_LabResult'));
    const tp = obs.find((o) => o.code.coding[0].code === '3A010000002327101')!;
    expect(tp.code.coding[0].system).toBe('urn:oid:1.2.392.200119.4.504');
    expect(tp.valueQuantity).toMatchObject({ value: 7.2, unit: 'g/dl' });
    expect(tp.referenceRange[0]).toMatchObject({ low: { value: 6.7 }, high: { value: 8.3 }, text: '6.70-8.3' });
    const reports = byType(resources, 'DiagnosticReport');
    const lab = reports.find((r) => r.meta.profile[0].endsWith('JP_DiagnosticReport_LabResult'))!;
    expect(lab.result).toHaveLength(3);
    const ecg = byType(resources, 'Observation').find((o) => o.code.text === '心拍数')!;
    expect(ecg.valueQuantity).toMatchObject({ value: 67, unit: 'bpm' });
  });

  it('Condition and AllergyIntolerance carry the standard codes', () => {
    const [cond] = byType(resources, 'Condition');
    expect(cond!.code.coding).toEqual([
      { system: 'urn:oid:1.2.392.200119.4.101.6', code: '20054174', display: '胃炎' },
      { system: 'http://hl7.org/fhir/sid/icd-10', code: 'K297' },
    ]);
    expect(cond).toMatchObject({ onsetDateTime: '2011-08-31', clinicalStatus: { coding: [{ code: 'active' }] } });
    const allergies = byType(resources, 'AllergyIntolerance');
    const sugi = allergies.find((a) => a.code.text === 'スギ')!;
    expect(sugi).toMatchObject({ category: ['environment'], reaction: [{ severity: 'mild', manifestation: [{ text: '目のかゆみ' }] }], onsetDateTime: '1996-01' });
    expect(allergies.find((a) => a.code.text === 'アリナミン')!.code.coding[0].system).toBe('urn:oid:1.2.392.200119.4.403.1');
  });

  it('a facility without an institution code gets a Hakobune identifier system; cancelled records say so', () => {
    const rec = records('clinic-a').find((r) => r.source.dataType === 'OMP-01')!;
    const cancelled = { ...rec, source: { ...rec.source, condition: '0' as const } };
    const [mr] = toFhir(cancelled) as Record<string, any>[];
    expect(mr!.status).toBe('cancelled');
    expect(mr!.subject.reference).toBe(`Patient/${patientResourceId('clinic-a', '9999013')}`);
    expect(mr!.identifier[0].system).toBe('urn:hakobune:facility:clinic-a:order-no');
    expect(patientIdSystem('clinic-a')).toBe('urn:hakobune:facility:clinic-a:patient-id');
    expect(validate(mr)).toEqual([]);
  });
});
