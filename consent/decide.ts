import { isCategory, type Category } from './categories.js';
import type {
  BreakGlassGrant,
  ConsentVersion,
  DisasterDeclaration,
  FacilityKind,
  Link,
  LocalKey,
  Participation,
  Purpose,
} from './model.js';
import type { ConsentPolicy, DecisionBasis } from './policy.js';

/**
 * The one consent decision of the exchange: a pure function of the request and the context the
 * loader assembled. It never reads a clock, a database or the environment, so the same inputs
 * always give the same answer and it can be tested branch by branch.
 *
 * Order of the rules (each is documented in README "Identity and consent"):
 *  1. a malformed request is denied;
 *  2. the record's local ID must be linked to the patient asked about (an unlinked local ID is
 *     never shared, whatever else holds);
 *  3. the requesting facility must participate as a viewer, the source as a discloser;
 *  4. a facility reading its own records for treatment/emergency is not a disclosure: permit;
 *  5. the patient's effective consent version at the instant decides; withdrawal, opt-out and
 *     explicit exclusions are remembered as hard refusals;
 *  6. when the consent does not permit: research and AI analysis stop here (consent only);
 *     otherwise a declared disaster's emergency rule, then an active break-glass grant, may
 *     permit, unless an explicit exclusion (always) or a refusal (unless policy overrides) holds.
 */

export interface AccessRequest {
  user: { id: string; facilityId: string; facilityKind: FacilityKind; role: string };
  purpose: Purpose;
  /** Required when purpose is ai-analysis: the AI service's registry id. */
  aiServiceId?: string;
  /** The regional patient asked about. */
  regionalId: string;
  /** The record being read: which facility holds it, under which local patient ID. */
  source: LocalKey;
  category: Category;
  /** The instant of the read, epoch ms. */
  at: number;
}

export interface DecisionContext {
  /** Consent versions of the patient (and of patients merged into it), any order. */
  consents: readonly ConsentVersion[];
  /** Current links of the patient. */
  links: readonly Link[];
  participation: ReadonlyMap<string, Participation>;
  policy: ConsentPolicy;
  /** Break-glass grants of this patient (the loader may pass only the requester's). */
  breakGlass: readonly BreakGlassGrant[];
  disasters: readonly DisasterDeclaration[];
}

export type ReasonCode =
  | 'invalid-request'
  | 'not-linked'
  | 'requester-not-participating'
  | 'requester-kind-mismatch'
  | 'source-not-participating'
  | 'own-facility'
  | 'no-consent'
  | 'opted-out'
  | 'withdrawn'
  | 'consent-not-yet-valid'
  | 'consent-expired'
  | 'source-excluded'
  | 'source-not-included'
  | 'receiver-excluded'
  | 'receiver-not-included'
  | 'category-excluded'
  | 'category-not-included'
  | 'purpose-not-consented'
  | 'emergency-refused'
  | 'ai-service-not-consented'
  | 'research-not-consented'
  | 'consent-permits'
  | 'disaster-rule'
  | 'disaster-role-closed'
  | 'disaster-category-closed'
  | 'disaster-blocked'
  | 'break-glass'
  | 'break-glass-role-closed'
  | 'break-glass-category-closed'
  | 'break-glass-purpose-closed'
  | 'break-glass-expired'
  | 'break-glass-blocked';

export interface Reason {
  code: ReasonCode;
  text: string;
}

/** What the caller may be told. Never says anything about the patient's consent or records. */
export type PublicReasonCode =
  | 'permitted'
  | 'access-denied'
  | 'invalid-request'
  | 'facility-not-participating'
  | 'break-glass-expired'
  | 'break-glass-not-allowed';

export type Obligation =
  | { kind: 'audit'; level: 'normal' | 'elevated' }
  | { kind: 'notify-patient-facilities'; facilities: string[] }
  | { kind: 'mask'; fields: string[] };

