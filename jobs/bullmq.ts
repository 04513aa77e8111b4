import { Queue, UnrecoverableError, Worker, type Job } from 'bullmq';
import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { DEFAULT_RETRY, JOB_NAMES, PermanentJobError, type EnqueueOptions, type JobName, type JobPayloads, type JobRunner, type Processors, type RetryPolicy } from './runner.js';

export interface BullmqOptions {
  redisUrl: string;
  /** Redis key prefix of every queue: tests use a unique one to stay apart. */
  prefix?: string;
  /** Jobs run at once per worker process. */
  concurrency?: number;
  retry?: RetryPolicy;
}

/**
 * BullMQ queues (one per job name) and, in `hakobune worker` processes, their workers. Jobs
 * retry with exponential backoff; PermanentJobError becomes BullMQ's UnrecoverableError.
 * Completed jobs are kept briefly for inspection, failed ones longer.
 */
export class BullmqRunner implements JobRunner {
  readonly kind = 'bullmq' as const;
  private readonly connection: Redis;
  private readonly queues = new Map<JobName, Queue>();
  private readonly workers: Worker[] = [];
  private readonly workerConnections: Redis[] = [];
  private closing: Promise<void> | undefined;
  private readonly prefix: string;
  private readonly retry: RetryPolicy;
  /** Queues with a schedule: their next run waits as a delayed job, which idle() does not count. */
  private readonly scheduled = new Set<JobName>();

  constructor(
    private readonly processors: Processors,
    private readonly log: Logger,
    private readonly opts: BullmqOptions,
  ) {
    this.prefix = opts.prefix ?? 'hakobune';
    this.retry = opts.retry ?? DEFAULT_RETRY;
    // Workers block on Redis; BullMQ requires maxRetriesPerRequest null for them.
    this.connection = new Redis(opts.redisUrl, { maxRetriesPerRequest: null, lazyConnect: false });
    this.connection.on('error', (err) => this.log.warn({ err }, 'redis connection error'));
    for (const name of JOB_NAMES) {
      this.queues.set(name, new Queue(name, { connection: this.connection, prefix: this.prefix }));
    }
  }

  async enqueue<N extends JobName>(name: N, payload: JobPayloads[N], opts: EnqueueOptions = {}): Promise<void> {
    if (this.closing) throw new Error('the job runner is closed');
    await this.queues.get(name)!.add(name, payload, {
      jobId: opts.jobId,
      ...(opts.priority !== undefined ? { priority: opts.priority } : {}),
      attempts: this.retry.attempts,
      backoff: { type: 'exponential', delay: this.retry.backoffMs },
      removeOnComplete: { age: 24 * 3600, count: 1000 },
      removeOnFail: { age: 7 * 24 * 3600 },
    });
  }

  async schedule<N extends JobName>(name: N, payload: JobPayloads[N], everyMs: number): Promise<void> {
    const queue = this.queues.get(name)!;
    const id = `${name}-every`;
    if (everyMs <= 0) {
      await queue.removeJobScheduler(id);
      this.scheduled.delete(name);
      return;
    }
    await queue.upsertJobScheduler(id, { every: everyMs }, {
      name,
      data: payload,
      opts: { attempts: 1, removeOnComplete: { age: 24 * 3600, count: 100 }, removeOnFail: { age: 7 * 24 * 3600 } },
    });
    this.scheduled.add(name);
  }

  async startWorkers(): Promise<void> {
    if (this.workers.length) return;
    for (const name of JOB_NAMES) {
      const processor = this.processors[name] as ((p: unknown, c: { attempt: number; progress: (p: Record<string, number | string>) => Promise<void> }) => Promise<unknown>) | undefined;
      if (!processor) continue;
      const connection = this.connection.duplicate();
      this.workerConnections.push(connection);
      const worker = new Worker(
        name,
        async (job: Job) => {
          try {
            return await processor(job.data, { attempt: job.attemptsMade + 1, progress: (p) => job.updateProgress(p) });
          } catch (e) {
            if (e instanceof PermanentJobError) throw new UnrecoverableError(e.message);
            throw e;
          }
        },
        { connection, prefix: this.prefix, concurrency: this.opts.concurrency ?? 1, autorun: true },
      );
      worker.on('failed', (job, err) => this.log.warn({ err, job: job?.name, id: job?.id, attempts: job?.attemptsMade }, 'job failed'));
      worker.on('error', (err) => this.log.warn({ err }, 'worker error'));
      this.workers.push(worker);
    }
    await Promise.all(this.workers.map((w) => w.waitUntilReady()));
  }

  async idle(): Promise<void> {
    for (;;) {
      let busy = 0;
      for (const [name, q] of this.queues) {
        const c = this.scheduled.has(name)
          ? await q.getJobCounts('waiting', 'active', 'prioritized')
          : await q.getJobCounts('waiting', 'active', 'delayed', 'prioritized', 'waiting-children');
        busy += Object.values(c).reduce((a, b) => a + b, 0);
      }
      if (busy === 0) return;
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Removes every queue of this prefix (tests). */
  async obliterate(): Promise<void> {
    for (const q of this.queues.values()) await q.obliterate({ force: true });
  }

  close(): Promise<void> {
    return (this.closing ??= (async () => {
      // Workers first: they finish their running job (or give it back) before queues close.
      await Promise.allSettled(this.workers.map((w) => w.close()));
      await Promise.allSettled([...this.queues.values()].map((q) => q.close()));
      // Connections handed to BullMQ are ours to close.
      for (const c of [...this.workerConnections, this.connection]) {
        try {
          await c.quit();
        } catch {
          c.disconnect();
        }
      }
    })());
  }
}
