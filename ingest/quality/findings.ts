/**
 * Data-quality findings about one stored file. An `error` means the file is not served as a
 * clinical record (it stays in the backup, byte for byte); a `warning` is reported to the
 * facility but the record is served.
 */
export type Severity = 'error' | 'warning';

export type FindingCode =
  | 'decode-failed'
  | 'parse-failed'
  | 'map-failed'
  | 'unrecognised-path'
  | 'unknown-data-type'
  | 'path-disagreement'
  | 'condition-flag-invalid'
  | 'patient-id-mismatch'
  | 'data-type-mismatch'
  | 'care-date-mismatch'
  | 'order-number-mismatch'
  | 'missing-field'
  | 'invalid-date'
  | 'next-day-hour'
  | 'malformed-code'
  | 'invalid-value'
  | 'empty-segment'
  | 'multiple-messages'
  | 'unexpected-segment'
  | 'encoding-declaration'
  | 'unsafe-xml'
  | 'document-unreadable';

export interface Finding {
  severity: Severity;
  code: FindingCode;
  /** A sentence for the facility's administrator: what is wrong and where. */
  reason: string;
  path: string;
  /** HL7 location like `PID-3` or `OBX[2]-5`, when the finding is about a field. */
  field?: string;
  byteOffset?: number;
}

export const hasErrors = (findings: readonly Finding[]) => findings.some((f) => f.severity === 'error');
