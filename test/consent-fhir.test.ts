import { describe, expect, it } from 'vitest';
import { FhirConsentError, fromFhirConsent, SYSTEMS, toFhirConsent } from '../consent/fhir-consent.js';
import type { ConsentVersion } from '../consent/model.js';
import { parseTerms } from '../consent/terms.js';

const T = Date.UTC(2026, 3, 1, 9, 30, 15, 123);

function version(over: Partial<ConsentVersion> = {}): ConsentVersion {
  return {
    id: 'RP-1-v1',
    regionalId: 'RP-1',
    version: 1,
    recordedAt: T,
    recordedBy: 'clerk@F001',
    evidenceSha256: 'a'.repeat(64),
    evidenceMediaType: 'application/pdf',
    note: '紙の同意書を確認',
    status: 'opted-in',
    disclosing: { mode: 'all' },
    receiving: { kinds: ['hospital', 'pharmacy'], facilities: ['F007'], exclude: ['F003'] },
    categories: { mode: 'all-except', categories: ['documents', 'imaging'] },
    purposes: { treatment: true, emergency: 'refuse', aiServices: ['ai-risk', 'ai-ecg'], research: false },
    validFrom: T,
    validTo: T + 365 * 86_400_000 + 1,
    ...over,
  };
}

const SHAPES: [string, Partial<ConsentVersion>][] = [
  ['exclusions of receivers, categories and emergency use', {}],
  ['listed disclosers, every receiver kind, listed categories, open-ended', {
    disclosing: { mode: 'listed', facilities: ['F001', 'F002'] },
    receiving: { kinds: 'all', facilities: [], exclude: [] },
    categories: { mode: 'listed', categories: ['allergies', 'prescriptions'] },
    purposes: { treatment: true, emergency: 'permit', aiServices: [], research: true },
    validTo: null,
  }],
  ['all except some disclosers, no receiver at all', {
    disclosing: { mode: 'all-except', facilities: ['F009'] },
    receiving: { kinds: [], facilities: [], exclude: [] },
    categories: { mode: 'all' },
    purposes: { treatment: false, emergency: 'unspecified', aiServices: [], research: false },
  }],
  ['withdrawn, no evidence, no note', { status: 'withdrawn', evidenceSha256: null, evidenceMediaType: null, note: null }],
  ['opted out', { status: 'opted-out' }],
];

