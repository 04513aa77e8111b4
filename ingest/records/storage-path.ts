import { tryParseSsmix2FileName } from '../ssmix2/filename.js';

/**
 * Where a file sits in a facility's SS-MIX2 tree, read from its path (standardized storage:
 * `<ID1-3>/<ID4-6>/<patientID>/<careDate|->/<dataType>/<file>`, file name
 * `patientID_careDate_dataType_orderNo_timestamp_dept_conditionFlag`; extended storage adds a
 * content folder named like a file). Pure; paths are relative to the facility's root.
 */
export interface StoragePath {
  area: 'standard' | 'extended';
  /** The patient ID, date and data type of the folders. */
  folder: { patientId: string; careDate: string; dataType: string };
  /** The seven fields of the file (or content-folder) name; undefined when it is not one. */
  name: FileNameFields | undefined;
  /** Why the name is not a valid SS-MIX2 file name, when it is not. */
  nameProblem?: { problem: string; message: string };
  /** For extended storage: the file inside the content folder. */
  entry?: string;
}

export interface FileNameFields {
  patientId: string;
  careDate: string;
  dataType: string;
  orderNo: string;
  timestamp: string;
  department: string;
  condition: string;
}

/** A standardized-storage file name (the shared SS-MIX2 parser), as its seven raw fields. */
export function parseFileName(name: string): { fields: FileNameFields } | { problem: string; message: string } {
  const r = tryParseSsmix2FileName(name);
  if (r instanceof Error) return { problem: r.problem, message: r.message };
  return {
    fields: {
      patientId: r.patientId,
      careDate: r.careDate ?? '-',
      dataType: r.dataType,
      orderNo: r.orderNo,
      timestamp: r.timestamp,
      department: r.department ?? '-',
      condition: r.conditionFlag,
    },
  };
}

/** Extended-storage content folders are named like files, sometimes with only six fields. */
function parseContentFolderName(name: string): FileNameFields | undefined {
  const parts = name.split('_');
  if (parts.length !== 7 && parts.length !== 6) return undefined;
  const [patientId, careDate, dataType, orderNo, timestamp, department, condition] = parts as [string, string, string, string, string, string, string?];
  return { patientId, careDate, dataType, orderNo, timestamp, department, condition: condition ?? '' };
}

/**
 * Reads a path; undefined when it is not inside a patient's folder at all. Snapshot paths carry
 * the root they came from (`standard/...` or `extended/...`, upload protocol step 2); a path
 * without that prefix is read as relative to the standardized root.
 */
export function parseStoragePath(relPath: string): StoragePath | undefined {
  let parts = relPath.split('/').filter((p) => p !== '' && p !== '.');
  let root: 'standard' | 'extended' | undefined;
  if (parts[0] === 'standard' || parts[0] === 'extended') {
    root = parts[0];
    parts = parts.slice(1);
  }
  if (parts.length < 6) return undefined;
  const [, , patientId, careDate, dataType, ...rest] = parts as [string, string, string, string, string, ...string[]];
  const folder = { patientId, careDate, dataType };
  if (root !== 'extended' && rest.length === 1) {
    const r = parseFileName(rest[0]!);
    return 'fields' in r ? { area: 'standard', folder, name: r.fields } : { area: 'standard', folder, name: undefined, nameProblem: r };
  }
  if (root === 'standard') return undefined; // deeper than a data-type folder: not SS-MIX2 layout
  if (rest.length < 2) return undefined;
  return { area: 'extended', folder, name: parseContentFolderName(rest[0]!), entry: rest.slice(1).join('/') };
}
