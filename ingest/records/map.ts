import { isoOrUndefined } from '../hl7/datetime.js';
import { pick, rawField, repetition, repetitions, segment, value, type Message, type Segment } from '../hl7/reader.js';
import type {
  AdministrationItem,
  AllergyEntry,
  ClinicalContent,
  Coded,
  DiagnosisEntry,
  EncounterRecord,
  Location,
  MedicationOrderItem,
  NamePair,
  ObservationValue,
  OrderHeader,
  PatientRecord,
  Person,
  Quantity,
  ServiceGroup,
  Specimen,
} from './types.js';

/**
 * Maps a read HL7 message of a given SS-MIX2 data type to its clinical content. Field meanings
 * follow the SS-MIX2 standardized storage spec Ver.1.2 (JAHIS profiles of HL7 v2.5) as the JAMI
 * SS-MIX2 -> FHIR mapping guide reads them. Pure; missing fields give undefined, never throws
 * for content (quality checks report what is missing).
 */
export function mapMessage(dataType: string, msg: Message): ClinicalContent {
  switch (dataType) {
    case 'ADT-00':
      return mapPatient(msg);
    case 'ADT-61':
      return { kind: 'allergy', allergies: msg.segments.filter((s) => s.id === 'IAM').map(iamEntry) };
    case 'PPR-01':
      return mapDiagnoses(msg);
    case 'OMD':
      return mapDiet(msg);
    case 'OMP-01':
      return { kind: 'medication-order', form: 'prescription', items: mapRde(msg) };
    case 'OMP-02':
      return { kind: 'medication-order', form: 'injection', items: mapRde(msg) };
    case 'OMP-11':
      return { kind: 'medication-administration', form: 'prescription', items: mapRas(msg) };
    case 'OMP-12':
      return { kind: 'medication-administration', form: 'injection', items: mapRas(msg) };
    case 'OML-01':
      return { kind: 'lab', phase: 'order', groups: mapGroups(msg) };
    case 'OML-11':
      return { kind: 'lab', phase: 'result', groups: mapGroups(msg) };
    case 'OMG-01':
      return { kind: 'exam', modality: 'radiology', phase: 'order', groups: mapGroups(msg) };
    case 'OMG-02':
      return { kind: 'exam', modality: 'endoscopy', phase: 'order', groups: mapGroups(msg) };
    case 'OMG-03':
      return { kind: 'exam', modality: 'physiology', phase: 'order', groups: mapGroups(msg) };
    case 'OMG-11':
      return { kind: 'exam', modality: 'radiology', phase: 'result', groups: mapGroups(msg) };
    case 'OMG-12':
      return { kind: 'exam', modality: 'endoscopy', phase: 'result', groups: mapGroups(msg) };
    case 'OMG-13':
      return { kind: 'exam', modality: 'physiology', phase: 'result', groups: mapGroups(msg) };
    default:
      if (dataType.startsWith('ADT-')) return mapEncounter(msg);
      throw new Error(`no mapping for data type ${dataType}`);
  }
}

// ---------- data types ----------

/** CWE/CE/CNE at component level: code^text^system^altCode^altText^altSystem. */
export function codedFrom(raw: string, seg: Segment): Coded | undefined {
  if (raw === '') return undefined;
  const d = seg.delimiters;
  let comps = raw.split(d.component);
  if (raw.includes(d.escape)) comps = comps.map((c) => unescapeIn(c, seg));
  let [code = '', display = '', system = ''] = comps;
  // TQ1-3 as JAHIS writes it: the whole CWE in subcomponents of component 1.
  if (comps.length === 1 && code.includes(d.subcomponent)) {
    [code = '', display = '', system = ''] = code.split(d.subcomponent);
  }
  if (code === '' && display === '') return undefined;
  const out: Coded = { code };
  if (display) out.display = display;
  if (system) out.system = system;
  const [, , , aCode = '', aDisplay = '', aSystem = ''] = comps;
  if (aCode || aDisplay) {
    out.alternate = { code: aCode };
    if (aDisplay) out.alternate.display = aDisplay;
    if (aSystem) out.alternate.system = aSystem;
  }
  return out;
}

function unescapeIn(v: string, seg: Segment): string {
  return v.includes(seg.delimiters.escape) ? pick(v, 1, 1, 0, { ...seg.delimiters, component: '\u0000', subcomponent: '\u0001', repetition: '\u0002' }) : v;
}

