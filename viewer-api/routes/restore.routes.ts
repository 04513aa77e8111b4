import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import Router from '@koa/router';
import type { Context, Middleware } from 'koa';
import { z } from 'zod';
import { badRequest, conflict, forbidden, isExchangeError, notFound } from '../../store/errors.js';
import type { Db } from '../../store/db.js';
import type { BackupService } from '../../store/backup/backup.service.js';
import { patientPrefixes } from '../../store/backup/restore.js';
import { DamagedBlobError, snapshotTar } from '../../store/backup/restore-tar.js';
import * as requests from '../../store/backup/restore-requests.repository.js';
import { disastersAt } from '../../consent/consent.repository.js';
import { restoreTarget } from '../../jobs/restore-job.js';
import { readJson } from '../http/body.js';
import type { AuthService, Principal } from '../auth/auth.service.js';
import type { AuditLog } from '../audit/audit.service.js';
import type { AuditInput } from '../audit/audit.entry.js';
import { roleMay, type RolePolicy } from '../roles/roles.js';
import { principalOf, requireSession } from './session.js';

/** Queue priorities of restore jobs: a facility under a declared disaster goes first. */
export const DISASTER_PRIORITY = 1;
export const NORMAL_PRIORITY = 10;

const NewRestore = z
  .object({
    facilityId: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$/, 'a facility id is 1-32 letters, digits, "-" or "_"'),
    snapshotId: z.string().regex(/^S[0-9A-Za-z-]{1,64}$/, 'not a snapshot id').optional(),
    at: z.string().regex(/^\d{4}-\d{2}-\d{2}$/, 'a night is YYYY-MM-DD').refine((d) => !Number.isNaN(Date.parse(`${d}T00:00:00Z`)), 'not a real date').optional(),
    patients: z.array(z.string().min(1).max(64)).min(1).max(1000).optional(),
    mode: z.enum(['download', 'path']),
    path: z.string().min(1).max(1024).optional(),
  })
  .strict();

export interface RestoreRouterDeps {
  auth: AuthService;
  audit: AuditLog;
  roles: RolePolicy;
  hygiene: Middleware;
  db: Db;
  backup: BackupService;
  enqueue(requestId: string, priority: number): Promise<void>;
  restoreRoot: string | undefined;
  clock: () => number;
}

function view(r: requests.RestoreRequest) {
  return {
    id: r.id,
    facilityId: r.facilityId,
    snapshotId: r.snapshotId,
    patients: r.patients,
    mode: r.mode,
    path: r.path,
    state: r.state,
    reason: r.reason,
    priority: r.priority,
    progress: r.progress,
    requestedBy: r.requestedBy.username,
    createdAt: r.createdAt.toISOString(),
    updatedAt: r.updatedAt.toISOString(),
    finishedAt: r.finishedAt?.toISOString() ?? null,
  };
}

/**
 * Restores as an operation (issue 7): a disaster-recovery operator asks for a facility's snapshot
 * (by id, by night, or the latest), a job prepares it, and it is downloaded as a tar or written
 * below the restore root. Every step is audited with who, which facility and snapshot, and what.
 */