export interface Decision {
  effect: 'permit' | 'deny';
  basis: DecisionBasis | null;
  /** Internal reasons: for the audit trail and administrators, never for the caller. */
  reasons: Reason[];
  /** The reason the caller may see. */
  publicReason: { code: PublicReasonCode; text: string };
  obligations: Obligation[];
  /** The consent version that was applied, if any (for the audit record). */
  consentVersionId: string | null;
  /** The break-glass grant or disaster declaration used, if any. */
  grantId: string | null;
  disasterId: string | null;
}

const PUBLIC_TEXT: Record<PublicReasonCode, string> = {
  permitted: 'Access permitted.',
  'access-denied': 'Access to this information is not permitted.',
  'invalid-request': 'The request is not valid.',
  'facility-not-participating': 'Your facility does not view records through the exchange.',
  'break-glass-expired': 'Your emergency access has expired.',
  'break-glass-not-allowed': 'Your role may not use emergency access.',
};

const AUDIT_NORMAL: Obligation = { kind: 'audit', level: 'normal' };
const AUDIT_ELEVATED: Obligation = { kind: 'audit', level: 'elevated' };

function deny(reasons: Reason[], publicCode: PublicReasonCode = 'access-denied', consentVersionId: string | null = null): Decision {
  return {
    effect: 'deny',
    basis: null,
    reasons,
    publicReason: { code: publicCode, text: PUBLIC_TEXT[publicCode] },
    obligations: [AUDIT_NORMAL],
    consentVersionId,
    grantId: null,
    disasterId: null,
  };
}

const PURPOSE_SET: ReadonlySet<string> = new Set(['treatment', 'emergency', 'ai-analysis', 'research']);

function validRequest(r: AccessRequest): string | null {
  if (!r || typeof r !== 'object') return 'request missing';
  if (!r.user || !r.user.id || !r.user.facilityId || !r.user.role) return 'requester incomplete';
  if (!PURPOSE_SET.has(r.purpose)) return `unknown purpose ${String(r.purpose)}`;
  if (r.purpose === 'ai-analysis' && !r.aiServiceId) return 'ai-analysis needs an AI service id';
  if (!r.regionalId) return 'patient missing';
  if (!r.source || !r.source.facilityId || !r.source.localId) return 'source record missing';
  if (!isCategory(r.category)) return `unknown category ${String(r.category)}`;
  if (typeof r.at !== 'number' || !Number.isFinite(r.at)) return 'instant missing';
  return null;
}

/** The version in force at `at`: the latest recorded at or before it (ties: higher version). */
export function effectiveConsent(consents: readonly ConsentVersion[], at: number): ConsentVersion | undefined {
  let best: ConsentVersion | undefined;
  for (const c of consents) {
    if (c.recordedAt > at) continue;
    if (
      !best ||
      c.recordedAt > best.recordedAt ||
      (c.recordedAt === best.recordedAt && (c.version > best.version || (c.version === best.version && c.id > best.id)))
    ) {
      best = c;
    }
  }
  return best;
}

interface ConsentEval {
  permits: boolean;
  /** An explicit exclusion applies: nothing may open the record. */
  excluded: boolean;
  /** The patient said no (withdrawal, opt-out, or refusal of emergency use for this purpose). */
  refused: boolean;
  reasons: Reason[];
  version: ConsentVersion | undefined;
}