export function coded(seg: Segment | undefined, n: number, rep = 0): Coded | undefined {
  if (!seg) return undefined;
  return codedFrom(repetition(seg, n, rep), seg);
}

function codedList(seg: Segment | undefined, n: number): Coded[] {
  if (!seg) return [];
  return repetitions(seg, n)
    .map((r) => codedFrom(r, seg))
    .filter((c): c is Coded => c !== undefined);
}

/** XCN: id^family^given (a few systems put the whole name in family). */
function person(seg: Segment | undefined, n: number): Person | undefined {
  if (!seg || rawField(seg, n) === '') return undefined;
  const p: Person = {};
  const id = value(seg, n, 1);
  const family = value(seg, n, 2);
  const given = value(seg, n, 3);
  if (id) p.id = id;
  if (family) p.family = family;
  if (given) p.given = given;
  return Object.keys(p).length ? p : undefined;
}

function num(v: string): number | undefined {
  if (v.trim() === '') return undefined;
  const n = Number(v.trim());
  return Number.isFinite(n) ? n : undefined;
}

function str(v: string): string | undefined {
  return v === '' ? undefined : v;
}

function date(seg: Segment | undefined, n: number): string | undefined {
  return isoOrUndefined(value(seg, n));
}

function location(seg: Segment | undefined, n: number): Location | undefined {
  if (!seg || rawField(seg, n) === '') return undefined;
  const l: Location = {};
  const ward = value(seg, n, 1);
  const room = value(seg, n, 2);
  const bed = value(seg, n, 3);
  if (ward) l.ward = ward;
  if (room) l.room = room;
  if (bed) l.bed = bed;
  return l;
}

/** A copy without the undefined members (never `delete`: it makes objects slow to use). */
function compact<T extends object>(o: T): T {
  const out = {} as Record<string, unknown>;
  for (const k in o) {
    const v = (o as Record<string, unknown>)[k];
    if (v !== undefined) out[k] = v;
  }
  return out as T;
}

// ---------- PID: the subject of every message ----------

const SEX: Record<string, PatientRecord['sex']> = { M: 'male', F: 'female', O: 'other', U: 'unknown', A: 'other', N: 'unknown' };

/** PID-5 repetitions: name type code (component 7) L, representation (component 8) I kanji, P kana. */
export function namesOf(pid: Segment | undefined): PatientRecord['name'] {
  const out: PatientRecord['name'] = {};
  if (!pid) return out;
  for (const rep of repetitions(pid, 5)) {
    const comps = rep.split(pid.delimiters.component);
    const pair: NamePair = { family: unescapeIn(comps[0] ?? '', pid), given: unescapeIn(comps[1] ?? '', pid) };
    if (pair.family === '' && pair.given === '') continue;
    const repr = comps[7] ?? '';
    if (repr === 'I') out.kanji ??= pair;
    else if (repr === 'P') out.kana ??= pair;
    else out.other ??= pair;
  }
  return out;
}

export function subjectOf(msg: Message) {
  const pid = segment(msg, 'PID');
  const s: { identifier: string; name: PatientRecord['name']; birthDate?: string; sex?: PatientRecord['sex'] } = {
    identifier: value(pid, 3),
    name: namesOf(pid),
  };
  const birth = date(pid, 7);
  if (birth) s.birthDate = birth;
  const sex = SEX[value(pid, 8)];
  if (sex) s.sex = sex;
  return s;
}

function mapPatient(msg: Message): PatientRecord {
  const pid = segment(msg, 'PID');
  const subject = subjectOf(msg);
  const rec: PatientRecord = {
    kind: 'patient',
    identifier: subject.identifier,
    name: subject.name,
    phones: [],
    insurance: [],
    observations: msg.segments.filter((s) => s.id === 'OBX').map(observation),
    allergies: msg.segments.filter((s) => s.id === 'AL1').map(al1Entry),
    deleted: value(segment(msg, 'MSH'), 9, 2) === 'A23',
  };
  if (subject.birthDate) rec.birthDate = subject.birthDate;
  if (subject.sex) rec.sex = subject.sex;
  if (pid && rawField(pid, 11) !== '') {
    // XAD: street^other^city^state^zip^country^type^other geographic designation (the full
    // address as Japanese systems write it, in component 8).
    rec.address = compact({
      postalCode: str(value(pid, 11, 5)),
      country: str(value(pid, 11, 6)),
      use: str(value(pid, 11, 7)),
      text: str(value(pid, 11, 8)) ?? str([1, 2, 3, 4].map((c) => value(pid, 11, c)).join('')),
    });
  }
  for (const n of [13, 14]) {
    repetitions(pid, n).forEach((_, r) => {
      const number = value(pid, n, 12, 1, r) || value(pid, n, 1, 1, r);
      if (number) rec.phones.push(compact({ use: str(value(pid, n, 2, 1, r)), number }));
    });
  }
  for (const in1 of msg.segments.filter((s) => s.id === 'IN1')) {
    rec.insurance.push(
      compact({
        plan: coded(in1, 2),
        insurerNumber: str(value(in1, 3)),
        relationship: coded(in1, 17),
        start: date(in1, 12),
        end: date(in1, 13),
      }),
    );
  }
  const updated = date(pid, 33);
  if (updated) rec.lastUpdated = updated;
  return rec;
}

