import Router from '@koa/router';
import type { Context, Middleware } from 'koa';
import { z } from 'zod';
import { forbidden } from '../../store/errors.js';
import type { Db } from '../../store/db.js';
import type { DeleteGuard } from '../../store/retention/delete-authorization.js';
import { forgetSnapshots, planForget } from '../../store/retention/forget.js';
import type { RetentionPolicy } from '../../store/retention/retention-policy.js';
import { readJson } from '../http/body.js';
import type { AuthService, Principal } from '../auth/auth.service.js';
import type { AuditLog } from '../audit/audit.service.js';
import { roleMay, type RolePolicy } from '../roles/roles.js';
import { principalOf, requireSession } from './session.js';

const SignedForget = z
  .object({
    action: z.literal('forget'),
    facility: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$/).nullable(),
    snapshotIds: z.array(z.string().min(1).max(80)).min(1).max(10_000),
    timestamp: z.string().min(1).max(40),
    nonce: z.string().min(1).max(128),
    signature: z.string().min(1).max(200),
  })
  .strict();

export interface RetentionRouterDeps {
  auth: AuthService;
  audit: AuditLog;
  roles: RolePolicy;
  hygiene: Middleware;
  db: Db;
  guard: DeleteGuard;
  retention: { policy: RetentionPolicy; lockDays: number };
  clock: () => number;
}

/**
 * Retention over the API, for disaster-recovery operators (role with restore.run): the plan
 * (what forget would do, and why), and forget itself, which also needs a request signed with the
 * operator delete key (the session alone cannot delete). Prune stays on the command line.
 */
export function retentionRouter(deps: RetentionRouterDeps): Router {
  const r = new Router({ prefix: '/api/retention' });
  r.use(deps.hygiene);
  r.use(requireSession(deps.auth));
  const settings = () => ({ ...deps.retention, now: new Date(deps.clock()) });

  async function operator(ctx: Context, action: string): Promise<Principal> {
    const p = principalOf(ctx);
    if (!roleMay(deps.roles, p.role, 'restore.run')) {
      await deps.audit.record({ action, outcome: 'denied', reason: `role ${p.role} may not restore.run`, actor: p, address: p.address, deviceId: p.deviceId, endpoint: `${ctx.method} ${ctx.path}` });
      throw forbidden('Your role may not manage retention.');
    }
    return p;
  }

  r.get('/plan', async (ctx) => {
    await operator(ctx, 'retention.plan');
    const facility = typeof ctx.query.facility === 'string' ? ctx.query.facility : undefined;
    const plan = await planForget(deps.db, settings(), facility);
    const view = (d: (typeof plan.keep)[number]) => ({ id: d.id, facilityId: d.facilityId, nightlyDate: d.nightlyDate, createdAt: d.createdAt.toISOString(), reasons: d.reasons });
    ctx.body = { policy: plan.policy, lockDays: plan.lockDays, at: plan.at, facility: plan.facility, keep: plan.keep.map(view), forget: plan.forget.map(view) };
  });

  r.post('/forget', async (ctx) => {
    const p = await operator(ctx, 'retention.forget');
    const req = await readJson(ctx, SignedForget, 1024 * 1024);
    ctx.body = await forgetSnapshots(deps.db, { guard: deps.guard, audit: deps.audit, settings: settings() }, req, {
      actor: p,
      endpoint: `${ctx.method} ${ctx.path}`,
      address: p.address,
    });
  });

  return r;
}
