import Router from '@koa/router';
import type { Context, Middleware } from 'koa';
import { z } from 'zod';
import { badRequest, forbidden, isExchangeError, notFound } from '../../store/errors.js';
import type { ConsentVersion, Link, LocalKey, RegionalPatient } from '../../consent/model.js';
import type { AuditEntry, LinkEvent, MatchRow } from '../../consent/identity.repository.js';
import type { PatientHistory } from '../../consent/identity.service.js';
import { MATCH_RUN_ID, type MatchRun, type Requester } from '../../consent/match-runs.js';
import type { AuthService, Principal } from '../auth/auth.service.js';
import type { AuditLog } from '../audit/audit.service.js';
import { roleMay, type Action, type RolePolicy } from '../roles/roles.js';
import { readJson } from '../http/body.js';
import { principalOf, requireSession } from './session.js';
import { parseQuery, REGIONAL_ID, regionalIdParam } from './params.js';
import { actorName, FACILITY_ID } from './facilities.routes.js';

/**
 * Identity links and consents over HTTP, from the consent service. A network administrator acts
 * on every patient; a role bound to a facility (clerk, facility administrator, whatever the role
 * matrix gives link.manage / consent.read / consent.manage) acts only on patients linked at its
 * own facility, sees only its own facility's links and decides only matches between its own
 * local IDs. A patient or match outside the caller's reach answers exactly like an unknown one.
 * The same holds for enrol, relink, merge and split: a facility-bound role moves only its own
 * facility's local IDs, and only to patients already linked at its facility (or to a new one);
 * a merge by such a role needs every link of both patients to be its own. Running the matcher
 * over the region, which links local IDs of every facility, is for the network administrator.
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
  enrol(actor: string, key: LocalKey, opts: { regionalId?: string; evidence: string; reason?: string }): Promise<Link>;
  relink(actor: string, key: LocalKey, regionalId: string, reason: string): Promise<Link>;
  merge(actor: string, from: string, into: string, reason: string): Promise<void>;
  split(actor: string, regionalId: string, keys: LocalKey[], reason: string): Promise<RegionalPatient>;
  rejectPair(actor: string, a: LocalKey, b: LocalKey, reason: string): Promise<void>;
  history(regionalId: string): Promise<PatientHistory>;
  localHistory(key: LocalKey): Promise<LinkEvent[]>;
}

/** Runs of the matcher over the region (consent/match-runs.ts): asked for here, done by a job. */
export interface MatchRunsAdmin {
  request(by: Requester, reason: string | null): Promise<MatchRun>;
  get(id: string): Promise<MatchRun | undefined>;
  list(limit: number): Promise<MatchRun[]>;
}

export interface ConsentAdmin {
  versions(regionalId: string): Promise<ConsentVersion[]>;
  current(regionalId: string): Promise<ConsentVersion | undefined>;
  record(actor: string, regionalId: string, input: { terms: unknown; evidence?: { bytes: Uint8Array; mediaType: string }; note?: string }): Promise<ConsentVersion>;
  withdraw(actor: string, regionalId: string, reason: string, evidence?: { bytes: Uint8Array; mediaType: string }): Promise<ConsentVersion>;
}

const NO_SUCH_PATIENT = 'No such patient.';
const NO_SUCH_MATCH = 'No such match.';
const NO_SUCH_RUN = 'No such match run.';
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
const localIdField = z.string().regex(LOCAL_ID, 'a local patient id is letters, digits, _ and -');
const facilityIdField = z.string().regex(FACILITY_ID, 'a facility id is letters, digits, _ and -');
const regionalIdField = z.string().regex(REGIONAL_ID, 'a patient id is 1-64 letters, digits, ".", "_" or "-"');
const reasonField = z.string().trim().min(1).max(2000);
const Key = z.object({ facilityId: facilityIdField, localId: localIdField }).strict();
const Enrol = z
  .object({ facilityId: facilityIdField, localId: localIdField, regionalId: regionalIdField.optional(), evidence: reasonField, reason: reasonField.optional() })
  .strict();
