import Router from '@koa/router';
import type { Middleware } from 'koa';
import { z } from 'zod';
import { forbidden } from '../../store/errors.js';
import { readJson } from '../http/body.js';
import type { AuthService } from '../auth/auth.service.js';
import type { AuditLog } from '../audit/audit.service.js';
import { roleMay, type RolePolicy } from '../roles/roles.js';
import { NOT_PERMITTED, type Gate } from '../gate/gate.js';
import { principalOf, requireSession } from './session.js';
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

const BreakGlassBody = z.object({ reason: z.string().min(1).max(2000), minutes: z.number().int().min(1).max(24 * 60) }).strict();

/** The JSON clinical endpoints: every read goes through the gate. */
export function patientsRouter(deps: {
  auth: AuthService;
  gate: Gate;
  roles: RolePolicy;
  audit: AuditLog;
  breakGlass: BreakGlassOpener;
  hygiene: Middleware;
}): Router {
  const r = new Router({ prefix: '/api/patients' });
  r.use(deps.hygiene);
  r.use(requireSession(deps.auth));

  r.get('/:id/timeline', async (ctx) => {
    const id = regionalIdParam(ctx.params.id);
    const q = parseQuery(ctx, TimelineQuery);
    const view = await deps.gate.open(principalOf(ctx), { regionalId: id, purpose: q.purpose, endpoint: `GET ${ctx.path}` });
    const page = await view.timeline({
      categories: q.category,
      facilityId: q.facility,
      from: q.from,
      to: q.to,
      history: q.history,
      limit: q.limit,
      cursor: q.cursor,
    });
    ctx.body = { patient: view.regionalId, purpose: view.purpose, records: page.records, nextCursor: page.nextCursor ?? null };
  });

  r.get('/:id', async (ctx) => {
    const id = regionalIdParam(ctx.params.id);
    const q = parseQuery(ctx, TimelineQuery.pick({ purpose: true }));
    const view = await deps.gate.open(principalOf(ctx), { regionalId: id, purpose: q.purpose, endpoint: `GET ${ctx.path}` });
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

  r.post('/:id/break-glass', async (ctx) => {
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
