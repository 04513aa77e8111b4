import type { Db } from '../db.js';
import { conflict, notFound } from '../errors.js';
import * as backupRepo from '../backup/backup.repository.js';
import type { AuditActor } from '../../viewer-api/audit/audit.entry.js';
import type { AuditLog } from '../../viewer-api/audit/audit.service.js';
import type { DeleteGuard, SignedDeleteRequest } from './delete-authorization.js';
import { planRetention, formatRetentionPolicy, type RetentionDecision, type RetentionPolicy } from './retention-policy.js';
import { deleteSnapshots, pinnedSnapshots } from './retention.repository.js';

export interface ForgetSettings {
  policy: RetentionPolicy;
  lockDays: number;
  now: Date;
}

export interface ForgetPlan {
  policy: string;
  lockDays: number;
  at: string;
  facility: string | null;
  keep: RetentionDecision[];
  forget: RetentionDecision[];
}

/** What the policy keeps and what it would forget (all facilities, or one). */
export async function planForget(db: Db, settings: ForgetSettings, facilityId?: string): Promise<ForgetPlan> {
  if (facilityId !== undefined && !(await backupRepo.findFacility(db, facilityId))) throw notFound(`no facility ${facilityId}`);
  const snapshots = await backupRepo.listSnapshots(db, facilityId);
  const decisions = planRetention(snapshots, settings.policy, { now: settings.now, lockDays: settings.lockDays, pinned: await pinnedSnapshots(db) });
  return {
    policy: formatRetentionPolicy(settings.policy),
    lockDays: settings.lockDays,
    at: settings.now.toISOString(),
    facility: facilityId ?? null,
    keep: decisions.filter((d) => d.keep),
    forget: decisions.filter((d) => !d.keep),
  };
}

/**
 * Forgets the snapshots a signed request names. Each must be one the policy lets go right now:
 * an unknown id is a 404, a snapshot the policy keeps (inside the delete lock, the latest, a
 * night a rule keeps, pinned) is a 409 and nothing is forgotten. Blobs stay until prune.
 */
export async function forgetSnapshots(
  db: Db,
  deps: { guard: DeleteGuard; audit: AuditLog; settings: ForgetSettings },
  req: SignedDeleteRequest,
  who: { actor: AuditActor; endpoint: string; address?: string | null },
): Promise<{ forgotten: string[] }> {
  await deps.guard.authorize(req, who);
  const trail = { action: 'retention.forget', actor: who.actor, endpoint: who.endpoint, address: who.address ?? null };
  const detail = { facility: req.facility, snapshots: req.snapshotIds, nonce: req.nonce, policy: formatRetentionPolicy(deps.settings.policy), lockDays: deps.settings.lockDays };
  try {
    if (req.action !== 'forget') throw conflict(`a ${req.action} request cannot forget snapshots`);
    const forgotten = await db.transaction().execute(async (trx) => {
      const plan = await planForget(trx, deps.settings, req.facility ?? undefined);
      const all = new Map([...plan.keep, ...plan.forget].map((d) => [d.id, d]));
      for (const id of req.snapshotIds) {
        const d = all.get(id);
        if (!d) throw notFound(req.facility ? `no snapshot ${id} of facility ${req.facility}` : `no snapshot ${id}`);
        if (d.keep) throw conflict(`snapshot ${id} is kept and cannot be forgotten: ${d.reasons.join('; ')}`, { snapshotId: id, reasons: d.reasons });
      }
      await deleteSnapshots(trx, req.snapshotIds);
      return req.snapshotIds;
    });
    await deps.audit.record({ ...trail, outcome: 'success', detail: { ...detail, forgotten: forgotten.length } });
    return { forgotten };
  } catch (e) {
    await deps.audit.record({ ...trail, outcome: 'failure', reason: (e as Error).message, detail });
    throw e;
  }
}