const Relink = z.object({ facilityId: facilityIdField, localId: localIdField, regionalId: regionalIdField, reason: reasonField }).strict();
const Merge = z.object({ into: regionalIdField, reason: reasonField }).strict();
const Split = z.object({ localIds: z.array(Key).min(1).max(500), reason: reasonField }).strict();
const RejectPair = z.object({ a: Key, b: Key, reason: reasonField }).strict();
const MatchRunRequest = z.object({ reason: reasonField.optional() }).strict();
const RunListQuery = z.object({ limit: z.coerce.number().int().min(1).max(100).default(20) }).strict();
const LocalHistoryQuery = z.object({ facilityId: facilityIdField, localId: localIdField }).strict();
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

function matchRunBody(r: MatchRun) {
  return {
    id: r.id,
    status: r.status,
    reason: r.reason,
    requestedBy: { username: r.requestedBy.username, facilityId: r.requestedBy.facilityId, role: r.requestedBy.role },
    requestedAt: iso(r.requestedAt),
    startedAt: iso(r.startedAt),
    finishedAt: iso(r.finishedAt),
    progress: {
      phase: r.progress.phase,
      localPatients: r.progress.localPatients,
      blocksSearched: r.progress.blocksSearched,
      blocks: r.progress.blocks,
      candidates: r.progress.candidates,
      applied: r.progress.applied,
      toApply: r.status === 'done' || r.progress.phase === 'applying' ? r.progress.candidates : null,
    },
    summary: r.summary,
    error: r.error,
  };
}

function eventBody(e: LinkEvent) {
  return { ...e, at: iso(e.at) };
}

function identityAuditBody(a: AuditEntry) {
  return { ...a, at: iso(a.at) };
}

