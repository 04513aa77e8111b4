import Router from '@koa/router';
import type { Context, Middleware } from 'koa';
import { z } from 'zod';
import { badRequest, forbidden, isExchangeError, notFound } from '../../store/errors.js';
import type { ConsentVersion, Link, LocalKey, RegionalPatient } from '../../consent/model.js';
import type { MatchRow } from '../../consent/identity.repository.js';
import type { AuthService, Principal } from '../auth/auth.service.js';
import type { AuditLog } from '../audit/audit.service.js';
import { roleMay, type Action, type RolePolicy } from '../roles/roles.js';
import { readJson } from '../http/body.js';
import { principalOf, requireSession } from './session.js';
import { parseQuery, regionalIdParam } from './params.js';
import { actorName, FACILITY_ID } from './facilities.routes.js';

/**
 * Identity links and consents over HTTP, from the consent service. A network administrator acts
 * on every patient; a role bound to a facility (clerk, facility administrator, whatever the role
 * matrix gives link.manage / consent.read / consent.manage) acts only on patients linked at its
 * own facility, sees only its own facility's links and decides only matches between its own
 * local IDs. A patient or match outside the caller's reach answers exactly like an unknown one.
 * Every read, change, refusal and failure is in the audit trail.
 */

export interface IdentityAdmin {
  getPatient(id: string): Promise<RegionalPatient | undefined>;
  linksOf(regionalId: string): Promise<Link[]>;
  reviewQueue(opts: { limit?: number; afterId?: number }): Promise<MatchRow[]>;
  getMatch(id: number): Promise<MatchRow | undefined>;
  acceptMatch(actor: string, id: number, reason: string): Promise<{ regionalId: string; links: Link[] }>;
  rejectMatch(actor: string, id: number, reason: string): Promise<void>;
  linkOf(key: LocalKey): Promise<Link | undefined>;
  unlink(actor: string, key: LocalKey, reason: string): Promise<void>;
}

export interface ConsentAdmin {
  versions(regionalId: string): Promise<ConsentVersion[]>;
  current(regionalId: string): Promise<ConsentVersion | undefined>;
  record(actor: string, regionalId: string, input: { terms: unknown; evidence?: { bytes: Uint8Array; mediaType: string }; note?: string }): Promise<ConsentVersion>;
  withdraw(actor: string, regionalId: string, reason: string, evidence?: { bytes: Uint8Array; mediaType: string }): Promise<ConsentVersion>;
}

const NO_SUCH_PATIENT = 'No such patient.';
const NO_SUCH_MATCH = 'No such match.';
const LOCAL_ID = /^[A-Za-z0-9_-]{1,64}$/;
/** A consent body may carry the signed form (base64); the body limit bounds it. */
const CONSENT_BODY_LIMIT = 4 * 1024 * 1024;

const Reason = z.object({ reason: z.string().trim().min(1).max(2000) }).strict();
const Evidence = z
  .object({
    mediaType: z.string().regex(/^[\w.+-]+\/[\w.+-]+$/, 'a media type such as application/pdf'),
    base64: z.string().min(1).regex(/^[A-Za-z0-9+/]+={0,2}$/, 'base64'),
  })
  .strict();
const NewConsent = z.object({ terms: z.unknown(), note: z.string().trim().min(1).max(2000).optional(), evidence: Evidence.optional() }).strict();
const Withdrawal = z.object({ reason: z.string().trim().min(1).max(2000), evidence: Evidence.optional() }).strict();
const Unlink = z
  .object({
    facilityId: z.string().regex(FACILITY_ID, 'a facility id is letters, digits, _ and -'),
    localId: z.string().regex(LOCAL_ID, 'a local patient id is letters, digits, _ and -'),
    reason: z.string().trim().min(1).max(2000),
  })
  .strict();
const QueueQuery = z
  .object({
    limit: z.coerce.number().int().min(1).max(500).default(50),
    after: z.coerce.number().int().min(0).max(Number.MAX_SAFE_INTEGER).optional(),
  })
  .strict();