export function restoreRouter(deps: RestoreRouterDeps): Router {
  const r = new Router({ prefix: '/api/restores' });
  r.use(deps.hygiene);
  r.use(requireSession(deps.auth));

  const trail = (ctx: Context, p: Principal, action: string, detail: Record<string, unknown>): Omit<AuditInput, 'outcome'> => ({
    action,
    actor: p,
    address: p.address,
    deviceId: p.deviceId,
    endpoint: `${ctx.method} ${ctx.path}`,
    detail,
  });

  async function operator(ctx: Context, action: string, detail: Record<string, unknown>): Promise<Principal> {
    const p = principalOf(ctx);
    if (!roleMay(deps.roles, p.role, 'restore.run')) {
      await deps.audit.record({ ...trail(ctx, p, action, detail), outcome: 'denied', reason: `role ${p.role} may not restore.run` });
      throw forbidden('Your role may not run restores.');
    }
    return p;
  }

  r.post('/', async (ctx) => {
    const p = await operator(ctx, 'restore.request', {});
    const body = await readJson(ctx, NewRestore);
    const detail: Record<string, unknown> = { facility: body.facilityId, snapshot: body.snapshotId ?? null, at: body.at ?? null, mode: body.mode, path: body.path ?? null, patients: body.patients ?? null };
    const refuse = async (e: unknown): Promise<never> => {
      await deps.audit.record({ ...trail(ctx, p, 'restore.request', detail), outcome: 'failure', reason: isExchangeError(e) ? e.message : 'internal error' });
      throw e;
    };
    let target: string | null = null;
    try {
      if (body.snapshotId && body.at) throw badRequest('give either snapshotId or at, not both');
      for (const pid of body.patients ?? []) patientPrefixes(pid);
      if (body.mode === 'path') {
        if (!body.path) throw badRequest('mode "path" needs a path under the restore root');
        target = restoreTarget(deps.restoreRoot, body.path);
      } else if (body.path !== undefined) {
        throw badRequest('a path belongs to mode "path" only');
      }
    } catch (e) {
      await refuse(e);
    }
    const snapshot = await deps.backup.chooseSnapshot(body.facilityId, { snapshotId: body.snapshotId, at: body.at }).catch(refuse);
    const now = deps.clock();
    const disaster = (await disastersAt(deps.db, now)).find((d) => d.facilities === 'all' || d.facilities.includes(body.facilityId));
    const priority = disaster ? DISASTER_PRIORITY : NORMAL_PRIORITY;
    const req = await requests.insertRestoreRequest(
      deps.db,
      {
        id: `R${randomBytes(12).toString('hex')}`,
        facilityId: body.facilityId,
        snapshotId: snapshot.id,
        patients: body.patients ?? null,
        mode: body.mode,
        path: target,
        priority,
        requestedBy: { userId: p.userId, username: p.username, facilityId: p.facilityId, role: p.role },
      },
      new Date(now),
    );
    await deps.audit.record({
      ...trail(ctx, p, 'restore.request', { ...detail, requestId: req.id, snapshot: snapshot.id, path: target, priority, disaster: disaster?.id ?? null }),
      outcome: 'success',
    });
    try {
      await deps.enqueue(req.id, priority);
    } catch (e) {
      await requests.finishRestoreRequest(deps.db, req.id, 'failed', 'the job queue is unreachable; ask again', new Date(deps.clock()));
      throw e;
    }
    ctx.status = 202;
    ctx.set('Location', `/api/restores/${req.id}`);
    ctx.body = { id: req.id, state: req.state, snapshotId: snapshot.id, priority };
  });

  const find = async (id: string) => {
    const req = /^R[0-9a-f]{24}$/.test(id) ? await requests.findRestoreRequest(deps.db, id) : undefined;
    if (!req) throw notFound(`no restore request ${id}`);
    return req;
  };

  r.get('/:id', async (ctx) => {
    await operator(ctx, 'restore.status', { requestId: ctx.params.id });
    ctx.body = view(await find(ctx.params.id!));
  });

  r.get('/:id/download', async (ctx) => {
    const p = await operator(ctx, 'restore.download', { requestId: ctx.params.id });
    const req = await find(ctx.params.id!);
    const detail = { requestId: req.id, facility: req.facilityId, snapshot: req.snapshotId, patients: req.patients };
    if (req.mode !== 'download') throw conflict(`restore ${req.id} was written to ${req.path}; it has nothing to download`);
    if (req.state !== 'ready') throw conflict(`restore ${req.id} is ${req.state}${req.reason ? `: ${req.reason}` : ''}`, { state: req.state });
    const snapshot = await deps.backup.getSnapshot(req.snapshotId);
    await deps.audit.record({ ...trail(ctx, p, 'restore.download', detail), outcome: 'success' });
    const audit = deps.audit;
    const entry = trail(ctx, p, 'restore.download', detail);
    // Headers go out before the first byte; a blob found damaged later can only cut the stream:
    // the connection is closed without the tar's end blocks (and without the final chunk), so a
    // client sees a truncated transfer and tar an unexpected end of archive. The audit says which file.
    async function* body() {
      try {
        yield* snapshotTar(deps.backup, snapshot, { patients: req.patients });
      } catch (e) {
        const reason = e instanceof DamagedBlobError ? e.message : `download failed: ${(e as Error).message}`;
        await audit.record({ ...entry, action: 'restore.download.abort', outcome: 'failure', reason });
        throw e;
      }
    }
    ctx.status = 200;
    ctx.type = 'application/x-tar';
    ctx.set('Content-Disposition', `attachment; filename="${req.facilityId}-${req.snapshotId}.tar"`);
    ctx.body = Readable.from(body(), { objectMode: false });
  });

  return r;
}
