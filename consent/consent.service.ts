import { randomBytes } from 'node:crypto';
import { badRequest, conflict, forbidden, notFound } from '../store/errors.js';
import * as consents from './consent.repository.js';
import * as identity from './identity.repository.js';
import type { Conn } from './identity.repository.js';
import { effectiveConsent } from './decide.js';
import { fromFhirConsent, toFhirConsent, type FhirConsent } from './fhir-consent.js';
import { FACILITY_KINDS, type ConsentTerms, type ConsentVersion, type DisasterDeclaration, type EvidenceStore, type FacilityKind, type Participation } from './model.js';
import type { ConsentPolicy } from './policy.js';
import { parseTerms, TermsError } from './terms.js';
import type { StoredGrant } from './consent.repository.js';

/**
 * Consent records (versioned, never overwritten), facility participation, break-glass grants and
 * disaster declarations. Every change writes an audit entry in the same transaction.
 */

export interface ConsentServiceDeps {
  db: Conn;
  policy: ConsentPolicy;
  /** Where signed consent forms are kept (the blob store in the composition root). */
  evidence: EvidenceStore;
  now?: () => number;
  /** Called after a participation change, so caches of the decision loader can drop it. */
  onParticipationChange?: () => void;
}

export interface EvidenceInput {
  bytes: Uint8Array;
  mediaType: string;
}

export interface RecordConsentInput {
  terms: unknown;
  evidence?: EvidenceInput;
  note?: string;
}

/** Who asks for break-glass: the viewer passes the authenticated user. */
export interface Requester {
  userId: string;
  facilityId: string;
  role: string;
}

const MAX_EVIDENCE_BYTES = 20 * 1024 * 1024;

function requireText(name: string, v: unknown, max = 2000): string {
  if (typeof v !== 'string' || !v.trim()) throw badRequest(`${name} is required`);
  if (v.length > max) throw badRequest(`${name} is longer than ${max} characters`);
  return v.trim();
}

function termsOrBadRequest(value: unknown): ConsentTerms {
  try {
    return parseTerms(value);
  } catch (e) {
    if (e instanceof TermsError) throw badRequest(e.message, { issues: e.issues });
    throw e;
  }
}

