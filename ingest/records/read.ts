import { readCda, sniffContentType, UnsafeXmlError } from '../cda/cda.js';
import { decodeIso2022jp } from '../hl7/decode.js';
import { Hl7ParseError, readMessage } from '../hl7/reader.js';
import { checkMessage, checkPath } from '../quality/checks.js';
import { hasErrors, type Finding } from '../quality/findings.js';
import { categoryOf, isStandardDataType } from './data-types.js';
import { mapMessage, subjectOf } from './map.js';
import { parseStoragePath, type StoragePath } from './storage-path.js';
import type { Category, ClinicalRecord, RecordSource } from './types.js';

/** One stored file of a facility's snapshot, with its exact bytes. */
export interface StoredFile {
  facilityId: string;
  /** Path relative to the facility's SS-MIX2 root. */
  path: string;
  sha256: string;
  bytes: Uint8Array;
}

/**
 * What indexing makes of one file: its source (when the path says enough), the record when the
 * file is good enough to serve, and every quality finding. A file with an error finding is
 * `flagged` and has no record: it stays in the backup but is never shown as clinical data.
 */
export interface ReadOutcome {
  source: RecordSource | undefined;
  category: Category | undefined;
  status: 'ok' | 'flagged';
  record: ClinicalRecord | undefined;
  findings: Finding[];
}

/**
 * What indexing keeps of a file: the outcome with the record already as its JSON text (the form
 * in which it is stored), so that the mapped object graph is garbage as soon as the file is read
 * instead of living until its page is written.
 */
export interface SerialisedOutcome {
  source: RecordSource | undefined;
  category: Category | undefined;
  status: 'ok' | 'flagged';
  findings: Finding[];
  /** The record as JSON; undefined when flagged. */
  contentJson: string | undefined;
}

export function readSerialised(file: StoredFile): SerialisedOutcome {
  const o = readStoredFile(file);
  return {
    source: o.source,
    category: o.category,
    status: o.status,
    findings: o.findings,
    contentJson: o.status === 'ok' && o.record ? JSON.stringify(o.record) : undefined,
  };
}

export function sourceOf(file: Pick<StoredFile, 'facilityId' | 'path' | 'sha256'>, sp: StoragePath | undefined): RecordSource | undefined {
  if (!sp) return undefined;
  const name = sp.name;
  const careDate = /^\d{8}$/.test(sp.folder.careDate)
    ? `${sp.folder.careDate.slice(0, 4)}-${sp.folder.careDate.slice(4, 6)}-${sp.folder.careDate.slice(6, 8)}`
    : null;
  const cond = name?.condition;
  return {
    facilityId: file.facilityId,
    patientId: sp.folder.patientId,
    dataType: sp.folder.dataType,
    careDate,
    orderNo: name?.orderNo ?? '',
    timestamp: name?.timestamp ?? '',
    department: name && name.department !== '-' && name.department !== '' ? name.department : null,
    // Extended-storage folders may lack the flag: their content is current.
    condition: cond === '0' || cond === '2' ? cond : '1',
    sha256: file.sha256,
    path: file.path,
  };
}

export function readStoredFile(file: StoredFile): ReadOutcome {
  const sp = parseStoragePath(file.path);
  const findings = checkPath(file.path, sp);
  const source = sourceOf(file, sp);
  const category = sp ? categoryOf(sp.folder.dataType) : undefined;
  const flagged = (): ReadOutcome => ({ source, category, status: 'flagged', record: undefined, findings });
  if (!sp || !source || !category) return flagged();

  if (sp.area === 'extended' || !isStandardDataType(sp.folder.dataType)) {
    if (sp.area === 'standard') return flagged(); // unknown data type, already reported
    return readExtended(file, sp, source, findings);
  }

  const decoded = decodeIso2022jp(file.bytes);
  if (!decoded.ok) {
    findings.unshift({ severity: 'error', code: 'decode-failed', reason: decoded.reason, path: file.path, byteOffset: decoded.byteOffset });
    return flagged();
  }
  let msg;
  try {
    msg = readMessage(decoded.text);
  } catch (e) {
    if (!(e instanceof Hl7ParseError)) throw e;
    findings.unshift({ severity: 'error', code: 'parse-failed', reason: `not an HL7 v2 message: ${e.message}`, path: file.path });
    return flagged();
  }
  findings.push(...checkMessage(file.path, sp, msg));
  let content;
  try {
    content = mapMessage(sp.folder.dataType, msg);
  } catch (e) {
    findings.push({ severity: 'error', code: 'map-failed', reason: `could not be read as ${sp.folder.dataType}: ${(e as Error).message}`, path: file.path });
    return flagged();
  }
  if (hasErrors(findings)) return flagged();
  return { source, category, status: 'ok', record: { source, category, subject: subjectOf(msg), content }, findings };
}

function readExtended(file: StoredFile, sp: StoragePath, source: RecordSource, findings: Finding[]): ReadOutcome {
  const name = sp.entry ?? file.path.split('/').pop() ?? '';
  const contentType = sniffContentType(name, file.bytes);
  const attachment = { name, contentType, size: file.bytes.byteLength, sha256: file.sha256 };
  if (contentType === 'application/xml') {
    try {
      const doc = readCda(file.bytes);
      if (doc.patientIdentifier && doc.patientIdentifier !== sp.folder.patientId) {
        findings.push({
          severity: 'error',
          code: 'patient-id-mismatch',
          reason: `the document's recordTarget id is ${doc.patientIdentifier} but it is stored under patient ${sp.folder.patientId}`,
          path: file.path,
        });
      }
      if (hasErrors(findings)) return { source, category: 'document', status: 'flagged', record: undefined, findings };
      return { source, category: 'document', status: 'ok', record: { source, category: 'document', content: { ...doc, attachments: [] } }, findings };
    } catch (e) {
      const unsafe = e instanceof UnsafeXmlError;
      findings.push({ severity: 'error', code: unsafe ? 'unsafe-xml' : 'document-unreadable', reason: (e as Error).message, path: file.path });
      return { source, category: 'document', status: 'flagged', record: undefined, findings };
    }
  }
  if (hasErrors(findings)) return { source, category: 'document', status: 'flagged', record: undefined, findings };
  // PDFs, images and other files of a document folder: served as attachments (type, size, hash).
  return {
    source,
    category: 'document',
    status: 'ok',
    record: { source, category: 'document', content: { kind: 'document', title: name, text: '', attachments: [attachment] } },
    findings,
  };
}
