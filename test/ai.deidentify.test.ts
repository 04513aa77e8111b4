import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SAMPLES_ROOT, tempDir } from './support/tmp.js';
import { allStrings, identifierForms, scanForIdentifiers, type KnownPatient } from './ai.support.js';
import { decodeIso2022jp } from '../ingest/hl7/decode.js';
import { readMessage } from '../ingest/hl7/reader.js';
import { mapMessage, subjectOf } from '../ingest/records/map.js';
import { readStoredFile, sourceOf } from '../ingest/records/read.js';
import { parseStoragePath } from '../ingest/records/storage-path.js';
import { categoryOf } from '../ingest/records/data-types.js';
import type { ClinicalRecord } from '../ingest/records/types.js';
import { loadFhirValidator } from '../ingest/fhir/schema.js';
import { patientResourceId } from '../ingest/fhir/to-fhir.js';
import { CATEGORIES } from '../consent/categories.js';
import { generateFixtures } from '../fixtures/generate.js';
import { generatePopulation, planFacilities, type LocalPatient } from '../fixtures/population.js';
import { listFiles } from '../fixtures/tree.js';
import { bundleOf, identityOfRecords } from '../viewer-api/ai/bundle.js';
import { AGE_EXTENSION, deidentify, PSEUDONYM_SYSTEM, reidentify, type DeidentifyOptions, type FhirJson } from '../viewer-api/ai/deidentify.js';
import { randomShiftDays, shiftFhirDate } from '../viewer-api/ai/dates.js';
import { compileScrubber, emptyIdentity } from '../viewer-api/ai/scrub.js';
import { ExchangeError } from '../store/errors.js';

const FACILITY = '1311234567';
const PATIENT_DIR = path.join(SAMPLES_ROOT, '999/901/9999013');
const SECRET = Buffer.alloc(32, 7);
const NOW = Date.UTC(2026, 10, 21, 3, 0, 0);
const ALL = new Set(CATEGORIES);

const walkDir = (d: string): string[] =>
  fs.readdirSync(d, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walkDir(path.join(d, e.name)) : [path.join(d, e.name)]));

/** Every readable sample message of the valid patient, decoded and mapped as the index does. */
function sampleRecords(): ClinicalRecord[] {
  return walkDir(PATIENT_DIR).map((f) => {
    const rel = path.relative(SAMPLES_ROOT, f);
    const sp = parseStoragePath(rel)!;
    const d = decodeIso2022jp(fs.readFileSync(f));
    if (!d.ok) throw new Error(d.reason);
    const msg = readMessage(d.text);
    const source = sourceOf({ facilityId: FACILITY, path: rel, sha256: 'b'.repeat(64) }, sp)!;
    return { source, category: categoryOf(sp.folder.dataType), subject: subjectOf(msg), content: mapMessage(sp.folder.dataType, msg) };
  });
}

/** What the sample patient's ADT-00 says (read by eye from the message), and every message's PID. */
function knownSamplePatient(records: ClinicalRecord[]): KnownPatient {
  const known: KnownPatient = {
    names: [
      { family: '患者', given: '太郎' },
      { family: 'カンジャ', given: 'タロウ' },
    ],
    birthDates: ['1948-04-05'],
    addresses: ['静岡県静岡市登呂１－３－５'],
    postalCodes: ['422-8033'],
    phones: ['054-000-0000', '03-5999-9999', '03-3599-9993'],
    localIds: ['9999013'],
    insuranceNumbers: ['67999991'],
  };
  for (const r of records) {
    if (!r.subject) continue;
    known.localIds.push(r.subject.identifier);
    if (r.subject.birthDate) known.birthDates.push(r.subject.birthDate);
    for (const n of [r.subject.name.kanji, r.subject.name.kana]) if (n) known.names.push(n);
  }
  return known;
}