export function createConsentService(deps: ConsentServiceDeps) {
  const { db, policy } = deps;
  const now = deps.now ?? Date.now;

  async function storeEvidence(e: EvidenceInput | undefined): Promise<{ sha: string | null; mediaType: string | null }> {
    if (!e) return { sha: null, mediaType: null };
    if (!(e.bytes instanceof Uint8Array) || e.bytes.length === 0) throw badRequest('the signed consent form is empty');
    if (e.bytes.length > MAX_EVIDENCE_BYTES) throw badRequest(`the signed consent form is larger than ${MAX_EVIDENCE_BYTES} bytes`);
    if (typeof e.mediaType !== 'string' || !/^[\w.+-]+\/[\w.+-]+$/.test(e.mediaType)) throw badRequest('the signed form needs a media type such as application/pdf');
    const sha = await deps.evidence.put(e.bytes);
    if (!/^[0-9a-f]{64}$/.test(sha)) throw new Error('the evidence store answered something that is not a SHA-256');
    return { sha, mediaType: e.mediaType };
  }

  async function insertVersion(
    actor: string,
    regionalId: string,
    terms: ConsentTerms,
    extra: { sha: string | null; mediaType: string | null; note: string | null; action: string; reason: string | null; recordedAt?: number },
  ): Promise<ConsentVersion> {
    return db.transaction().execute(async (trx) => {
      const [p] = await identity.lockRegionalPatients(trx, [regionalId]);
      if (!p) throw notFound(`regional patient ${regionalId} not found`);
      if (p.mergedInto) throw conflict(`regional patient ${regionalId} was merged into ${p.mergedInto}; record consent there`, { mergedInto: p.mergedInto });
      const version = await consents.nextConsentVersion(trx, regionalId);
      const at = now();
      const v: ConsentVersion = {
        ...terms,
        id: `${regionalId}-v${version}`,
        regionalId,
        version,
        recordedAt: extra.recordedAt ?? at,
        recordedBy: actor,
        evidenceSha256: extra.sha,
        evidenceMediaType: extra.mediaType,
        note: extra.note,
      };
      await consents.insertConsentVersion(trx, v);
      await identity.insertAudit(trx, {
        at,
        actor,
        action: extra.action,
        targetKind: 'regional-patient',
        targetId: regionalId,
        reason: extra.reason,
        details: { consentVersionId: v.id, version, status: v.status, evidenceSha256: v.evidenceSha256 },
      });
      return v;
    });
  }

  return {
    policy,

    /** Records a new version of the patient's consent; it supersedes the previous one from now on. */
    async record(actor: string, regionalId: string, input: RecordConsentInput): Promise<ConsentVersion> {
      requireText('actor', actor);
      const terms = termsOrBadRequest(input.terms);
      const note = input.note === undefined ? null : requireText('note', input.note);
      const ev = await storeEvidence(input.evidence);
      return insertVersion(actor, regionalId, terms, { ...ev, note, action: 'consent.record', reason: note });
    },

    /**
     * Withdrawal: a new version with status withdrawn and the previous terms (so that the record
     * shows what was withdrawn). Effective at the instant it is recorded.
     */
    async withdraw(actor: string, regionalId: string, reason: string, evidence?: EvidenceInput): Promise<ConsentVersion> {
      requireText('actor', actor);
      const why = requireText('reason', reason);
      const previous = effectiveConsent(await consents.consentVersionsOf(db, [regionalId]), Number.MAX_SAFE_INTEGER);
      if (!previous) {
        if (!(await identity.getRegionalPatient(db, regionalId))) throw notFound(`regional patient ${regionalId} not found`);
        throw conflict(`regional patient ${regionalId} has no consent to withdraw`);
      }
      if (previous.status === 'withdrawn') throw conflict(`the consent of ${regionalId} is already withdrawn (version ${previous.version})`);
      const ev = await storeEvidence(evidence);
      const { id: _i, regionalId: _r, version: _v, recordedAt: _a, recordedBy: _b, evidenceSha256: _s, evidenceMediaType: _m, note: _n, ...terms } = previous;
      return insertVersion(actor, regionalId, { ...terms, status: 'withdrawn' }, { ...ev, note: why, action: 'consent.withdraw', reason: why });
    },

    async versions(regionalId: string): Promise<ConsentVersion[]> {
      return consents.consentVersionsOf(db, [regionalId]);
    },

    /** The version in force at an instant (default now). */
    async current(regionalId: string, at: number = now()): Promise<ConsentVersion | undefined> {
      return effectiveConsent(await consents.consentVersionsOf(db, [regionalId]), at);
    },

    async exportFhir(regionalId: string): Promise<FhirConsent[]> {
      return (await consents.consentVersionsOf(db, [regionalId])).map(toFhirConsent);
    },

    async exportVersionFhir(id: string): Promise<FhirConsent> {
      const v = await consents.getConsentVersion(db, id);
      if (!v) throw notFound(`consent ${id} not found`);
      return toFhirConsent(v);
    },

    /**
     * Records a FHIR Consent as a new version of the patient it names (the version number is the
     * exchange's; the resource's dateTime is kept as the instant the patient agreed, and it must
     * not lie in the future nor before the latest version, so history is never rewritten).
     * A malformed resource throws FhirConsentError (422, OperationOutcome issues).
     */
    async importFhir(actor: string, resource: unknown): Promise<ConsentVersion> {
      requireText('actor', actor);
      const c = fromFhirConsent(resource);
      const at = now();
      if (c.recordedAt > at) throw badRequest('Consent.dateTime lies in the future');
      const latest = effectiveConsent(await consents.consentVersionsOf(db, [c.regionalId]), Number.MAX_SAFE_INTEGER);
      if (latest && c.recordedAt < latest.recordedAt) {
        throw conflict(`Consent.dateTime is before the latest version (${latest.version}) of ${c.regionalId}; a version cannot be inserted into the past`);
      }
      const { id: _i, version: _v, regionalId, recordedAt, recordedBy, evidenceSha256, evidenceMediaType, note, ...terms } = c;
      return insertVersion(recordedBy ?? actor, regionalId, terms, {
        sha: evidenceSha256,
        mediaType: evidenceMediaType,
        note,
        action: 'consent.import',
        reason: `imported by ${actor}`,
        recordedAt,
      });
    },

    // -------------------------------------------------------------------------------------------
    // participation

    async setParticipation(actor: string, p: Participation, reason: string): Promise<Participation> {
      requireText('actor', actor);
      const why = requireText('reason', reason);
      const facilityId = requireText('facilityId', p?.facilityId, 64);
      if (!(FACILITY_KINDS as readonly string[]).includes(p.kind)) throw badRequest(`kind must be one of ${FACILITY_KINDS.join(', ')}`);
      if (typeof p.discloses !== 'boolean' || typeof p.views !== 'boolean') throw badRequest('discloses and views must be true or false');
      const value: Participation = { facilityId, kind: p.kind as FacilityKind, discloses: p.discloses, views: p.views };
      await db.transaction().execute(async (trx) => {
        const at = now();
        const before = await consents.getParticipation(trx, facilityId);
        await consents.upsertParticipation(trx, value, actor, at);
        await identity.insertAudit(trx, { at, actor, action: 'participation.set', targetKind: 'facility', targetId: facilityId, reason: why, details: { before: before ?? null, after: value } });
      });
      deps.onParticipationChange?.();
      return value;
    },

    async participation(facilityId: string): Promise<Participation | undefined> {
      return consents.getParticipation(db, facilityId);
    },

    async allParticipation(): Promise<Participation[]> {
      return consents.allParticipation(db);
    },

    // -------------------------------------------------------------------------------------------
    // break-glass

    /**
     * Opens break-glass for a user on one patient: only roles the policy allows, only with a
     * stated reason, only for at most policy.breakGlass.maxMinutes. The decision function then
     * permits (audited, reported to the patient's facilities) until it expires or is revoked.
     */
    async openBreakGlass(who: Requester, regionalId: string, reason: string, minutes: number): Promise<StoredGrant> {
      const bp = policy.breakGlass;
      requireText('user', who?.userId, 200);
      requireText('facility', who?.facilityId, 64);
      const why = requireText('reason', reason);
      if (why.length < 10) throw badRequest('state the reason for emergency access in a sentence (at least 10 characters)');
      if (!bp.enabled) throw forbidden('emergency access is not enabled on this exchange');
      if (!bp.roles.includes(who.role)) throw forbidden(`role ${who.role} may not use emergency access`);
      if (!Number.isInteger(minutes) || minutes < 1 || minutes > bp.maxMinutes) throw badRequest(`minutes must be a whole number from 1 to ${bp.maxMinutes}`);
      return db.transaction().execute(async (trx) => {
        const at = now();
        const part = await consents.getParticipation(trx, who.facilityId);
        if (!part || !part.views) throw forbidden('your facility does not view records through the exchange');
        const [p] = await identity.lockRegionalPatients(trx, [regionalId]);
        if (!p || p.mergedInto) throw notFound(`regional patient ${regionalId} not found`);
        const g: StoredGrant = {
          id: `BG-${randomBytes(8).toString('hex')}`,
          userId: who.userId,
          facilityId: who.facilityId,
          role: who.role,
          regionalId,
          reason: why,
          grantedAt: at,
          expiresAt: at + minutes * 60_000,
          revokedAt: null,
          revokedBy: null,
        };
        await consents.insertGrant(trx, g);
        await identity.insertAudit(trx, {
          at,
          actor: who.userId,
          action: 'break-glass.open',
          targetKind: 'regional-patient',
          targetId: regionalId,
          reason: why,
          details: { grantId: g.id, facilityId: who.facilityId, role: who.role, expiresAt: new Date(g.expiresAt).toISOString() },
        });
        return g;
      });
    },

    async revokeBreakGlass(actor: string, grantId: string, reason: string): Promise<void> {
      requireText('actor', actor);
      const why = requireText('reason', reason);
      await db.transaction().execute(async (trx) => {
        const at = now();
        const g = await consents.getGrant(trx, grantId);
        if (!g) throw notFound(`break-glass grant ${grantId} not found`);
        if (g.revokedAt !== null) throw conflict(`break-glass grant ${grantId} was already revoked`);
        await consents.revokeGrant(trx, grantId, actor, at);
        await identity.insertAudit(trx, { at, actor, action: 'break-glass.revoke', targetKind: 'regional-patient', targetId: g.regionalId, reason: why, details: { grantId } });
      });
    },

    async grantsOf(regionalId: string): Promise<StoredGrant[]> {
      return consents.grantsOfPatient(db, regionalId);
    },

    // -------------------------------------------------------------------------------------------
    // disasters

    /** A disaster-recovery operator declares a disaster for facilities and a period [from, to). */
    async declareDisaster(actor: string, d: { facilities: 'all' | string[]; from: number; to: number; reason: string }): Promise<DisasterDeclaration> {
      requireText('actor', actor);
      const why = requireText('reason', d?.reason);
      if (d.facilities !== 'all' && (!Array.isArray(d.facilities) || !d.facilities.length || d.facilities.some((f) => typeof f !== 'string' || !f.trim()))) {
        throw badRequest("facilities must be 'all' or a non-empty list of facility ids");
      }
      if (!Number.isFinite(d.from) || !Number.isFinite(d.to) || d.to <= d.from) throw badRequest('a disaster period needs from before to');
      const decl: DisasterDeclaration = {
        id: `DZ-${randomBytes(6).toString('hex')}`,
        facilities: d.facilities === 'all' ? 'all' : [...new Set(d.facilities)].sort(),
        from: d.from,
        to: d.to,
        declaredBy: actor,
        reason: why,
        endedAt: null,
      };
      await db.transaction().execute(async (trx) => {
        const at = now();
        await consents.insertDisaster(trx, decl, at);
        await identity.insertAudit(trx, { at, actor, action: 'disaster.declare', targetKind: 'disaster', targetId: decl.id, reason: why, details: { facilities: decl.facilities, from: new Date(decl.from).toISOString(), to: new Date(decl.to).toISOString() } });
      });
      return decl;
    },

    async endDisaster(actor: string, id: string, reason: string): Promise<void> {
      requireText('actor', actor);
      const why = requireText('reason', reason);
      await db.transaction().execute(async (trx) => {
        const at = now();
        if (!(await consents.getDisaster(trx, id))) throw notFound(`disaster ${id} not found`);
        if ((await consents.endDisaster(trx, id, actor, at)) === 0) throw conflict(`disaster ${id} was already ended`);
        await identity.insertAudit(trx, { at, actor, action: 'disaster.end', targetKind: 'disaster', targetId: id, reason: why, details: {} });
      });
    },

    async disasters(limit = 100): Promise<DisasterDeclaration[]> {
      return consents.listDisasters(db, Math.min(Math.max(limit, 1), 1000));
    },
  };
}

export type ConsentService = ReturnType<typeof createConsentService>;
