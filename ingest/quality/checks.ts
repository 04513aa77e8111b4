import { parseHl7DateTime } from '../hl7/datetime.js';
import { rawField, repetitions, value, type Message, type Segment } from '../hl7/reader.js';
import { DATA_TYPES } from '../records/data-types.js';
import type { StoragePath } from '../records/storage-path.js';
import type { Finding, FindingCode, Severity } from './findings.js';

/**
 * Pure data-quality checks of SS-MIX2 files (standardized storage spec Ver.1.2): the path
 * against itself, and a read message against its path and against the HL7 v2.5 / JAHIS rules
 * that matter for serving it. Each returns findings; none throws.
 */

const NINES = '999999999999999';

export function checkPath(path: string, sp: StoragePath | undefined): Finding[] {
  const out: Finding[] = [];
  const add = (severity: Severity, code: FindingCode, reason: string) => out.push({ severity, code, reason, path });
  if (!sp) {
    add('error', 'unrecognised-path', 'the path is not inside a patient folder <ID1-3>/<ID4-6>/<patientID>/<date>/<dataType>/');
    return out;
  }
  const { folder, name } = sp;
  if (sp.area === 'standard' && !(folder.dataType in DATA_TYPES)) {
    add('error', 'unknown-data-type', `"${folder.dataType}" is not an SS-MIX2 data type (table 1-1)`);
  }
  if (folder.careDate !== '-' && !/^\d{8}$/.test(folder.careDate)) {
    add('error', 'path-disagreement', `the date folder "${folder.careDate}" is neither YYYYMMDD nor "-"`);
  } else if (folder.careDate !== '-' && !parseHl7DateTime(folder.careDate).ok) {
    add('error', 'invalid-date', `the date folder "${folder.careDate}" is not a calendar date`);
  }
  if (!name) {
    if (sp.nameProblem?.problem === 'condition-flag') add('error', 'condition-flag-invalid', sp.nameProblem.message);
    else add('error', 'unrecognised-path', sp.nameProblem?.message ?? 'the name does not have the fields patientID_careDate_dataType_orderNo_timestamp_dept_condition');
    return out;
  }
  if (name.patientId !== folder.patientId) {
    add('error', 'path-disagreement', `the file name's patient ID ${name.patientId} differs from the folder's ${folder.patientId}`);
  }
  if (name.careDate !== folder.careDate) {
    add('error', 'path-disagreement', `the file name's care date ${name.careDate} differs from the folder's ${folder.careDate}`);
  }
  if (sp.area === 'standard' && name.dataType !== folder.dataType) {
    add('error', 'path-disagreement', `the file name's data type ${name.dataType} differs from the folder's ${folder.dataType}`);
  }
  if (sp.area === 'standard' && !['0', '1', '2'].includes(name.condition)) {
    add('error', 'condition-flag-invalid', `the condition flag "${name.condition}" is not 1 (current), 2 (superseded) or 0 (cancelled)`);
  }
  if (!/^\d{17}$/.test(name.timestamp)) {
    add('warning', 'invalid-date', `the file name's timestamp "${name.timestamp}" is not YYYYMMDDHHMMSSFFF`);
  }
  if (folder.dataType in DATA_TYPES && DATA_TYPES[folder.dataType]!.undated && folder.careDate !== '-') {
    add('warning', 'path-disagreement', `${folder.dataType} has no care date and belongs in the "-" folder, not ${folder.careDate}`);
  }
  return out;
}

/** Field locations checked as dates (DTM/DT) in every segment of that type. */
const DATE_FIELDS: Record<string, number[]> = {
  MSH: [7],
  EVN: [2, 6],
  PID: [7, 33],
  PV1: [44, 45],
  PV2: [8, 9],
  ORC: [9],
  RXA: [3, 4, 22],
  TQ1: [7, 8],
  SPM: [17],
  OBR: [7, 22],
  OBX: [14],
  PRB: [2, 7, 9, 15, 16],
  IAM: [11],
  AL1: [6],
  IN1: [12, 13],
};

/** Code fields whose declared coding system lets a malformed value be recognised. */
const CODE_FIELDS: Record<string, number[]> = { RXE: [2], RXA: [5], RXC: [2], OBX: [3], OBR: [4], PRB: [3], IAM: [3], AL1: [3], SPM: [4] };

