import { ExchangeError } from '../store/errors.js';
import { isCategory, type Category } from './categories.js';
import { FACILITY_KINDS, type ConsentTerms, type ConsentVersion, type FacilityKind } from './model.js';
import { parseTerms, TermsError } from './terms.js';

/**
 * Consent versions as FHIR R4 Consent resources (http://hl7.org/fhir/R4/consent.html).
 *
 * - status: opted-in -> active, opted-out -> rejected, withdrawn -> inactive; policyRule OPTIN /
 *   OPTOUT (v3-ActCode), which satisfies invariant ppc-1.
 * - provision (type permit): period = validity [start, end) to the millisecond; actors with role
 *   CST (custodian) = listed disclosing facilities, IRCP (information recipient) = receiving
 *   facility kinds (identifier in the kind system, `*` for every kind) and listed receivers;
 *   purpose = TREAT / ETREAT / HRESCH (v3-ActReason) and one coding per consented AI service;
 *   code = listed record categories.
 * - nested provisions (type deny) carry the explicit exclusions: disclosing facilities (CST),
 *   receivers (IRCP), categories (code), and an explicit refusal of emergency use (ETREAT).
 * - sourceAttachment: the signed form, `urn:sha256:<hex>` in the blob store (Attachment.hash is
 *   SHA-1 by definition in R4, so the SHA-256 goes in the url).
 * - the version number is meta.versionId; who recorded it and a note are extensions.
 */

export const SYSTEMS = {
  facility: 'urn:hakobune:fhir:facility-id',
  facilityKind: 'urn:hakobune:fhir:CodeSystem:facility-kind',
  category: 'urn:hakobune:fhir:CodeSystem:record-category',
  aiService: 'urn:hakobune:fhir:ai-service',
  participation: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType',
  actReason: 'http://terminology.hl7.org/CodeSystem/v3-ActReason',
  actCode: 'http://terminology.hl7.org/CodeSystem/v3-ActCode',
  scope: 'http://terminology.hl7.org/CodeSystem/consentscope',
  loinc: 'http://loinc.org',
  recordedBy: 'urn:hakobune:fhir:StructureDefinition:consent-recorded-by',
  note: 'urn:hakobune:fhir:StructureDefinition:consent-note',
} as const;

interface Coding {
  system?: string;
  code?: string;
  display?: string;
}
interface Reference {
  reference?: string;
  identifier?: { system?: string; value?: string };
}
interface Actor {
  role: { coding: Coding[] };
  reference: Reference;
}
interface Provision {
  type?: 'permit' | 'deny';
  period?: { start?: string; end?: string };
  actor?: Actor[];
  purpose?: Coding[];
  code?: { coding: Coding[] }[];
  provision?: Provision[];
}
export interface FhirConsent {
  resourceType: 'Consent';
  id?: string;
  meta?: { versionId?: string };
  extension?: { url: string; valueString?: string }[];
  status: string;
  scope: { coding: Coding[] };
  category: { coding: Coding[] }[];
  patient: Reference;
  dateTime: string;
  policyRule: { coding: Coding[] };
  sourceAttachment?: { contentType?: string; url?: string };
  provision: Provision;
}

const STATUS_TO_FHIR = { 'opted-in': 'active', 'opted-out': 'rejected', withdrawn: 'inactive' } as const;
const iso = (ms: number) => new Date(ms).toISOString();

const actor = (role: 'CST' | 'IRCP', system: string, value: string): Actor => ({
  role: { coding: [{ system: SYSTEMS.participation, code: role }] },
  reference: { identifier: { system, value } },
});
const purpose = (code: 'TREAT' | 'ETREAT' | 'HRESCH'): Coding => ({ system: SYSTEMS.actReason, code });
const category = (c: Category) => ({ coding: [{ system: SYSTEMS.category, code: c }] });

