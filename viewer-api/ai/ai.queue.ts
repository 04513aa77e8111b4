import { Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import type { Logger } from 'pino';

/**
 * The queue of AI requests: BullMQ with Redis (workers in any `hakobune serve` or worker
 * process), in-process otherwise. Payloads carry the request id only (BullMQ keeps job data in
 * clear text in Redis); the processor re-reads the request and claims it, so a job delivered
 * twice sends nothing twice.
 *
 * Apart from the indexing jobs (jobs/) on purpose: an AI call waits on a remote service and uses
 * almost no CPU, so many run at once (concurrency 128 by default), where indexing runs one
 * CPU-bound job at a time.
 */
export interface AiQueue {
  readonly kind: 'bullmq' | 'in-process';
  enqueue(requestId: string): Promise<void>;
  /**
   * A place among the requests this process runs, taken now, for a request to run at once instead
   * of waiting in the queue; undefined when there is none free (or the queue is BullMQ's: its jobs
   * go through Redis). The holder either runs its task in it or releases it.
   */
  reserve?(): AiSlot | undefined;
  start(): Promise<void>;
  /** Resolves when nothing is waiting or running (tests, demo). */
  idle(): Promise<void>;
  close(): Promise<void>;
}

export type AiProcessor = (requestId: string) => Promise<void>;

export interface AiSlot {
  /** Runs the task in the place (once); the queue waits for it on close, as for its own jobs. */
  run(task: () => Promise<void>): void;
  /** Gives the place back unused. */
  release(): void;
}

export const AI_QUEUE = 'ai-request';

export function createAiQueue(opts: { redisUrl: string | undefined; prefix?: string; concurrency?: number; log: Logger; process: AiProcessor }): AiQueue {
  return opts.redisUrl ? new BullmqAiQueue(opts.redisUrl, opts.prefix ?? 'hakobune', opts.concurrency ?? 128, opts.log, opts.process) : new InProcessAiQueue(opts.concurrency ?? 128, opts.log, opts.process);
}

class InProcessAiQueue implements AiQueue {
  readonly kind = 'in-process' as const;
  private readonly waiting: string[] = [];
  private active = 0;
  private started = false;
  private closed = false;
  private readonly idleWaiters: (() => void)[] = [];
  private readonly running = new Set<Promise<void>>();

  constructor(
    private readonly concurrency: number,
    private readonly log: Logger,
    private readonly process: AiProcessor,
  ) {}

  async enqueue(id: string): Promise<void> {
    if (this.closed) throw new Error('the AI queue is closed');
    if (this.waiting.includes(id)) return;
    this.waiting.push(id);
    this.pump();
  }

  async start(): Promise<void> {
    this.started = true;
    this.pump();
  }

  reserve(): AiSlot | undefined {
    // Not ahead of requests already waiting, and not beyond the queue's concurrency.
    if (!this.started || this.closed || this.active >= this.concurrency || this.waiting.length) return undefined;
    this.active++;
    let used = false;
    return {
      run: (task) => {
        if (used) throw new Error('an AI queue place runs one task');
        used = true;
        this.track(task(), undefined);
      },
      release: () => {
        if (used) return;
        used = true;
        this.finished();
      },
    };
  }

  private pump(): void {
    while (this.started && !this.closed && this.active < this.concurrency && this.waiting.length) {
      const id = this.waiting.shift()!;
      this.active++;
      this.track(this.process(id), id);
    }
  }

  private track(work: Promise<void>, id: string | undefined): void {
    const p: Promise<void> = work
      .catch((err: unknown) => this.log.error({ err, requestId: id }, 'AI request processing failed'))
      .finally(() => {
        this.running.delete(p);
        this.finished();
      });
    this.running.add(p);
  }

  private finished(): void {
    this.active--;
    this.pump();
    if (this.active === 0 && this.waiting.length === 0) for (const r of this.idleWaiters.splice(0)) r();
  }

  idle(): Promise<void> {
    if (this.active === 0 && (this.waiting.length === 0 || !this.started)) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.allSettled([...this.running]);
  }
}

class BullmqAiQueue implements AiQueue {
  readonly kind = 'bullmq' as const;
  private readonly connection: Redis;
  private readonly queue: Queue;
  private worker: Worker | undefined;
  private workerConnection: Redis | undefined;
  private closing: Promise<void> | undefined;

  constructor(
    redisUrl: string,
    private readonly prefix: string,
    private readonly concurrency: number,
    private readonly log: Logger,
    private readonly process: AiProcessor,
  ) {
    this.connection = new Redis(redisUrl, { maxRetriesPerRequest: null });
    this.connection.on('error', (err) => this.log.warn({ err }, 'redis connection error'));
    this.queue = new Queue(AI_QUEUE, { connection: this.connection, prefix });
  }

  async enqueue(id: string): Promise<void> {
    await this.queue.add(
      AI_QUEUE,
      { requestId: id },
      {
        jobId: `ai-${id}`,
        // The client retries the service itself; these retries cover the exchange's own
        // trouble (database unreachable) and are safe because the processor claims first.
        attempts: 3,
        backoff: { type: 'exponential', delay: 1000 },
        removeOnComplete: { age: 3600, count: 10_000 },
        removeOnFail: { age: 7 * 24 * 3600 },
      },
    );
  }

  async start(): Promise<void> {
    if (this.worker) return;
    this.workerConnection = this.connection.duplicate();
    this.worker = new Worker(
      AI_QUEUE,
      async (job) => {
        const id = (job.data as { requestId?: unknown }).requestId;
        if (typeof id !== 'string') return;
        await this.process(id);
      },
      { connection: this.workerConnection, prefix: this.prefix, concurrency: this.concurrency },
    );
    this.worker.on('error', (err) => this.log.warn({ err }, 'AI worker error'));
    await this.worker.waitUntilReady();
  }

  async idle(): Promise<void> {
    for (;;) {
      const c = await this.queue.getJobCounts('waiting', 'active', 'delayed', 'prioritized');
      if (Object.values(c).reduce((a, b) => a + b, 0) === 0) return;
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Removes the queue's keys (tests). */
  async obliterate(): Promise<void> {
    await this.queue.obliterate({ force: true });
  }

  close(): Promise<void> {
    return (this.closing ??= (async () => {
      await this.worker?.close().catch(() => undefined);
      await this.queue.close().catch(() => undefined);
      for (const c of [this.workerConnection, this.connection]) {
        if (!c) continue;
        try {
          await c.quit();
        } catch {
          c.disconnect();
        }
      }
    })());
  }
}
