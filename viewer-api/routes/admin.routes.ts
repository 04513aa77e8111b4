import Router from '@koa/router';
import type { Context, Middleware } from 'koa';
import { z } from 'zod';
import { badRequest, forbidden, notFound } from '../../store/errors.js';
import { readJson } from '../http/body.js';
import type { AuthService, Principal } from '../auth/auth.service.js';
import type { AdminContext, AdminService } from '../auth/admin.service.js';
import type { AuditLog } from '../audit/audit.service.js';
import { roleMay, ROLES, type Action, type Role, type RolePolicy } from '../roles/roles.js';
import { principalOf, requireSession } from './session.js';
import { parseQuery } from './params.js';

/**
 * Administration of users and devices over HTTP. A facility administrator manages its own
 * facility and may not create network-wide roles; a network administrator manages every facility.
 */
const NETWORK_ROLES: readonly Role[] = ['network_admin', 'dr_operator', 'auditor'];
const FACILITY = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$/);

const NewUser = z
  .object({
    facilityId: FACILITY.optional(),
    username: z.string().min(1).max(64),
    displayName: z.string().min(1).max(200),
    role: z.enum(ROLES),
    password: z.string().min(1).max(256),
  })
  .strict();
const NewDevice = z.object({ facilityId: FACILITY.optional(), label: z.string().min(1).max(200) }).strict();
const RoleChange = z.object({ role: z.enum(ROLES), reason: z.string().trim().min(1).max(2000) }).strict();
const iso = (d: Date | null) => d?.toISOString() ?? null;

