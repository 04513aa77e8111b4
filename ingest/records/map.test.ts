import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { SAMPLES_ROOT } from '../../test/support/tmp.js';
import { decodeIso2022jp } from '../hl7/decode.js';
import { readMessage } from '../hl7/reader.js';
import { mapMessage, subjectOf } from './map.js';
import type {
  AllergyRecord,
  DiagnosisRecord,
  DietRecord,
  EncounterRecord,
  ExamRecord,
  LabRecord,
  MedicationAdministrationRecord,
  MedicationOrderRecord,
  PatientRecord,
} from './types.js';

const PATIENT = path.join(SAMPLES_ROOT, '999/901/9999013');

/** The one sample of a data type in the valid patient's folder, read and mapped. */
function sample<T>(dataType: string): { content: T; subject: ReturnType<typeof subjectOf> } {
  for (const date of fs.readdirSync(PATIENT)) {
    const dir = path.join(PATIENT, date, dataType);
    if (!fs.existsSync(dir)) continue;
    const [file] = fs.readdirSync(dir);
    const d = decodeIso2022jp(fs.readFileSync(path.join(dir, file!)));
    if (!d.ok) throw new Error(d.reason);
    const msg = readMessage(d.text);
    return { content: mapMessage(dataType, msg) as T, subject: subjectOf(msg) };
  }
  throw new Error(`no sample of ${dataType}`);
}

