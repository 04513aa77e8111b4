import Router from '@koa/router';
import type { Middleware } from 'koa';
import { z } from 'zod';
import { forbidden } from '../../store/errors.js';
import type { Db } from '../../store/db.js';
import type { AuthService } from '../auth/auth.service.js';
import { verifyAuditChain, type AuditLog } from '../audit/audit.service.js';
import { searchAudit } from '../audit/audit.repository.js';
import { toAuditEvent } from '../audit/audit.fhir.js';
import { roleMay, type Action, type RolePolicy } from '../roles/roles.js';
import { principalOf, requireSession } from './session.js';
import { parseQuery } from './params.js';

const instant = z
  .string()
  .max(40)
  .regex(/^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?(Z|[+-]\d{2}:\d{2}))?$/, 'an instant is YYYY-MM-DD or ISO 8601 with a zone')
  .transform((v) => new Date(v.length === 10 ? `${v}T00:00:00Z` : v))
  .refine((d) => !Number.isNaN(d.getTime()), 'not a real instant');

const AuditQuery = z
  .object({
    from: instant.optional(),
    to: instant.optional(),
    user: z.coerce.number().int().positive().optional(),
    patient: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/).optional(),
    facility: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$/).optional(),
    action: z.string().regex(/^[a-z][a-z.-]{0,63}$/).optional(),
    after: z.coerce.number().int().min(0).optional(),
    limit: z.coerce.number().int().min(1).max(1000).default(100),
  })
  .strict();

/** The auditors' endpoints: search, FHIR AuditEvent export, chain verification. Each use is audited too. */
export function auditRouter(deps: { auth: AuthService; db: Db; audit: AuditLog; roles: RolePolicy; hygiene: Middleware }): Router {
  const r = new Router({ prefix: '/api/audit' });
  r.use(deps.hygiene);
  r.use(requireSession(deps.auth));

  async function allowed(ctx: Parameters<Middleware>[0], action: Action, auditAction: string, detail: Record<string, unknown>) {
    const p = principalOf(ctx);
    const trail = { action: auditAction, actor: p, address: p.address, deviceId: p.deviceId, endpoint: `GET ${ctx.path}`, detail };
    if (!roleMay(deps.roles, p.role, action)) {
      await deps.audit.record({ ...trail, outcome: 'denied', reason: `role ${p.role} may not ${action}` });
      throw forbidden('Your role may not read the audit trail.');
    }
    await deps.audit.record({ ...trail, outcome: 'success' });
  }

  const queryOf = (q: z.infer<typeof AuditQuery>) => ({
    from: q.from,
    to: q.to,
    userId: q.user,
    patient: q.patient,
    facilityId: q.facility,
    action: q.action,
    afterSeq: q.after,
    limit: q.limit,
  });
  const described = (q: z.infer<typeof AuditQuery>) => ({ ...q, from: q.from?.toISOString(), to: q.to?.toISOString() });

  r.get('/', async (ctx) => {
    const q = parseQuery(ctx, AuditQuery);
    await allowed(ctx, 'audit.read', 'audit.search', { query: described(q) });
    const entries = await searchAudit(deps.db, queryOf(q));
    ctx.body = {
      entries: entries.map((e) => ({ ...e, detail: JSON.parse(e.detail) as unknown })),
      next: entries.length === q.limit ? entries[entries.length - 1]!.seq : null,
    };
  });

  r.get('/AuditEvent', async (ctx) => {
    const q = parseQuery(ctx, AuditQuery);
    await allowed(ctx, 'audit.export', 'audit.export', { query: described(q) });
    const entries = await searchAudit(deps.db, queryOf(q));
    ctx.type = 'application/fhir+json';
    ctx.body = { resourceType: 'Bundle', type: 'collection', entry: entries.map((e) => ({ resource: toAuditEvent(e) })) };
  });

  r.get('/verify', async (ctx) => {
    await allowed(ctx, 'audit.read', 'audit.verify', {});
    ctx.body = await verifyAuditChain(deps.db);
  });

  return r;
}