export function adminRouter(deps: { auth: AuthService; admin: AdminService; audit: AuditLog; roles: RolePolicy; hygiene: Middleware }): Router {
  const r = new Router({ prefix: '/api/admin' });
  r.use(deps.hygiene);
  r.use(requireSession(deps.auth));

  const context = (ctx: Context, p: Principal): AdminContext => ({ actor: p, address: p.address, deviceId: p.deviceId, endpoint: `${ctx.method} ${ctx.path}` });
  /** Records a refusal: who asked, from where, for what, and why not. */
  const denied = (ctx: Context, p: Principal, action: string, reason: string, detail?: Record<string, unknown>) =>
    deps.audit.record({ ...context(ctx, p), action, outcome: 'denied', reason, detail });

  /** Checks the action and the facility; a refusal is audited and says only that it is refused. */
  async function authorise(ctx: Context, action: Action, facilityId: string): Promise<Principal> {
    const p = principalOf(ctx);
    const own = facilityId === p.facilityId;
    const ok = roleMay(deps.roles, p.role, action) && (own || p.role === 'network_admin');
    if (!ok) {
      const why = roleMay(deps.roles, p.role, action) ? `facility ${facilityId} is not the administrator's` : `role ${p.role} may not ${action}`;
      await denied(ctx, p, `admin.${action}`, why, { facilityId });
      throw forbidden('You may not administer this.');
    }
    return p;
  }

  r.post('/users', async (ctx) => {
    const body = await readJson(ctx, NewUser, 8192);
    const facilityId = body.facilityId ?? principalOf(ctx).facilityId;
    const p = await authorise(ctx, 'user.manage', facilityId);
    if (NETWORK_ROLES.includes(body.role) && p.role !== 'network_admin') throw forbidden('Only a network administrator may create this role.');
    const e = await deps.admin.addUser(context(ctx, p), { ...body, facilityId });
    ctx.status = 201;
    ctx.body = e;
  });

  for (const op of ['disable', 'enable', 'revoke-sessions'] as const) {
    r.post(`/users/:facility/:username/${op}`, async (ctx) => {
      const facilityId = FACILITY.safeParse(ctx.params.facility);
      if (!facilityId.success) throw badRequest('malformed facility id');
      const p = await authorise(ctx, 'user.manage', facilityId.data);
      const username = ctx.params.username!;
      if (op === 'revoke-sessions') {
        ctx.body = { revoked: await deps.admin.revokeUserSessions(context(ctx, p), facilityId.data, username) };
      } else {
        await deps.admin.setUserDisabled(context(ctx, p), facilityId.data, username, op === 'disable');
        ctx.body = { facilityId: facilityId.data, username, disabled: op === 'disable' };
      }
    });
  }

  r.get('/users', async (ctx) => {
    const q = parseQuery(ctx, z.object({ facility: FACILITY.optional() }).strict());
    const facilityId = q.facility ?? principalOf(ctx).facilityId;
    await authorise(ctx, 'user.manage', facilityId);
    const list = await deps.admin.listUsers(facilityId);
    ctx.body = { users: list.map((u) => ({ ...u, disabledAt: iso(u.disabledAt), lockedUntil: iso(u.lockedUntil), createdAt: iso(u.createdAt) })) };
  });

  r.post('/users/:facility/:username/role', async (ctx) => {
    const facilityId = FACILITY.safeParse(ctx.params.facility);
    if (!facilityId.success) throw badRequest('malformed facility id');
    const p = await authorise(ctx, 'user.manage', facilityId.data);
    const body = await readJson(ctx, RoleChange, 4096);
    const username = ctx.params.username!;
    const refuse = async (reason: string, message: string): Promise<never> => {
      await denied(ctx, p, 'admin.user.role', reason, { facilityId: facilityId.data, username, to: body.role });
      throw forbidden(message);
    };
    // No one raises or lowers their own role: a second administrator does it, on the record.
    if (facilityId.data === p.facilityId && username === p.username) await refuse('own role', 'You may not change your own role.');
    const current = await deps.admin.userRole(facilityId.data, username);
    if (current === undefined) throw notFound(`no user ${username} at facility ${facilityId.data}`);
    // Network-wide roles are given and taken by a network administrator only.
    if (p.role !== 'network_admin' && (NETWORK_ROLES.includes(body.role) || NETWORK_ROLES.includes(current as Role))) {
      await refuse(`a network-wide role (${NETWORK_ROLES.includes(body.role) ? body.role : current}) is the network administrator's to give or take`, 'Only a network administrator may give or take this role.');
    }
    const change = await deps.admin.setUserRole(context(ctx, p), facilityId.data, username, body.role, body.reason, current);
    ctx.body = { facilityId: facilityId.data, username, ...change };
  });

  r.post('/devices', async (ctx) => {
    const body = await readJson(ctx, NewDevice, 4096);
    const facilityId = body.facilityId ?? principalOf(ctx).facilityId;
    const p = await authorise(ctx, 'device.manage', facilityId);
    ctx.status = 201;
    ctx.body = await deps.admin.registerDevice(context(ctx, p), facilityId, body.label);
  });

  r.get('/devices', async (ctx) => {
    const q = parseQuery(ctx, z.object({ facility: FACILITY.optional() }).strict());
    const facilityId = q.facility ?? principalOf(ctx).facilityId;
    await authorise(ctx, 'device.manage', facilityId);
    const list = await deps.admin.listDevices(facilityId);
    ctx.body = { devices: list.map((d) => ({ ...d, createdAt: iso(d.createdAt), revokedAt: iso(d.revokedAt) })) };
  });

  r.post('/devices/:id/revoke', async (ctx) => {
    const id = ctx.params.id!;
    if (!/^dev_[A-Za-z0-9_-]{16}$/.test(id)) throw badRequest('malformed device id');
    const device = await deps.admin.getDevice(id);
    const p = principalOf(ctx);
    if (!roleMay(deps.roles, p.role, 'device.manage')) await authorise(ctx, 'device.manage', p.facilityId);
    // Another facility's device answers exactly like a missing one: no probing of other facilities.
    if (!device || (device.facilityId !== p.facilityId && p.role !== 'network_admin')) {
      if (device) await denied(ctx, p, 'admin.device.manage', `device ${id} belongs to facility ${device.facilityId}`);
      throw notFound(`no device ${id}`);
    }
    await deps.admin.revokeDevice(context(ctx, p), id);
    ctx.body = { deviceId: id, revoked: true };
  });

  return r;
}
