import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { Selectable, Updateable } from 'kysely';
import { isUniqueViolation } from '../store/db.js';
import { conflict, isExchangeError } from '../store/errors.js';
import type { AuditLog } from '../viewer-api/audit/audit.service.js';
import { PermanentJobError, type JobContext } from '../jobs/runner.js';
import type { IdentityMatchRunTable } from './consent.tables.js';
import type { Conn } from './identity.repository.js';
import type { MatchProgress, MatchRunSummary } from './identity.service.js';
import { MatchSearchError, type CandidateSearch } from './match-search.js';

/**
 * Runs of the matcher over the whole region as a background job. A network administrator asks
 * (a row `queued`, a job queued with the exchange's other jobs); a job runner (the exchange in
 * the embedded mode, `hakobune worker` processes with Redis) claims it, runs it with progress on
 * the row, and finishes it `done` with its summary or `failed` with a message for people.
 *
 * One run at a time across the network: a partial unique index allows one queued or running row.
 * A run whose process died must not block every later run: the process running a run touches it
 * at least every `heartbeatMs`; a queued or running run silent for `staleAfterMs` is abandoned.
 * The next request fails it ("abandoned", audited) and queues a new run; a job that finds it
 * (a retried or re-queued job) takes it over and runs it again from the start, which is safe:
 * applying a plan links only unlinked local IDs and upserts review rows.
 */

export const MATCH_RUN_ID = /^MR-[0-9A-F]{16}$/;
export const MATCH_RUN_STATUSES = ['queued', 'running', 'done', 'failed'] as const;
export type MatchRunStatus = (typeof MATCH_RUN_STATUSES)[number];

export interface Requester {
  userId: number | null;
  username: string;
  facilityId: string | null;
  role: string;
}

export interface MatchRun {
  id: string;
  status: MatchRunStatus;
  reason: string | null;
  requestedBy: Requester;
  requestedAt: number;
  startedAt: number | null;
  updatedAt: number;
  finishedAt: number | null;
  progress: {
    phase: MatchProgress['phase'] | null;
    localPatients: number;
    blocksSearched: number | null;
    blocks: number | null;
    candidates: number | null;
    applied: number;
  };
  summary: MatchRunSummary | null;
  error: string | null;
}

export interface MatchRunsDeps {
  db: Conn;
  identity: { runMatching(opts: { search?: CandidateSearch; progress?: (p: MatchProgress) => Promise<void> }): Promise<MatchRunSummary> };
  audit: AuditLog;
  log: Logger;
  /** Queues the job of a run (jobs.enqueueMatchRun). */
  enqueue(runId: string): Promise<void>;
  /** Where the candidate search runs (the exchange gives a worker thread). */
  search: CandidateSearch;
  now?: () => number;
  staleAfterMs?: number;
  heartbeatMs?: number;
}

export const DEFAULT_STALE_AFTER_MS = 10 * 60_000;
const ACTIVE = ['queued', 'running'] as const;

function toRun(r: Selectable<IdentityMatchRunTable>): MatchRun {
  const t = (d: Date | null) => (d === null ? null : d.getTime());
  return {
    id: r.id,
    status: r.status,
    reason: r.reason,
    requestedBy: { userId: r.user_id === null ? null : Number(r.user_id), username: r.username, facilityId: r.user_facility_id, role: r.role },
    requestedAt: r.created_at.getTime(),
    startedAt: t(r.started_at),
    updatedAt: r.updated_at.getTime(),
    finishedAt: t(r.finished_at),
    progress: { phase: r.phase, localPatients: r.local_patients, blocksSearched: r.blocks_searched, blocks: r.blocks, candidates: r.candidates, applied: r.applied },
    summary:
      r.status === 'done'
        ? { localPatients: r.local_patients, candidates: r.candidates ?? 0, autoLinked: r.auto_linked ?? 0, queued: r.queued ?? 0, skipped: r.skipped ?? 0 }
        : null,
    error: r.error,
  };
}

