import { describe, expect, it } from 'vitest';
import { decide, effectiveConsent, type AccessRequest, type DecisionContext, type PublicReasonCode, type ReasonCode } from '../consent/decide.js';
import type { ConsentVersion, Link, Participation } from '../consent/model.js';
import { defaultPolicy, parsePolicy, type ConsentPolicy } from '../consent/policy.js';

const DAY = 86_400_000;
const T0 = Date.UTC(2026, 0, 1);
const AT = T0 + DAY;

function part(facilityId: string, kind: Participation['kind'], discloses: boolean, views: boolean): Participation {
  return { facilityId, kind, discloses, views };
}

const PARTICIPATION = new Map<string, Participation>([
  ['A', part('A', 'hospital', true, true)],
  ['B', part('B', 'hospital', true, true)],
  ['C', part('C', 'pharmacy', true, true)],
  ['K', part('K', 'clinic', true, true)],
  ['E', part('E', 'care_home', false, true)],
  ['X', part('X', 'hospital', true, false)],
  // D is not in the registry at all.
]);

function link(facilityId: string, localId: string, regionalId = 'RP1'): Link {
  return { facilityId, localId, regionalId, method: 'manual', linkedBy: 'clerk1', linkedAt: T0 - DAY, evidence: null, score: null };
}

const LINKS: Link[] = [link('A', 'a1'), link('B', 'b1'), link('C', 'c1'), link('D', 'd1'), link('E', 'e1'), link('X', 'x1'), link('A', 'a2', 'RP2')];

function consent(over: Partial<ConsentVersion> = {}): ConsentVersion {
  return {
    id: 'cv1',
    regionalId: 'RP1',
    version: 1,
    recordedAt: T0 - DAY,
    recordedBy: 'clerk1',
    evidenceSha256: null,
    evidenceMediaType: null,
    note: null,
    status: 'opted-in',
    disclosing: { mode: 'all' },
    receiving: { kinds: ['hospital', 'pharmacy'], facilities: [], exclude: [] },
    categories: { mode: 'all' },
    purposes: { treatment: true, emergency: 'unspecified', aiServices: ['ai-risk'], research: false },
    validFrom: T0,
    validTo: T0 + 365 * DAY,
    ...over,
  };
}

function request(over: Partial<AccessRequest> = {}, user: Partial<AccessRequest['user']> = {}): AccessRequest {
  return {
    user: { id: 'u1', facilityId: 'B', facilityKind: 'hospital', role: 'physician', ...user },
    purpose: 'treatment',
    regionalId: 'RP1',
    source: { facilityId: 'A', localId: 'a1' },
    category: 'prescriptions',
    at: AT,
    ...over,
  };
}

function context(over: Partial<DecisionContext> = {}, policy: (p: ConsentPolicy) => void = () => {}): DecisionContext {
  const p = defaultPolicy();
  policy(p);
  return { consents: [consent()], links: LINKS, participation: PARTICIPATION, policy: p, breakGlass: [], disasters: [], ...over };
}

const grant = (over: Partial<DecisionContext['breakGlass'][number]> = {}) => ({
  id: 'bg1',
  userId: 'u1',
  facilityId: 'B',
  regionalId: 'RP1',
  reason: 'unconscious patient in ER',
  grantedAt: AT - 60_000,
  expiresAt: AT + 60_000,
  revokedAt: null,
  ...over,
});

const disaster = (over: Partial<DecisionContext['disasters'][number]> = {}) => ({
  id: 'dz1',
  facilities: ['B'] as 'all' | string[],
  from: AT - DAY,
  to: AT + DAY,
  declaredBy: 'op1',
  reason: 'earthquake',
  endedAt: null,
  ...over,
});

interface Row {
  name: string;
  req?: Partial<AccessRequest>;
  user?: Partial<AccessRequest['user']>;
  ctx?: Partial<DecisionContext>;
  policy?: (p: ConsentPolicy) => void;
  effect: 'permit' | 'deny';
  basis?: string;
  codes?: ReasonCode[];
  publicCode?: PublicReasonCode;
}

