import { createHash } from 'node:crypto';
import type { Coded } from '../records/types.js';

/**
 * FHIR URIs for the identifiers and code systems of SS-MIX2 data.
 *
 * Identifier systems: JP Core's OIDs when the facility ID is a 10-digit Japanese medical
 * institution code (patient IDs `urn:oid:1.2.392.100495.20.3.51.1<code>`, order numbers
 * `urn:oid:1.2.392.100495.20.3.11.1<code>`), otherwise a Hakobune URN per facility:
 * `urn:hakobune:facility:<facilityId>:patient-id` / `:order-no`.
 *
 * Code systems: the URIs JP Core assigns to the HL7 v2 coding-system names (HOT, YJ, MERIT-9
 * units, JAMI usage codes, JLAC10, ICD-10, HL7 tables); names local to a facility (`99xxx`,
 * HL7 v2 2.16 "locally defined") become `urn:hakobune:facility:<facilityId>:cs:<name>`; other
 * named tables without a published URI (JAHIS JHSD, JSHR, LENDO, JJ1017, ...) become
 * `urn:hakobune:ss-mix2:cs:<name>`, so the name as written is never lost.
 */
const KNOWN: Record<string, string> = {
  HOT7: 'urn:oid:1.2.392.200119.4.403.2',
  HOT9: 'urn:oid:1.2.392.200119.4.403.1',
  HOT13: 'urn:oid:1.2.392.200119.4.402.1',
  YJ: 'urn:oid:1.2.392.100495.20.1.73',
  MR9P: 'urn:oid:1.2.392.100495.20.2.101',
  JAMISDP01: 'urn:oid:1.2.392.200250.2.2.20',
  JC10: 'urn:oid:1.2.392.200119.4.504',
  I10: 'http://hl7.org/fhir/sid/icd-10',
  MDCDX2: 'urn:oid:1.2.392.200119.4.101.6',
  LN: 'http://loinc.org',
  '2.16.840.1.113883.6.1': 'http://loinc.org',
  HL70162: 'http://jpfhir.jp/fhir/core/CodeSystem/route-codes',
};

const facilityPart = (facilityId: string) => encodeURIComponent(facilityId);
const isInstitutionCode = (facilityId: string) => /^\d{10}$/.test(facilityId);

export function patientIdSystem(facilityId: string): string {
  return isInstitutionCode(facilityId)
    ? `urn:oid:1.2.392.100495.20.3.51.1${facilityId}`
    : `urn:hakobune:facility:${facilityPart(facilityId)}:patient-id`;
}

export function orderNoSystem(facilityId: string): string {
  return isInstitutionCode(facilityId)
    ? `urn:oid:1.2.392.100495.20.3.11.1${facilityId}`
    : `urn:hakobune:facility:${facilityPart(facilityId)}:order-no`;
}

/** JP Core: Rp number and order within the Rp of a prescription. */
export const RP_NUMBER_SYSTEM = 'urn:oid:1.2.392.100495.20.3.81';

export function codeSystemUri(name: string | undefined, facilityId: string): string | undefined {
  if (!name) return undefined;
  const known = KNOWN[name];
  if (known) return known;
  const table = /^HL7(\d{4})$/.exec(name);
  if (table) return `http://terminology.hl7.org/CodeSystem/v2-${table[1]}`;
  if (/^\d+(\.\d+)+$/.test(name)) return `urn:oid:${name}`;
  if (name.startsWith('99')) return `urn:hakobune:facility:${facilityPart(facilityId)}:cs:${encodeURIComponent(name)}`;
  return `urn:hakobune:ss-mix2:cs:${encodeURIComponent(name)}`;
}

export interface FhirCoding {
  system?: string;
  code?: string;
  display?: string;
}
export interface FhirCodeableConcept {
  coding?: FhirCoding[];
  text?: string;
}

/** A CWE as a CodeableConcept: the primary and the alternate coding, the text kept. */
export function concept(c: Coded | undefined, facilityId: string): FhirCodeableConcept | undefined {
  if (!c) return undefined;
  const coding: FhirCoding[] = [];
  const one = (code: string, display: string | undefined, system: string | undefined) => {
    if (!code.trim()) return;
    const x: FhirCoding = { code: code.trim() };
    const uri = codeSystemUri(system, facilityId);
    if (uri) x.system = uri;
    if (display) x.display = display;
    coding.push(x);
  };
  one(c.code, c.display, c.system);
  if (c.alternate) one(c.alternate.code, c.alternate.display, c.alternate.system);
  const out: FhirCodeableConcept = {};
  if (coding.length) out.coding = coding;
  const text = c.display ?? c.alternate?.display;
  if (text) out.text = text;
  return coding.length || text ? out : undefined;
}

/** Logical ids as the JAMI guide requires ([A-Za-z0-9\-\.]{1,64}), stable for the same data. */
export function logicalId(prefix: string, ...parts: string[]): string {
  const h = createHash('sha256').update(parts.join('\u0000')).digest('hex').slice(0, 32);
  return `${prefix}-${h}`.slice(0, 64);
}