// ---------- ADT ----------

const TRIGGERS: Record<string, [EncounterRecord['event'], boolean]> = {
  A04: ['visit', false],
  A14: ['admission-planned', false],
  A27: ['admission-planned', true],
  A01: ['admission', false],
  A11: ['admission', true],
  A21: ['leave', false],
  A52: ['leave', true],
  A22: ['return', false],
  A53: ['return', true],
  A15: ['transfer-planned', false],
  A26: ['transfer-planned', true],
  A02: ['transfer', false],
  A12: ['transfer', true],
  A16: ['discharge-planned', false],
  A25: ['discharge-planned', true],
  A03: ['discharge', false],
  A13: ['discharge', true],
  A54: ['attending-change', false],
  A55: ['attending-change', true],
};

const PATIENT_CLASS: Record<string, EncounterRecord['patientClass']> = { I: 'inpatient', O: 'outpatient', E: 'emergency' };

function mapEncounter(msg: Message): EncounterRecord {
  const trigger = value(segment(msg, 'MSH'), 9, 2);
  const [event, cancelled] = TRIGGERS[trigger] ?? ['visit', false];
  const pv1 = segment(msg, 'PV1');
  const evn = segment(msg, 'EVN');
  const cls = value(pv1, 2);
  return compact<EncounterRecord>({
    kind: 'encounter',
    trigger,
    event,
    cancelled,
    patientClass: cls ? (PATIENT_CLASS[cls] ?? 'other') : undefined,
    location: location(pv1, 3),
    priorLocation: location(pv1, 6),
    attending: person(pv1, 7),
    department: str(value(pv1, 10)),
    admittedAt: date(pv1, 44),
    dischargedAt: date(pv1, 45),
    occurredAt: date(evn, 6) ?? date(evn, 2),
  });
}

// ---------- allergies ----------

function iamEntry(iam: Segment): AllergyEntry {
  const onsetText = value(iam, 12) || (isoOrUndefined(value(iam, 13)) ? '' : value(iam, 13));
  return compact<AllergyEntry>({
    type: coded(iam, 2),
    allergen: coded(iam, 3) ?? { code: '' },
    severity: coded(iam, 4),
    reaction: str(value(iam, 5)),
    action: str(value(iam, 6)),
    onset: date(iam, 11),
    onsetText: str(onsetText),
  });
}

function al1Entry(al1: Segment): AllergyEntry {
  return compact<AllergyEntry>({
    type: coded(al1, 2),
    allergen: coded(al1, 3) ?? { code: '' },
    severity: coded(al1, 4),
    reaction: str(value(al1, 5)),
    onset: date(al1, 6),
  });
}

// ---------- diagnoses (PPR^ZD1: PRB + JAHIS ZPR) ----------

function mapDiagnoses(msg: Message) {
  const diagnoses: DiagnosisEntry[] = [];
  let current: DiagnosisEntry | undefined;
  for (const seg of msg.segments) {
    if (seg.id === 'PRB') {
      const cls = seg.fields[10] ?? '';
      current = compact<DiagnosisEntry>({
        action: str(value(seg, 1)),
        recordedAt: date(seg, 2),
        code: coded(seg, 3) ?? { code: '' },
        problemId: str(value(seg, 4)),
        resolvedAt: date(seg, 9),
        // PRB-10 classification: ICD-10 in components 1-3, the care setting in 4-6.
        icd10: value(seg, 10, 1) ? compact<Coded>({ code: value(seg, 10, 1), system: str(value(seg, 10, 3)) }) : undefined,
        setting: cls ? str(value(seg, 10, 5)) : undefined,
        outcome: coded(seg, 14),
        onset: date(seg, 16),
        text: str(value(seg, 17)),
        primary: value(seg, 18) ? value(seg, 18) === '1' : undefined,
        modifiers: [],
      });
      diagnoses.push(current);
    } else if (seg.id === 'ZPR' && current) {
      for (let n = 1; n < seg.fields.length; n++) {
        const c = coded(seg, n);
        if (c) current.modifiers.push(c);
      }
    }
  }
  const orc = segment(msg, 'ORC');
  return compact({ kind: 'diagnosis' as const, diagnoses, orderer: person(orc, 12), department: coded(orc, 17) });
}

