import { categoryOfDataType, type Category } from '../../consent/categories.js';
import { toFhir } from '../../ingest/fhir/to-fhir.js';
import type { ClinicalRecord, PatientRecord } from '../../ingest/records/types.js';
import type { FhirJson } from './deidentify.js';
import { emptyIdentity, type PatientIdentity } from './scrub.js';

/**
 * The Bundle an AI service receives (before de-identification): the FHIR views of the
 * patient's records in the categories the service declared and consent permitted, nothing else.
 * Pure: records in, a Bundle out.
 */

/** The consent category of a record (extended storage is always documents). */
export function consentCategoryOf(record: ClinicalRecord): Category | undefined {
  if (record.category === 'document') return 'documents';
  return categoryOfDataType(record.source.dataType);
}

export function bundleOf(records: readonly ClinicalRecord[], categories: ReadonlySet<Category>): { bundle: FhirJson; included: number } {
  const entry: FhirJson[] = [];
  let included = 0;
  for (const r of records) {
    const c = consentCategoryOf(r);
    // A record whose category cannot be told is never sent: the category decides who may see it.
    if (!c || !categories.has(c)) continue;
    // Cancelled records (condition flag 0) are not clinical facts any more.
    if (r.source.condition === '0') continue;
    included++;
    for (const res of toFhir(r)) entry.push({ resource: res });
  }
  return { bundle: { resourceType: 'Bundle', type: 'collection', entry }, included };
}

/**
 * Everything the records say identifies the patient, whether or not those records are sent:
 * the ADT-00 demographics of every facility (names in kanji and kana, birth date, address,
 * phones, insurance numbers), the PID of every message, and every facility-local ID. Free text
 * of what is sent is scrubbed of all of it.
 */
export function identityOfRecords(records: readonly ClinicalRecord[]): PatientIdentity {
  const id = emptyIdentity();
  const names = (n: PatientRecord['name']) => {
    for (const pair of [n.kanji, n.kana, n.other]) if (pair && (pair.family || pair.given)) id.names.push({ family: pair.family || undefined, given: pair.given || undefined });
  };
  for (const r of records) {
    id.localIds.push(r.source.patientId);
    if (r.subject) {
      if (r.subject.identifier) id.localIds.push(r.subject.identifier);
      names(r.subject.name);
      if (r.subject.birthDate) id.birthDates.push(isoDate(r.subject.birthDate));
    }
    const c = r.content;
    if (c.kind === 'patient') {
      if (c.identifier) id.localIds.push(c.identifier);
      names(c.name);
      if (c.birthDate) id.birthDates.push(isoDate(c.birthDate));
      if (c.address?.text) id.addresses.push(c.address.text);
      if (c.address?.postalCode) id.postalCodes.push(c.address.postalCode);
      for (const p of c.phones) id.phones.push(p.number);
      for (const ins of c.insurance) for (const v of [ins.insurerNumber, ins.symbol, ins.number]) if (v) id.insuranceNumbers.push(v);
    }
    if (c.kind === 'document' && c.patientIdentifier) id.localIds.push(c.patientIdentifier);
  }
  const uniq = <T>(xs: T[]) => [...new Set(xs)];
  return {
    names: id.names.filter((n, i) => id.names.findIndex((m) => m.family === n.family && m.given === n.given) === i),
    birthDates: uniq(id.birthDates),
    addresses: uniq(id.addresses),
    postalCodes: uniq(id.postalCodes),
    phones: uniq(id.phones),
    localIds: uniq(id.localIds.filter(Boolean)),
    insuranceNumbers: uniq(id.insuranceNumbers),
  };
}

const isoDate = (v: string) => (/^\d{8}$/.test(v) ? `${v.slice(0, 4)}-${v.slice(4, 6)}-${v.slice(6, 8)}` : v.slice(0, 10));
