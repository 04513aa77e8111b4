import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backupTree, scanTree } from './index.support.js';
import { enrol, startViewer, testQueues, tokenFor, type ViewerHarness } from './viewer.support.js';
import { TEST_REDIS_URL } from './support/postgres.js';
import { SAMPLES_ROOT } from './support/tmp.js';

describe('restore jobs on PostgreSQL and BullMQ', () => {
  const prefix = `hk-test-${randomBytes(4).toString('hex')}`;
  const queues = testQueues(prefix);
  let h: ViewerHarness;
  let token: string;

  beforeAll(async () => {
    h = await startViewer('postgres', () => ({ redisUrl: TEST_REDIS_URL }), { jobs: { queuePrefix: prefix, retry: { attempts: 2, backoffMs: 50 } } });
    const files = scanTree(SAMPLES_ROOT);
    for (const id of ['F100', 'F200']) {
      await h.exchange.backup.addFacility({ id, name: `Hospital ${id}`, kind: 'hospital' });
      await backupTree(h.exchange.backup, id, files);
    }
    token = await tokenFor(h, await enrol(h, 'NET', 'dr', 'dr_operator'));
  }, 120_000);
  afterAll(async () => {
    // The indexing jobs the backups queued are removed with the restore jobs.
    queues.queue('index-snapshot');
    await queues.close();
    await h?.close();
  });

  const post = (body: unknown) =>
    fetch(`${h.url}/api/restores`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });

  it('queues a disaster facility\'s restore with BullMQ priority 1, others after, and a worker prepares both', async () => {
    await h.exchange.consent.consent.declareDisaster('dr', { facilities: ['F100'], from: h.clock.ms - 1000, to: h.clock.ms + 3600_000, reason: 'ransomware' });
    const normal = (await (await post({ facilityId: 'F200', mode: 'download' })).json()) as { id: string; priority: number };
    const urgent = (await (await post({ facilityId: 'F100', mode: 'download' })).json()) as { id: string; priority: number };
    // Nothing works the queue yet (with Redis, `hakobune worker` processes do): the jobs wait.
    const queue = queues.queue('restore');
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