export function toFhirConsent(v: ConsentVersion): FhirConsent {
  const permit: Provision = { type: 'permit', period: { start: iso(v.validFrom), ...(v.validTo !== null ? { end: iso(v.validTo) } : {}) } };
  const actors: Actor[] = [];
  if (v.disclosing.mode === 'listed') for (const f of v.disclosing.facilities) actors.push(actor('CST', SYSTEMS.facility, f));
  if (v.receiving.kinds === 'all') actors.push(actor('IRCP', SYSTEMS.facilityKind, '*'));
  else for (const k of v.receiving.kinds) actors.push(actor('IRCP', SYSTEMS.facilityKind, k));
  for (const f of v.receiving.facilities) actors.push(actor('IRCP', SYSTEMS.facility, f));
  if (actors.length) permit.actor = actors;
  const purposes: Coding[] = [];
  if (v.purposes.treatment) purposes.push(purpose('TREAT'));
  if (v.purposes.emergency === 'permit') purposes.push(purpose('ETREAT'));
  if (v.purposes.research) purposes.push(purpose('HRESCH'));
  for (const s of v.purposes.aiServices) purposes.push({ system: SYSTEMS.aiService, code: s });
  if (purposes.length) permit.purpose = purposes;
  if (v.categories.mode === 'listed') permit.code = v.categories.categories.map(category);

  const denies: Provision[] = [];
  if (v.disclosing.mode === 'all-except') denies.push({ type: 'deny', actor: v.disclosing.facilities.map((f) => actor('CST', SYSTEMS.facility, f)) });
  if (v.receiving.exclude.length) denies.push({ type: 'deny', actor: v.receiving.exclude.map((f) => actor('IRCP', SYSTEMS.facility, f)) });
  if (v.categories.mode === 'all-except') denies.push({ type: 'deny', code: v.categories.categories.map(category) });
  if (v.purposes.emergency === 'refuse') denies.push({ type: 'deny', purpose: [purpose('ETREAT')] });
  if (denies.length) permit.provision = denies;

  const extension: { url: string; valueString: string }[] = [{ url: SYSTEMS.recordedBy, valueString: v.recordedBy }];
  if (v.note !== null) extension.push({ url: SYSTEMS.note, valueString: v.note });
  const resource: FhirConsent = {
    resourceType: 'Consent',
    id: v.id,
    meta: { versionId: String(v.version) },
    extension,
    status: STATUS_TO_FHIR[v.status],
    scope: { coding: [{ system: SYSTEMS.scope, code: 'patient-privacy' }] },
    category: [{ coding: [{ system: SYSTEMS.loinc, code: '59284-0', display: 'Patient Consent' }] }],
    patient: { reference: `Patient/${v.regionalId}` },
    dateTime: iso(v.recordedAt),
    policyRule: { coding: [{ system: SYSTEMS.actCode, code: v.status === 'opted-in' ? 'OPTIN' : 'OPTOUT' }] },
    provision: permit,
  };
  if (v.evidenceSha256) {
    resource.sourceAttachment = { url: `urn:sha256:${v.evidenceSha256}`, ...(v.evidenceMediaType ? { contentType: v.evidenceMediaType } : {}) };
  }
  return resource;
}

/** A consent read from FHIR: its terms and the facts around them. */
export interface ImportedConsent extends ConsentTerms {
  id: string | null;
  version: number | null;
  regionalId: string;
  recordedAt: number;
  recordedBy: string | null;
  evidenceSha256: string | null;
  evidenceMediaType: string | null;
  note: string | null;
}

export interface FhirIssue {
  severity: 'error';
  code: 'invalid' | 'required' | 'value' | 'not-supported' | 'structure';
  expression: string;
  diagnostics: string;
}

/** The error of a Consent the exchange cannot read: 422 with every issue, as OperationOutcome. */
export class FhirConsentError extends ExchangeError {
  constructor(readonly issues: FhirIssue[]) {
    super('unprocessable', `the Consent resource is not valid: ${issues.map((i) => `${i.expression}: ${i.diagnostics}`).join('; ')}`, { issues });
  }
  toOperationOutcome() {
    return { resourceType: 'OperationOutcome', issue: this.issues.map((i) => ({ severity: i.severity, code: i.code, diagnostics: i.diagnostics, expression: [i.expression] })) };
  }
}

