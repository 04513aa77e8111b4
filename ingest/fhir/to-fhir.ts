import type {
  AdministrationItem,
  AllergyEntry,
  ClinicalRecord,
  Coded,
  DiagnosisEntry,
  DocumentRecord,
  EncounterRecord,
  ExamRecord,
  LabRecord,
  MedicationOrderItem,
  ObservationValue,
  OrderHeader,
  PatientRecord,
  Person,
  RecordSource,
  ServiceGroup,
} from '../records/types.js';
import { concept, logicalId, orderNoSystem, patientIdSystem, RP_NUMBER_SYSTEM, codeSystemUri, type FhirCodeableConcept } from './systems.js';

/**
 * FHIR R4 views of clinical records, following the JAMI SS-MIX2 -> FHIR mapping guide
 * (jami-fhir-jp-wg/ssmix2-to-fhir: PID -> Patient, PV1 -> Encounter, PRB -> Condition,
 * IAM/AL1 -> AllergyIntolerance, RXE -> MedicationRequest, RXA -> MedicationAdministration,
 * ORC/OBR -> ServiceRequest / DiagnosticReport, OBX -> Observation) and the JP Core profiles.
 * Pure functions: a record in, resources out. Every resource names the facility's identifier
 * systems (see systems.ts) and carries the SS-MIX2 data type and condition flag as meta tags.
 */
export type FhirResource = { resourceType: string; id: string; [k: string]: unknown };

const JP = 'http://jpfhir.jp/fhir/core/StructureDefinition/';
const TAG_DATA_TYPE = 'urn:hakobune:ss-mix2:data-type';
const TAG_CONDITION = 'urn:hakobune:ss-mix2:condition-flag';

export function patientResourceId(facilityId: string, patientId: string): string {
  return logicalId('pt', facilityId, patientId);
}

function meta(src: RecordSource, profile?: string) {
  return {
    ...(profile ? { profile: [JP + profile] } : {}),
    tag: [
      { system: TAG_DATA_TYPE, code: src.dataType },
      { system: TAG_CONDITION, code: src.condition },
    ],
  };
}

function base(src: RecordSource, resourceType: string, profile: string | undefined, ...idParts: string[]): FhirResource {
  return {
    resourceType,
    id: logicalId(resourceType.slice(0, 3).toLowerCase(), src.facilityId, src.patientId, src.dataType, src.orderNo, src.timestamp, ...idParts),
    meta: meta(src, profile),
  };
}

const subject = (src: RecordSource) => ({ reference: `Patient/${patientResourceId(src.facilityId, src.patientId)}` });

function display(p: Person | undefined) {
  if (!p) return undefined;
  const name = [p.family, p.given].filter(Boolean).join(' ');
  return name || p.id ? { display: name || p.id } : undefined;
}

function orderIdentifiers(src: RecordSource, order: OrderHeader) {
  const ids: { system: string; value: string }[] = [];
  if (order.orderNo) ids.push({ system: orderNoSystem(src.facilityId), value: order.orderNo });
  return ids;
}

function quantity(value: number | undefined, unit: Coded | undefined, facilityId: string) {
  if (value === undefined) return undefined;
  const q: Record<string, unknown> = { value };
  if (unit) {
    q['unit'] = unit.display ?? unit.code;
    const system = codeSystemUri(unit.system, facilityId);
    if (system && unit.code) {
      q['system'] = system;
      q['code'] = unit.code;
    }
  }
  return q;
}

// FHIR's string pattern ([ \r\n\t\S]+) refuses other Unicode spaces, and Japanese text is full
// of U+3000: the FHIR view shows them as ASCII spaces (the record keeps the original).
const ODD_SPACES = /[\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]/g;