/** Shapes of the Japanese standard codes (MEDIS HOT, YJ, JLAC10, ICD-10, MEDIS byomei). */
const CODE_SHAPES: Record<string, RegExp> = {
  HOT7: /^\d{7}$/,
  HOT9: /^\d{9}$/,
  HOT13: /^\d{13}$/,
  YJ: /^[0-9A-Z]{12}$/,
  // JLAC10: 17-character analyte codes (shorter forms occur), 3-digit specimen materials.
  JC10: /^([0-9A-Z]{3}|[0-9A-Z]{5,17}(&[0-9A-Z]+)?)$/,
  I10: /^[A-Z]\d{2}(\.?[0-9A-Z]{1,4})?$/,
  MDCDX2: /^(\d{8}|[0-9A-Z]{4})$/,
};

/** Segments each message structure may hold (HL7 v2.5 ch.2-4 as profiled by SS-MIX2). */
const COMMON = ['MSH', 'EVN', 'PID', 'PD1', 'NK1', 'PV1', 'PV2', 'NTE', 'ORC', 'TQ1', 'TQ2', 'ZI1', 'IN1', 'IN2', 'AL1', 'OBX'];
const ALLOWED_LISTS: Record<string, string[]> = {
  ADT: [...COMMON, 'DB1', 'DG1', 'PR1', 'GT1', 'IAM', 'ROL', 'ACC', 'UB1', 'UB2', 'PDA', 'MRG', 'NPU', 'ZPR'],
  PPR: [...COMMON, 'PRB', 'ZPR', 'ROL', 'VAR', 'PTH', 'GOL'],
  OMD: [...COMMON, 'ODS', 'ODT'],
  RDE: [...COMMON, 'RXO', 'RXE', 'RXR', 'RXC', 'FT1', 'BLG', 'CTI', 'ZE1', 'ZE2'],
  RAS: [...COMMON, 'RXO', 'RXE', 'RXR', 'RXC', 'RXA', 'CTI', 'ZE1', 'ZE2'],
  OML: [...COMMON, 'SPM', 'SAC', 'OBR', 'TCD', 'FT1', 'CTI', 'BLG', 'DG1'],
  OUL: [...COMMON, 'SPM', 'SAC', 'OBR', 'TCD', 'SID', 'INV', 'CTI'],
  OMG: [...COMMON, 'OBR', 'FT1', 'CTI', 'BLG', 'DG1', 'IPC', 'ZE1', 'ZE2'],
  OMI: [...COMMON, 'OBR', 'IPC', 'ZE1', 'ZE2', 'CTI', 'DG1'],
  ORU: [...COMMON, 'OBR', 'SPM', 'CTI', 'FT1', 'ZE1', 'ZE2', 'IPC'],
};
const ALLOWED: Record<string, ReadonlySet<string>> = Object.fromEntries(Object.entries(ALLOWED_LISTS).map(([k, v]) => [k, new Set(v)]));

const loc = (seg: Segment, n: number, index?: number) => `${seg.id}${index !== undefined ? `[${index}]` : ''}-${n}`;

/** Field reference like `ORC-9` to the first non-empty value of that field in the message. */
export function firstFieldValue(msg: Message, ref: string): string {
  const [id, n] = ref.split('-') as [string, string];
  for (const s of msg.segments) if (s.id === id && value(s, Number(n)) !== '') return value(s, Number(n));
  return '';
}