// ---------- orders ----------

function orderHeader(orc: Segment | undefined): OrderHeader {
  if (!orc) return {};
  return compact<OrderHeader>({
    control: str(value(orc, 1)),
    orderNo: str(value(orc, 2)),
    fillerNo: str(value(orc, 3)),
    group: str(value(orc, 4)),
    orderedAt: date(orc, 9),
    enterer: person(orc, 10),
    orderer: person(orc, 12),
    department: coded(orc, 17),
    patientClass: str(value(orc, 29)),
  });
}

function quantity(v: string | undefined, unit?: Coded): Quantity | undefined {
  const n = v === undefined ? undefined : num(v);
  if (n === undefined) return undefined;
  return unit ? { value: n, unit } : { value: n };
}

function mapRde(msg: Message): MedicationOrderItem[] {
  const items: MedicationOrderItem[] = [];
  let orc: Segment | undefined;
  let item: MedicationOrderItem | undefined;
  for (const seg of msg.segments) {
    switch (seg.id) {
      case 'ORC':
        orc = seg;
        item = undefined;
        break;
      case 'RXE': {
        // RXE-19 total daily dose is a CQ: quantity^unit, the unit's CWE in subcomponents.
        const dailyUnit = codedFrom(rawField(seg, 19).split(seg.delimiters.component)[1] ?? '', seg);
        item = compact<MedicationOrderItem>({
          order: orderHeader(orc),
          medication: coded(seg, 2) ?? { code: '' },
          components: [],
          doseMin: num(value(seg, 3)),
          doseMax: num(value(seg, 4)),
          doseUnit: coded(seg, 5),
          dosageForm: coded(seg, 6),
          instruction: str(value(seg, 7, 2) || value(seg, 7, 1)),
          dispenseAmount: num(value(seg, 10)),
          dispenseUnit: coded(seg, 11),
          prescriptionNo: str(value(seg, 15)),
          totalDailyDose: quantity(value(seg, 19, 1), dailyUnit),
          category: codedList(seg, 21),
          rate: quantity(value(seg, 23), coded(seg, 24)),
        });
        items.push(item);
        break;
      }
      case 'TQ1':
        if (item) {
          const frequency = coded(seg, 3);
          if (frequency) item.frequency = frequency;
          const days = value(seg, 6, 1);
          const n = days && value(seg, 6, 2).toLowerCase() === 'd' ? num(days) : undefined;
          if (n !== undefined) item.days = n;
          const start = date(seg, 7);
          const end = date(seg, 8);
          if (start) item.start = start;
          if (end) item.end = end;
        }
        break;
      case 'RXR':
        if (item) {
          Object.assign(item, compact({ route: coded(seg, 1), site: coded(seg, 2), device: coded(seg, 3) }));
        }
        break;
      case 'RXC':
        if (item) {
          item.components.push(
            compact({ role: value(seg, 1), medication: coded(seg, 2) ?? { code: '' }, amount: quantity(value(seg, 3), coded(seg, 4)) }),
          );
        }
        break;
    }
  }
  return items;
}

function mapRas(msg: Message): AdministrationItem[] {
  const items: AdministrationItem[] = [];
  let orc: Segment | undefined;
  let group: AdministrationItem[] = [];
  for (const seg of msg.segments) {
    if (seg.id === 'ORC') {
      orc = seg;
      group = [];
    } else if (seg.id === 'RXA') {
      const item = compact<AdministrationItem>({
        order: orderHeader(orc),
        startedAt: date(seg, 3),
        endedAt: date(seg, 4),
        medication: coded(seg, 5) ?? { code: '' },
        amount: num(value(seg, 6)),
        unit: coded(seg, 7),
        note: str(value(seg, 9, 2) || value(seg, 9, 1)),
        performer: person(seg, 10),
        location: location(seg, 11),
        rate: str(value(seg, 12)),
        completion: str(value(seg, 20)),
        recordedAt: date(seg, 22),
      });
      items.push(item);
      group.push(item);
    } else if (seg.id === 'RXR') {
      // One RXR follows the RXAs of an order and applies to all of them.
      for (const it of group) Object.assign(it, compact({ route: coded(seg, 1), device: coded(seg, 3) }));
    }
  }
  return items;
}