function prune<T>(v: T): T {
  if (typeof v === 'string') return v.replace(ODD_SPACES, ' ') as T;
  if (Array.isArray(v)) return v.map(prune).filter((x) => x !== undefined && !(Array.isArray(x) && x.length === 0)) as T;
  if (v && typeof v === 'object') {
    const o: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) {
      const p = prune(x);
      if (p === undefined || p === '' || (Array.isArray(p) && p.length === 0)) continue;
      if (p && typeof p === 'object' && !Array.isArray(p) && Object.keys(p).length === 0) continue;
      o[k] = p;
    }
    return o as T;
  }
  return v;
}

/** All FHIR resources of one record. */
export function toFhir(record: ClinicalRecord): FhirResource[] {
  const src = record.source;
  const c = record.content;
  let out: FhirResource[];
  switch (c.kind) {
    case 'patient':
      out = [patient(src, c), ...c.observations.map((o, i) => observation(src, o, `adt-${i}`, 'JP_Observation_Common')), ...c.allergies.map((a, i) => allergy(src, a, i))];
      break;
    case 'encounter':
      out = [encounter(src, c)];
      break;
    case 'diagnosis':
      out = c.diagnoses.map((d, i) => condition(src, d, i));
      break;
    case 'allergy':
      out = c.allergies.map((a, i) => allergy(src, a, i));
      break;
    case 'medication-order':
      out = c.items.map((it, i) => medicationRequest(src, it, i, c.form));
      break;
    case 'medication-administration':
      out = c.items.map((it, i) => medicationAdministration(src, it, i, c.form));
      break;
    case 'lab':
    case 'exam':
      out = serviceGroups(src, c);
      break;
    case 'diet':
      out = [
        {
          ...base(src, 'NutritionOrder', undefined),
          identifier: orderIdentifiers(src, c.order),
          status: status(src, 'active', 'revoked', 'entered-in-error'),
          intent: 'order',
          patient: subject(src),
          dateTime: c.order.orderedAt ?? c.start ?? src.careDate ?? undefined,
          orderer: display(c.order.orderer),
          oralDiet: {
            type: c.diets.map((d) => concept({ ...d.code, display: d.code.display ?? d.instructions }, src.facilityId)),
            schedule: c.start || c.frequency ? [{ repeat: c.start ? { boundsPeriod: { start: c.start } } : undefined, code: concept(c.frequency, src.facilityId) }] : undefined,
            instruction: c.diets.map((d) => d.instructions).filter(Boolean).join(' / ') || undefined,
          },
        },
      ];
      break;
    case 'document':
      out = [documentReference(src, c)];
      break;
  }
  return out.map(prune);
}

/** Condition flag -> a status: 1 current, 2 superseded (history), 0 cancelled. */
function status<T extends string>(src: RecordSource, current: T, superseded: T, cancelled: T): T {
  return src.condition === '0' ? cancelled : src.condition === '2' ? superseded : current;
}

function patient(src: RecordSource, p: PatientRecord): FhirResource {
  const name = (n: { family: string; given: string } | undefined, representation: 'IDE' | 'SYL') =>
    n && {
      extension: [{ url: 'http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation', valueCode: representation }],
      use: 'official',
      // An ASCII space: the FHIR string pattern ([ \r\n\t\S]) does not admit U+3000.
      text: `${n.family} ${n.given}`.trim(),
      family: n.family || undefined,
      given: n.given ? [n.given] : undefined,
    };
  const phoneUse: Record<string, string> = { PRN: 'home', WPN: 'work', EMR: 'temp', ORN: 'home', NET: 'home' };
  return {
    resourceType: 'Patient',
    id: patientResourceId(src.facilityId, src.patientId),
    meta: meta(src, 'JP_Patient'),
    identifier: [{ system: patientIdSystem(src.facilityId), value: src.patientId }],
    active: !p.deleted && src.condition !== '0',
    name: [name(p.name.kanji, 'IDE'), name(p.name.kana, 'SYL'), p.name.other && { use: 'official', family: p.name.other.family, given: [p.name.other.given] }].filter(Boolean),
    telecom: p.phones.map((t) => ({ system: 'phone', value: t.number, use: t.use ? phoneUse[t.use] : undefined })),
    gender: p.sex,
    birthDate: p.birthDate && /^\d{4}(-\d{2}(-\d{2})?)?$/.test(p.birthDate) ? p.birthDate : undefined,
    address: p.address
      ? [{ use: p.address.use === 'H' ? 'home' : p.address.use === 'B' ? 'work' : undefined, text: p.address.text, postalCode: p.address.postalCode, country: p.address.country }]
      : undefined,
  };
}

