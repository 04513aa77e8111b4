import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { createTestDatabase, TEST_REDIS_URL, type TestDatabase } from './support/postgres.js';
import { tempDir } from './support/tmp.js';
import { startCluster, type RunningCluster } from '../viewer-api/cluster.js';
import { AI_QUEUE } from '../viewer-api/ai/ai.queue.js';

/** A request on a connection of its own (the cluster's primary hands connections to workers in turn). */
function request(url: string, method: string, path: string, body?: unknown): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request(`${url}${path}`, { method, agent: false, headers: data ? { 'content-type': 'application/json' } : {} }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode!, text }));
    });
    req.on('error', reject);
    req.end(data);
  });
}

describe('hakobune serve --workers 2 (PostgreSQL and Redis)', () => {
  let db: TestDatabase;
  let running: RunningCluster | undefined;
  const tmp = tempDir('hakobune-cluster-');
  const prefix = `hk-cluster-${process.pid}-${Date.now()}`;

  beforeAll(async () => {
    db = await createTestDatabase('hkcluster');
    running = await startCluster({
      workers: 2,
      env: { DATABASE_URL: db.url, REDIS_URL: TEST_REDIS_URL, HAKOBUNE_DATA_DIR: tmp.dir, PORT: '0', LOG_LEVEL: 'silent', LOGIN_RATE_PER_MINUTE: '3' },
      exchange: { jobs: { queuePrefix: prefix } },
    });
    // Two processes opening the database, migrating it and starting their exchange: slow on a loaded machine.
  }, 240_000);

  afterAll(async () => {
    await running?.stop();
    const redis = new Redis(TEST_REDIS_URL);
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length) await redis.del(...keys);
    redis.disconnect();
    await db?.drop();
    tmp.remove();
  }, 120_000);

  it('serves from two processes on one port', async () => {
    expect(running!.pids()).toHaveLength(2);
    const answers = await Promise.all(Array.from({ length: 6 }, () => request(running!.url, 'GET', '/health')));
    expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 200, 200, 200]);
  });

  it('holds the login rate limit across the processes, not once per process', async () => {
    const attempt = () => request(running!.url, 'POST', '/api/auth/login', { facilityId: 'F001', username: 'nobody', password: 'not the password', totp: '000000' });
    // Each attempt on a new connection: they alternate between the two workers.
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++) statuses.push((await attempt()).status);
    expect(statuses).toEqual([401, 401, 401, 429, 429]);
  });

  it('runs the AI queue worker in one process only', async () => {
    const connection = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: null });
    const queue = new Queue(AI_QUEUE, { connection, prefix });
    try {
      expect(await queue.getWorkers()).toHaveLength(1);
    } finally {
      await queue.close();
      connection.disconnect();
    }
  });

  it('stops every worker', async () => {
    const pids = running!.pids();
    await running!.stop();
    for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow();
  }, 120_000);
});

describe('hakobune serve --workers: a worker that cannot start', () => {
  it('fails the start at once with the reason, instead of waiting for it', async () => {
    const tmp = tempDir('hakobune-cluster-bad-');
    try {
      const started = Date.now();
      const lines: string[] = [];
      await expect(
        startCluster({
          workers: 2,
          // No such database: each worker's exchange fails while opening it.
          env: { DATABASE_URL: `postgres://postgres@127.0.0.1:5432/hk_cluster_missing_${process.pid}`, REDIS_URL: TEST_REDIS_URL, HAKOBUNE_DATA_DIR: tmp.dir, PORT: '0', LOG_LEVEL: 'silent' },
          warn: (line) => lines.push(line),
        }),
      ).rejects.toThrow(/exchange worker \d exited before it listened \(code [1-9]/);
      // Before, the failed worker stayed connected to the primary, which waited for it forever.
      expect(Date.now() - started).toBeLessThan(90_000);
    } finally {
      tmp.remove();
    }
  }, 120_000);
});