const withdrawn = consent({ id: 'cv2', version: 2, status: 'withdrawn', recordedAt: AT - 1000 });
const optedOut = consent({ status: 'opted-out' });
const noConsent: Partial<DecisionContext> = { consents: [] };

const ROWS: Row[] = [
  // the plain case
  { name: 'consent permits a hospital reading another hospital', effect: 'permit', basis: 'consent', codes: ['consent-permits'], publicCode: 'permitted' },
  { name: 'consent permits a pharmacy', user: { facilityId: 'C', facilityKind: 'pharmacy', role: 'pharmacist' }, effect: 'permit', basis: 'consent' },
  // malformed requests
  { name: 'unknown category', req: { category: 'gossip' as never }, effect: 'deny', codes: ['invalid-request'], publicCode: 'invalid-request' },
  { name: 'unknown purpose', req: { purpose: 'marketing' as never }, effect: 'deny', codes: ['invalid-request'], publicCode: 'invalid-request' },
  { name: 'ai-analysis without a service', req: { purpose: 'ai-analysis' }, effect: 'deny', codes: ['invalid-request'] },
  { name: 'instant not a number', req: { at: Number.NaN }, effect: 'deny', codes: ['invalid-request'] },
  { name: 'no user id', user: { id: '' }, effect: 'deny', codes: ['invalid-request'] },
  { name: 'no source local id', req: { source: { facilityId: 'A', localId: '' } }, effect: 'deny', codes: ['invalid-request'] },
  { name: 'no patient', req: { regionalId: '' }, effect: 'deny', codes: ['invalid-request'] },
  // links
  { name: 'an unlinked local ID is never shared', req: { source: { facilityId: 'A', localId: 'a9' } }, effect: 'deny', codes: ['not-linked'], publicCode: 'access-denied' },
  { name: 'a local ID linked to another patient is not this patient', req: { source: { facilityId: 'A', localId: 'a2' } }, effect: 'deny', codes: ['not-linked'] },
  { name: 'unlinked beats own facility', req: { source: { facilityId: 'B', localId: 'b9' } }, effect: 'deny', codes: ['not-linked'] },
  { name: 'unlinked beats break-glass', req: { source: { facilityId: 'A', localId: 'a9' } }, ctx: { ...noConsent, breakGlass: [grant()] }, effect: 'deny', codes: ['not-linked'] },
  // participation
  { name: 'a facility outside the registry does not view', user: { facilityId: 'D', facilityKind: 'clinic' }, effect: 'deny', codes: ['requester-not-participating'], publicCode: 'facility-not-participating' },
  { name: 'a disclose-only facility does not view', user: { facilityId: 'X' }, effect: 'deny', codes: ['requester-not-participating'], publicCode: 'facility-not-participating' },
  { name: 'a non-viewer cannot break glass', user: { facilityId: 'X' }, ctx: { ...noConsent, breakGlass: [grant({ facilityId: 'X' })] }, effect: 'deny', codes: ['requester-not-participating'] },
  { name: 'the registry decides the kind', user: { facilityKind: 'pharmacy' }, effect: 'deny', codes: ['requester-kind-mismatch'], publicCode: 'invalid-request' },
  { name: 'a source outside the registry does not disclose', req: { source: { facilityId: 'D', localId: 'd1' } }, effect: 'deny', codes: ['source-not-participating'] },
  { name: 'a view-only source does not disclose', req: { source: { facilityId: 'E', localId: 'e1' } }, effect: 'deny', codes: ['source-not-participating'] },
  { name: 'a non-disclosing source stays closed in a disaster', req: { purpose: 'emergency', source: { facilityId: 'E', localId: 'e1' } }, ctx: { disasters: [disaster({ facilities: 'all' })] }, effect: 'deny', codes: ['source-not-participating'] },
  // own facility
  { name: 'own records are not a disclosure, even when withdrawn', req: { source: { facilityId: 'B', localId: 'b1' } }, ctx: { consents: [consent(), withdrawn] }, effect: 'permit', basis: 'own-facility', codes: ['own-facility'] },
  { name: 'own records without any consent', req: { source: { facilityId: 'B', localId: 'b1' } }, ctx: noConsent, effect: 'permit', basis: 'own-facility' },
  { name: 'own records sent to an AI service need consent', req: { purpose: 'ai-analysis', aiServiceId: 'ai-risk', source: { facilityId: 'B', localId: 'b1' } }, ctx: noConsent, effect: 'deny', codes: ['no-consent'] },
  { name: 'own records to a consented AI service', req: { purpose: 'ai-analysis', aiServiceId: 'ai-risk', source: { facilityId: 'B', localId: 'b1' } }, effect: 'permit', basis: 'consent' },
  { name: 'own-facility rule switched off by policy', req: { source: { facilityId: 'B', localId: 'b1' } }, ctx: noConsent, policy: (p) => (p.ownFacility.purposes = []), effect: 'deny', codes: ['no-consent'] },
  // consent versions and time
  { name: 'no consent recorded', ctx: noConsent, effect: 'deny', codes: ['no-consent'], publicCode: 'access-denied' },
  { name: 'a consent recorded after the instant does not apply yet', ctx: { consents: [consent({ recordedAt: AT + 1 })] }, effect: 'deny', codes: ['no-consent'] },
  { name: 'withdrawal beats the earlier consent', ctx: { consents: [consent(), withdrawn] }, effect: 'deny', codes: ['withdrawn'], publicCode: 'access-denied' },
  { name: 'withdrawal is effective at the very instant it is recorded', req: { at: AT - 1000 }, ctx: { consents: [consent(), withdrawn] }, effect: 'deny', codes: ['withdrawn'] },
  { name: 'one millisecond before the withdrawal the consent held', req: { at: AT - 1001 }, ctx: { consents: [consent(), withdrawn] }, effect: 'permit', basis: 'consent' },
  { name: 'a new consent after a withdrawal', ctx: { consents: [consent(), withdrawn, consent({ id: 'cv3', version: 3, recordedAt: AT - 10 })] }, effect: 'permit', basis: 'consent' },
  { name: 'opted out', ctx: { consents: [optedOut] }, effect: 'deny', codes: ['opted-out'] },
  { name: 'one millisecond before validFrom', req: { at: T0 - 1 }, effect: 'deny', codes: ['consent-not-yet-valid'] },
  { name: 'exactly at validFrom', req: { at: T0 }, effect: 'permit', basis: 'consent' },
  { name: 'one millisecond before validTo', req: { at: T0 + 365 * DAY - 1 }, effect: 'permit', basis: 'consent' },
  { name: 'exactly at validTo (half-open)', req: { at: T0 + 365 * DAY }, effect: 'deny', codes: ['consent-expired'] },
  { name: 'open-ended validity', req: { at: T0 + 3650 * DAY }, ctx: { consents: [consent({ validTo: null })] }, effect: 'permit', basis: 'consent' },
  // disclosing facilities
  { name: 'disclosing: all except the source', ctx: { consents: [consent({ disclosing: { mode: 'all-except', facilities: ['A'] } })] }, effect: 'deny', codes: ['source-excluded'] },
  { name: 'disclosing: all except another facility', ctx: { consents: [consent({ disclosing: { mode: 'all-except', facilities: ['C'] } })] }, effect: 'permit', basis: 'consent' },
  { name: 'disclosing: listed without the source', ctx: { consents: [consent({ disclosing: { mode: 'listed', facilities: ['C'] } })] }, effect: 'deny', codes: ['source-not-included'] },
  { name: 'disclosing: listed with the source', ctx: { consents: [consent({ disclosing: { mode: 'listed', facilities: ['A'] } })] }, effect: 'permit', basis: 'consent' },
  // receiving facilities
  { name: 'receiving: the requester is excluded', ctx: { consents: [consent({ receiving: { kinds: 'all', facilities: ['B'], exclude: ['B'] } })] }, effect: 'deny', codes: ['receiver-excluded'] },
  { name: 'receiving: a care home is not among the kinds', user: { facilityId: 'E', facilityKind: 'care_home', role: 'care_worker' }, effect: 'deny', codes: ['receiver-not-included'] },
  { name: 'receiving: listed by id although its kind is not', user: { facilityId: 'E', facilityKind: 'care_home', role: 'care_worker' }, ctx: { consents: [consent({ receiving: { kinds: ['hospital'], facilities: ['E'], exclude: [] } })] }, effect: 'permit', basis: 'consent' },
  { name: 'receiving: every kind', user: { facilityId: 'K', facilityKind: 'clinic' }, ctx: { consents: [consent({ receiving: { kinds: 'all', facilities: [], exclude: [] } })] }, effect: 'permit', basis: 'consent' },
  { name: 'receiving: no kinds, nothing listed', ctx: { consents: [consent({ receiving: { kinds: [], facilities: [], exclude: [] } })] }, effect: 'deny', codes: ['receiver-not-included'] },
  // categories
  { name: 'categories: all except this one', ctx: { consents: [consent({ categories: { mode: 'all-except', categories: ['prescriptions'] } })] }, effect: 'deny', codes: ['category-excluded'] },
  { name: 'categories: all except another one', ctx: { consents: [consent({ categories: { mode: 'all-except', categories: ['labs'] } })] }, effect: 'permit' },
  { name: 'categories: listed without this one', ctx: { consents: [consent({ categories: { mode: 'listed', categories: ['allergies'] } })] }, effect: 'deny', codes: ['category-not-included'] },
  { name: 'categories: listed with this one', ctx: { consents: [consent({ categories: { mode: 'listed', categories: ['prescriptions'] } })] }, effect: 'permit' },
  // purposes
  { name: 'treatment not consented', ctx: { consents: [consent({ purposes: { treatment: false, emergency: 'unspecified', aiServices: [], research: false } })] }, effect: 'deny', codes: ['purpose-not-consented'] },
  { name: 'emergency implied by treatment', req: { purpose: 'emergency' }, effect: 'permit', basis: 'consent' },
  { name: 'emergency not implied when policy says so', req: { purpose: 'emergency' }, policy: (p) => (p.emergency.impliedByTreatment = false), effect: 'deny', codes: ['purpose-not-consented'] },
  { name: 'emergency consented without treatment', req: { purpose: 'emergency' }, ctx: { consents: [consent({ purposes: { treatment: false, emergency: 'permit', aiServices: [], research: false } })] }, effect: 'permit', basis: 'consent' },
  { name: 'emergency refused explicitly', req: { purpose: 'emergency' }, ctx: { consents: [consent({ purposes: { treatment: true, emergency: 'refuse', aiServices: [], research: false } })] }, effect: 'deny', codes: ['emergency-refused'] },
  { name: 'AI analysis by the consented service, masked', req: { purpose: 'ai-analysis', aiServiceId: 'ai-risk' }, effect: 'permit', basis: 'consent' },
  { name: 'AI analysis by another service', req: { purpose: 'ai-analysis', aiServiceId: 'ai-other' }, effect: 'deny', codes: ['ai-service-not-consented'] },
  { name: 'AI analysis is never opened by break-glass', req: { purpose: 'ai-analysis', aiServiceId: 'ai-other' }, ctx: { breakGlass: [grant()] }, effect: 'deny', codes: ['ai-service-not-consented'] },
  { name: 'research off unless stated', req: { purpose: 'research' }, effect: 'deny', codes: ['research-not-consented'] },
  { name: 'research stated', req: { purpose: 'research' }, ctx: { consents: [consent({ purposes: { treatment: true, emergency: 'unspecified', aiServices: [], research: true } })] }, effect: 'permit', basis: 'consent' },
  { name: 'research is never opened by break-glass', req: { purpose: 'research' }, ctx: { breakGlass: [grant()] }, effect: 'deny', codes: ['research-not-consented'] },
  { name: 'research is never opened by a disaster', req: { purpose: 'research' }, ctx: { disasters: [disaster({ facilities: 'all' })] }, effect: 'deny', codes: ['research-not-consented'] },
  // disaster mode
  { name: 'disaster opens emergency reads without consent', req: { purpose: 'emergency' }, ctx: { ...noConsent, disasters: [disaster()] }, effect: 'permit', basis: 'disaster', codes: ['no-consent', 'disaster-rule'] },
  { name: 'disaster does not open treatment reads', ctx: { ...noConsent, disasters: [disaster()] }, effect: 'deny', codes: ['no-consent'] },
  { name: 'disaster at its first instant', req: { purpose: 'emergency', at: AT - DAY }, ctx: { ...noConsent, disasters: [disaster()] }, effect: 'permit', basis: 'disaster' },
  { name: 'disaster at its end (half-open)', req: { purpose: 'emergency', at: AT + DAY }, ctx: { ...noConsent, disasters: [disaster()] }, effect: 'deny', codes: ['no-consent'] },
  { name: 'disaster ended early by the operator', req: { purpose: 'emergency' }, ctx: { ...noConsent, disasters: [disaster({ endedAt: AT })] }, effect: 'deny', codes: ['no-consent'] },
  { name: 'disaster elsewhere', req: { purpose: 'emergency' }, ctx: { ...noConsent, disasters: [disaster({ facilities: ['Q'] })] }, effect: 'deny' },
  { name: 'disaster covering the source only, policy either', req: { purpose: 'emergency' }, ctx: { ...noConsent, disasters: [disaster({ facilities: ['A'] })] }, effect: 'permit', basis: 'disaster' },
  { name: 'disaster covering the source only, policy requester', req: { purpose: 'emergency' }, ctx: { ...noConsent, disasters: [disaster({ facilities: ['A'] })] }, policy: (p) => (p.disaster.appliesTo = 'requester'), effect: 'deny' },
  { name: 'disaster covering the requester only, policy source', req: { purpose: 'emergency' }, ctx: { ...noConsent, disasters: [disaster({ facilities: ['B'] })] }, policy: (p) => (p.disaster.appliesTo = 'source'), effect: 'deny' },
  { name: 'disaster covering the source, policy source', req: { purpose: 'emergency' }, ctx: { ...noConsent, disasters: [disaster({ facilities: ['A'] })] }, policy: (p) => (p.disaster.appliesTo = 'source'), effect: 'permit', basis: 'disaster' },
  { name: 'disaster rule closed to clerks', req: { purpose: 'emergency' }, user: { role: 'clerk' }, ctx: { ...noConsent, disasters: [disaster()] }, effect: 'deny', codes: ['disaster-role-closed'] },
  { name: 'disaster rule closed to imaging', req: { purpose: 'emergency', category: 'imaging' }, ctx: { ...noConsent, disasters: [disaster()] }, effect: 'deny', codes: ['disaster-category-closed'] },
  { name: 'disaster rule switched off', req: { purpose: 'emergency' }, ctx: { ...noConsent, disasters: [disaster()] }, policy: (p) => (p.disaster.enabled = false), effect: 'deny', codes: ['no-consent'] },
  { name: 'disaster blocked by explicit emergency refusal', req: { purpose: 'emergency' }, ctx: { consents: [consent({ purposes: { treatment: true, emergency: 'refuse', aiServices: [], research: false } })], disasters: [disaster()] }, effect: 'deny', codes: ['emergency-refused', 'disaster-blocked'] },
  { name: 'disaster blocked by withdrawal', req: { purpose: 'emergency' }, ctx: { consents: [consent(), withdrawn], disasters: [disaster()] }, effect: 'deny', codes: ['withdrawn', 'disaster-blocked'] },
  { name: 'disaster overrides withdrawal when policy says so', req: { purpose: 'emergency' }, ctx: { consents: [consent(), withdrawn], disasters: [disaster()] }, policy: (p) => (p.disaster.overridesRefusal = true), effect: 'permit', basis: 'disaster' },
  { name: 'disaster never overrides an explicit exclusion', req: { purpose: 'emergency' }, ctx: { consents: [consent({ disclosing: { mode: 'all-except', facilities: ['A'] } })], disasters: [disaster()] }, policy: (p) => (p.disaster.overridesRefusal = true), effect: 'deny', codes: ['source-excluded', 'disaster-blocked'] },
  { name: 'disaster opens an expired consent', req: { purpose: 'emergency', at: T0 + 400 * DAY }, ctx: { disasters: [disaster({ from: T0, to: T0 + 500 * DAY })] }, effect: 'permit', basis: 'disaster', codes: ['consent-expired', 'disaster-rule'] },
  // break-glass
  { name: 'break-glass without consent', ctx: { ...noConsent, breakGlass: [grant()] }, effect: 'permit', basis: 'break-glass', codes: ['no-consent', 'break-glass'] },
  { name: 'break-glass for a category not consented', ctx: { consents: [consent({ categories: { mode: 'listed', categories: ['allergies'] } })], breakGlass: [grant()] }, effect: 'permit', basis: 'break-glass' },
  { name: 'break-glass at its expiry instant', ctx: { ...noConsent, breakGlass: [grant({ expiresAt: AT })] }, effect: 'deny', codes: ['break-glass-expired'], publicCode: 'break-glass-expired' },
  { name: 'break-glass not yet granted at the instant', ctx: { ...noConsent, breakGlass: [grant({ grantedAt: AT + 1 })] }, effect: 'deny', codes: ['no-consent'], publicCode: 'access-denied' },
  { name: 'break-glass revoked', ctx: { ...noConsent, breakGlass: [grant({ revokedAt: AT - 1 })] }, effect: 'deny', codes: ['break-glass-expired'] },
  { name: 'break-glass revoked later still holds now', ctx: { ...noConsent, breakGlass: [grant({ revokedAt: AT + 1 })] }, effect: 'permit', basis: 'break-glass' },
  { name: "another user's grant", ctx: { ...noConsent, breakGlass: [grant({ userId: 'u2' })] }, effect: 'deny', codes: ['no-consent'] },
  { name: 'a grant for another patient', ctx: { ...noConsent, breakGlass: [grant({ regionalId: 'RP2' })] }, effect: 'deny' },
  { name: 'a grant made at another facility', ctx: { ...noConsent, breakGlass: [grant({ facilityId: 'C' })] }, effect: 'deny' },
  { name: 'break-glass not open to nurses', user: { role: 'nurse' }, ctx: { ...noConsent, breakGlass: [grant()] }, effect: 'deny', codes: ['break-glass-role-closed'], publicCode: 'break-glass-not-allowed' },
  { name: 'break-glass switched off', ctx: { ...noConsent, breakGlass: [grant()] }, policy: (p) => (p.breakGlass.enabled = false), effect: 'deny', codes: ['break-glass-role-closed'] },
  { name: 'break-glass limited to some categories', ctx: { ...noConsent, breakGlass: [grant()] }, policy: (p) => (p.breakGlass.categories = ['allergies']), effect: 'deny', codes: ['break-glass-category-closed'] },
  { name: 'break-glass within its categories', req: { category: 'allergies' }, ctx: { ...noConsent, breakGlass: [grant()] }, policy: (p) => (p.breakGlass.categories = ['allergies']), effect: 'permit', basis: 'break-glass' },
  { name: 'break-glass limited to emergency purpose', ctx: { ...noConsent, breakGlass: [grant()] }, policy: (p) => (p.breakGlass.purposes = ['emergency']), effect: 'deny', codes: ['break-glass-purpose-closed'] },
  { name: 'break-glass blocked by withdrawal', ctx: { consents: [consent(), withdrawn], breakGlass: [grant()] }, effect: 'deny', codes: ['withdrawn', 'break-glass-blocked'], publicCode: 'access-denied' },
  { name: 'break-glass blocked by opt-out', ctx: { consents: [optedOut], breakGlass: [grant()] }, effect: 'deny', codes: ['opted-out', 'break-glass-blocked'] },
  { name: 'break-glass overrides withdrawal when policy says so', ctx: { consents: [consent(), withdrawn], breakGlass: [grant()] }, policy: (p) => (p.breakGlass.overridesRefusal = true), effect: 'permit', basis: 'break-glass' },
  { name: 'break-glass never overrides a receiver exclusion', ctx: { consents: [consent({ receiving: { kinds: 'all', facilities: [], exclude: ['B'] } })], breakGlass: [grant()] }, policy: (p) => (p.breakGlass.overridesRefusal = true), effect: 'deny', codes: ['receiver-excluded', 'break-glass-blocked'] },
  { name: 'break-glass never overrides a category exclusion', ctx: { consents: [consent({ categories: { mode: 'all-except', categories: ['prescriptions'] } })], breakGlass: [grant()] }, effect: 'deny', codes: ['category-excluded', 'break-glass-blocked'] },
  { name: 'break-glass emergency purpose with refusal', req: { purpose: 'emergency' }, ctx: { consents: [consent({ purposes: { treatment: false, emergency: 'refuse', aiServices: [], research: false } })], breakGlass: [grant()] }, effect: 'deny', codes: ['emergency-refused', 'break-glass-blocked'] },
  { name: 'disaster rule is tried before break-glass', req: { purpose: 'emergency' }, ctx: { ...noConsent, breakGlass: [grant()], disasters: [disaster()] }, effect: 'permit', basis: 'disaster' },
  { name: 'break-glass after a disaster rule refuses a category', req: { purpose: 'emergency', category: 'imaging' }, ctx: { ...noConsent, breakGlass: [grant()], disasters: [disaster()] }, effect: 'permit', basis: 'break-glass', codes: ['disaster-category-closed', 'break-glass'] },
];