const ENCOUNTER_STATUS: Record<EncounterRecord['event'], string> = {
  visit: 'arrived',
  'admission-planned': 'planned',
  admission: 'in-progress',
  leave: 'onleave',
  return: 'in-progress',
  'transfer-planned': 'planned',
  transfer: 'in-progress',
  'discharge-planned': 'in-progress',
  discharge: 'finished',
  'attending-change': 'in-progress',
};
const ACT_CODE: Record<string, [string, string]> = { inpatient: ['IMP', 'inpatient encounter'], outpatient: ['AMB', 'ambulatory'], emergency: ['EMER', 'emergency'] };

function encounter(src: RecordSource, e: EncounterRecord): FhirResource {
  const cls = ACT_CODE[e.patientClass ?? ''] ?? ['AMB', 'ambulatory'];
  const where = (l: { ward?: string; room?: string; bed?: string } | undefined) =>
    l && [l.ward && `病棟 ${l.ward}`, l.room && `病室 ${l.room}`, l.bed && `ベッド ${l.bed}`].filter(Boolean).join(' ');
  return {
    ...base(src, 'Encounter', 'JP_Encounter'),
    status: e.cancelled || src.condition === '0' ? 'cancelled' : ENCOUNTER_STATUS[e.event],
    class: { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: cls[0], display: cls[1] },
    type: [{ text: e.event }],
    subject: subject(src),
    participant: e.attending ? [{ individual: display(e.attending) }] : undefined,
    period: e.admittedAt || e.dischargedAt || e.occurredAt ? { start: e.admittedAt ?? e.occurredAt, end: e.dischargedAt } : undefined,
    location: [
      e.location && { location: { display: where(e.location) }, status: e.event === 'discharge' ? 'completed' : 'active' },
      e.priorLocation && { location: { display: where(e.priorLocation) }, status: 'completed' },
    ].filter(Boolean),
    serviceProvider: undefined,
  };
}

const OUTCOME_CLINICAL: Record<string, string> = { F: 'resolved', R: 'remission', N: 'active', W: 'active', S: 'resolved', D: 'inactive', U: 'active' };