describe('FHIR R4 Consent', () => {
  it.each(SHAPES)('round trip: %s', (_name, over) => {
    const v = version(over);
    const fhir = toFhirConsent(v);
    // Through JSON, as it travels.
    const back = fromFhirConsent(JSON.parse(JSON.stringify(fhir)));
    const { id, version: n, regionalId, recordedAt, recordedBy, evidenceSha256, evidenceMediaType, note, ...terms } = v;
    expect(back).toEqual({ id, version: n, regionalId, recordedAt, recordedBy, evidenceSha256, evidenceMediaType, note, ...terms });
    expect(parseTerms(terms)).toEqual(terms);
  });

  it('writes the standard elements', () => {
    const f = toFhirConsent(version());
    expect(f.resourceType).toBe('Consent');
    expect(f.status).toBe('active');
    expect(f.patient).toEqual({ reference: 'Patient/RP-1' });
    expect(f.policyRule.coding[0].code).toBe('OPTIN');
    expect(f.provision.type).toBe('permit');
    expect(f.provision.period).toEqual({ start: '2026-04-01T09:30:15.123Z', end: new Date(T + 365 * 86_400_000 + 1).toISOString() });
    expect(f.provision.purpose?.map((p) => p.code)).toEqual(['TREAT', 'ai-risk', 'ai-ecg']);
    expect(f.provision.provision?.map((p) => p.type)).toEqual(['deny', 'deny', 'deny']);
    expect(f.sourceAttachment).toEqual({ url: `urn:sha256:${'a'.repeat(64)}`, contentType: 'application/pdf' });
    expect(toFhirConsent(version({ status: 'withdrawn' })).status).toBe('inactive');
    expect(toFhirConsent(version({ status: 'opted-out' })).policyRule.coding[0].code).toBe('OPTOUT');
  });

  const good = () => JSON.parse(JSON.stringify(toFhirConsent(version()))) as Record<string, any>;
  const BAD: [string, (r: Record<string, any>) => unknown, RegExp][] = [
    ['not an object', () => 'Consent', /expected a JSON object/],
    ['another resource', (r) => ({ ...r, resourceType: 'Patient' }), /resourceType/],
    ['a draft', (r) => ({ ...r, status: 'draft' }), /Consent.status/],
    ['no patient', (r) => ({ ...r, patient: undefined }), /Consent.patient/],
    ['a patient that is not a Patient reference', (r) => ({ ...r, patient: { reference: 'Group/1' } }), /Consent.patient/],
    ['no dateTime', (r) => ({ ...r, dateTime: undefined }), /Consent.dateTime: required/],
    ['a dateTime without a zone', (r) => ({ ...r, dateTime: '2026-04-01T09:30:15' }), /time zone/],
    ['a date that does not exist', (r) => ({ ...r, dateTime: '2026-13-45T00:00:00Z' }), /Consent.dateTime/],
    ['no provision', (r) => ({ ...r, provision: undefined }), /Consent.provision: required/],
    ['a deny base provision', (r) => ({ ...r, provision: { ...r.provision, type: 'deny' } }), /must be a permit/],
    ['no validity period', (r) => ({ ...r, provision: { ...r.provision, period: undefined } }), /validity period/],
    ['an end before the start', (r) => ({ ...r, provision: { ...r.provision, period: { start: '2026-05-01T00:00:00Z', end: '2026-04-01T00:00:00Z' } } }), /validTo must be after validFrom/],
    ['an unknown category', (r) => ({ ...r, provision: { ...r.provision, provision: [{ type: 'deny', code: [{ coding: [{ system: SYSTEMS.category, code: 'gossip' }] }] }] } }), /record category/],
    ['an unknown purpose', (r) => ({ ...r, provision: { ...r.provision, purpose: [{ system: SYSTEMS.actReason, code: 'MARKETING' }] } }), /not supported/],
    ['an actor without a role', (r) => ({ ...r, provision: { ...r.provision, actor: [{ reference: { identifier: { system: SYSTEMS.facility, value: 'F1' } } }] } }), /CST or IRCP/],
    ['an unknown facility kind', (r) => ({ ...r, provision: { ...r.provision, actor: [{ role: { coding: [{ system: SYSTEMS.participation, code: 'IRCP' }] }, reference: { identifier: { system: SYSTEMS.facilityKind, value: 'spa' } } }] } }), /unknown facility kind/],
    ['a nested permit', (r) => ({ ...r, provision: { ...r.provision, provision: [{ type: 'permit' }] } }), /must be denies/],
    ['a modifier extension', (r) => ({ ...r, modifierExtension: [{ url: 'x' }] }), /modifier extensions/],
    ['evidence that is not a SHA-256', (r) => ({ ...r, sourceAttachment: { url: 'http://example.org/form.pdf' } }), /urn:sha256/],
    ['emergency both permitted and refused', (r) => ({ ...r, provision: { ...r.provision, purpose: [{ system: SYSTEMS.actReason, code: 'ETREAT' }] } }), /both permitted and refused/],
    ['a bad version', (r) => ({ ...r, meta: { versionId: 'x' } }), /versionId/],
  ];

  it.each(BAD)('refuses %s with an OperationOutcome', (_name, mutate, message) => {
    let error: unknown;
    try {
      fromFhirConsent(mutate(good()));
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(FhirConsentError);
    const e = error as FhirConsentError;
    expect(e.status).toBe(422);
    expect(e.message).toMatch(message);
    const oo = e.toOperationOutcome();
    expect(oo.resourceType).toBe('OperationOutcome');
    expect(oo.issue.length).toBeGreaterThan(0);
    expect(oo.issue.every((i) => i.severity === 'error' && i.expression.length === 1)).toBe(true);
  });

  it('names every problem at once', () => {
    try {
      fromFhirConsent({ resourceType: 'Consent', status: 'draft' });
      expect.unreachable();
    } catch (e) {
      const issues = (e as FhirConsentError).issues.map((i) => i.expression);
      expect(issues).toEqual(expect.arrayContaining(['Consent.status', 'Consent.patient', 'Consent.dateTime', 'Consent.provision']));
    }
  });
});