describe('decide: every rule and their conflicts', () => {
  it.each(ROWS)('$name', (row) => {
    const d = decide(request(row.req, row.user), context(row.ctx, row.policy));
    expect(d.effect).toBe(row.effect);
    if (row.basis) expect(d.basis).toBe(row.basis);
    if (row.effect === 'deny') expect(d.basis).toBeNull();
    const codes = d.reasons.map((r) => r.code);
    for (const c of row.codes ?? []) expect(codes).toContain(c);
    if (row.publicCode) expect(d.publicReason.code).toBe(row.publicCode);
    expect(d.obligations.some((o) => o.kind === 'audit')).toBe(true);
  });

  it('never tells the caller anything about the patient', () => {
    const allowed = new Set(['access-denied', 'invalid-request', 'facility-not-participating', 'break-glass-expired', 'break-glass-not-allowed']);
    const internal = /withdr|consent|exclu|opt|refus|link|disaster|version|RP\d|a1|research|A\b/i;
    for (const row of ROWS.filter((r) => r.effect === 'deny')) {
      const d = decide(request(row.req, row.user), context(row.ctx, row.policy));
      expect(allowed.has(d.publicReason.code)).toBe(true);
      expect(d.publicReason.text).not.toMatch(internal);
    }
  });

  it('break-glass and disaster reads are reported to the patient facilities and audited as elevated', () => {
    const bg = decide(request(), context({ ...noConsent, breakGlass: [grant()] }));
    expect(bg.grantId).toBe('bg1');
    expect(bg.obligations).toContainEqual({ kind: 'audit', level: 'elevated' });
    // The patient is linked at A, B, C, D, E, X; the requester (B) is not told about itself.
    expect(bg.obligations).toContainEqual({ kind: 'notify-patient-facilities', facilities: ['A', 'C', 'D', 'E', 'X'] });
    const dz = decide(request({ purpose: 'emergency' }), context({ ...noConsent, disasters: [disaster()] }));
    expect(dz.disasterId).toBe('dz1');
    expect(dz.obligations).toContainEqual({ kind: 'notify-patient-facilities', facilities: ['A', 'C', 'D', 'E', 'X'] });
    const quiet = decide(request({ purpose: 'emergency' }), context({ ...noConsent, disasters: [disaster()] }, (p) => (p.disaster.notify = false)));
    expect(quiet.obligations.some((o) => o.kind === 'notify-patient-facilities')).toBe(false);
    const plain = decide(request(), context());
    expect(plain.obligations).toEqual([{ kind: 'audit', level: 'normal' }]);
    expect(plain.consentVersionId).toBe('cv1');
  });

  it('masks identifiers for AI analysis, and applies policy masks by basis and category', () => {
    const ai = decide(request({ purpose: 'ai-analysis', aiServiceId: 'ai-risk' }), context());
    const mask = ai.obligations.find((o) => o.kind === 'mask');
    expect(mask).toBeDefined();
    expect(mask && mask.kind === 'mask' && mask.fields).toEqual(expect.arrayContaining(['name', 'birthDate', 'localId', 'address', 'phone', 'insuranceNumber']));
    const policy = (p: ConsentPolicy) => p.masks.push({ bases: ['break-glass'], categories: ['prescriptions'], fields: ['prescriber'] });
    const bg = decide(request(), context({ ...noConsent, breakGlass: [grant()] }, policy));
    expect(bg.obligations).toContainEqual({ kind: 'mask', fields: ['prescriber'] });
    const bgLabs = decide(request({ category: 'labs' }), context({ ...noConsent, breakGlass: [grant()] }, policy));
    expect(bgLabs.obligations.some((o) => o.kind === 'mask')).toBe(false);
    expect(decide(request(), context({}, policy)).obligations.some((o) => o.kind === 'mask')).toBe(false);
  });

  it('takes the latest statement across the chains of merged patients', () => {
    const absorbed = consent({ id: 'old', regionalId: 'RP0', version: 1, recordedAt: T0 - 5 * DAY });
    const laterWithdrawal = consent({ id: 'w', regionalId: 'RP0', version: 2, status: 'withdrawn', recordedAt: AT - 5 });
    expect(decide(request(), context({ consents: [consent(), absorbed] })).effect).toBe('permit');
    expect(decide(request(), context({ consents: [consent(), absorbed, laterWithdrawal] })).reasons.map((r) => r.code)).toContain('withdrawn');
    expect(effectiveConsent([consent({ id: 'x', version: 1 }), consent({ id: 'y', version: 2 })], AT)?.id).toBe('y');
    expect(effectiveConsent([consent({ id: 'b' }), consent({ id: 'a' })], AT)?.id).toBe('b');
    expect(effectiveConsent([], AT)).toBeUndefined();
  });

  it('denies a request that is not one', () => {
    expect(decide(null as never, context()).publicReason.code).toBe('invalid-request');
    expect(decide({ ...request(), user: undefined } as never, context()).reasons[0].code).toBe('invalid-request');
    expect(decide({ ...request(), source: undefined } as never, context()).reasons[0].code).toBe('invalid-request');
  });

  it('is deterministic and does not touch its inputs', () => {
    const ctx = context({ consents: [consent(), withdrawn], breakGlass: [grant()], disasters: [disaster()] });
    const frozen = structuredClone({ consents: ctx.consents, links: ctx.links, breakGlass: ctx.breakGlass, disasters: ctx.disasters, policy: ctx.policy });
    const req = request({ purpose: 'emergency' });
    const a = decide(req, ctx);
    const b = decide(req, ctx);
    expect(a).toEqual(b);
    expect({ consents: ctx.consents, links: ctx.links, breakGlass: ctx.breakGlass, disasters: ctx.disasters, policy: ctx.policy }).toEqual(frozen);
  });
});

describe('policy validation', () => {
  it('accepts the default policy', () => {
    expect(parsePolicy(defaultPolicy())).toEqual(defaultPolicy());
  });
  it('names what is wrong', () => {
    expect(() => parsePolicy({ ...defaultPolicy(), breakGlass: { ...defaultPolicy().breakGlass, maxMinutes: 0 } })).toThrow(/breakGlass.maxMinutes/);
    expect(() => parsePolicy({ ...defaultPolicy(), disaster: { ...defaultPolicy().disaster, categories: ['gossip'] } })).toThrow(/disaster.categories/);
    expect(() => parsePolicy({ ...defaultPolicy(), extra: 1 })).toThrow(/invalid consent policy/);
    expect(() => parsePolicy({ ...defaultPolicy(), breakGlass: { ...defaultPolicy().breakGlass, purposes: ['research'] } })).toThrow(/only treatment and emergency/);
    expect(() => parsePolicy({ ...defaultPolicy(), ownFacility: { purposes: ['ai-analysis'] } })).toThrow(/only treatment and emergency/);
  });
});