function condition(src: RecordSource, d: DiagnosisEntry, i: number): FhirResource {
  const codings = [concept(d.code, src.facilityId), d.icd10 && concept(d.icd10, src.facilityId)].filter(Boolean) as FhirCodeableConcept[];
  const clinical = src.condition === '0' || d.action === 'DE' ? undefined : OUTCOME_CLINICAL[d.outcome?.code ?? ''] ?? 'active';
  return {
    ...base(src, 'Condition', 'JP_Condition', String(i)),
    identifier: d.problemId ? [{ system: orderNoSystem(src.facilityId), value: d.problemId }] : undefined,
    clinicalStatus: clinical ? { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-clinical', code: clinical }] } : undefined,
    verificationStatus: {
      coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-ver-status', code: src.condition === '0' || d.action === 'DE' ? 'entered-in-error' : 'confirmed' }],
    },
    category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-category', code: 'problem-list-item' }] }],
    code: { coding: codings.flatMap((c) => c.coding ?? []), text: d.text ?? d.code.display },
    subject: subject(src),
    onsetDateTime: d.onset,
    abatementDateTime: clinical === 'resolved' || clinical === 'inactive' ? d.resolvedAt : undefined,
    recordedDate: d.recordedAt,
    note: d.modifiers.length ? [{ text: `ZPR: ${d.modifiers.map((m) => m.display ?? m.code).join(', ')}` }] : undefined,
  };
}

const ALLERGY_CATEGORY: Record<string, string> = { DA: 'medication', FA: 'food', EA: 'environment', LA: 'environment', AA: 'environment', PA: 'environment', MA: 'environment' };
const SEVERITY: Record<string, string> = { MI: 'mild', MO: 'moderate', SV: 'severe' };

function allergy(src: RecordSource, a: AllergyEntry, i: number): FhirResource {
  const cat = ALLERGY_CATEGORY[a.type?.code ?? ''];
  const sev = SEVERITY[a.severity?.code ?? ''];
  const deleted = src.condition === '0' || a.action === 'D';
  return {
    ...base(src, 'AllergyIntolerance', 'JP_AllergyIntolerance', String(i)),
    clinicalStatus: deleted ? undefined : { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical', code: 'active' }] },
    verificationStatus: {
      coding: [{ system: 'http://terminology.hl7.org/CodeSystem/allergyintolerance-verification', code: deleted ? 'entered-in-error' : 'confirmed' }],
    },
    type: 'allergy',
    category: cat ? [cat] : undefined,
    code: concept(a.allergen, src.facilityId),
    patient: subject(src),
    onsetDateTime: a.onset,
    onsetString: a.onset ? undefined : a.onsetText,
    reaction: a.reaction || sev ? [{ manifestation: [{ text: a.reaction ?? a.severity?.display ?? '' }], severity: sev }] : undefined,
  };
}

function medicationRequest(src: RecordSource, it: MedicationOrderItem, i: number, form: 'prescription' | 'injection'): FhirResource {
  const f = src.facilityId;
  const identifiers = [
    ...orderIdentifiers(src, it.order),
    ...(it.order.group ? [{ system: RP_NUMBER_SYSTEM, value: it.order.group }] : []),
  ];
  const contained = it.components.length
    ? [
        {
          resourceType: 'Medication',
          id: 'mix',
          code: concept(it.medication, f),
          ingredient: it.components.map((c) => ({
            itemCodeableConcept: concept(c.medication, f),
            isActive: c.role === 'B' ? undefined : true,
            strength: c.amount ? { numerator: quantity(c.amount.value, c.amount.unit, f), denominator: { value: 1 } } : undefined,
          })),
        },
      ]
    : undefined;
  return {
    ...base(src, 'MedicationRequest', form === 'injection' ? 'JP_MedicationRequest_Injection' : 'JP_MedicationRequest', String(i)),
    contained,
    identifier: identifiers,
    status: status(src, 'active', 'stopped', 'cancelled'),
    intent: 'order',
    category: [
      it.order.patientClass ? { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0482', code: it.order.patientClass }] } : undefined,
      ...it.category.map((c) => concept(c, f)),
    ].filter(Boolean),
    medicationCodeableConcept: contained ? undefined : concept(it.medication, f),
    medicationReference: contained ? { reference: '#mix' } : undefined,
    subject: subject(src),
    authoredOn: it.order.orderedAt,
    requester: display(it.order.orderer),
    recorder: display(it.order.enterer),
    note: it.instruction ? [{ text: it.instruction }] : undefined,
    dosageInstruction: [
      {
        text: it.frequency?.display ?? it.instruction,
        timing: {
          code: concept(it.frequency, f),
          repeat: it.days || it.start || it.end
            ? {
                boundsDuration: it.days ? { value: it.days, unit: '日', system: 'http://unitsofmeasure.org', code: 'd' } : undefined,
                boundsPeriod: !it.days && (it.start || it.end) ? { start: it.start, end: it.end } : undefined,
              }
            : undefined,
        },
        route: concept(it.route, f),
        site: concept(it.site, f),
        doseAndRate: [
          {
            doseQuantity: quantity(it.doseMin, it.doseUnit, f),
            rateRatio: it.totalDailyDose
              ? { numerator: quantity(it.totalDailyDose.value, it.totalDailyDose.unit, f), denominator: { value: 1, unit: '日', system: 'http://unitsofmeasure.org', code: 'd' } }
              : undefined,
            rateQuantity: !it.totalDailyDose && it.rate ? quantity(it.rate.value, it.rate.unit, f) : undefined,
          },
        ],
      },
    ],
    dispenseRequest:
      it.dispenseAmount !== undefined || it.days
        ? {
            quantity: quantity(it.dispenseAmount, it.dispenseUnit, f),
            expectedSupplyDuration: it.days ? { value: it.days, unit: '日', system: 'http://unitsofmeasure.org', code: 'd' } : undefined,
          }
        : undefined,
  };
}

function medicationAdministration(src: RecordSource, it: AdministrationItem, i: number, form: 'prescription' | 'injection'): FhirResource {
  const f = src.facilityId;
  const done = it.completion === undefined || it.completion === 'CP' || it.completion === 'PA';
  return {
    ...base(src, 'MedicationAdministration', form === 'injection' ? 'JP_MedicationAdministration_Injection' : 'JP_MedicationAdministration', String(i)),
    identifier: orderIdentifiers(src, it.order),
    status: src.condition === '0' ? 'entered-in-error' : done ? 'completed' : 'not-done',
    medicationCodeableConcept: concept(it.medication, f),
    subject: subject(src),
    effectivePeriod: it.startedAt || it.endedAt ? { start: it.startedAt, end: it.endedAt } : undefined,
    effectiveDateTime: it.startedAt || it.endedAt ? undefined : it.recordedAt ?? src.careDate ?? undefined,
    performer: it.performer ? [{ actor: display(it.performer) }] : undefined,
    note: it.note ? [{ text: it.note }] : undefined,
    dosage: {
      text: it.rate,
      route: concept(it.route, f),
      dose: quantity(it.amount, it.unit, f),
    },
  };
}

const OBS_STATUS: Record<string, string> = { F: 'final', P: 'preliminary', C: 'corrected', X: 'cancelled', D: 'entered-in-error', R: 'preliminary', O: 'registered', I: 'registered', S: 'preliminary', W: 'entered-in-error' };
const INTERPRETATION = new Set(['L', 'H', 'LL', 'HH', 'N', 'A', 'AA', '<', '>', 'LU', 'HU', 'U', 'D', 'B', 'W', 'S', 'R', 'I']);

function observation(src: RecordSource, o: ObservationValue, key: string, profile: string, effective?: string): FhirResource {
  const f = src.facilityId;
  const value: Record<string, unknown> = {};
  if (o.number !== undefined) value['valueQuantity'] = quantity(o.number, o.unit, f);
  else if (o.coded) value['valueCodeableConcept'] = concept(o.coded, f);
  else if (o.valueType === 'TS' && o.text) value['valueString'] = o.text;
  else if (o.text) value['valueString'] = o.text;
  return {
    ...base(src, 'Observation', profile, key),
    status: src.condition === '0' ? 'cancelled' : OBS_STATUS[o.status ?? ''] ?? 'final',
    category: [
      {
        coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: profile === 'JP_Observation_LabResult' ? 'laboratory' : 'exam' }],
      },
    ],
    code: concept(o.code, f) ?? { text: o.code.code },
    subject: subject(src),
    effectiveDateTime: o.observedAt ?? effective,
    ...value,
    interpretation: o.abnormalFlags.filter((x) => INTERPRETATION.has(x)).map((x) => ({ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation', code: x }] })),
    referenceRange:
      o.referenceRange !== undefined
        ? [{ low: quantity(o.low, o.unit, f), high: quantity(o.high, o.unit, f), text: o.referenceRange }]
        : undefined,
  };
}

const REPORT_PROFILE: Record<string, string> = { lab: 'JP_DiagnosticReport_LabResult', radiology: 'JP_DiagnosticReport_Radiology', endoscopy: 'JP_DiagnosticReport_Common', physiology: 'JP_DiagnosticReport_Common' };

function serviceGroups(src: RecordSource, c: LabRecord | ExamRecord): FhirResource[] {
  const f = src.facilityId;
  const area = c.kind === 'lab' ? 'lab' : c.modality;
  const out: FhirResource[] = [];
  c.groups.forEach((g: ServiceGroup, gi) => {
    const effective = g.specimen?.collectedAt ?? g.observedAt;
    if (c.phase === 'order') {
      out.push({
        ...base(src, 'ServiceRequest', undefined, String(gi)),
        identifier: orderIdentifiers(src, g.order),
        status: status(src, 'active', 'revoked', 'revoked'),
        intent: g.order.control === 'CH' ? 'reflex-order' : 'order',
        category: [{ text: area }],
        code: concept(g.service, f),
        subject: subject(src),
        authoredOn: g.order.orderedAt,
        requester: display(g.order.orderer),
        specimen: undefined,
        note: g.observations.length ? [{ text: g.observations.map((o) => `${o.code.display ?? o.code.code}: ${o.text}`).join('\n') }] : undefined,
      });
      return;
    }
    const observations = g.observations.map((o, oi) =>
      observation(src, o, `${gi}-${oi}`, c.kind === 'lab' ? 'JP_Observation_LabResult' : 'JP_Observation_Common', effective),
    );
    out.push({
      ...base(src, 'DiagnosticReport', REPORT_PROFILE[area], String(gi)),
      identifier: orderIdentifiers(src, g.order),
      status: src.condition === '0' ? 'cancelled' : OBS_STATUS[g.resultStatus ?? 'F'] === 'preliminary' ? 'preliminary' : 'final',
      category: [
        c.kind === 'lab'
          ? { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0074', code: 'LAB' }] }
          : { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0074', code: area === 'radiology' ? 'RAD' : area === 'physiology' ? 'PHY' : 'OTH' }], text: area },
      ],
      code: concept(g.service, f) ?? { text: area },
      subject: subject(src),
      effectiveDateTime: effective,
      issued: g.reportedAt && g.reportedAt.includes('T') ? g.reportedAt : undefined,
      result: observations.map((o) => ({ reference: `Observation/${o.id}` })),
      conclusion: undefined,
    });
    out.push(...observations);
  });
  return out;
}

function documentReference(src: RecordSource, d: DocumentRecord): FhirResource {
  const date = d.date && /^\d{8}/.test(d.date) ? cdaDate(d.date) : undefined;
  return {
    ...base(src, 'DocumentReference', undefined, src.path),
    status: status(src, 'current', 'superseded', 'entered-in-error'),
    type: d.code
      ? { coding: [{ system: d.code.system === '2.16.840.1.113883.6.1' || !d.code.system ? 'http://loinc.org' : `urn:oid:${d.code.system}`, code: d.code.code, display: d.code.display }], text: d.title }
      : d.title ? { text: d.title } : undefined,
    subject: subject(src),
    date,
    author: d.author ? [display(d.author)] : undefined,
    description: d.title,
    content: [
      ...d.attachments.map((a) => ({
        attachment: { contentType: a.contentType, size: a.size, title: a.name, url: `urn:hakobune:blob:sha256:${a.sha256}` },
      })),
      ...(d.text ? [{ attachment: { contentType: 'text/plain; charset=utf-8', data: Buffer.from(d.text, 'utf8').toString('base64'), title: d.title } }] : []),
    ],
  };
}

/** CDA TS (YYYYMMDDhhmmss+zzzz) to a FHIR instant. */
function cdaDate(v: string): string | undefined {
  const m = /^(\d{4})(\d{2})(\d{2})(?:(\d{2})(\d{2})(\d{2})?)?([+-]\d{4})?/.exec(v);
  if (!m) return undefined;
  const [, y, mo, d, h = '00', mi = '00', s = '00', tz] = m;
  const zone = tz ? `${tz.slice(0, 3)}:${tz.slice(3)}` : '+09:00';
  return `${y}-${mo}-${d}T${h}:${mi}:${s}${zone}`;
}
