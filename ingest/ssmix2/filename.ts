/**
 * SS-MIX2 standardized-storage names (JAMI standardized storage spec Ver.1.2; see
 * docs/ssmix2.md "Standardized storage"). Pure functions: no I/O.
 *
 *   <root>/<ID 1-3>/<ID 4-6>/<patientID>/<careDate | ->/<dataType>/<file>
 *   file = patientID_careDate_dataType_orderNo_timestamp_dept_conditionFlag
 */

/** The condition flag: 1 current, 2 superseded (renamed from _1), 0 deleted/cancelled. */
export type ConditionFlag = '0' | '1' | '2';

export interface Ssmix2FileName {
  patientId: string;
  /** `YYYYMMDD`, or null for the `-` (no care date) folder. */
  careDate: string | null;
  /** e.g. `ADT-00`, `OMD`, `OMP-01`. */
  dataType: string;
  /** Up to 15 characters; `999999999999999` when the data has no order. Widths vary (13 digits occur). */
  orderNo: string;
  /** `YYYYMMDDHHMMSSFFF` as written (when the message was produced). */
  timestamp: string;
  /** Department code, or null for `-`. */
  department: string | null;
  conditionFlag: ConditionFlag;
}

export type Ssmix2NameProblem =
  | 'empty'
  | 'field-count'
  | 'patient-id'
  | 'care-date'
  | 'data-type'
  | 'order-no'
  | 'timestamp'
  | 'department'
  | 'condition-flag'
  | 'folder-mismatch'
  | 'path-shape';

/** A name or path that is not a valid SS-MIX2 standardized-storage name; `problem` says which part. */
export class Ssmix2NameError extends Error {
  override name = 'Ssmix2NameError';
  constructor(
    readonly problem: Ssmix2NameProblem,
    message: string,
    /** The offending name or path, as given. */
    readonly input: string,
  ) {
    super(message);
  }
}

// Patient IDs are facility-assigned; the spec does not fix a character set, so accept anything
// printable that cannot break a path or the `_` field separator.
const PATIENT_ID = /^[^\s_/\\\0]+$/;
const CARE_DATE = /^\d{8}$/;
// Ver.1.2 table 1-1: three upper-case letters, optionally `-` and two digits (ADT-00, OMD, OMP-01).
const DATA_TYPE = /^[A-Z]{3}(-\d{2})?$/;
const ORDER_NO = /^[0-9A-Za-z]{1,15}$/;
// The spec writes 17 digits (YYYYMMDDHHMMSSFFF); some systems drop the milliseconds, so accept
// 14 to 17 digits rather than reject a real file over its precision.
const TIMESTAMP = /^\d{14,17}$/;
const DEPARTMENT = /^[^\s_/\\\0]+$/;

function isValidDate(yyyymmdd: string): boolean {
  const y = Number(yyyymmdd.slice(0, 4));
  const m = Number(yyyymmdd.slice(4, 6));
  const d = Number(yyyymmdd.slice(6, 8));
  if (m < 1 || m > 12 || d < 1) return false;
  const days = new Date(Date.UTC(y, m, 0)).getUTCDate();
  return d <= days;
}