export function checkMessage(path: string, sp: StoragePath, msg: Message): Finding[] {
  const out: Finding[] = [];
  const add = (severity: Severity, code: FindingCode, reason: string, field?: string) =>
    out.push(field ? { severity, code, reason, path, field } : { severity, code, reason, path });
  const msh = msg.segments[0]!;
  const dataType = sp.folder.dataType;
  const spec = DATA_TYPES[dataType];

  // --- structure ---
  const counters = new Map<string, number>();
  const bare: Segment[] = [];
  msg.segments.forEach((seg, i) => {
    const k = (counters.get(seg.id) ?? 0) + 1;
    counters.set(seg.id, k);
    if (i > 0 && seg.id === 'MSH') {
      add('error', 'multiple-messages', `a second MSH segment at line ${seg.line}: the file holds more than one message or trailing garbage`, `MSH[${k}]`);
    } else if (seg.fields.length <= 1) {
      bare.push(seg);
    }
  });
  if (bare.length) {
    const lines = bare.length === 1 ? `line ${bare[0]!.line} is` : `lines ${bare[0]!.line}-${bare[bare.length - 1]!.line} are`;
    add('error', 'empty-segment', `${lines} bare segment names with no fields (${bare.map((s) => s.id).join(', ')}): garbage after the message`);
  }
  const messageCode = value(msh, 9, 1);
  const trigger = value(msh, 9, 2);
  const allowed = ALLOWED[messageCode];
  if (allowed) {
    const unexpected = [...new Set(msg.segments.filter((s) => !allowed.has(s.id) && !s.id.startsWith('Z')).map((s) => s.id))];
    if (unexpected.length) {
      add('warning', 'unexpected-segment', `segments ${unexpected.join(', ')} do not belong in a ${messageCode} message`);
    }
  }

  // --- header ---
  if (!messageCode || !trigger) add('error', 'missing-field', 'MSH-9 message type is empty', 'MSH-9');
  if (value(msh, 10) === '') add('warning', 'missing-field', 'MSH-10 message control ID is empty', 'MSH-10');
  if (value(msh, 12) !== '' && !value(msh, 12).startsWith('2.5')) add('warning', 'invalid-value', `MSH-12 version is ${value(msh, 12)}, SS-MIX2 uses 2.5`, 'MSH-12');
  const seq = value(msh, 13);
  if (seq !== '' && !/^\d+(\.\d+)?$/.test(seq)) add('warning', 'invalid-value', `MSH-13 sequence number "${seq}" is not a number`, 'MSH-13');
  const charset = repetitions(msh, 18).map((r) => r.replace(/\s+/g, '').toUpperCase());
  if (!charset.includes('ISOIR87')) {
    add('warning', 'encoding-declaration', `MSH-18 "${rawField(msh, 18)}" does not declare ISO IR87 (JIS X 0208)`, 'MSH-18');
  }

  // --- path against content ---
  if (spec && messageCode && !spec.messages.includes(`${messageCode}^${trigger}`)) {
    add('error', 'data-type-mismatch', `the file is ${dataType} but the message is ${messageCode}^${trigger} (expected ${spec.messages.join(' or ')})`, 'MSH-9');
  }
  const pid = msg.segments.find((s) => s.id === 'PID');
  const pid3 = pid ? repetitions(pid, 3).map((r) => r.split(pid.delimiters.component)[0] ?? '') : [];
  if (!pid) add('error', 'missing-field', 'the message has no PID segment', 'PID');
  else if (pid3.every((v) => v === '')) add('error', 'missing-field', 'PID-3 patient ID is empty', 'PID-3');
  else if (!pid3.includes(sp.folder.patientId)) {
    // The path is the storage's key: a message about another ID must not be shown as this
    // patient's record (wrong-patient risk), whatever else it says.
    add('error', 'patient-id-mismatch', `PID-3 is ${pid3.join('~')} but the file is stored under patient ${sp.folder.patientId}`, 'PID-3');
  }
  if (spec && !spec.undated && sp.folder.careDate !== '-' && spec.careDateFields.length) {
    const candidates = spec.careDateFields.map((f) => [f, firstFieldValue(msg, f)] as const).filter(([, v]) => v !== '');
    const days = candidates.map(([, v]) => { const p = parseHl7DateTime(v); return p.ok ? p.value.day : undefined; });
    if (candidates.length === 0) {
      add('warning', 'missing-field', `no care date in ${spec.careDateFields.join(' / ')} to check the folder date against`, spec.careDateFields[0]);
    } else if (!days.includes(sp.folder.careDate)) {
      const [f, v] = candidates[0]!;
      add('warning', 'care-date-mismatch', `the folder date ${sp.folder.careDate} matches none of ${candidates.map(([k]) => k).join(', ')} (${f} is ${v})`, f);
    }
  }
  if (spec?.ordered && sp.name && sp.name.orderNo !== NINES) {
    const orderNos: string[] = [];
    for (const s of msg.segments) if (s.id === 'ORC' || s.id === 'OBR') orderNos.push(value(s, 2), value(s, 3));
    if (!orderNos.includes(sp.name.orderNo)) {
      add('error', 'order-number-mismatch', `the file name's order number ${sp.name.orderNo} is not in the message (ORC-2: ${[...new Set(orderNos.filter(Boolean))].join(', ') || 'none'})`, 'ORC-2');
    }
  }

  // --- required content per data type ---
  const need = (segId: string, n: number, what: string, severity: Severity = 'error') => {
    const segs = msg.segments.filter((s) => s.id === segId && s.fields.length > 1);
    if (segs.length === 0) add(severity, 'missing-field', `no ${segId} segment: ${what} is missing`, segId);
    segs.forEach((s, i) => {
      if (value(s, n) === '' && value(s, n, 2) === '') add(severity, 'missing-field', `${segId}-${n} ${what} is empty`, loc(s, n, segs.length > 1 ? i + 1 : undefined));
    });
  };
  switch (dataType) {
    case 'ADT-00': need('PID', 5, 'patient name'); break;
    case 'ADT-61': need('IAM', 3, 'allergen'); break;
    case 'PPR-01': need('PRB', 3, 'problem (diagnosis) code'); break;
    case 'OMD': need('ODS', 3, 'diet code'); break;
    case 'OMP-01': case 'OMP-02': need('RXE', 2, 'give code (drug)'); break;
    case 'OMP-11': case 'OMP-12': need('RXA', 5, 'administered code (drug)'); break;
    case 'OML-01': case 'OMG-01': case 'OMG-02': case 'OMG-03': need('OBR', 4, 'universal service identifier'); break;
    case 'OML-11': case 'OMG-13': need('OBR', 4, 'universal service identifier'); need('OBX', 3, 'observation identifier'); break;
    case 'OMG-11': case 'OMG-12': need('OBR', 4, 'universal service identifier'); break;
  }

  // --- dates, codes, values ---
  const seen = new Map<string, number>();
  for (const seg of msg.segments) {
    const k = (seen.get(seg.id) ?? 0) + 1;
    seen.set(seg.id, k);
    const idx = (counters.get(seg.id) ?? 0) > 1 ? k : undefined;
    for (const n of DATE_FIELDS[seg.id] ?? []) {
      const v = value(seg, n);
      if (v === '') continue;
      const p = parseHl7DateTime(v);
      if (!p.ok) add('error', 'invalid-date', `${loc(seg, n, idx)}: ${p.reason}`, loc(seg, n, idx));
      else if (p.value.nextDayHour) add('warning', 'next-day-hour', `${loc(seg, n, idx)} "${v}" uses a next-day hour (24-47), read as ${p.value.iso}`, loc(seg, n, idx));
    }
    for (const n of CODE_FIELDS[seg.id] ?? []) checkCode(seg, n, idx, add);
    if (seg.id === 'OBX') {
      const type = value(seg, 2);
      const v = value(seg, 5);
      if (type === 'NM' && v !== '' && !Number.isFinite(Number(v.trim()))) {
        if (/^[<>]=?\s*-?\d/.test(v.trim())) add('warning', 'invalid-value', `${loc(seg, 5, idx)} "${v}" is a numeric value with a comparator; SS-MIX2 writes those as SN`, loc(seg, 5, idx));
        else add('error', 'invalid-value', `${loc(seg, 5, idx)} "${v}" is not a number although OBX-2 says NM`, loc(seg, 5, idx));
      }
      if (type === 'CWE') checkCode(seg, 5, idx, add);
    }
  }
  return out;
}

function checkCode(seg: Segment, n: number, idx: number | undefined, add: (s: Severity, c: FindingCode, r: string, f?: string) => void) {
  for (const rep of repetitions(seg, n)) {
    const comps = rep.split(seg.delimiters.component);
    const code = comps[0] ?? '';
    const system = comps[2] ?? '';
    if (code === '') continue;
    if (system === '' && comps.length < 3 && ['OBX', 'OBR', 'RXE', 'RXA'].includes(seg.id) && n !== 5) {
      add('warning', 'malformed-code', `${loc(seg, n, idx)} code "${code}" has no coding system`, loc(seg, n, idx));
      continue;
    }
    const shape = CODE_SHAPES[system];
    if (shape && !shape.test(code)) {
      add('warning', 'malformed-code', `${loc(seg, n, idx)} "${code}" is not a valid ${system} code`, loc(seg, n, idx));
    }
  }
}
