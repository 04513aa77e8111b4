import { randomBytes } from 'node:crypto';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createExchange } from '../viewer-api/exchange.js';
import { testConfig } from '../viewer-api/config.js';
import { backupTree, scanTree } from './index.support.js';
import { enrol, TestClock, tokenFor, type ViewerHarness } from './viewer.support.js';
import { createTestDatabase, TEST_REDIS_URL, type TestDatabase } from './support/postgres.js';
import { SAMPLES_ROOT, tempDir } from './support/tmp.js';

describe('restore jobs on PostgreSQL and BullMQ', () => {
  const prefix = `hk-test-${randomBytes(4).toString('hex')}`;
  let pg: TestDatabase;
  let tmp: { dir: string; remove: () => void };
  let h: ViewerHarness;
  let conn: Redis;
  let queue: Queue;
  let token: string;

  beforeAll(async () => {
    tmp = tempDir('hakobune-restore-bull-');
    pg = await createTestDatabase('hkrestore');
    const config = testConfig(tmp.dir, { databaseUrl: pg.url, redisUrl: TEST_REDIS_URL });
    const clock = new TestClock();
    const exchange = await createExchange(config, { clock: clock.now, jobs: { queuePrefix: prefix, retry: { attempts: 2, backoffMs: 50 } } });
    const url = await exchange.listen();
    h = { exchange, url, clock, cli: { actor: { username: 'cli:test' }, address: null, endpoint: 'cli' }, close: async () => exchange.stop() };
    const files = scanTree(SAMPLES_ROOT);
    for (const id of ['F100', 'F200']) {
      await exchange.backup.addFacility({ id, name: `Hospital ${id}`, kind: 'hospital' });
      await backupTree(exchange.backup, id, files);
    }
    token = await tokenFor(h, await enrol(h, 'NET', 'dr', 'dr_operator'));
    conn = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: null });
    queue = new Queue('restore', { connection: conn, prefix });
  }, 120_000);
  afterAll(async () => {
    await queue?.obliterate({ force: true }).catch(() => {});
    await queue?.close();
    await new Queue('index-snapshot', { connection: conn, prefix }).obliterate({ force: true }).catch(() => {});
    await conn?.quit();
    await h?.close();
    await pg?.drop();
    tmp?.remove();
  });

  const post = (body: unknown) =>
    fetch(`${h.url}/api/restores`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });

  it('queues a disaster facility\'s restore with BullMQ priority 1, others after, and a worker prepares both', async () => {
    await h.exchange.consent.consent.declareDisaster('dr', { facilities: ['F100'], from: h.clock.ms - 1000, to: h.clock.ms + 3600_000, reason: 'ransomware' });
    const normal = (await (await post({ facilityId: 'F200', mode: 'download' })).json()) as { id: string; priority: number };
    const urgent = (await (await post({ facilityId: 'F100', mode: 'download' })).json()) as { id: string; priority: number };
    // Nothing works the queue yet (with Redis, `hakobune worker` processes do): the jobs wait.
    expect((await queue.getJob(`restore-${urgent.id}`))?.opts.priority).toBe(1);
    expect((await queue.getJob(`restore-${normal.id}`))?.opts.priority).toBe(10);
    expect((await queue.getJob(`restore-${urgent.id}`))?.data).toEqual({ requestId: urgent.id });

    await h.exchange.jobs.runner.startWorkers();
    for (const id of [urgent.id, normal.id]) {
      let state = '';
      for (let i = 0; i < 400 && state !== 'ready' && state !== 'failed'; i++) {
        const r = await fetch(`${h.url}/api/restores/${id}`, { headers: { authorization: `Bearer ${token}` } });
        state = ((await r.json()) as { state: string }).state;
        if (state !== 'ready') await new Promise((res) => setTimeout(res, 50));
      }
      expect(state).toBe('ready');
    }
  });
});
