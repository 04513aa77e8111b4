import type { Logger } from 'pino';
import type { Config } from '../viewer-api/config.js';
import type { Db } from '../store/db.js';
import { unindexedSnapshots } from '../store/records/records.repository.js';
import { BullmqRunner } from './bullmq.js';
import { InProcessRunner } from './in-process.js';
import { indexSnapshot, type IndexOptions, type IndexResult, type SnapshotSource } from './index-snapshot.js';
import { PermanentJobError, type JobContext, type JobRunner, type Processors, type RetryPolicy } from './runner.js';
import { runRestoreRequest, type RestoreJobDeps } from './restore-job.js';
import { runRestoreDrill, runVerifyDrill, type DrillDeps } from './drill.js';

/** The backup store as the indexer reads it (BackupService has these methods). */
export interface BackupReader {
  getSnapshot(id: string): Promise<{ id: string; facilityId: string; createdAt: Date }>;
  listSnapshotFiles(id: string, opts: { afterPath?: string; limit: number }): Promise<{ path: string; sha256: string }[]>;
  readonly blobs: { readMany(hashes: Buffer[]): AsyncIterable<{ sha256: Buffer; data: Buffer } | { sha256: Buffer; error: string }> };
}

export function backupSource(backup: BackupReader): SnapshotSource {
  return {
    getSnapshot: (id) => backup.getSnapshot(id),
    listSnapshotFiles: (id, opts) => backup.listSnapshotFiles(id, opts),
    async *readBlobs(hashes) {
      for await (const b of backup.blobs.readMany(hashes.map((h) => Buffer.from(h, 'hex')))) {
        yield 'data' in b ? { sha256: b.sha256.toString('hex'), data: b.data } : { sha256: b.sha256.toString('hex'), error: b.error };
      }
    },
  };
}

export interface Jobs {
  readonly runner: JobRunner;
  /** Queues the indexing of a committed snapshot (idempotent; called at commit). */
  enqueueIndexing(snapshotId: string): Promise<void>;
  /** Queues the preparation of a restore request (1 = first: a declared disaster). */
  enqueueRestore(requestId: string, priority: number): Promise<void>;
  /** Queues a run of the identity matcher (idempotent per run). */
  enqueueMatchRun(runId: string): Promise<void>;
  /** Starts executing jobs here and queues every snapshot not yet indexed; returns that count. */
  start(): Promise<number>;
  /** Queues every snapshot whose indexing has not finished. */
  catchUp(): Promise<number>;
  close(): Promise<void>;
}

export interface JobsOptions {
  /** BullMQ key prefix (tests use a unique one). */
  queuePrefix?: string;
  retry?: RetryPolicy;
  index?: IndexOptions;
}

/**
 * The exchange's background jobs: BullMQ when Redis is configured, in-process otherwise; the
 * same processors either way.
 */
export function createJobs(
  deps: {
    config: Config;
    db: Db;
    log: Logger;
    source: SnapshotSource;
    restore?: Omit<RestoreJobDeps, 'db' | 'log' | 'restoreRoot'>;
    /** Restore drills and sampled verification (scheduled by config.drills). */
    drill?: Omit<DrillDeps, 'scratchDir'>;
    /**
     * Runs after a snapshot's records are published (also when a retried job finds them already
     * published, so that a failure here is retried too); must be idempotent.
     */
    afterIndexed?: (r: IndexResult) => Promise<void>;
    /** Runs of the identity matcher: the job, and the runs a start must queue again. */
    matchRuns?: { execute(runId: string, ctx: JobContext): Promise<unknown>; pending(): Promise<string[]> };
  },
  opts: JobsOptions = {},
): Jobs {
  const log = deps.log.child({ component: 'jobs' });
  const processors: Processors = {
    'index-snapshot': async (payload, ctx) => {
      if (!payload || typeof payload.snapshotId !== 'string') throw new Error('index-snapshot needs a snapshotId');
      const r = await indexSnapshot({ db: deps.db, source: deps.source, log }, payload.snapshotId, ctx, { waitForBusyMs: 15 * 60_000, ...opts.index });
      if (deps.afterIndexed && (r.outcome === 'indexed' || r.outcome === 'already-indexed')) await deps.afterIndexed(r);
      return r;
    },
  };
  const restore = deps.restore;
  if (restore) {
    processors.restore = (payload, ctx) => {
      if (!payload || typeof payload.requestId !== 'string') throw new Error('restore needs a requestId');
      return runRestoreRequest({ ...restore, db: deps.db, log, restoreRoot: deps.config.restoreRoot }, payload.requestId, ctx);
    };
  }
  const drill = deps.drill;
  if (drill) {
    processors['restore-drill'] = async () => {
      const r = await runRestoreDrill({ ...drill, scratchDir: deps.config.drills.scratchDir });
      if (r.outcome !== 'passed') log.error({ drill: r.id, facility: r.facilityId, snapshot: r.snapshotId, outcome: r.outcome, detail: r.detail }, 'restore drill did not pass');
      return { drill: r.id, outcome: r.outcome };
    };
    processors['verify-sample'] = async (payload) => {
      const r = await runVerifyDrill(drill, payload.subset);
      if (r.outcome !== 'passed') log.error({ drill: r.id, outcome: r.outcome, detail: r.detail }, 'sampled verification did not pass');
      return { drill: r.id, outcome: r.outcome };
    };
  }
  const matchRuns = deps.matchRuns;
  if (matchRuns) {
    processors['identity-match'] = (payload, ctx) => {
      if (!payload || typeof payload.runId !== 'string') throw new PermanentJobError('identity-match needs a runId');
      return matchRuns.execute(payload.runId, ctx);
    };
  }
  const runner: JobRunner = deps.config.redisUrl
    ? new BullmqRunner(processors, log, { redisUrl: deps.config.redisUrl, prefix: opts.queuePrefix, retry: opts.retry })
    : new InProcessRunner(processors, log, opts.retry);
  const enqueueIndexing = (snapshotId: string) => runner.enqueue('index-snapshot', { snapshotId }, { jobId: `index-${snapshotId}` });
  const enqueueMatchRun = (runId: string) => runner.enqueue('identity-match', { runId }, { jobId: `match-${runId}` });
  const catchUp = async () => {
    const ids = await unindexedSnapshots(deps.db);
    for (const id of ids) await enqueueIndexing(id);
    // A run whose job was lost with its process (the in-process runner's queue) is queued again;
    // its job claims it only if it is still queued, or silent long enough to be abandoned.
    if (matchRuns) for (const id of await matchRuns.pending()) await enqueueMatchRun(id);
    return ids.length;
  };
  return {
    runner,
    enqueueIndexing,
    enqueueRestore: (requestId, priority) => runner.enqueue('restore', { requestId }, { jobId: `restore-${requestId}`, priority }),
    enqueueMatchRun,
    catchUp,
    async start() {
      await runner.startWorkers();
      if (drill) {
        const { intervalMinutes, verifyIntervalMinutes, verifySubset } = deps.config.drills;
        await runner.schedule('restore-drill', {}, intervalMinutes * 60_000);
        await runner.schedule('verify-sample', { subset: verifySubset }, verifyIntervalMinutes * 60_000);
      }
      return catchUp();
    },
    close: () => runner.close(),
  };
}