function evaluateConsent(req: AccessRequest, ctx: DecisionContext, receiverKind: FacilityKind): ConsentEval {
  const version = effectiveConsent(ctx.consents, req.at);
  const reasons: Reason[] = [];
  if (!version) {
    reasons.push({ code: 'no-consent', text: 'the patient has no consent recorded at this instant' });
    return { permits: false, excluded: false, refused: false, reasons, version };
  }
  let permits = true;
  let excluded = false;
  let refused = false;
  const v = version;

  if (v.status === 'withdrawn') {
    permits = false;
    refused = true;
    reasons.push({ code: 'withdrawn', text: `consent withdrawn (version ${v.version})` });
  } else if (v.status === 'opted-out') {
    permits = false;
    refused = true;
    reasons.push({ code: 'opted-out', text: `the patient opted out (version ${v.version})` });
  }
  // Half-open validity: valid at validFrom, no longer valid at validTo.
  if (req.at < v.validFrom) {
    permits = false;
    reasons.push({ code: 'consent-not-yet-valid', text: `consent version ${v.version} is valid from ${new Date(v.validFrom).toISOString()}` });
  } else if (v.validTo !== null && req.at >= v.validTo) {
    permits = false;
    reasons.push({ code: 'consent-expired', text: `consent version ${v.version} was valid until ${new Date(v.validTo).toISOString()}` });
  }

  // Exclusions are honoured whatever the status or validity of the version: they are the
  // patient's explicit statement and no exceptional path may open them.
  const src = req.source.facilityId;
  const d = v.disclosing;
  if (d.mode === 'all-except' && d.facilities.includes(src)) {
    permits = false;
    excluded = true;
    reasons.push({ code: 'source-excluded', text: `the patient excluded disclosure by ${src}` });
  } else if (d.mode === 'listed' && !d.facilities.includes(src)) {
    permits = false;
    reasons.push({ code: 'source-not-included', text: `${src} is not among the disclosing facilities consented` });
  }

  const me = req.user.facilityId;
  const rc = v.receiving;
  if (rc.exclude.includes(me)) {
    permits = false;
    excluded = true;
    reasons.push({ code: 'receiver-excluded', text: `the patient excluded ${me} from receiving` });
  } else if (!(rc.kinds === 'all' || rc.kinds.includes(receiverKind) || rc.facilities.includes(me))) {
    permits = false;
    reasons.push({ code: 'receiver-not-included', text: `${me} (${receiverKind}) is not among the receivers consented` });
  }

  const cs = v.categories;
  if (cs.mode === 'all-except' && cs.categories.includes(req.category)) {
    permits = false;
    excluded = true;
    reasons.push({ code: 'category-excluded', text: `the patient excluded ${req.category}` });
  } else if (cs.mode === 'listed' && !cs.categories.includes(req.category)) {
    permits = false;
    reasons.push({ code: 'category-not-included', text: `${req.category} is not among the categories consented` });
  }

  const p = v.purposes;
  switch (req.purpose) {
    case 'treatment':
      if (!p.treatment) {
        permits = false;
        reasons.push({ code: 'purpose-not-consented', text: 'treatment use is not consented' });
      }
      break;
    case 'emergency':
      if (p.emergency === 'refuse') {
        permits = false;
        refused = true;
        reasons.push({ code: 'emergency-refused', text: 'the patient refused emergency use' });
      } else if (!(p.emergency === 'permit' || (p.treatment && ctx.policy.emergency.impliedByTreatment))) {
        permits = false;
        reasons.push({ code: 'purpose-not-consented', text: 'emergency use is not consented' });
      }
      break;
    case 'ai-analysis':
      if (!p.aiServices.includes(req.aiServiceId as string)) {
        permits = false;
        reasons.push({ code: 'ai-service-not-consented', text: `analysis by AI service ${req.aiServiceId} is not consented` });
      }
      break;
    case 'research':
      if (!p.research) {
        permits = false;
        reasons.push({ code: 'research-not-consented', text: 'research use is not consented' });
      }
      break;
  }
  if (permits) reasons.push({ code: 'consent-permits', text: `consent version ${v.version} permits` });
  return { permits, excluded, refused, reasons, version };
}

function patientFacilities(links: readonly Link[], regionalId: string, except: string): string[] {
  const out: string[] = [];
  for (const l of links) {
    if (l.regionalId === regionalId && l.facilityId !== except && !out.includes(l.facilityId)) out.push(l.facilityId);
  }
  return out.sort();
}

// The mask obligation of a (purpose, basis, category) under one policy's mask rules, made once:
// a decision depends on nothing else for it, and a request decides it per linked ID and category
// (frozen, shared by the decisions as AUDIT_NORMAL is).
const maskCache = new WeakMap<DecisionContext['policy']['masks'], Map<string, readonly Obligation[]>>();