describe('mapping the JAMI guideline samples', () => {
  it('ADT-00: demographics with kanji and kana names, address, phones, insurance, body measures, allergy', () => {
    const { content: p } = sample<PatientRecord>('ADT-00');
    expect(p.name).toEqual({ kanji: { family: '患者', given: '太郎' }, kana: { family: 'カンジャ', given: 'タロウ' } });
    expect(p.identifier).toBe('9999013');
    expect(p.birthDate).toBe('1948-04-05');
    expect(p.sex).toBe('male');
    expect(p.address).toEqual({ postalCode: '422-8033', country: 'JPN', use: 'H', text: '静岡県静岡市登呂１－３－５' });
    expect(p.phones).toEqual([
      { use: 'PRN', number: '054-000-0000' },
      { use: 'EMR', number: '03-5999-9999' },
      { use: 'WPN', number: '03-3599-9993' },
    ]);
    expect(p.insurance).toEqual([
      {
        plan: { code: '67', display: '国民健康保険退職者', system: 'JHSD0001' },
        insurerNumber: '67999991',
        relationship: { code: 'SEL', display: '本人', system: 'HL70063' },
        start: '2009-12-01',
      },
    ]);
    expect(p.observations.map((o) => [o.code.display, o.number ?? o.coded?.code, o.unit?.code])).toEqual([
      ['身長', 167.8, 'cm'],
      ['体重', 63.5, 'kg'],
      ['血液型-ABO式', 'A', undefined],
    ]);
    expect(p.allergies[0]).toMatchObject({ type: { code: 'DA' }, allergen: { display: 'ペニシリン' } });
    expect(p.deleted).toBe(false);
  });

  it('ADT-22 / ADT-42 / ADT-52: admission, transfer and discharge with locations and dates', () => {
    const adm = sample<EncounterRecord>('ADT-22').content;
    expect(adm).toMatchObject({ event: 'admission', cancelled: false, patientClass: 'inpatient', admittedAt: '2011-11-20T16:00:00+09:00' });
    expect(adm.location).toEqual({ ward: '32', room: '302', bed: '1' });
    const tr = sample<EncounterRecord>('ADT-42').content;
    expect(tr).toMatchObject({ event: 'transfer', location: { room: '305' }, priorLocation: { room: '302' }, occurredAt: '2011-12-20T20:00:00+09:00' });
    const dis = sample<EncounterRecord>('ADT-52').content;
    expect(dis).toMatchObject({ event: 'discharge', dischargedAt: '2011-12-20T12:00:00+09:00', attending: { id: '607', family: '医師', given: '一郎' } });
  });

  it('ADT-61: four allergies with JLAC10 / HOT codes, severity, reaction and onset', () => {
    const { content: a, subject } = sample<AllergyRecord>('ADT-61');
    expect(subject.name.kanji).toEqual({ family: '山田', given: '太郎' });
    expect(subject.name.kana).toEqual({ family: 'ヤマダ', given: 'タロウ' });
    expect(a.allergies.map((x) => [x.type?.code, x.allergen.code, x.allergen.system, x.allergen.display, x.severity?.code])).toEqual([
      ['LA', '5A1002216023023', 'JC10', 'スギ', 'MI'],
      ['FA', '5A1002411023006', 'JC10', 'ソバ', 'MO'],
      ['EA', '5A1102700023023', 'JC10', 'ハウスダスト', 'MI'],
      ['DA', '106824501', 'HOT9', 'アリナミン', 'MO'],
    ]);
    expect(a.allergies[0]).toMatchObject({ reaction: '目のかゆみ', onset: '1996-01' });
    expect(a.allergies[1]).toMatchObject({ onsetText: '小学校低学年の頃' });
    expect(a.allergies[3]).toMatchObject({ onset: '2007-07-10', reaction: 'のどの渇きが止まらない' });
  });

  it('PPR-01: a diagnosis with MEDIS and ICD-10 codes, outcome, onset and primary flag', () => {
    const d = sample<DiagnosisRecord>('PPR-01').content.diagnoses[0]!;
    expect(d.code).toEqual({ code: '20054174', display: '胃炎', system: 'MDCDX2' });
    expect(d.icd10).toEqual({ code: 'K297', system: 'I10' });
    expect(d).toMatchObject({ onset: '2011-08-31', recordedAt: '2011-09-15', primary: true, outcome: { code: 'N', display: '回復せず' }, setting: '外来時' });
    expect(d.modifiers.map((m) => m.code)).toContain('TSQF');
  });

  it('OMP-01: three prescribed drugs with HOT9 codes, doses, frequency and days', () => {
    const items = sample<MedicationOrderRecord>('OMP-01').content.items;
    expect(items.map((i) => [i.medication.code, i.medication.display, i.doseMin, i.doseUnit?.code, i.totalDailyDose?.value, i.days, i.dispenseAmount])).toEqual([
      ['108665201', 'ダーゼン錠（５mg)', 1, 'TAB', 3, 5, 15],
      ['110626901', 'パンスポリンＴ錠（１００mg)', 2, 'TAB', 6, 5, 30],
      ['100607002', 'アレピアチン１０倍散', 50, 'MG', 100, 14, 1400],
    ]);
    expect(items[0]!.frequency).toEqual({ code: '1013044400000000', display: '内服・経口・１日３回朝昼夕食後', system: 'JAMISDP01' });
    expect(items[2]!.frequency?.display).toBe('内服・経口・１日２回朝夕食後');
    expect(items[0]!.route).toMatchObject({ code: 'PO' });
    expect(items[0]!.order).toMatchObject({ orderNo: '000000011000185', group: '1', orderer: { family: '医師', given: '一郎' }, department: { code: '01', display: '内科' } });
    expect(items[0]!.category.map((c) => c.code)).toEqual(['OHP', 'OHI']);
  });

  it('OMP-02: an injection mixture (RXC base and additive) with volume, rate and period', () => {
    const items = sample<MedicationOrderRecord>('OMP-02').content.items;
    expect(items).toHaveLength(3);
    expect(items[0]!.components).toEqual([
      { role: 'B', medication: { code: '620007329', display: 'ソリタ－Ｔ３号輸液５００ｍＬ', system: 'HOT9' }, amount: { value: 1, unit: { code: 'HON', display: '本', system: 'MR9P' } } },
      { role: 'A', medication: { code: '620002559', display: 'アドナ注（静脈用）50mg', system: 'HOT9' }, amount: { value: 1, unit: { code: 'AMP', display: 'アンプル', system: 'MR9P' } } },
    ]);
    expect(items[0]).toMatchObject({ doseMin: 510, doseUnit: { code: 'ML' }, rate: { value: 102, unit: { code: 'ml/hr' } }, start: '2011-07-01T08:00:00+09:00', end: '2011-07-01T13:00:00+09:00', route: { code: 'IV' }, device: { code: 'IVP' } });
  });

  it('OMP-11 / OMP-12: administrations with drug, amount, time and performer', () => {
    const given = sample<MedicationAdministrationRecord>('OMP-11').content.items;
    expect(given.map((i) => [i.medication.code, i.amount, i.unit?.code, i.startedAt])).toEqual([
      ['108665201', 1, 'TAB', '2011-07-01T08:30:00+09:00'],
      ['110626901', 2, 'TAB', '2011-07-01T08:30:00+09:00'],
    ]);
    const inj = sample<MedicationAdministrationRecord>('OMP-12').content.items;
    expect(inj[0]).toMatchObject({ medication: { code: '620007329' }, startedAt: '2011-07-01T08:05:21+09:00', endedAt: '2011-07-01T13:05:43+09:00', note: '左手に実施', completion: 'CP', performer: { family: '看護', given: '花子' }, route: { code: 'IV' } });
  });

  it('OML-01: specimen order with two specimens and JLAC10 test codes', () => {
    const groups = sample<LabRecord>('OML-01').content.groups;
    expect(groups.map((g) => [g.service.display, g.specimen?.type?.display, g.observations.map((o) => o.code.code)])).toEqual([
      ['生化学的検査', '血清', ['3A010000002327101', '3J010000002327101', '3B035000002327201', '3B050000002327201']],
      ['血液学的検査', '血漿', ['2B0300000022311', '2B100000002231101', '2B120000002206201']],
    ]);
    expect(groups[0]!.observations[0]!.code.alternate).toEqual({ code: '10222', display: 'ＴＰ', system: '99X03' });
  });

  it('OML-11: lab results with values, units, reference ranges', () => {
    const [g] = sample<LabRecord>('OML-11').content.groups;
    expect(g!.specimen).toMatchObject({ id: '000000001219001', type: { code: '023', display: '血清' }, collectedAt: '2011-12-19T15:00:00+09:00' });
    expect(g!.order).toMatchObject({ control: 'SC', orderNo: '000000011000354' });
    expect(g!.observations.map((o) => [o.code.code, o.code.display, o.number, o.unit?.code, o.low, o.high])).toEqual([
      ['3A016000002327102', 'A/G比', 1.7, undefined, 1.2, 2],
      ['3A010000002327101', '総蛋白', 7.2, 'g/dl', 6.7, 8.3],
      ['3A015000002327101', 'アルブミン', 4.9, 'g/dl', 3.7, 5.5],
    ]);
  });

  it('OMG-01..03: radiology, endoscopy and physiology orders', () => {
    const rad = sample<ExamRecord>('OMG-01').content;
    expect(rad).toMatchObject({ modality: 'radiology', phase: 'order' });
    expect(rad.groups.map((g) => g.service.display)).toContain('胸部.Ｘ線単純撮影.立位正面(A→P)');
    expect(rad.groups[2]).toMatchObject({ order: { orderNo: '000201101200101' }, parentOrderNo: '000201101200100', service: { system: 'JJ1017' } });
    const endo = sample<ExamRecord>('OMG-02').content;
    expect(endo.groups[1]!.observations.map((o) => o.text)).toEqual(['重度', '12月19日強い上腹部痛を感じた。翌日になっても軽快しなかったため、来院。', '胃潰瘍の疑い', '臨床病名に対する精査']);
    const ecg = sample<ExamRecord>('OMG-03').content;
    expect(ecg.groups[0]).toMatchObject({ service: { code: '9A110', display: '標準１２誘導心電図', system: 'JC10' } });
  });

  it('OMG-11..13: imaging studies with DICOM UIDs, endoscopy findings, ECG measurements', () => {
    const us = sample<ExamRecord>('OMG-11');
    expect(us.subject.name.kanji).toEqual({ family: '患者', given: '花子' });
    expect(us.content.groups[0]!.studyUids).toEqual(['1.2.392.1114.20045.43233.5.300001']);
    const endo = sample<ExamRecord>('OMG-12').content;
    const drugs = endo.groups.flatMap((g) => g.observations).filter((o) => o.valueType === 'ZRD');
    expect(drugs.map((d) => d.coded?.code)).toEqual(['100555401', '101682602', '111963301']);
    const ecg = sample<ExamRecord>('OMG-13').content.groups[0]!;
    expect(ecg.observations.find((o) => o.code.display === '心拍数')).toMatchObject({ number: 67, unit: { code: 'bpm' } });
    expect(ecg.observations.find((o) => o.code.code === '9A100&IMP')?.text).toBe('心筋虚血疑い');
    expect(ecg.observations.find((o) => o.code.code === '32774')).toMatchObject({ number: 25, unit: { code: 'degree' } });
  });

  it('OMD: a diet order with frequency, start and instructions', () => {
    const d = sample<DietRecord>('OMD').content;
    expect(d).toMatchObject({ frequency: { code: 'TID', display: '１日３回' }, start: '2011-10-16T07:00:00+09:00', order: { orderNo: '123456789012345' } });
    expect(d.diets).toEqual([{ type: 'D', code: { code: '001', system: '99XY3' }, instructions: '塩分控えめ' }]);
  });
});
