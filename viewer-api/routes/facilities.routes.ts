import Router from '@koa/router';
import type { Context, Middleware } from 'koa';
import { z } from 'zod';
import type { Db } from '../../store/db.js';
import { badRequest, forbidden, notFound } from '../../store/errors.js';
import { findFacility, listFacilities } from '../../store/backup/backup.repository.js';
import { facilityQualityReport } from '../../ingest/quality/quality.report.js';
import { FACILITY_KINDS, type Participation } from '../../consent/model.js';
import type { AuthService, Principal } from '../auth/auth.service.js';
import type { AuditLog } from '../audit/audit.service.js';
import { roleMay, type Action, type RolePolicy } from '../roles/roles.js';
import { readJson } from '../http/body.js';
import { principalOf, requireSession } from './session.js';
import { parseQuery } from './params.js';

/**
 * Facilities over HTTP: the data-quality report of a facility (a facility administrator for its
 * own facility, a network administrator for any), the list of facilities and their participation
 * in the network (network administrators, or whoever the role matrix gives facility.manage /
 * participation.manage), and the role matrix in force (those who manage users). Every refusal and
 * every change is in the audit trail.
 */

export const FACILITY_ID = /^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$/;

/** What these endpoints need from the consent service. */
export interface ParticipationStore {
  setParticipation(actor: string, p: Participation, reason: string): Promise<Participation>;
  allParticipation(): Promise<Participation[]>;
}

const QualityQuery = z
  .object({
    snapshot: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/, 'a snapshot id is letters, digits, _ and -').optional(),
    limit: z.coerce.number().int().min(1).max(10_000).default(1000),
  })
  .strict();

const ParticipationBody = z
  .object({
    kind: z.enum(FACILITY_KINDS),
    discloses: z.boolean(),
    views: z.boolean(),
    reason: z.string().trim().min(1).max(2000),
  })
  .strict();

export function facilityParam(value: string | undefined): string {
  if (!value || !FACILITY_ID.test(value)) throw badRequest('a facility id is 1-32 letters, digits, "_" or "-"');
  return value;
}

/** The actor name the consent and identity services record for a signed-in user. */
export function actorName(p: Principal): string {
  return `${p.facilityId}/${p.username}`;
}

export function facilitiesRouter(deps: {
  auth: AuthService;
  audit: AuditLog;
  roles: RolePolicy;
  db: Db;
  participation: ParticipationStore;
  hygiene: Middleware;
}): Router {
  const r = new Router();
  r.use(['/api/facilities', '/api/admin/facilities', '/api/admin/participation', '/api/admin/roles'], deps.hygiene, requireSession(deps.auth));

  const trail = (ctx: Context, p: Principal, action: string) => ({
    action,
    actor: { userId: p.userId, username: p.username, facilityId: p.facilityId, role: p.role },
    address: p.address,
    deviceId: p.deviceId,
    endpoint: `${ctx.method} ${ctx.path}`,
  });

  /** The action must be the role's; facility-bound roles act on their own facility only. */
  async function authorise(ctx: Context, action: Action, auditAction: string, facilityId: string | null, text: string): Promise<Principal> {
    const p = principalOf(ctx);
    const may = roleMay(deps.roles, p.role, action);
    // null: a list, which a facility-bound role sees filtered to its own facility.
    const inScope = facilityId === null || facilityId === p.facilityId || p.role === 'network_admin';
    if (!may || !inScope) {
      await deps.audit.record({
        ...trail(ctx, p, auditAction),
        outcome: 'denied',
        reason: may ? `facility ${facilityId ?? '(all)'} is outside the caller's facility` : `role ${p.role} may not ${action}`,
        detail: { facilityId },
      });
      throw forbidden(text);
    }
    return p;
  }

  r.get('/api/facilities/:id/quality', async (ctx) => {
    const facilityId = facilityParam(ctx.params.id);
    const q = parseQuery(ctx, QualityQuery);
    const p = await authorise(ctx, 'quality.read', 'quality.read', facilityId, "You may not read this facility's quality report.");
    let report;
    try {
      report = await facilityQualityReport(deps.db, facilityId, q.snapshot, q.limit);
    } catch (e) {
      await deps.audit.record({ ...trail(ctx, p, 'quality.read'), outcome: 'failure', reason: (e as Error).message, detail: { facilityId, snapshot: q.snapshot ?? null } });
      throw e;
    }
    await deps.audit.record({
      ...trail(ctx, p, 'quality.read'),
      outcome: 'success',
      detail: { facilityId, snapshot: report.snapshotId, findings: report.findings.length },
    });
    ctx.body = report;
  });

  r.get('/api/admin/facilities', async (ctx) => {
    parseQuery(ctx, z.object({}).strict());
    const p = principalOf(ctx);
    if (!roleMay(deps.roles, p.role, 'facility.manage') && !roleMay(deps.roles, p.role, 'participation.manage')) {
      await authorise(ctx, 'facility.manage', 'admin.facility.list', null, 'You may not administer this.');
    }
    const own = (id: string) => p.role === 'network_admin' || id === p.facilityId;
    const [all, participation] = await Promise.all([listFacilities(deps.db), deps.participation.allParticipation()]);
    const facilities = all.filter((f) => own(f.id));
    const part = new Map(participation.map((x) => [x.facilityId, x]));
    ctx.body = {
      facilities: facilities.map((f) => {
        const x = part.get(f.id);
        return {
          id: f.id,
          name: f.name,
          kind: f.kind,
          createdAt: f.createdAt.toISOString(),
          snapshots: f.snapshots,
          lastSnapshotAt: f.lastSnapshotAt?.toISOString() ?? null,
          participation: x ? { kind: x.kind, discloses: x.discloses, views: x.views } : null,
        };
      }),
    };
  });

  // The role matrix in force (built-in, or as ROLE_POLICY_FILE replaced it), for those who give
  // users their roles. It is changed in the file, not over HTTP.
  r.get('/api/admin/roles', async (ctx) => {
    parseQuery(ctx, z.object({}).strict());
    await authorise(ctx, 'user.manage', 'admin.roles.read', null, 'You may not administer this.');
    ctx.body = { roles: deps.roles };
  });

  r.get('/api/admin/participation', async (ctx) => {
    parseQuery(ctx, z.object({}).strict());
    const p = await authorise(ctx, 'participation.manage', 'admin.participation.list', null, 'You may not administer this.');
    const list = await deps.participation.allParticipation();
    ctx.body = { participation: list.filter((x) => p.role === 'network_admin' || x.facilityId === p.facilityId) };
  });

  r.put('/api/admin/participation/:facility', async (ctx) => {
    const facilityId = facilityParam(ctx.params.facility);
    const p = await authorise(ctx, 'participation.manage', 'admin.participation.set', facilityId, 'You may not administer this.');
    const body = await readJson(ctx, ParticipationBody, 4096);
    const t = { ...trail(ctx, p, 'admin.participation.set'), reason: body.reason };
    if (!(await findFacility(deps.db, facilityId))) {
      await deps.audit.record({ ...t, outcome: 'failure', detail: { facilityId, error: 'unknown facility' } });
      throw notFound(`no facility ${facilityId}`);
    }
    const value = await deps.participation.setParticipation(actorName(p), { facilityId, kind: body.kind, discloses: body.discloses, views: body.views }, body.reason);
    await deps.audit.record({ ...t, outcome: 'success', detail: { facilityId, participation: value } });
    ctx.body = value;
  });

  return r;
}
