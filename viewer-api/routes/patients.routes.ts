import Router from '@koa/router';
import type { Middleware } from 'koa';
import { z } from 'zod';
import { forbidden } from '../../store/errors.js';
import { readJson } from '../http/body.js';
import type { AuthService } from '../auth/auth.service.js';
import type { AuditLog } from '../audit/audit.service.js';
import { roleMay, type RolePolicy } from '../roles/roles.js';
import { NOT_PERMITTED, recordsJsonParts, utf8Bytes, type Gate } from '../gate/gate.js';
import { preloadedContext, principalOf, requirePatientSession, requireSession } from './session.js';
import type { SessionContextLoader } from '../gate/session-context.js';
import { parseQuery, regionalIdParam, TimelineQuery } from './params.js';

/** What the break-glass endpoint needs from the consent service. */
export interface BreakGlassOpener {
  openBreakGlass(
    who: { userId: string; facilityId: string; role: string },
    regionalId: string,
    reason: string,
    minutes: number,
  ): Promise<{ id: string; expiresAt: number }>;
}

/** What patient search needs from the identity service. */
export interface PatientFinder {
  linkOf(key: { facilityId: string; localId: string }): Promise<{ regionalId: string } | undefined>;
}

const SearchQuery = z
  .object({
    facility: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$/, 'a facility id is letters, digits, _ and -').optional(),
    localId: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'a local patient id is letters, digits, _ and -'),
    purpose: z.enum(['treatment', 'emergency']).default('treatment'),
  })
  .strict();

const BreakGlassBody = z.object({ reason: z.string().min(1).max(2000), minutes: z.number().int().min(1).max(24 * 60) }).strict();

/** The JSON clinical endpoints: every read goes through the gate. */
export function patientsRouter(deps: {
  auth: AuthService;
  gate: Gate;
  roles: RolePolicy;
  audit: AuditLog;
  breakGlass: BreakGlassOpener;
  finder: PatientFinder;
  hygiene: Middleware;
  /** Reads the session and the patient's decision context in one statement (see session-context.ts). */
  sessionContexts?: SessionContextLoader;
  clock: () => number;
}): Router {
  const r = new Router({ prefix: '/api/patients' });
  r.use(deps.hygiene);
  const session = requireSession(deps.auth);
  const patientSession = requirePatientSession(deps.auth, deps.sessionContexts, deps.clock);

  // Search by a facility's local patient ID (default: the caller's own facility). The answer
  // lists the patient only when the caller may see something of them; otherwise it is empty,
  // exactly as for an ID that is not known at all.
  r.get('/', session, async (ctx) => {
    const p = principalOf(ctx);
    const q = parseQuery(ctx, SearchQuery);
    const trail = { action: 'patient.search', actor: p, address: p.address, deviceId: p.deviceId, endpoint: `GET ${ctx.path}`, purpose: q.purpose };
    if (!roleMay(deps.roles, p.role, 'patient.search')) {
      await deps.audit.record({ ...trail, outcome: 'denied', reason: `role ${p.role} may not search patients` });
      throw forbidden('Your role may not search patients.');
    }
    const facilityId = q.facility ?? p.facilityId;
    const link = await deps.finder.linkOf({ facilityId, localId: q.localId });
    const visible = link ? await deps.gate.canSee(p, link.regionalId, q.purpose) : false;
    await deps.audit.record({
      ...trail,
      outcome: 'success',
      patient: visible ? link!.regionalId : null,
      detail: { query: { facilityId, localId: q.localId }, results: visible ? 1 : 0 },
    });
    ctx.body = { patients: visible ? [{ id: link!.regionalId }] : [] };
  });

  r.get('/:id/timeline', patientSession, async (ctx) => {
    const id = regionalIdParam(ctx.params.id);
    const q = parseQuery(ctx, TimelineQuery);
    const view = await deps.gate.open(principalOf(ctx), { regionalId: id, purpose: q.purpose, endpoint: `GET ${ctx.path}`, preloaded: preloadedContext(ctx) });
    // The answer is made as soon as the page is read (the gate hands it back once the read's audit
    // entry is committed), so that the page dies before that wait. The records' stored JSON goes
    // out as it is (see recordsJson): no parse and re-serialisation; and as bytes, encoded once (a
    // string body is measured, then encoded again on writing), piece by piece (not first joined
    // into one 80 KB string).
    const body = await view.timeline(
      { categories: q.category, facilityId: q.facility, from: q.from, to: q.to, history: q.history, limit: q.limit, cursor: q.cursor },
      (page) => {
        const parts: Array<string | Uint8Array> = [`{"patient":${JSON.stringify(view.regionalId)},"purpose":${JSON.stringify(view.purpose)},"records":`];
        recordsJsonParts(page.records, parts).push(`,"nextCursor":${JSON.stringify(page.nextCursor ?? null)}}`);
        return utf8Bytes(parts);
      },
    );
    ctx.type = 'application/json';
    ctx.body = body;
  });

  r.get('/:id', patientSession, async (ctx) => {
    const id = regionalIdParam(ctx.params.id);
    const q = parseQuery(ctx, TimelineQuery.pick({ purpose: true }));
    const view = await deps.gate.open(principalOf(ctx), { regionalId: id, purpose: q.purpose, endpoint: `GET ${ctx.path}`, preloaded: preloadedContext(ctx) });
    const demographics = view.categories.includes('demographics')
      ? (await view.timeline({ categories: ['demographics'], limit: 1 })).records[0]
      : undefined;
    const recent = await view.timeline({ limit: 20 });
    ctx.body = {
      patient: view.regionalId,
      purpose: view.purpose,
      visibleFacilities: view.facilities,
      visibleCategories: view.categories,
      demographics: demographics ?? null,
      recent: recent.records,
    };
  });

  r.post('/:id/break-glass', session, async (ctx) => {
    const p = principalOf(ctx);
    const id = regionalIdParam(ctx.params.id);
    const body = await readJson(ctx, BreakGlassBody, 8192);
    const trail = {
      action: 'break-glass.open',
      actor: p,
      address: p.address,
      deviceId: p.deviceId,
      endpoint: `POST ${ctx.path}`,
      patient: id,
      purpose: 'emergency',
      breakGlassReason: body.reason,
    };
    if (!roleMay(deps.roles, p.role, 'break-glass')) {
      await deps.audit.record({ ...trail, outcome: 'denied', reason: `role ${p.role} may not use break-glass` });
      throw forbidden('Your role may not use emergency access.');
    }
    let grant: { id: string; expiresAt: number };
    try {
      grant = await deps.breakGlass.openBreakGlass({ userId: String(p.userId), facilityId: p.facilityId, role: p.role }, id, body.reason, body.minutes);
    } catch (e) {
      await deps.audit.record({ ...trail, outcome: 'denied', reason: (e as Error).message });
      // An unknown patient answers like a hidden one: break-glass must not confirm who exists.
      if ((e as { status?: number }).status === 404) throw forbidden(NOT_PERMITTED);
      throw e;
    }
    await deps.audit.record({ ...trail, outcome: 'success', detail: { grantId: grant.id, expiresAt: new Date(grant.expiresAt).toISOString() } });
    ctx.status = 201;
    ctx.body = { grantId: grant.id, patient: id, expiresAt: new Date(grant.expiresAt).toISOString() };
  });

  return r;
}