function masksFor(req: AccessRequest, ctx: DecisionContext, basis: DecisionBasis): readonly Obligation[] {
  let byKey = maskCache.get(ctx.policy.masks);
  if (!byKey) maskCache.set(ctx.policy.masks, (byKey = new Map()));
  const key = `${req.purpose}\u0000${basis}\u0000${req.category}`;
  let out = byKey.get(key);
  if (!out) byKey.set(key, (out = Object.freeze(computeMasks(req, ctx, basis).map((o) => Object.freeze(o.kind === 'mask' ? { ...o, fields: Object.freeze(o.fields) as string[] } : o)))));
  return out;
}

function computeMasks(req: AccessRequest, ctx: DecisionContext, basis: DecisionBasis): Obligation[] {
  let fields: string[] | undefined;
  for (const m of ctx.policy.masks) {
    if (m.purposes && !m.purposes.includes(req.purpose)) continue;
    if (m.bases && !m.bases.includes(basis)) continue;
    if (m.categories && !m.categories.includes(req.category)) continue;
    fields ??= [];
    for (const f of m.fields) if (!fields.includes(f)) fields.push(f);
  }
  return fields ? [{ kind: 'mask', fields: fields.sort() }] : [];
}

function permit(
  req: AccessRequest,
  ctx: DecisionContext,
  basis: DecisionBasis,
  reasons: Reason[],
  extra: { consentVersionId?: string | null; grantId?: string | null; disasterId?: string | null; notify?: boolean },
): Decision {
  const obligations: Obligation[] = [basis === 'consent' || basis === 'own-facility' ? AUDIT_NORMAL : AUDIT_ELEVATED];
  if (extra.notify) {
    obligations.push({ kind: 'notify-patient-facilities', facilities: patientFacilities(ctx.links, req.regionalId, req.user.facilityId) });
  }
  obligations.push(...masksFor(req, ctx, basis));
  return {
    effect: 'permit',
    basis,
    reasons,
    publicReason: { code: 'permitted', text: PUBLIC_TEXT.permitted },
    obligations,
    consentVersionId: extra.consentVersionId ?? null,
    grantId: extra.grantId ?? null,
    disasterId: extra.disasterId ?? null,
  };
}

function disasterCovers(d: DisasterDeclaration, req: AccessRequest, appliesTo: ConsentPolicy['disaster']['appliesTo']): boolean {
  if (d.endedAt !== null && req.at >= d.endedAt) return false;
  if (req.at < d.from || req.at >= d.to) return false;
  if (d.facilities === 'all') return true;
  const byRequester = d.facilities.includes(req.user.facilityId);
  const bySource = d.facilities.includes(req.source.facilityId);
  return appliesTo === 'requester' ? byRequester : appliesTo === 'source' ? bySource : byRequester || bySource;
}