export function createMatchRuns(deps: MatchRunsDeps) {
  const db = deps.db;
  const now = deps.now ?? Date.now;
  const staleAfterMs = deps.staleAfterMs ?? DEFAULT_STALE_AFTER_MS;
  const heartbeatMs = deps.heartbeatMs ?? 30_000;
  const log = deps.log.child({ component: 'match-runs' });

  const get = async (id: string) => {
    const r = await db.selectFrom('identity_match_run').selectAll().where('id', '=', id).executeTakeFirst();
    return r && toRun(r);
  };
  const active = async () => {
    const r = await db.selectFrom('identity_match_run').selectAll().where('status', 'in', ACTIVE).executeTakeFirst();
    return r && toRun(r);
  };
  const isStale = (r: MatchRun, at: number) => at - r.updatedAt >= staleAfterMs;

  /** Audits the outcome of a run in the viewer's trail, as its requester (the job has no session). */
  const outcome = (r: MatchRun, ok: boolean, reason: string | null, detail: Record<string, unknown>) =>
    deps.audit.record({
      action: 'identity.match.finish',
      outcome: ok ? 'success' : 'failure',
      actor: r.requestedBy,
      endpoint: 'job identity-match',
      reason,
      detail: { runId: r.id, ...detail },
    });

  /** Fails a run nobody has touched for staleAfterMs; false when it moved meanwhile. */
  async function abandon(r: MatchRun, at: number): Promise<boolean> {
    const error = `abandoned: no sign of life from the process running it since ${new Date(r.updatedAt).toISOString()} (it stopped, or its job was lost); ask for a new run`;
    const u = await db
      .updateTable('identity_match_run')
      .set({ status: 'failed', phase: null, error, updated_at: new Date(at), finished_at: new Date(at) })
      .where('id', '=', r.id)
      .where('status', 'in', ACTIVE)
      .where('updated_at', '=', new Date(r.updatedAt))
      .executeTakeFirst();
    if (Number(u.numUpdatedRows) === 0) return false;
    log.warn({ runId: r.id, lastSeen: new Date(r.updatedAt).toISOString() }, 'match run abandoned');
    await outcome(r, false, error, { abandoned: true });
    return true;
  }

  return {
    get,

    /** Newest first. */
    async list(limit: number): Promise<MatchRun[]> {
      const rows = await db.selectFrom('identity_match_run').selectAll().orderBy('created_at', 'desc').orderBy('id', 'desc').limit(limit).execute();
      return rows.map(toRun);
    },

    /**
     * Records a run `queued` and queues its job. A run already queued or running is a conflict
     * naming it (unless it is abandoned: then it is failed first). A job that cannot be queued
     * fails the run at once, so that it does not block the next request.
     */
    async request(by: Requester, reason: string | null): Promise<MatchRun> {
      const id = `MR-${randomBytes(8).toString('hex').toUpperCase()}`;
      let run: MatchRun | undefined;
      for (let attempt = 0; !run; attempt++) {
        const at = now();
        try {
          const row = await db
            .insertInto('identity_match_run')
            .values({
              id,
              status: 'queued',
              reason,
              user_id: by.userId,
              username: by.username,
              user_facility_id: by.facilityId,
              role: by.role,
              phase: null,
              candidates: null,
              blocks_searched: null,
              blocks: null,
              auto_linked: null,
              queued: null,
              skipped: null,
              error: null,
              created_at: new Date(at),
              started_at: null,
              updated_at: new Date(at),
              finished_at: null,
            })
            .returningAll()
            .executeTakeFirstOrThrow();
          run = toRun(row);
        } catch (e) {
          if (!isUniqueViolation(e)) throw e;
          const other = await active();
          // Finished between the insert and the read: try again (a few times: others may be asking too).
          if (!other) {
            if (attempt < 3) continue;
            throw conflict('another match run was being asked for at the same moment; ask again');
          }
          if (attempt < 3 && isStale(other, at)) {
            await abandon(other, at);
            continue;
          }
          throw conflict(`match run ${other.id} is already ${other.status}; one run at a time across the network`, { runId: other.id, status: other.status });
        }
      }
      try {
        await deps.enqueue(run.id);
      } catch (err) {
        const error = 'the run could not be queued (the job queue is unreachable); ask again later';
        log.warn({ err, runId: run.id }, 'match run not queued');
        await db.updateTable('identity_match_run').set({ status: 'failed', error, updated_at: new Date(now()), finished_at: new Date(now()) }).where('id', '=', run.id).execute();
        await outcome(run, false, error, {});
        return (await get(run.id))!;
      }
      return run;
    },

    /** Queued runs, for a job runner's catch-up at start (the in-process runner loses its queue with its process). */
    async pending(): Promise<string[]> {
      const rows = await db.selectFrom('identity_match_run').select('id').where('status', 'in', ACTIVE).execute();
      return rows.map((r) => r.id);
    },

    /** The job: claims the run, runs the matcher with progress on the row, finishes it. */
    async execute(runId: string, ctx: Pick<JobContext, 'progress'>): Promise<{ runId: string; status: MatchRunStatus }> {
      const found = await get(runId);
      if (!found) throw new PermanentJobError(`match run ${runId} does not exist`);
      const startedAt = now();
      const claim = await db
        .updateTable('identity_match_run')
        .set((eb) => ({
          status: 'running',
          phase: 'reading',
          local_patients: 0,
          blocks_searched: null,
          blocks: null,
          candidates: null,
          applied: 0,
          attempts: eb('attempts', '+', 1),
          started_at: new Date(startedAt),
          updated_at: new Date(startedAt),
        }))
        .where('id', '=', runId)
        .where((eb) =>
          eb.or([eb('status', '=', 'queued'), eb.and([eb('status', '=', 'running'), eb('updated_at', '<=', new Date(startedAt - staleAfterMs))])]),
        )
        .returning('attempts')
        .executeTakeFirst();
      // Finished already, or running in a live process: nothing to do here.
      if (!claim) return { runId, status: found.status };
      // Every write below is ours only while the run is still ours (this attempt).
      const own = { id: runId, attempts: claim.attempts };
      const write = async (set: Updateable<IdentityMatchRunTable>) => {
        const u = await db
          .updateTable('identity_match_run')
          .set({ ...set, updated_at: new Date(now()) })
          .where('id', '=', own.id)
          .where('status', '=', 'running')
          .where('attempts', '=', own.attempts)
          .executeTakeFirst();
        return Number(u.numUpdatedRows) > 0;
      };
      const heartbeat = setInterval(() => {
        write({}).catch((err: unknown) => log.warn({ err, runId }, 'match run heartbeat not recorded'));
      }, heartbeatMs);
      heartbeat.unref();
      const run = found;
      try {
        const summary = await deps.identity.runMatching({
          search: deps.search,
          progress: async (p) => {
            const ok = await write({
              phase: p.phase,
              local_patients: p.localPatients,
              ...(p.search ? { blocks_searched: p.search.blocksSearched, blocks: p.search.blocks, candidates: p.search.candidates } : {}),
              ...(p.candidates !== undefined ? { candidates: p.candidates } : {}),
              ...(p.applied !== undefined ? { applied: p.applied } : {}),
            });
            if (!ok) throw new LostRunError(`match run ${runId} was taken over or abandoned meanwhile`);
            await ctx.progress({ phase: p.phase, localPatients: p.localPatients, candidates: p.candidates ?? p.search?.candidates ?? 0, applied: p.applied ?? 0 });
          },
        });
        const at = new Date(now());
        const done = await write({ status: 'done', phase: null, local_patients: summary.localPatients, candidates: summary.candidates, applied: summary.candidates, auto_linked: summary.autoLinked, queued: summary.queued, skipped: summary.skipped, finished_at: at });
        if (!done) throw new LostRunError(`match run ${runId} was taken over or abandoned meanwhile`);
        await outcome(run, true, run.reason, { ...summary });
        return { runId, status: 'done' };
      } catch (e) {
        if (e instanceof LostRunError) {
          log.warn({ runId }, e.message);
          return { runId, status: (await get(runId))?.status ?? 'failed' };
        }
        const error =
          e instanceof MatchSearchError || isExchangeError(e) ? e.message : `the run stopped on an internal error; the exchange's log has the detail (run ${runId})`;
        log.error({ err: e, runId }, 'match run failed');
        await write({ status: 'failed', phase: null, error, finished_at: new Date(now()) });
        await outcome(run, false, error, {});
        return { runId, status: 'failed' };
      } finally {
        clearInterval(heartbeat);
      }
    },
  };
}

class LostRunError extends Error {
  override name = 'LostRunError';
}

export type MatchRuns = ReturnType<typeof createMatchRuns>;