// ---------- OBX ----------

/** Reference range "low-high" (OBX-7) as numbers when both sides are numeric. */
export function parseRange(range: string): { low?: number; high?: number } {
  const m = /^\s*(-?\d+(?:\.\d+)?)?\s*[-~〜]\s*(-?\d+(?:\.\d+)?)?\s*$/.exec(range);
  if (!m) return {};
  const out: { low?: number; high?: number } = {};
  if (m[1] !== undefined) out.low = Number(m[1]);
  if (m[2] !== undefined) out.high = Number(m[2]);
  return out;
}

export function observation(obx: Segment): ObservationValue {
  const valueType = value(obx, 2);
  const raw5 = repetition(obx, 5);
  const coded5 = valueType === 'CWE' || valueType === 'CE' || valueType === 'CNE' ? codedFrom(raw5, obx) : undefined;
  // XCN / ZRD values: show the components joined; the coded form keeps the parts.
  const text = coded5?.display ?? (valueType === 'XCN' || valueType === 'ZRD' ? pick(raw5, 1, 1, 0, obx.delimiters) : unescapeIn(raw5, obx));
  const range = value(obx, 7);
  const o: ObservationValue = compact<ObservationValue>({
    setId: str(value(obx, 1)),
    valueType,
    code: codedFrom(repetition(obx, 3), obx) ?? { code: '' },
    subId: str(value(obx, 4)),
    text,
    number: valueType === 'NM' ? num(raw5) : undefined,
    coded: coded5 ?? (valueType === 'ZRD' || valueType === 'XCN' ? codedFrom(raw5, obx) : undefined),
    unit: coded(obx, 6),
    referenceRange: str(range),
    ...parseRange(range),
    abnormalFlags: repetitions(obx, 8).filter((f) => f !== ''),
    status: str(value(obx, 11)),
    observedAt: date(obx, 14),
  });
  return o;
}

// ---------- ORC/OBR groups (OML, OUL, OMG, OMI, ORU) ----------

function mapGroups(msg: Message): ServiceGroup[] {
  const groups: ServiceGroup[] = [];
  let orc: Segment | undefined;
  let specimen: Specimen | undefined;
  let group: ServiceGroup | undefined;
  let prev = '';
  for (const seg of msg.segments) {
    switch (seg.id) {
      case 'SPM':
        specimen = compact<Specimen>({ id: str(value(seg, 2)), type: coded(seg, 4), collectedAt: date(seg, 17) });
        if (group && prev === 'OBR') group.specimen = specimen;
        break;
      case 'ORC':
        // OUL^R22 writes ORC after its OBR: then it belongs to that group.
        if (group && prev === 'OBR' && !group.order.control) group.order = orderHeader(seg);
        else orc = seg;
        break;
      case 'OBR':
        group = compact<ServiceGroup>({
          order: orc ? orderHeader(orc) : {},
          service: coded(seg, 4) ?? { code: '' },
          observedAt: date(seg, 7),
          reportedAt: date(seg, 22),
          resultStatus: str(value(seg, 25)),
          parentOrderNo: str(value(seg, 29)) ?? (orc ? str(value(orc, 8)) : undefined),
          specimen,
          observations: [],
          studyUids: [],
        });
        if (!group.order.orderNo && value(seg, 2)) group.order.orderNo = value(seg, 2);
        groups.push(group);
        orc = undefined;
        break;
      case 'OBX':
        group?.observations.push(observation(seg));
        break;
      case 'IPC':
        if (group) {
          const uid = value(seg, 3);
          if (uid && !group.studyUids.includes(uid)) group.studyUids.push(uid);
        }
        break;
    }
    prev = seg.id;
  }
  return groups;
}

// ---------- diet ----------

function mapDiet(msg: Message) {
  const tq1 = segment(msg, 'TQ1');
  return compact({
    kind: 'diet' as const,
    order: orderHeader(segment(msg, 'ORC')),
    frequency: coded(tq1, 3),
    start: date(tq1, 7),
    priority: coded(tq1, 9),
    diets: msg.segments
      .filter((s) => s.id === 'ODS')
      .map((ods) => compact({ type: str(value(ods, 1)), code: coded(ods, 3) ?? { code: '' }, instructions: str(value(ods, 4)) })),
  });
}