export function decide(req: AccessRequest, ctx: DecisionContext): Decision {
  const invalid = validRequest(req);
  if (invalid) return deny([{ code: 'invalid-request', text: invalid }], 'invalid-request');

  // An unlinked local ID is never shared: the record must belong to this regional patient now.
  let linked = false;
  for (const l of ctx.links) {
    if (l.facilityId === req.source.facilityId && l.localId === req.source.localId && l.regionalId === req.regionalId) {
      linked = true;
      break;
    }
  }
  if (!linked) {
    return deny([{ code: 'not-linked', text: `${req.source.facilityId}/${req.source.localId} is not linked to ${req.regionalId}` }]);
  }

  const me = ctx.participation.get(req.user.facilityId);
  if (!me || !me.views) {
    return deny([{ code: 'requester-not-participating', text: `${req.user.facilityId} does not participate as a viewer` }], 'facility-not-participating');
  }
  // The registry, not the request, says what kind of facility the requester is.
  if (me.kind !== req.user.facilityKind) {
    return deny([{ code: 'requester-kind-mismatch', text: `${req.user.facilityId} is registered as ${me.kind}, not ${req.user.facilityKind}` }], 'invalid-request');
  }

  const own = req.user.facilityId === req.source.facilityId;
  if (own && ctx.policy.ownFacility.purposes.includes(req.purpose)) {
    return permit(req, ctx, 'own-facility', [{ code: 'own-facility', text: 'a facility reading its own records' }], {});
  }

  const src = own ? me : ctx.participation.get(req.source.facilityId);
  if (!src || !src.discloses) {
    return deny([{ code: 'source-not-participating', text: `${req.source.facilityId} does not participate as a discloser` }]);
  }

  const ev = evaluateConsent(req, ctx, me.kind);
  const versionId = ev.version ? ev.version.id : null;
  if (ev.permits) return permit(req, ctx, 'consent', ev.reasons, { consentVersionId: versionId });

  // Research and AI analysis rest on consent alone: no emergency path leads there.
  if (req.purpose === 'research' || req.purpose === 'ai-analysis') return deny(ev.reasons, 'access-denied', versionId);

  const reasons = ev.reasons;

  // Disaster mode: a declaration opens the policy's emergency rule for the emergency purpose.
  const dp = ctx.policy.disaster;
  if (dp.enabled && req.purpose === 'emergency') {
    let declaration: DisasterDeclaration | undefined;
    for (const d of ctx.disasters) {
      if (disasterCovers(d, req, dp.appliesTo)) {
        declaration = d;
        break;
      }
    }
    if (declaration) {
      if (ev.excluded || (ev.refused && !dp.overridesRefusal)) {
        reasons.push({ code: 'disaster-blocked', text: `disaster ${declaration.id} declared, but the patient's refusal or exclusion holds` });
      } else if (!dp.roles.includes(req.user.role)) {
        reasons.push({ code: 'disaster-role-closed', text: `the disaster rule does not open records to role ${req.user.role}` });
      } else if (!dp.categories.includes(req.category)) {
        reasons.push({ code: 'disaster-category-closed', text: `the disaster rule does not open ${req.category}` });
      } else {
        reasons.push({ code: 'disaster-rule', text: `emergency rule of declared disaster ${declaration.id}` });
        return permit(req, ctx, 'disaster', reasons, { consentVersionId: versionId, disasterId: declaration.id, notify: dp.notify });
      }
    }
  }

  // Break-glass: the requester's own grant for this patient, within its time limit.
  const bp = ctx.policy.breakGlass;
  let expired: BreakGlassGrant | undefined;
  let grant: BreakGlassGrant | undefined;
  for (const g of ctx.breakGlass) {
    if (g.userId !== req.user.id || g.regionalId !== req.regionalId || g.facilityId !== req.user.facilityId) continue;
    if (g.grantedAt <= req.at && req.at < g.expiresAt && (g.revokedAt === null || req.at < g.revokedAt)) {
      grant = g;
      break;
    }
    if (g.grantedAt <= req.at) expired = g;
  }
  if (!grant) {
    if (expired) {
      reasons.push({ code: 'break-glass-expired', text: `break-glass grant ${expired.id} is no longer valid` });
      return deny(reasons, 'break-glass-expired', versionId);
    }
    return deny(reasons, 'access-denied', versionId);
  }
  if (!bp.enabled || !bp.roles.includes(req.user.role)) {
    reasons.push({ code: 'break-glass-role-closed', text: `break-glass is not open to role ${req.user.role}` });
    return deny(reasons, 'break-glass-not-allowed', versionId);
  }
  if (!bp.purposes.includes(req.purpose)) {
    reasons.push({ code: 'break-glass-purpose-closed', text: `break-glass does not serve purpose ${req.purpose}` });
    return deny(reasons, 'access-denied', versionId);
  }
  if (bp.categories !== 'all' && !bp.categories.includes(req.category)) {
    reasons.push({ code: 'break-glass-category-closed', text: `break-glass does not open ${req.category}` });
    return deny(reasons, 'access-denied', versionId);
  }
  if (ev.excluded || (ev.refused && !bp.overridesRefusal)) {
    reasons.push({ code: 'break-glass-blocked', text: `break-glass grant ${grant.id}, but the patient's refusal or exclusion holds` });
    return deny(reasons, 'access-denied', versionId);
  }
  reasons.push({ code: 'break-glass', text: `break-glass grant ${grant.id}: ${grant.reason}` });
  return permit(req, ctx, 'break-glass', reasons, { consentVersionId: versionId, grantId: grant.id, notify: true });
}