const keyName = (k: LocalKey) => `${k.facilityId}/${k.localId}`;

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
  matchRuns: MatchRunsAdmin;
  consent: ConsentAdmin;
  hygiene: Middleware;
  /** Whether a facility is known to the exchange (enrolment names one). */
  facilityExists(id: string): Promise<boolean>;
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

  /**
   * Runs a change, auditing its success or its failure (then rethrown). `patient` may be read off
   * the result, for a change that makes the patient (an enrolment to a new regional patient).
   */
  async function audited<T>(
    ctx: Context,
    p: Principal,
    action: string,
    patient: string | null | ((v: T) => string | null),
    why: string | null,
    detail: Record<string, unknown>,
    fn: () => Promise<T>,
    outcome: (v: T) => Record<string, unknown> = () => ({}),
  ): Promise<T> {
    const t = (v: T | undefined) => ({ ...trail(ctx, p, action, typeof patient === 'function' ? (v === undefined ? null : patient(v)) : patient), reason: why });
    let v: T;
    try {
      v = await fn();
    } catch (e) {
      await deps.audit.record({ ...t(undefined), outcome: 'failure', detail: { ...detail, error: isExchangeError(e) ? e.message : 'internal error' } });
      throw e;
    }
    await deps.audit.record({ ...t(v), outcome: 'success', detail: { ...detail, ...outcome(v) } });
    return v;
  }

  /** A facility-bound role acts only on its own facility's local IDs: anything else is refused (audited). */
  async function ownKeys(ctx: Context, p: Principal, action: string, patient: string | null, keys: LocalKey[]): Promise<void> {
    if (network(p)) return;
    const foreign = keys.filter((k) => k.facilityId !== p.facilityId);
    if (!foreign.length) return;
    await deps.audit.record({
      ...trail(ctx, p, action, patient),
      outcome: 'denied',
      reason: `local IDs of other facilities: ${[...new Set(foreign.map((k) => k.facilityId))].join(', ')}`,
      detail: { localIds: foreign.map(keyName) },
    });
    throw forbidden("You may act only on your own facility's local IDs.");
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

  r.post('/links/enrol', async (ctx) => {
    const action = 'admin.link.enrol';
    const p = await authorise(ctx, 'link.manage', action, null);
    const body = await readJson(ctx, Enrol, 8192);
    const key = { facilityId: body.facilityId, localId: body.localId };
    await ownKeys(ctx, p, action, body.regionalId ?? null, [key]);
    // To an existing patient, a facility-bound role enrols only where its facility already has a link.
    if (body.regionalId && !network(p)) await reachablePatient(ctx, p, action, body.regionalId);
    const before = await deps.identity.linkOf(key);
    const reason = body.reason ?? 'enrolment';
    const link = await audited(
      ctx,
      p,
      action,
      body.regionalId ?? ((l: Link) => l.regionalId),
      reason,
      { ...key, regionalId: body.regionalId ?? null, evidence: body.evidence },
      async () => {
        if (!(await deps.facilityExists(key.facilityId))) throw notFound(`no facility ${key.facilityId}`);
        return deps.identity.enrol(actorName(p), key, { regionalId: body.regionalId, evidence: body.evidence, reason });
      },
      (l) => ({ linkedTo: l.regionalId, created: !before }),
    );
    ctx.status = before ? 200 : 201;
    ctx.body = { created: !before, link: linkBody(link) };
  });

  r.post('/links/relink', async (ctx) => {
    const action = 'admin.link.relink';
    const p = await authorise(ctx, 'link.manage', action, null);
    const body = await readJson(ctx, Relink, 4096);
    const key = { facilityId: body.facilityId, localId: body.localId };
    await ownKeys(ctx, p, action, body.regionalId, [key]);
    if (!network(p)) await reachablePatient(ctx, p, action, body.regionalId);
    const from = (await deps.identity.linkOf(key))?.regionalId ?? null;
    const link = await audited(ctx, p, action, body.regionalId, body.reason, { ...key, from, to: body.regionalId }, () => deps.identity.relink(actorName(p), key, body.regionalId, body.reason));
    ctx.body = { ...key, from, to: link.regionalId, link: linkBody(link) };
  });

  r.post('/links/reject-pair', async (ctx) => {
    const action = 'admin.link.reject-pair';
    const p = await authorise(ctx, 'link.manage', action, null);
    const body = await readJson(ctx, RejectPair, 4096);
    await ownKeys(ctx, p, action, null, [body.a, body.b]);
    const pair = [keyName(body.a), keyName(body.b)];
    await audited(ctx, p, action, null, body.reason, { pair }, () => deps.identity.rejectPair(actorName(p), body.a, body.b, body.reason));
    ctx.body = { a: body.a, b: body.b, status: 'rejected' };
  });

  /** Running the matcher, and seeing its runs, is for network administrators (refusals audited). */
  async function networkAdmin(ctx: Context, action: string): Promise<Principal> {
    const p = await authorise(ctx, 'link.manage', action, null);
    if (!network(p)) {
      await deps.audit.record({ ...trail(ctx, p, action, null), outcome: 'denied', reason: 'the matcher links local IDs of every facility' });
      throw forbidden('Only a network administrator runs the matcher over the region.');
    }
    return p;
  }

  // The matcher runs as a background job (minutes of CPU for a large region, off this event
  // loop): the request is answered 202 with the run, which is then polled.
  r.post('/links/match', async (ctx) => {
    const action = 'admin.link.match';
    const p = await networkAdmin(ctx, action);
    const body = await readJson(ctx, MatchRunRequest, 4096);
    const by = { userId: p.userId, username: p.username, facilityId: p.facilityId, role: p.role };
    const run = await audited(ctx, p, action, null, body.reason ?? null, {}, () => deps.matchRuns.request(by, body.reason ?? null), (x) => ({ runId: x.id, status: x.status }));
    ctx.status = 202;
    ctx.set('Location', `/api/admin/links/match/${run.id}`);
    ctx.body = matchRunBody(run);
  });

  r.get('/links/match', async (ctx) => {
    const q = parseQuery(ctx, RunListQuery);
    const action = 'admin.link.match.read';
    const p = await networkAdmin(ctx, action);
    const runs = await deps.matchRuns.list(q.limit);
    await deps.audit.record({ ...trail(ctx, p, action, null), outcome: 'success', detail: { runIds: runs.map((x) => x.id) } });
    ctx.body = { runs: runs.map(matchRunBody) };
  });

  r.get('/links/match/:run', async (ctx) => {
    const id = ctx.params.run;
    if (!id || !MATCH_RUN_ID.test(id)) throw badRequest('a match run id is MR- and 16 hexadecimal digits (A-F upper case)');
    parseQuery(ctx, z.object({}).strict());
    const action = 'admin.link.match.read';
    const p = await networkAdmin(ctx, action);
    const run = await deps.matchRuns.get(id);
    if (!run) {
      await deps.audit.record({ ...trail(ctx, p, action, null), outcome: 'failure', reason: `no match run ${id}`, detail: { runId: id } });
      throw notFound(NO_SUCH_RUN);
    }
    await deps.audit.record({ ...trail(ctx, p, action, null), outcome: 'success', detail: { runId: id, status: run.status } });
    ctx.body = matchRunBody(run);
  });

  r.get('/links/history', async (ctx) => {
    const q = parseQuery(ctx, LocalHistoryQuery);
    const action = 'admin.link.history';
    const p = await authorise(ctx, 'link.manage', action, null);
    const key = { facilityId: q.facilityId, localId: q.localId };
    await ownKeys(ctx, p, action, null, [key]);
    const events = await deps.identity.localHistory(key);
    if (!events.length) {
      await deps.audit.record({ ...trail(ctx, p, action, null), outcome: 'failure', reason: 'never linked', detail: key });
      throw notFound(`${keyName(key)} was never linked`);
    }
    await deps.audit.record({ ...trail(ctx, p, action, null), outcome: 'success', detail: { ...key, events: events.map((e) => e.id) } });
    ctx.body = { ...key, events: events.map(eventBody) };
  });

  r.get('/patients/:id/links/history', async (ctx) => {
    const id = regionalIdParam(ctx.params.id);
    parseQuery(ctx, z.object({}).strict());
    const action = 'admin.link.history';
    const p = await authorise(ctx, 'link.manage', action, id);
    await reachablePatient(ctx, p, action, id);
    const h = await deps.identity.history(id);
    const mine = <T extends { facilityId: string }>(xs: T[]) => xs.filter((x) => network(p) || x.facilityId === p.facilityId);
    const events = mine(h.events);
    await deps.audit.record({ ...trail(ctx, p, action, id), outcome: 'success', detail: { events: events.map((e) => e.id) } });
    ctx.body = {
      patient: h.patient.id,
      mergedInto: h.patient.mergedInto,
      links: mine(h.links).map(linkBody),
      events: events.map(eventBody),
      // The patient-level entries name other facilities' local IDs: network administrators only.
      ...(network(p) ? { audit: h.audit.map(identityAuditBody) } : {}),
    };
  });

  r.post('/patients/:id/merge', async (ctx) => {
    const from = regionalIdParam(ctx.params.id);
    const action = 'admin.patient.merge';
    const p = await authorise(ctx, 'link.manage', action, from);
    const body = await readJson(ctx, Merge, 4096);
    let moving: Link[];
    if (network(p)) {
      moving = await deps.identity.linksOf(from);
    } else {
      moving = (await reachablePatient(ctx, p, action, from)).links;
      const staying = (await reachablePatient(ctx, p, action, body.into)).links;
      await ownKeys(ctx, p, action, from, [...moving, ...staying]);
    }
    await audited(ctx, p, action, body.into, body.reason, { from, into: body.into, links: moving.map(keyName) }, () => deps.identity.merge(actorName(p), from, body.into, body.reason));
    const links = await deps.identity.linksOf(body.into);
    ctx.body = { from, into: body.into, links: links.filter((l) => network(p) || l.facilityId === p.facilityId).map(linkBody) };
  });

  r.post('/patients/:id/split', async (ctx) => {
    const id = regionalIdParam(ctx.params.id);
    const action = 'admin.patient.split';
    const p = await authorise(ctx, 'link.manage', action, id);
    const body = await readJson(ctx, Split, 64 * 1024);
    const keys = body.localIds.map((k) => ({ facilityId: k.facilityId, localId: k.localId }));
    await ownKeys(ctx, p, action, id, keys);
    if (!network(p)) await reachablePatient(ctx, p, action, id);
    const created = await audited(ctx, p, action, id, body.reason, { moved: keys.map(keyName) }, () => deps.identity.split(actorName(p), id, keys, body.reason), (c) => ({ newPatient: c.id }));
    const links = await deps.identity.linksOf(created.id);
    ctx.status = 201;
    ctx.body = { patient: id, newPatient: created.id, links: links.map(linkBody) };
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
