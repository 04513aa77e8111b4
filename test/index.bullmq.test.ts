import { randomBytes } from 'node:crypto';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { createExchange, type Exchange } from '../viewer-api/exchange.js';
import { testConfig } from '../viewer-api/config.js';
import { SAMPLES_ROOT, tempDir } from './support/tmp.js';
import { createTestDatabase, TEST_REDIS_URL, type TestDatabase } from './support/postgres.js';
import * as records from '../store/records/records.repository.js';
import { BullmqRunner } from '../jobs/bullmq.js';
import { InProcessRunner } from '../jobs/in-process.js';
import { PermanentJobError, type Processors } from '../jobs/runner.js';
import { backupTree, scanTree } from './index.support.js';

const silent = pino({ level: 'silent' });

/** The distributed path: PostgreSQL + the real Redis, an API exchange and a worker exchange. */
describe('indexing through BullMQ (real Redis)', () => {
  const tmp = tempDir();
  const prefix = `hk-test-${randomBytes(4).toString('hex')}`;
  let pgdb: TestDatabase;
  let api: Exchange;
  let worker: Exchange;

  beforeAll(async () => {
    pgdb = await createTestDatabase('hk_bull');
    const config = testConfig(tmp.dir, { databaseUrl: pgdb.url, redisUrl: TEST_REDIS_URL });
    api = await createExchange(config, { jobs: { queuePrefix: prefix, retry: { attempts: 3, backoffMs: 50 } } });
    worker = await createExchange(config, { migrate: false, jobs: { queuePrefix: prefix, retry: { attempts: 3, backoffMs: 50 } } });
  });
  afterAll(async () => {
    await api?.stop();
    await worker?.stop();
    const conn = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: null });
    const q = new Queue('index-snapshot', { connection: conn, prefix });
    await q.obliterate({ force: true }).catch(() => {});
    await q.close();
    await conn.quit();
    await pgdb?.drop();
    tmp.remove();
  });

  it('a commit on the API queues the job in Redis; a worker process indexes it', async () => {
    expect(api.jobs.runner.kind).toBe('bullmq');
    await api.backup.addFacility({ id: 'F001', name: '病院', kind: 'hospital' });
    const id = await backupTree(api.backup, 'F001', scanTree(SAMPLES_ROOT));
    const conn = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: null });
    const q = new Queue('index-snapshot', { connection: conn, prefix });
    const waiting = await q.getJobs(['waiting']);
    expect(waiting.map((j) => j.data)).toEqual([{ snapshotId: id }]); // ids only, no patient data
    await q.close();
    await conn.quit();

    expect(await worker.jobs.start()).toBe(1); // the catch-up sweep finds it too (same job id: not queued twice)
    await worker.jobs.runner.idle();
    expect(await records.findRun(api.db, id)).toMatchObject({ state: 'done', filesNew: 22, recordsOk: 9 });
  });

  it('retries a transient failure, gives up at once on a permanent one; close is safe twice', async () => {
    let calls = 0;
    const seen: string[] = [];
    const processors: Processors = {
      'index-snapshot': async ({ snapshotId }, ctx) => {
        calls++;
        seen.push(`${snapshotId}#${ctx.attempt}`);
        await ctx.progress({ step: 'x' });
        if (snapshotId === 'flaky' && ctx.attempt < 3) throw new Error('database restarting');
        if (snapshotId === 'missing') throw new PermanentJobError('snapshot missing does not exist');
        return 'ok';
      },
    };
    const p2 = `${prefix}-r`;
    const runner = new BullmqRunner(processors, silent, { redisUrl: TEST_REDIS_URL, prefix: p2, retry: { attempts: 3, backoffMs: 20 } });
    await runner.startWorkers();
    await runner.enqueue('index-snapshot', { snapshotId: 'flaky' });
    await runner.enqueue('index-snapshot', { snapshotId: 'missing' });
    await runner.idle();
    expect(seen.sort()).toEqual(['flaky#1', 'flaky#2', 'flaky#3', 'missing#1']);
    expect(calls).toBe(4);
    await runner.obliterate();
    await runner.close();
    await runner.close();
  });
});

describe('the in-process runner', () => {
  it('runs the same processors with the same retry policy, deduplicates job ids, closes twice', async () => {
    const seen: string[] = [];
    const processors: Processors = {
      'index-snapshot': async ({ snapshotId }, ctx) => {
        seen.push(`${snapshotId}#${ctx.attempt}`);
        if (snapshotId === 'flaky' && ctx.attempt < 2) throw new Error('transient');
        if (snapshotId === 'missing') throw new PermanentJobError('no such snapshot');
      },
    };
    const runner = new InProcessRunner(processors, silent, { attempts: 3, backoffMs: 10 });
    await runner.enqueue('index-snapshot', { snapshotId: 'a' }, { jobId: 'index-a' });
    await runner.enqueue('index-snapshot', { snapshotId: 'a' }, { jobId: 'index-a' });
    await runner.enqueue('index-snapshot', { snapshotId: 'flaky' });
    await runner.enqueue('index-snapshot', { snapshotId: 'missing' });
    expect(seen).toEqual([]); // nothing runs before the workers start
    await runner.startWorkers();
    await runner.idle();
    expect(seen).toEqual(['a#1', 'flaky#1', 'missing#1', 'flaky#2']);
    await runner.close();
    await runner.close();
    await expect(runner.enqueue('index-snapshot', { snapshotId: 'late' })).rejects.toThrow(/closed/);
  });
});
