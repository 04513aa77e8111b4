import type { Logger } from 'pino';
import { DEFAULT_RETRY, PermanentJobError, type EnqueueOptions, type JobName, type JobPayloads, type JobRunner, type Processors, type RetryPolicy } from './runner.js';

interface Pending {
  name: JobName;
  payload: JobPayloads[JobName];
  jobId: string | undefined;
  attempt: number;
  notBefore: number;
  /** Lower runs sooner, as in BullMQ; unprioritised jobs come after every prioritised one. */
  priority: number;
}

/**
 * Runs jobs in this process as the BullMQ path does (a queue per kind of job, each worked one job
 * at a time): one job of each kind at once, in priority then arrival order within its kind, so
 * that a long job of one kind (a matcher run over the region, a large restore) never holds back
 * another (a night's indexing, a declared disaster's restore). Same retry policy as BullMQ
 * (exponential backoff; PermanentJobError is not retried). Jobs are lost if the process dies: the
 * indexer's catch-up sweep at start re-enqueues what was not finished.
 */
export class InProcessRunner implements JobRunner {
  readonly kind = 'in-process' as const;
  private readonly queue: Pending[] = [];
  private running: Promise<void> | undefined;
  private started = false;
  private closed = false;
  private closing: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly idleWaiters: (() => void)[] = [];
  private active = 0;
  /** The kinds with a job running, and those jobs. */
  private readonly busy = new Set<JobName>();
  private readonly inFlight = new Set<Promise<void>>();
  private readonly schedules = new Map<JobName, NodeJS.Timeout>();

  constructor(
    private readonly processors: Processors,
    private readonly log: Logger,
    private readonly retry: RetryPolicy = DEFAULT_RETRY,
  ) {}

  async enqueue<N extends JobName>(name: N, payload: JobPayloads[N], opts: EnqueueOptions = {}): Promise<void> {
    if (this.closed) throw new Error('the job runner is closed');
    if (opts.jobId && this.queue.some((j) => j.jobId === opts.jobId && j.attempt === 1)) return;
    this.queue.push({ name, payload, jobId: opts.jobId, attempt: 1, notBefore: 0, priority: opts.priority ?? Number.MAX_SAFE_INTEGER });
    this.kick();
  }

  async schedule<N extends JobName>(name: N, payload: JobPayloads[N], everyMs: number): Promise<void> {
    clearInterval(this.schedules.get(name));
    this.schedules.delete(name);
    if (everyMs <= 0 || this.closed) return;
    const timer = setInterval(() => {
      this.enqueue(name, payload, { jobId: `${name}-scheduled` }).catch((err: unknown) => this.log.warn({ err, job: name }, 'scheduled job not queued'));
    }, everyMs);
    timer.unref();
    this.schedules.set(name, timer);
  }

  async startWorkers(): Promise<void> {
    if (this.started) return;
    this.started = true;
    this.running = this.loop();
  }

  idle(): Promise<void> {
    if (this.queue.length === 0 && this.active === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  close(): Promise<void> {
    return (this.closing ??= (async () => {
      this.closed = true;
      for (const t of this.schedules.values()) clearInterval(t);
      this.schedules.clear();
      this.kick();
      await this.running;
      this.queue.length = 0;
      this.settleIdle();
    })());
  }

  private kick() {
    const w = this.wake;
    this.wake = undefined;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    w?.();
  }

  private settleIdle() {
    if (this.queue.length === 0 && this.active === 0) for (const r of this.idleWaiters.splice(0)) r();
  }

  private async loop(): Promise<void> {
    while (!this.closed) {
      const now = Date.now();
      // The ready job of highest priority of a kind not running; equal priorities keep arrival order.
      let i = -1;
      this.queue.forEach((j, k) => {
        if (!this.busy.has(j.name) && j.notBefore <= now && (i === -1 || j.priority < this.queue[i]!.priority)) i = k;
      });
      if (i === -1) {
        this.settleIdle();
        // Woken by a job queued or finished (kick), or by the first retry of a free kind coming due.
        const next = Math.min(...this.queue.filter((j) => !this.busy.has(j.name)).map((j) => j.notBefore));
        await new Promise<void>((resolve) => {
          this.wake = resolve;
          if (Number.isFinite(next)) this.timer = setTimeout(resolve, Math.max(0, next - now));
        });
        continue;
      }
      const job = this.queue.splice(i, 1)[0]!;
      this.busy.add(job.name);
      this.active++;
      const run = this.run(job).finally(() => {
        this.busy.delete(job.name);
        this.active--;
        this.inFlight.delete(run);
        this.kick();
      });
      this.inFlight.add(run);
    }
    await Promise.allSettled([...this.inFlight]);
  }

  private async run(job: Pending): Promise<void> {
    try {
      const processor = this.processors[job.name] as ((p: unknown, c: { attempt: number; progress: (p: Record<string, number | string>) => Promise<void> }) => Promise<unknown>) | undefined;
      if (!processor) throw new PermanentJobError(`no processor for ${job.name} jobs in this process`);
      await processor(job.payload, {
        attempt: job.attempt,
        progress: async (p) => this.log.debug({ job: job.name, ...p }, 'job progress'),
      });
    } catch (e) {
      const permanent = e instanceof PermanentJobError || (e as Error)?.name === 'UnrecoverableError';
      if (!permanent && job.attempt < this.retry.attempts && !this.closed) {
        const delay = this.retry.backoffMs * 2 ** (job.attempt - 1);
        this.log.warn({ err: e, job: job.name, attempt: job.attempt, retryInMs: delay }, 'job failed, will retry');
        this.queue.push({ ...job, attempt: job.attempt + 1, notBefore: Date.now() + delay });
      } else {
        this.log.error({ err: e, job: job.name, attempt: job.attempt }, 'job failed for good');
      }
    }
  }
}
