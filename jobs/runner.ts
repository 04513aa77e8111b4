/**
 * Background jobs: one abstraction, two runners. With Redis configured, jobs go through BullMQ
 * queues and are run by `hakobune worker` processes; without, an in-process runner executes the
 * same processors in the exchange (the embedded default). Payloads carry ids only, never patient
 * data (BullMQ keeps job data in clear text in Redis).
 */

/** Every job of the exchange and its payload. */
export interface JobPayloads {
  'index-snapshot': { snapshotId: string };
  /** Prepares a restore request (jobs/restore-job.ts). */
  'restore': { requestId: string };
  /** A restore drill of a random facility and night (jobs/drill.ts). */
  'restore-drill': Record<string, never>;
  /** A sampled verification of the store: the share of packs read back. */
  'verify-sample': { subset: number };
  /** A run of the identity matcher over the region (consent/match-runs.ts). */
  'identity-match': { runId: string };
}
export type JobName = keyof JobPayloads;
export const JOB_NAMES: readonly JobName[] = ['index-snapshot', 'restore', 'restore-drill', 'verify-sample', 'identity-match'];

export interface JobContext {
  /** 1 for the first attempt. */
  attempt: number;
  /** Reports progress (shown by BullMQ and the logs); cheap to call often. */
  progress(p: Record<string, number | string>): Promise<void>;
}

export type Processor<N extends JobName> = (payload: JobPayloads[N], ctx: JobContext) => Promise<unknown>;
/** Indexing is always there; other jobs run only where their processor is given (a queue without one is not worked here). */
export type Processors = { 'index-snapshot': Processor<'index-snapshot'> } & { [N in Exclude<JobName, 'index-snapshot'>]?: Processor<N> };

/** A failure that retrying cannot fix (a snapshot that does not exist, a malformed payload). */
export class PermanentJobError extends Error {
  override name = 'PermanentJobError';
}

export interface EnqueueOptions {
  /** Jobs with the same id are not queued twice while one is waiting or running. */
  jobId?: string;
  /**
   * Lower runs sooner (BullMQ's priority, 1 = first). In BullMQ a job without priority runs before
   * prioritised ones of its queue, so a queue that uses priority gives one to every job; the
   * in-process runner runs a kind's prioritised jobs before its unprioritised ones.
   */
  priority?: number;
}

export interface JobRunner {
  readonly kind: 'in-process' | 'bullmq';
  enqueue<N extends JobName>(name: N, payload: JobPayloads[N], opts?: EnqueueOptions): Promise<void>;
  /**
   * Queues a job every `everyMs` milliseconds (a BullMQ job scheduler, or a timer in this
   * process); 0 removes the schedule. Scheduling twice under one name keeps one schedule.
   */
  schedule<N extends JobName>(name: N, payload: JobPayloads[N], everyMs: number): Promise<void>;
  /** Starts executing jobs in this process. */
  startWorkers(): Promise<void>;
  /** Resolves when no job is waiting or running (tests, demo, CLI). */
  idle(): Promise<void>;
  /** Stops taking jobs, lets the running ones finish, releases connections. Safe to call twice. */
  close(): Promise<void>;
}

export interface RetryPolicy {
  attempts: number;
  /** First retry delay; doubles on each further attempt. */
  backoffMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 5, backoffMs: 2_000 };