function matchIdParam(v: string | undefined): number {
  if (!v || !/^[1-9][0-9]{0,15}$/.test(v) || !Number.isSafeInteger(Number(v))) throw badRequest('a match id is a positive whole number');
  return Number(v);
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

function linkBody(l: Link) {
  return { facilityId: l.facilityId, localId: l.localId, regionalId: l.regionalId, method: l.method, linkedBy: l.linkedBy, linkedAt: iso(l.linkedAt), evidence: l.evidence, score: l.score };
}

function matchBody(m: MatchRow) {
  return { id: m.id, a: m.a, b: m.b, score: m.score, reasons: m.reasons, status: m.status, createdAt: iso(m.createdAt) };
}

function consentBody(v: ConsentVersion) {
  return { ...v, recordedAt: iso(v.recordedAt), validFromIso: iso(v.validFrom), validToIso: iso(v.validTo) };
}

function evidenceOf(e: z.infer<typeof Evidence> | undefined): { bytes: Uint8Array; mediaType: string } | undefined {
  if (!e) return undefined;
  const bytes = Buffer.from(e.base64, 'base64');
  if (bytes.length === 0) throw badRequest('evidence.base64: the signed form is empty');
  return { bytes, mediaType: e.mediaType };
}

export function consentAdminRouter(deps: {
  auth: AuthService;
  audit: AuditLog;
  roles: RolePolicy;
  identity: IdentityAdmin;
  consent: ConsentAdmin;
  hygiene: Middleware;
}): Router {
  const r = new Router({ prefix: '/api/admin' });
  r.use(['/patients', '/links'], deps.hygiene, requireSession(deps.auth));

  const network = (p: Principal) => p.role === 'network_admin';

  function trail(ctx: Context, p: Principal, action: string, patient: string | null) {
    return {
      action,
      actor: { userId: p.userId, username: p.username, facilityId: p.facilityId, role: p.role },
      address: p.address,
      deviceId: p.deviceId,
      endpoint: `${ctx.method} ${ctx.path}`,
      patient,
    };
  }

  async function authorise(ctx: Context, action: Action, auditAction: string, patient: string | null): Promise<Principal> {
    const p = principalOf(ctx);
    if (!roleMay(deps.roles, p.role, action)) {
      await deps.audit.record({ ...trail(ctx, p, auditAction, patient), outcome: 'denied', reason: `role ${p.role} may not ${action}` });
      throw forbidden('You may not administer this.');
    }
    return p;
  }

  /** The patient, when it exists and is within the caller's reach; otherwise the same 404 (audited). */
  async function reachablePatient(ctx: Context, p: Principal, auditAction: string, id: string): Promise<{ patient: RegionalPatient; links: Link[] }> {
    const patient = await deps.identity.getPatient(id);
    const links = patient ? await deps.identity.linksOf(id) : [];
    const reachable = !!patient && (network(p) || links.some((l) => l.facilityId === p.facilityId));
    if (!reachable) {
      await deps.audit.record({
        ...trail(ctx, p, auditAction, id),
        outcome: 'denied',
        reason: patient ? `patient ${id} has no local ID at facility ${p.facilityId}` : `no regional patient ${id}`,
      });
      throw notFound(NO_SUCH_PATIENT);
    }
    return { patient: patient!, links };
  }

  /** Runs a change, auditing its success or its failure (then rethrown). */
  async function audited<T>(
    ctx: Context,
    p: Principal,
    action: string,
    patient: string | null,
    why: string | null,
    detail: Record<string, unknown>,
    fn: () => Promise<T>,
    outcome: (v: T) => Record<string, unknown> = () => ({}),
  ): Promise<T> {
    const t = { ...trail(ctx, p, action, patient), reason: why };
    let v: T;
    try {
      v = await fn();
    } catch (e) {
      await deps.audit.record({ ...t, outcome: 'failure', detail: { ...detail, error: isExchangeError(e) ? e.message : 'internal error' } });
      throw e;
    }
    await deps.audit.record({ ...t, outcome: 'success', detail: { ...detail, ...outcome(v) } });
    return v;
  }

  // ---------------------------------------------------------------------------------------------
  // links

  r.get('/patients/:id/links', async (ctx) => {
    const id = regionalIdParam(ctx.params.id);
    parseQuery(ctx, z.object({}).strict());
    const p = await authorise(ctx, 'link.manage', 'admin.link.read', id);
    const { patient, links } = await reachablePatient(ctx, p, 'admin.link.read', id);
    const shown = links.filter((l) => network(p) || l.facilityId === p.facilityId);
    await deps.audit.record({ ...trail(ctx, p, 'admin.link.read', id), outcome: 'success', detail: { links: shown.map((l) => `${l.facilityId}/${l.localId}`) } });
    ctx.body = { patient: patient.id, mergedInto: patient.mergedInto, links: shown.map(linkBody) };
  });

  r.get('/links/review', async (ctx) => {
    const q = parseQuery(ctx, QueueQuery);
    const p = await authorise(ctx, 'link.manage', 'admin.link.review', null);
    const page = await deps.identity.reviewQueue({ limit: q.limit, afterId: q.after });
    const own = page.filter((m) => network(p) || (m.a.facilityId === p.facilityId && m.b.facilityId === p.facilityId));
    await deps.audit.record({ ...trail(ctx, p, 'admin.link.review', null), outcome: 'success', detail: { matchIds: own.map((m) => m.id) } });
    ctx.body = { matches: own.map(matchBody), next: page.length === q.limit ? Math.max(...page.map((m) => m.id)) : null };
  });

  for (const op of ['accept', 'reject'] as const) {
    r.post(`/links/review/:match/${op}`, async (ctx) => {
      const id = matchIdParam(ctx.params.match);
      const action = `admin.link.${op}`;
      const p = await authorise(ctx, 'link.manage', action, null);
      const body = await readJson(ctx, Reason, 4096);
      const m = await deps.identity.getMatch(id);
      if (!m || !(network(p) || (m.a.facilityId === p.facilityId && m.b.facilityId === p.facilityId))) {
        await deps.audit.record({ ...trail(ctx, p, action, null), outcome: 'denied', reason: m ? 'match between local IDs outside the caller facility' : `no match ${id}`, detail: { matchId: id } });
        throw notFound(NO_SUCH_MATCH);
      }
      const detail = { matchId: id, pair: [`${m.a.facilityId}/${m.a.localId}`, `${m.b.facilityId}/${m.b.localId}`] };
      if (op === 'accept') {
        const res = await audited(ctx, p, action, null, body.reason, detail, () => deps.identity.acceptMatch(actorName(p), id, body.reason), (x) => ({ regionalId: x.regionalId }));
        ctx.body = { matchId: id, status: 'accepted', regionalId: res.regionalId, links: res.links.map(linkBody) };
      } else {
        await audited(ctx, p, action, null, body.reason, detail, () => deps.identity.rejectMatch(actorName(p), id, body.reason));
        ctx.body = { matchId: id, status: 'rejected' };
      }
    });
  }

  r.post('/links/unlink', async (ctx) => {
    const p = await authorise(ctx, 'link.manage', 'admin.link.unlink', null);
    const body = await readJson(ctx, Unlink, 4096);
    const key = { facilityId: body.facilityId, localId: body.localId };
    if (!network(p) && key.facilityId !== p.facilityId) {
      await deps.audit.record({ ...trail(ctx, p, 'admin.link.unlink', null), outcome: 'denied', reason: `local ID of facility ${key.facilityId}`, detail: key });
      throw forbidden("You may unlink only your own facility's local IDs.");
    }
    const link = await deps.identity.linkOf(key);
    await audited(ctx, p, 'admin.link.unlink', link?.regionalId ?? null, body.reason, { ...key }, () => deps.identity.unlink(actorName(p), key, body.reason));
    ctx.body = { ...key, unlinkedFrom: link?.regionalId ?? null };
  });

  // ---------------------------------------------------------------------------------------------
  // consents

  r.get('/patients/:id/consents', async (ctx) => {
    const id = regionalIdParam(ctx.params.id);
    parseQuery(ctx, z.object({}).strict());
    const p = await authorise(ctx, 'consent.read', 'admin.consent.read', id);
    await reachablePatient(ctx, p, 'admin.consent.read', id);
    const [versions, current] = await Promise.all([deps.consent.versions(id), deps.consent.current(id)]);
    await deps.audit.record({ ...trail(ctx, p, 'admin.consent.read', id), outcome: 'success', detail: { versions: versions.map((v) => v.id) } });
    ctx.body = { patient: id, current: current ? consentBody(current) : null, versions: versions.map(consentBody) };
  });

  r.post('/patients/:id/consents', async (ctx) => {
    const id = regionalIdParam(ctx.params.id);
    const p = await authorise(ctx, 'consent.manage', 'admin.consent.record', id);
    const body = await readJson(ctx, NewConsent, CONSENT_BODY_LIMIT);
    await reachablePatient(ctx, p, 'admin.consent.record', id);
    const evidence = evidenceOf(body.evidence);
    const v = await audited(ctx, p, 'admin.consent.record', id, body.note ?? null, { evidence: !!evidence }, () =>
      deps.consent.record(actorName(p), id, { terms: body.terms, note: body.note, evidence }),
      (c) => ({ consentVersionId: c.id, status: c.status }),
    );
    ctx.status = 201;
    ctx.body = consentBody(v);
  });

  r.post('/patients/:id/consents/withdraw', async (ctx) => {
    const id = regionalIdParam(ctx.params.id);
    const p = await authorise(ctx, 'consent.manage', 'admin.consent.withdraw', id);
    const body = await readJson(ctx, Withdrawal, CONSENT_BODY_LIMIT);
    await reachablePatient(ctx, p, 'admin.consent.withdraw', id);
    const evidence = evidenceOf(body.evidence);
    const v = await audited(ctx, p, 'admin.consent.withdraw', id, body.reason, { evidence: !!evidence }, () => deps.consent.withdraw(actorName(p), id, body.reason, evidence), (c) => ({ consentVersionId: c.id }));
    ctx.status = 201;
    ctx.body = consentBody(v);
  });

  return r;
}