/** Insurance as JP Core writes it (the FHIR view of the index does not carry Coverage). */
function coverage(patientRef: string): FhirJson {
  return {
    resourceType: 'Coverage',
    id: 'cov-1',
    status: 'active',
    identifier: [{ system: 'urn:oid:1.2.392.100495.20.3.61', value: '67999991' }],
    subscriberId: '67999991',
    beneficiary: { reference: patientRef, display: '患者 太郎' },
    payor: [{ identifier: { system: 'urn:oid:1.2.392.100495.20.3.61', value: '67999991' }, display: '国民健康保険' }],
    class: [{ type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/coverage-class', code: 'group' }] }, value: '記号１２３', name: '患者 太郎 記号' }],
    period: { start: '2009-12-01' },
  };
}

/** Free text written the way clinicians write: every identifier of the patient, in many forms. */
const NOTE = [
  '患者 太郎様（カンジャ　タロウ、かんじゃたろう、ｶﾝｼﾞｬ ﾀﾛｳ）昭和23年4月5日生、S23.4.5、1948/4/5、19480405、１９４８－０４－０５。',
  '住所 静岡県静岡市登呂1-3-5（〒422-8033）電話 054-000-0000 / 0354999999 ではなく 03-5999-9999、勤務先(03)3599-9993。',
  'ID 9999013、保険者番号 67999991。2011-12-20 に再診、Hb 7.2 g/dl。',
].join('');

function cda(known: { name: string; kana: string; birth: string; id: string; address: string; phone: string }): string {
  return [
    '<?xml version="1.0" encoding="UTF-8"?>',
    '<ClinicalDocument xmlns="urn:hl7-org:v3"><recordTarget><patientRole>',
    `<id root="1.2.392.100495.20.3.51.1${FACILITY}" extension="${known.id}"/>`,
    `<addr><streetAddressLine>${known.address}</streetAddressLine></addr><telecom value="tel:${known.phone}"/>`,
    `<patient><name use="IDE">${known.name}</name><name use="SYL">${known.kana}</name><birthTime value="${known.birth}"/></patient>`,
    '</patientRole></recordTarget><effectiveTime value="20111220103000+0900"/>',
    `<component><structuredBody><component><section><title>経過</title><text><paragraph>${known.name}さんは${known.birth.slice(0, 4)}年生まれ、外来にて経過観察。</paragraph></text></section></component></structuredBody></component>`,
    '</ClinicalDocument>',
  ].join('\n');
}

function sampleBundle(records: ClinicalRecord[]): FhirJson {
  const { bundle } = bundleOf(records, ALL);
  const entry = bundle['entry'] as { resource: FhirJson }[];
  const patientRef = `Patient/${patientResourceId(FACILITY, '9999013')}`;
  const xml = cda({ name: '患者　太郎', kana: 'カンジャ　タロウ', birth: '19480405', id: '9999013', address: '静岡県静岡市登呂１－３－５', phone: '054-000-0000' });
  entry.push(
    { resource: coverage(patientRef) },
    {
      resource: {
        resourceType: 'DocumentReference',
        id: 'doc-cda',
        status: 'current',
        subject: { reference: patientRef, display: '患者 太郎' },
        date: '2011-12-20T10:30:00+09:00',
        description: '患者 太郎 様 診療情報提供書',
        content: [
          { attachment: { contentType: 'application/hl7-v3+xml', data: Buffer.from(xml).toString('base64'), title: 'カンジャタロウ.xml' } },
          { attachment: { contentType: 'application/pdf', data: Buffer.from('%PDF-1.4 患者太郎').toString('base64'), title: 'referral.pdf' } },
          { attachment: { contentType: 'application/pdf', url: 'urn:hakobune:blob:sha256:' + 'c'.repeat(64), title: 'attachment.pdf' } },
        ],
      },
    },
    {
      resource: {
        resourceType: 'Observation',
        id: 'obs-note',
        status: 'final',
        text: { status: 'generated', div: `<div xmlns="http://www.w3.org/1999/xhtml"><p>${NOTE}</p></div>` },
        code: { text: '所見' },
        subject: { reference: patientRef },
        effectiveDateTime: '2011-12-20T10:30:00+09:00',
        valueString: NOTE,
        note: [{ text: NOTE }],
      },
    },
    {
      resource: {
        resourceType: 'Condition',
        id: 'cond-text',
        subject: { reference: patientRef },
        code: { text: '患者太郎氏の家族歴（父 山田 一郎）による精査' },
        onsetDateTime: '2011-08-31',
        abatementDateTime: '2011-12-20',
      },
    },
  );
  return bundle;
}

const options = (over: Partial<DeidentifyOptions> = {}): DeidentifyOptions => ({
  scope: { secret: SECRET, serviceId: 'svc-risk', subject: 'R-0001' },
  birthDate: 'age',
  shiftDays: 123,
  now: NOW,
  ...over,
});

describe('de-identification of the real SS-MIX2 samples', () => {
  const records = sampleRecords();
  const known = knownSamplePatient(records);
  const forms = identifierForms(known);
  const original = sampleBundle(records);
  const result = deidentify(original, { ...options(), identity: identityOfRecords(records) });

  it('the scanner finds the identifiers before de-identification (it can fail)', () => {
    const leaks = scanForIdentifiers(original, forms);
    const kinds = new Set(leaks.map((l) => l.kind));
    for (const k of ['name', 'birth-date', 'address', 'postal-code', 'phone', 'local-id', 'insurance-number']) expect(kinds, k).toContain(k);
  });

  it('no identifier of the patient, in any form, is left in any string of the result', () => {
    expect(scanForIdentifiers(result.bundle, forms)).toEqual([]);
  });

  it('what is left is still valid FHIR R4 and keeps the clinical content', () => {
    const validate = loadFhirValidator();
    const entries = result.bundle['entry'] as { resource: FhirJson }[];
    expect(entries.length).toBe((original['entry'] as unknown[]).length);
    for (const { resource } of entries) expect(validate(resource), `${resource['resourceType']}`).toEqual([]);
    const strings = allStrings(result.bundle);
    // Codes, displays of codes and numbers are what the service needs.
    expect(strings).toContain('108665201');
    expect(strings).toContain('ダーゼン錠（５mg)');
    expect(strings).toContain('胃炎');
    const patient = entries.find((e) => e.resource['resourceType'] === 'Patient')!.resource;
    expect(patient['gender']).toBe('male');
    expect(patient['name']).toBeUndefined();
    expect(patient['telecom']).toBeUndefined();
    expect(patient['address']).toBeUndefined();
    expect(patient['identifier']).toEqual([{ system: PSEUDONYM_SYSTEM, value: expect.stringMatching(/^hkb-[a-z2-7]{20}$/) }]);
    // 1948-04-05 to 2026-11-21 (JST): 78.
    expect(patient['extension']).toEqual([{ url: AGE_EXTENSION, valueAge: { value: 78, unit: 'a', system: 'http://unitsofmeasure.org', code: 'a' } }]);
  });

  it('free text keeps its meaning around the redactions, and its other dates are shifted', () => {
    const obs = (result.bundle['entry'] as { resource: FhirJson }[]).map((e) => e.resource).find((r) => typeof r['valueString'] === 'string' && (r['valueString'] as string).includes('再診'))!;
    const text = obs['valueString'] as string;
    expect(text).toContain('[氏名]');
    expect(text).toContain('[生年月日]');
    expect(text).toContain('[住所]');
    expect(text).toContain('[電話番号]');
    expect(text).toContain('[ID]');
    expect(text).toContain('[保険番号]');
    expect(text).toContain('Hb 7.2 g/dl');
    expect(text).toContain(`${shiftFhirDate('2011-12-20', 123)} に再診`);
  });

  it('the CDA document is decoded, scrubbed and re-encoded; binaries and blob addresses are dropped', () => {
    const doc = (result.bundle['entry'] as { resource: FhirJson }[]).map((e) => e.resource).find((r) => r['resourceType'] === 'DocumentReference' && JSON.stringify(r).includes('hl7-v3+xml'))!;
    const content = doc['content'] as { attachment: FhirJson }[];
    const xml = Buffer.from(content[0]!.attachment['data'] as string, 'base64').toString('utf8');
    expect(xml).toContain('<ClinicalDocument');
    expect(xml).toContain('外来にて経過観察');
    expect(xml).toContain(`<effectiveTime value="${shiftFhirDate('2011-12-20', 123)!.replace(/-/g, '')}103000+0900"/>`);
    expect(content[0]!.attachment['size']).toBe(Buffer.byteLength(xml));
    expect(content[1]!.attachment['data']).toBeUndefined();
    expect(content[2]!.attachment['url']).toBeUndefined();
    expect(doc['subject']).toEqual({ reference: expect.stringMatching(/^Patient\/hkb-/) });
  });

  it('reports what changed, by kind, without any value', () => {
    const c = result.report.counts;
    expect(result.report.resources).toBe((original['entry'] as unknown[]).length);
    expect(c['name']).toBe(2);
    expect(c['telecom']).toBe(3);
    expect(c['address']).toBe(1);
    expect(c['birth-date']).toBe(1);
    expect(c['insurance']).toBe(2);
    expect(c['attachment-scrubbed']).toBeGreaterThanOrEqual(1);
    expect(c['attachment-dropped']).toBe(1);
    expect(c['attachment-url']).toBe(1);
    expect(c['identifier']).toBeGreaterThan(5);
    expect(c['resource-id']).toBe(result.report.resources);
    expect(c['text-name']).toBeGreaterThan(5);
    expect(c['text-birth-date']).toBeGreaterThanOrEqual(6);
    expect(c['text-phone']).toBeGreaterThanOrEqual(3);
    expect(c['date']).toBeGreaterThan(20);
    expect(scanForIdentifiers(result.report, forms)).toEqual([]);
  });

  it('references are rewritten consistently and all resolve inside the bundle', () => {
    const entries = (result.bundle['entry'] as { resource: FhirJson }[]).map((e) => e.resource);
    const ids = new Set(entries.map((r) => `${r['resourceType']}/${r['id']}`));
    const refs = allStringsAt(result.bundle, 'reference').filter((r) => !r.startsWith('#'));
    expect(refs.length).toBeGreaterThan(20);
    const patientRefs = new Set(refs.filter((r) => r.startsWith('Patient/')));
    expect(patientRefs.size).toBe(1);
    for (const r of refs) if (r.startsWith('Patient/') || r.startsWith('Observation/')) expect(ids, r).toContain(r);
  });

  it('every date moves by exactly the shift; intervals are preserved', () => {
    const before = datesByPath(original);
    const after = datesByPath(result.bundle);
    let compared = 0;
    for (const [p, v] of before) {
      const w = after.get(p);
      if (w === undefined || /birthDate/.test(p)) continue;
      if (/^\d{4}-\d{2}-\d{2}/.test(v)) {
        expect(dayNumber(w) - dayNumber(v), p).toBe(123);
        expect(w.slice(10)).toBe(v.slice(10)); // time of day and offset kept
        compared++;
      }
    }
    expect(compared).toBeGreaterThan(20);
    const cond = (b: FhirJson) => (b['entry'] as { resource: FhirJson }[]).map((e) => e.resource).find((r) => r['abatementDateTime'])!;
    const interval = (r: FhirJson) => dayNumber(r['abatementDateTime'] as string) - dayNumber(r['onsetDateTime'] as string);
    expect(interval(cond(result.bundle))).toBe(interval(cond(original)));
  });

  it('the birth date goes as the service declared: omitted, the year, or the age', () => {
    const pat = (b: FhirJson) => (b['entry'] as { resource: FhirJson }[]).map((e) => e.resource).find((r) => r['resourceType'] === 'Patient')!;
    const omit = pat(deidentify(original, options({ birthDate: 'omit' })).bundle);
    expect(omit['birthDate']).toBeUndefined();
    expect(omit['extension']).toBeUndefined();
    const year = pat(deidentify(original, options({ birthDate: 'year', shiftDays: -300 })).bundle);
    expect(year['birthDate']).toBe('1948');
    expect(year['extension']).toBeUndefined();
  });

  it('pseudonyms link within a service and patient, never across services or keys', () => {
    const again = deidentify(original, { ...options(), shiftDays: -45 });
    const otherService = deidentify(original, options({ scope: { secret: SECRET, serviceId: 'svc-other', subject: 'R-0001' } }));
    const otherKey = deidentify(original, options({ scope: { secret: Buffer.alloc(32, 9), serviceId: 'svc-risk', subject: 'R-0001' } }));
    const ids = (b: FhirJson) => (b['entry'] as { resource: FhirJson }[]).map((e) => e.resource['id']);
    expect(ids(again.bundle)).toEqual(ids(result.bundle));
    const mine = new Set(ids(result.bundle));
    for (const id of ids(otherService.bundle)) expect(mine.has(id)).toBe(false);
    for (const id of ids(otherKey.bundle)) expect(mine.has(id)).toBe(false);
    // The pseudonym is not a hash of the local ID anyone could recompute.
    expect(JSON.stringify(result.bundle)).not.toContain(patientResourceId(FACILITY, '9999013'));
  });

  it('reidentify maps the service answer back to the real patient and real dates', () => {
    const entries = (result.bundle['entry'] as { resource: FhirJson }[]).map((e) => e.resource);
    const pseudoPatient = entries.find((r) => r['resourceType'] === 'Patient')!;
    const condition = entries.find((r) => r['resourceType'] === 'Condition')!;
    const pid = (pseudoPatient['identifier'] as FhirJson[])[0]!;
    const answer = {
      resourceType: 'RiskAssessment',
      status: 'final',
      subject: { reference: `Patient/${pseudoPatient['id']}` },
      identifier: [pid],
      basis: [{ reference: `Condition/${condition['id']}` }],
      occurrenceDateTime: shiftFhirDate('2011-12-20T10:30:00+09:00', 123),
      prediction: [{ outcome: { text: `risk for ${pseudoPatient['id']}` }, probabilityDecimal: 0.2, whenRange: { low: { value: 1 } } }],
      note: [{ text: 'mentions hkb-aaaaaaaaaaaaaaaaaaaa which this request never issued' }],
    };
    const back = reidentify(answer, result.key);
    expect(back.resource['subject']).toEqual({ reference: `Patient/${patientResourceId(FACILITY, '9999013')}` });
    expect(back.resource['identifier']).toEqual([{ system: `urn:oid:1.2.392.100495.20.3.51.1${FACILITY}`, value: '9999013' }]);
    expect((back.resource['basis'] as FhirJson[])[0]!['reference']).toMatch(/^Condition\/con-[0-9a-f]{32}$/);
    expect(back.resource['occurrenceDateTime']).toBe('2011-12-20T10:30:00+09:00');
    expect(JSON.stringify(back.resource['prediction'])).toContain(patientResourceId(FACILITY, '9999013'));
    expect(back.unknownPseudonyms).toBe(1);
    expect(() => reidentify('nope', result.key)).toThrow(ExchangeError);
  });
});

describe('de-identification of generated fixtures (every data type, CDA documents, name variants)', () => {
  const SEED = 'ai-deid';
  let tmp: ReturnType<typeof tempDir>;
  let root: string;
  const people: { patients: LocalPatient[]; records: ClinicalRecord[]; cda: Buffer[] }[] = [];

  beforeAll(async () => {
    tmp = tempDir('hakobune-ai-');
    root = path.join(tmp.dir, 'tree');
    await generateFixtures({ out: root, facilities: 3, patients: 6, days: 40, seed: SEED, extended: true });
    const plans = planFacilities({ seed: SEED, facilities: 3 });
    const byPerson = new Map<string, LocalPatient[]>();
    for (const lp of generatePopulation({ seed: SEED, facilities: plans, patients: 6 })) {
      byPerson.set(lp.personId, [...(byPerson.get(lp.personId) ?? []), lp]);
    }
    const files: { facilityId: string; rel: string; abs: string }[] = [];
    for (const f of plans) {
      for (const [base, prefix] of [[path.join(root, f.facilityId), ''], [path.join(root, 'extended', f.facilityId), '']] as const) {
        if (!fs.existsSync(base)) continue;
        for await (const rel of listFiles(base)) files.push({ facilityId: f.facilityId, rel: prefix + rel, abs: path.join(base, rel) });
      }
    }
    for (const patients of byPerson.values()) {
      const records: ClinicalRecord[] = [];
      const cda: Buffer[] = [];
      for (const lp of patients) {
        for (const f of files.filter((x) => x.facilityId === lp.facilityId && x.rel.split('/').includes(lp.localId))) {
          const bytes = fs.readFileSync(f.abs);
          const out = readStoredFile({ facilityId: f.facilityId, path: f.rel, sha256: 'd'.repeat(64), bytes });
          if (out.record) records.push(out.record);
          if (out.record?.category === 'document' && f.rel.endsWith('.xml')) cda.push(bytes);
        }
      }
      people.push({ patients, records, cda });
    }
  }, 120_000);

  afterAll(() => tmp?.remove());

  it('for every person: nothing of theirs from any facility survives, in any form', () => {
    let documents = 0;
    let checked = 0;
    for (const { patients, records, cda } of people) {
      if (records.length === 0) continue;
      const known: KnownPatient = {
        names: patients.flatMap((p) => [
          { family: p.familyKanji, given: p.givenKanji },
          { family: p.familyKana, given: p.givenKana || undefined },
        ]),
        birthDates: patients.map((p) => p.birthDate),
        addresses: patients.map((p) => p.address),
        postalCodes: patients.map((p) => p.postalCode),
        phones: patients.map((p) => p.phone),
        localIds: patients.map((p) => p.localId),
        insuranceNumbers: patients.flatMap((p) => (p.insuranceNumber ? [p.insuranceNumber] : [])),
      };
      const forms = identifierForms(known);
      const { bundle } = bundleOf(records, ALL);
      // The original CDA documents too (recordTarget, narrative), as a document-sharing service would send them.
      for (const [i, xml] of cda.entries()) {
        (bundle['entry'] as { resource: FhirJson }[]).push({
          resource: { resourceType: 'DocumentReference', id: `cda-${i}`, status: 'current', content: [{ attachment: { contentType: 'application/xml', data: xml.toString('base64') } }] },
        });
      }
      documents += cda.length;
      expect(scanForIdentifiers(bundle, forms).length, 'the original has identifiers').toBeGreaterThan(0);
      const out = deidentify(bundle, { ...options({ shiftDays: randomShiftDays(), scope: { secret: SECRET, serviceId: 'svc', subject: patients[0]!.personId } }), identity: identityOfRecords(records) });
      expect(scanForIdentifiers(out.bundle, forms)).toEqual([]);
      checked++;
    }
    expect(checked).toBeGreaterThanOrEqual(4);
    expect(documents).toBeGreaterThan(0);
  });
});

describe('the free-text scrubber', () => {
  const identity = {
    ...emptyIdentity(),
    names: [{ family: '山田', given: '太郎' }, { family: 'ヤマダ', given: 'タロウ' }],
    birthDates: ['1960-05-01'],
    addresses: ['宮城県仙台市青葉区一番町４－１－２　メゾン青葉２０１号室'],
    postalCodes: ['980-0811'],
    phones: ['022-222-1234'],
    localIds: ['0001234'],
    insuranceNumbers: ['06123456'],
  };
  const s = compileScrubber(identity);
  const cases: [string, string][] = [
    ['山田 太郎', '[氏名]'],
    ['山田　太郎 様', '[氏名] 様'],
    ['やまだ たろう', '[氏名]'],
    ['ﾔﾏﾀﾞ ﾀﾛｳ', '[氏名]'],
    ['ヤマダタロウ', '[氏名]'],
    ['1960-05-01生', '[生年月日]生'],
    ['19600501', '[生年月日]'],
    ['1960/5/1', '[生年月日]'],
    ['１９６０年５月１日', '[生年月日]'],
    ['昭和35年5月1日', '[生年月日]'],
    ['S35.5.1', '[生年月日]'],
    ['s.35.05.01', '[生年月日]'],
    ['昭35/5/1', '[生年月日]'],
    ['仙台市青葉区一番町4-1-2', '[住所]'],
    ['〒980-0811', '〒[郵便番号]'],
    ['TEL 022-222-1234', 'TEL [電話番号]'],
    ['TEL (022)222-1234', 'TEL [電話番号]'],
    ['TEL ０２２２２２１２３４', 'TEL [電話番号]'],
    ['TEL +81-22-222-1234', 'TEL +[電話番号]'],
    ['ID:0001234', 'ID:[ID]'],
    ['ID 1234 ', 'ID [ID] '],
    ['保険者番号06123456', '保険者番号[保険番号]'],
  ];
  it.each(cases)('%s', (input, expected) => {
    expect(s.scrub(input).text).toBe(expected);
  });

  it('leaves other numbers, dates and words alone', () => {
    for (const t of ['Hb 7.2 g/dl', '12345', '00012345', '1960-05-02', 'S35.5.2', '山中花子', '太田', '022-222-1235', 'ID 91234']) {
      expect(s.scrub(t).text, t).toBe(t);
    }
  });

  it('counts what it replaced, per kind', () => {
    expect(s.scrub('山田太郎 S35.5.1 022-222-1234 山田').counts).toEqual({ name: 2, 'birth-date': 1, phone: 1 });
  });
});

describe('bad input', () => {
  it('refuses what is not a Bundle, with a clear error', () => {
    expect(() => deidentify({ resourceType: 'Patient' }, options())).toThrow(/only a FHIR Bundle/);
    expect(() => deidentify(null, options())).toThrow(ExchangeError);
    expect(() => deidentify({ resourceType: 'Bundle', entry: {} }, options())).toThrow(/Bundle.entry must be an array/);
    expect(() => deidentify({ resourceType: 'Bundle', entry: [{ resource: { id: 'x' } }] }, options())).toThrow(/resourceType/);
    expect(() => deidentify({ resourceType: 'Bundle', entry: [] }, options({ shiftDays: 1.5 }))).toThrow(/whole number/);
    expect(() => deidentify({ resourceType: 'Bundle', entry: [{ resource: { resourceType: 'Patient', id: 'p' } }] }, options({ scope: { secret: Buffer.alloc(8), serviceId: 's', subject: 'x' } }))).toThrow(/at least 32 bytes/);
  });

  it('an empty Bundle stays empty', () => {
    const r = deidentify({ resourceType: 'Bundle', type: 'collection' }, options());
    expect(r.bundle).toEqual({ resourceType: 'Bundle', type: 'collection', entry: [] });
    expect(r.report).toEqual({ resources: 0, counts: {} });
  });
});

function allStringsAt(v: unknown, key: string): string[] {
  const out: string[] = [];
  const walk = (x: unknown) => {
    if (Array.isArray(x)) x.forEach(walk);
    else if (x && typeof x === 'object') for (const [k, y] of Object.entries(x)) (k === key && typeof y === 'string' ? out.push(y) : walk(y));
  };
  walk(v);
  return out;
}

function datesByPath(b: FhirJson): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (x: unknown, p: string) => {
    if (typeof x === 'string') {
      if (/^\d{4}-\d{2}-\d{2}(T.*)?$/.test(x)) out.set(p, x);
    } else if (Array.isArray(x)) x.forEach((y, i) => walk(y, `${p}[${i}]`));
    else if (x && typeof x === 'object') for (const [k, y] of Object.entries(x)) if (k !== 'identifier') walk(y, `${p}.${k}`);
  };
  walk(b, '$');
  return out;
}

const dayNumber = (v: string) => Math.round(Date.UTC(+v.slice(0, 4), +v.slice(5, 7) - 1, +v.slice(8, 10)) / 86_400_000);