/** Parses a standardized-storage file name; throws Ssmix2NameError naming the bad field. */
export function parseSsmix2FileName(name: string): Ssmix2FileName {
  if (name.length === 0) throw new Ssmix2NameError('empty', 'the file name is empty', name);
  const fields = name.split('_');
  if (fields.length !== 7) {
    throw new Ssmix2NameError(
      'field-count',
      `"${name}" has ${fields.length} fields separated by "_", an SS-MIX2 file name has 7 ` +
        '(patientID_careDate_dataType_orderNo_timestamp_dept_conditionFlag)',
      name,
    );
  }
  const [patientId, careDate, dataType, orderNo, timestamp, department, flag] = fields as [
    string, string, string, string, string, string, string,
  ];
  const bad = (problem: Ssmix2NameProblem, what: string, value: string) =>
    new Ssmix2NameError(problem, `"${name}": ${what}, got "${value}"`, name);

  if (!PATIENT_ID.test(patientId)) throw bad('patient-id', 'the patient ID is empty or has spaces or separators', patientId);
  if (careDate !== '-' && !(CARE_DATE.test(careDate) && isValidDate(careDate))) {
    throw bad('care-date', 'the care date must be a calendar date YYYYMMDD or "-"', careDate);
  }
  if (!DATA_TYPE.test(dataType)) throw bad('data-type', 'the data type must look like ADT-00, OMD or OMP-01', dataType);
  if (!ORDER_NO.test(orderNo)) throw bad('order-no', 'the order number must be 1 to 15 letters or digits', orderNo);
  if (!TIMESTAMP.test(timestamp) || !isValidDate(timestamp.slice(0, 8))) {
    throw bad('timestamp', 'the timestamp must be YYYYMMDDHHMMSSFFF', timestamp);
  }
  if (!DEPARTMENT.test(department)) throw bad('department', 'the department must be a code or "-"', department);
  if (flag !== '0' && flag !== '1' && flag !== '2') {
    throw bad('condition-flag', 'the condition flag must be 0 (deleted), 1 (current) or 2 (superseded)', flag);
  }
  return {
    patientId,
    careDate: careDate === '-' ? null : careDate,
    dataType,
    orderNo,
    timestamp,
    department: department === '-' ? null : department,
    conditionFlag: flag,
  };
}

/** Like parseSsmix2FileName, but answers the error instead of throwing it. */
export function tryParseSsmix2FileName(name: string): Ssmix2FileName | Ssmix2NameError {
  try {
    return parseSsmix2FileName(name);
  } catch (e) {
    if (e instanceof Ssmix2NameError) return e;
    throw e;
  }
}

/**
 * The data-type folder of a patient, relative to the storage root:
 * `<ID 1-3>/<ID 4-6>/<patientID>/<careDate | ->/<dataType>`.
 * Returns null for IDs shorter than 6 characters: how those are foldered is not confirmed
 * (docs/ssmix2.md), so a caller must not guess.
 */
export function dataTypeFolder(patientId: string, careDate: string | null, dataType: string): string | null {
  if (patientId.length < 6 || !PATIENT_ID.test(patientId)) return null;
  if (careDate !== null && !CARE_DATE.test(careDate)) return null;
  if (!DATA_TYPE.test(dataType)) return null;
  return `${patientId.slice(0, 3)}/${patientId.slice(3, 6)}/${patientId}/${careDate ?? '-'}/${dataType}`;
}

export interface Ssmix2StoragePath extends Ssmix2FileName {
  /** The path as given, relative to the standardized-storage root. */
  path: string;
}

/**
 * Parses a path relative to the standardized-storage root and checks that the file name agrees
 * with the folders it sits in (patient ID, its 3+3 prefix folders, care date, data type).
 */
export function parseSsmix2StoragePath(relPath: string): Ssmix2StoragePath {
  const parts = relPath.split('/');
  if (parts.length !== 6 || parts.some((p) => p.length === 0)) {
    throw new Ssmix2NameError(
      'path-shape',
      `"${relPath}" is not <ID 1-3>/<ID 4-6>/<patientID>/<careDate>/<dataType>/<file>`,
      relPath,
    );
  }
  const [p1, p2, pidFolder, dateFolder, typeFolder, file] = parts as [string, string, string, string, string, string];
  const name = parseSsmix2FileName(file);
  const mismatches: string[] = [];
  if (name.patientId !== pidFolder) mismatches.push(`patient ID ${name.patientId} is in folder ${pidFolder}`);
  if (pidFolder.slice(0, 3) !== p1 || pidFolder.slice(3, 6) !== p2) {
    mismatches.push(`patient folder ${pidFolder} is under ${p1}/${p2}`);
  }
  if ((name.careDate ?? '-') !== dateFolder) mismatches.push(`care date ${name.careDate ?? '-'} is in folder ${dateFolder}`);
  if (name.dataType !== typeFolder) mismatches.push(`data type ${name.dataType} is in folder ${typeFolder}`);
  if (mismatches.length > 0) {
    throw new Ssmix2NameError('folder-mismatch', `"${relPath}": the name disagrees with its folders: ${mismatches.join('; ')}`, relPath);
  }
  return { ...name, path: relPath };
}