const STATUS_FROM_FHIR: Record<string, ConsentTerms['status']> = { active: 'opted-in', rejected: 'opted-out', inactive: 'withdrawn' };
// FHIR dateTime with a time must carry a zone; an instant without one would be read in local time.
const INSTANT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/;

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

export function fromFhirConsent(input: unknown): ImportedConsent {
  const issues: FhirIssue[] = [];
  const fail = (expression: string, diagnostics: string, code: FhirIssue['code'] = 'invalid') => {
    issues.push({ severity: 'error', code, expression, diagnostics });
  };
  if (!isObj(input)) throw new FhirConsentError([{ severity: 'error', code: 'structure', expression: 'Consent', diagnostics: 'expected a JSON object' }]);
  if (input.resourceType !== 'Consent') fail('resourceType', `expected "Consent", got ${JSON.stringify(input.resourceType)}`);
  if (input.modifierExtension !== undefined) fail('Consent.modifierExtension', 'modifier extensions are not understood', 'not-supported');

  const instant = (v: unknown, expr: string, required: boolean): number | null => {
    if (v === undefined || v === null) {
      if (required) fail(expr, 'required', 'required');
      return null;
    }
    if (typeof v !== 'string' || !INSTANT.test(v) || Number.isNaN(Date.parse(v))) {
      fail(expr, `expected a date-time with a time zone, got ${JSON.stringify(v)}`, 'value');
      return null;
    }
    return Date.parse(v);
  };

  const status = STATUS_FROM_FHIR[String(input.status)];
  if (!status) fail('Consent.status', `status ${JSON.stringify(input.status)} cannot be recorded (active, rejected or inactive)`, 'value');

  let regionalId = '';
  const ref = isObj(input.patient) ? input.patient.reference : undefined;
  const m = typeof ref === 'string' ? /^Patient\/([A-Za-z0-9\-.]{1,64})$/.exec(ref) : null;
  if (!m) fail('Consent.patient', 'expected a reference Patient/<regional patient id>', 'required');
  else regionalId = m[1];

  const recordedAt = instant(input.dateTime, 'Consent.dateTime', true);

  let version: number | null = null;
  if (isObj(input.meta) && input.meta.versionId !== undefined) {
    const n = Number(input.meta.versionId);
    if (!Number.isInteger(n) || n < 1) fail('Consent.meta.versionId', 'expected a positive whole number', 'value');
    else version = n;
  }
  const id = typeof input.id === 'string' ? input.id : null;

  let recordedBy: string | null = null;
  let note: string | null = null;
  if (input.extension !== undefined) {
    if (!Array.isArray(input.extension)) fail('Consent.extension', 'expected an array', 'structure');
    else {
      input.extension.forEach((e, i) => {
        if (!isObj(e)) return fail(`Consent.extension[${i}]`, 'expected an object', 'structure');
        if (e.url === SYSTEMS.recordedBy || e.url === SYSTEMS.note) {
          if (typeof e.valueString !== 'string' || !e.valueString) return fail(`Consent.extension[${i}].valueString`, 'expected a string', 'value');
          if (e.url === SYSTEMS.recordedBy) recordedBy = e.valueString;
          else note = e.valueString;
        }
      });
    }
  }

  let evidenceSha256: string | null = null;
  let evidenceMediaType: string | null = null;
  if (input.sourceAttachment !== undefined) {
    const a = input.sourceAttachment;
    const u = isObj(a) && typeof a.url === 'string' ? /^urn:sha256:([0-9a-f]{64})$/.exec(a.url) : null;
    if (!u) fail('Consent.sourceAttachment.url', 'expected urn:sha256:<64 lower-case hex digits> of the signed form', 'value');
    else evidenceSha256 = u[1];
    if (isObj(a) && a.contentType !== undefined) {
      if (typeof a.contentType !== 'string' || !/^[\w.+-]+\/[\w.+-]+$/.test(a.contentType)) fail('Consent.sourceAttachment.contentType', 'expected a media type', 'value');
      else evidenceMediaType = a.contentType;
    }
  }

  // Terms, from the provision tree.
  const terms: Record<string, unknown> = { status };
  const disclosingListed: string[] = [];
  const disclosingExcluded: string[] = [];
  let kinds: FacilityKind[] | 'all' = [];
  const receivers: string[] = [];
  const excludedReceivers: string[] = [];
  const listedCats: Category[] = [];
  const excludedCats: Category[] = [];
  const purposes = { treatment: false, emergency: 'unspecified' as 'permit' | 'refuse' | 'unspecified', aiServices: [] as string[], research: false };
  let validFrom: number | null = null;
  let validTo: number | null = null;

  const readActors = (list: unknown, expr: string, deny: boolean) => {
    if (!Array.isArray(list)) return fail(expr, 'expected an array', 'structure');
    list.forEach((a, i) => {
      const e = `${expr}[${i}]`;
      const coding = isObj(a) && isObj(a.role) && Array.isArray(a.role.coding) ? (a.role.coding as unknown[]).find((c) => isObj(c) && c.system === SYSTEMS.participation) : undefined;
      const role = isObj(coding) ? coding.code : undefined;
      const ident = isObj(a) && isObj(a.reference) && isObj(a.reference.identifier) ? a.reference.identifier : undefined;
      const value = ident && typeof ident.value === 'string' && ident.value.trim() ? ident.value : undefined;
      if (role !== 'CST' && role !== 'IRCP') return fail(`${e}.role`, 'expected a v3-ParticipationType CST or IRCP coding', 'value');
      if (!ident || !value) return fail(`${e}.reference.identifier`, 'expected an identifier with a value', 'required');
      if (ident.system === SYSTEMS.facility) {
        if (role === 'CST') (deny ? disclosingExcluded : disclosingListed).push(value);
        else (deny ? excludedReceivers : receivers).push(value);
      } else if (ident.system === SYSTEMS.facilityKind && role === 'IRCP' && !deny) {
        if (value === '*') kinds = 'all';
        else if ((FACILITY_KINDS as readonly string[]).includes(value)) {
          if (kinds !== 'all') kinds.push(value as FacilityKind);
        } else fail(`${e}.reference.identifier.value`, `unknown facility kind ${JSON.stringify(value)}`, 'value');
      } else fail(`${e}.reference.identifier.system`, 'expected a facility id, or a facility kind of a recipient in the permit', 'not-supported');
    });
  };
  const readCodes = (list: unknown, expr: string, into: Category[]) => {
    if (!Array.isArray(list)) return fail(expr, 'expected an array', 'structure');
    list.forEach((cc, i) => {
      const c = isObj(cc) && Array.isArray(cc.coding) ? (cc.coding as unknown[]).find((x) => isObj(x) && x.system === SYSTEMS.category) : undefined;
      const code = isObj(c) ? c.code : undefined;
      if (!isCategory(code)) fail(`${expr}[${i}]`, `expected a record category coding, got ${JSON.stringify(code)}`, 'value');
      else into.push(code);
    });
  };

  const p = input.provision;
  if (!isObj(p)) fail('Consent.provision', 'required', 'required');
  else {
    if (p.type !== 'permit') fail('Consent.provision.type', 'the base provision must be a permit (exclusions are nested denies)', 'not-supported');
    if (!isObj(p.period)) fail('Consent.provision.period', 'the validity period is required', 'required');
    else {
      validFrom = instant(p.period.start, 'Consent.provision.period.start', true);
      validTo = instant(p.period.end, 'Consent.provision.period.end', false);
    }
    if (p.actor !== undefined) readActors(p.actor, 'Consent.provision.actor', false);
    if (p.purpose !== undefined) {
      if (!Array.isArray(p.purpose)) fail('Consent.provision.purpose', 'expected an array', 'structure');
      else
        p.purpose.forEach((c, i) => {
          const e = `Consent.provision.purpose[${i}]`;
          if (!isObj(c) || typeof c.code !== 'string') return fail(e, 'expected a coding', 'structure');
          if (c.system === SYSTEMS.actReason && c.code === 'TREAT') purposes.treatment = true;
          else if (c.system === SYSTEMS.actReason && c.code === 'ETREAT') purposes.emergency = 'permit';
          else if (c.system === SYSTEMS.actReason && c.code === 'HRESCH') purposes.research = true;
          else if (c.system === SYSTEMS.aiService) purposes.aiServices.push(c.code);
          else fail(e, `purpose ${c.system}|${c.code} is not supported`, 'not-supported');
        });
    }
    if (p.code !== undefined) readCodes(p.code, 'Consent.provision.code', listedCats);
    if (p.provision !== undefined) {
      if (!Array.isArray(p.provision)) fail('Consent.provision.provision', 'expected an array', 'structure');
      else
        p.provision.forEach((d, i) => {
          const e = `Consent.provision.provision[${i}]`;
          if (!isObj(d) || d.type !== 'deny') return fail(e, 'nested provisions must be denies', 'not-supported');
          if (d.provision !== undefined || d.period !== undefined) fail(e, 'nested provisions carry only actors, codes or an emergency purpose', 'not-supported');
          if (d.actor !== undefined) readActors(d.actor, `${e}.actor`, true);
          if (d.code !== undefined) readCodes(d.code, `${e}.code`, excludedCats);
          if (d.purpose !== undefined) {
            const ok = Array.isArray(d.purpose) && d.purpose.length === 1 && isObj(d.purpose[0]) && d.purpose[0].system === SYSTEMS.actReason && d.purpose[0].code === 'ETREAT';
            if (!ok) fail(`${e}.purpose`, 'only a refusal of emergency use (ETREAT) can be denied by purpose', 'not-supported');
            else purposes.emergency = 'refuse';
          }
        });
    }
  }
  if (purposes.emergency === 'refuse' && isObj(p) && Array.isArray(p.purpose) && p.purpose.some((c) => isObj(c) && c.code === 'ETREAT')) {
    fail('Consent.provision.purpose', 'emergency use is both permitted and refused', 'invalid');
  }
  if (disclosingListed.length && disclosingExcluded.length) fail('Consent.provision', 'disclosing facilities are both listed and excluded', 'invalid');
  if (listedCats.length && excludedCats.length) fail('Consent.provision', 'categories are both listed and excluded', 'invalid');
  if (issues.length) throw new FhirConsentError(issues);

  terms.disclosing = disclosingListed.length
    ? { mode: 'listed', facilities: disclosingListed }
    : disclosingExcluded.length
      ? { mode: 'all-except', facilities: disclosingExcluded }
      : { mode: 'all' };
  terms.receiving = { kinds, facilities: receivers, exclude: excludedReceivers };
  terms.categories = listedCats.length ? { mode: 'listed', categories: listedCats } : excludedCats.length ? { mode: 'all-except', categories: excludedCats } : { mode: 'all' };
  terms.purposes = purposes;
  terms.validFrom = validFrom;
  terms.validTo = validTo;
  let parsed: ConsentTerms;
  try {
    parsed = parseTerms(terms);
  } catch (e) {
    if (e instanceof TermsError) {
      throw new FhirConsentError(e.issues.map((i) => ({ severity: 'error', code: 'invalid', expression: `Consent (${i.path})`, diagnostics: i.message })));
    }
    throw e;
  }
  return { ...parsed, id, version, regionalId, recordedAt: recordedAt as number, recordedBy, evidenceSha256, evidenceMediaType, note };
}
