import { afterAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { RateLimiter, SharedRateLimiter } from './rate-limit.js';
import { TEST_REDIS_URL } from '../../test/support/postgres.js';

describe('rate limits', () => {
  it('counts a fixed window per key in memory', async () => {
    let now = 1_000_000;
    const l = new RateLimiter(2, 60_000, () => now);
    expect((await l.take('a')).allowed).toBe(true);
    expect((await l.take('a')).allowed).toBe(true);
    const third = await l.take('a');
    expect(third).toMatchObject({ allowed: false, firstRefusal: true, retryAfterSeconds: 60 });
    expect((await l.take('a')).firstRefusal).toBe(false);
    expect((await l.take('b')).allowed).toBe(true);
    now += 60_000;
    expect((await l.take('a')).allowed).toBe(true);
  });

  describe('shared through Redis', () => {
    const a = new Redis(TEST_REDIS_URL);
    const b = new Redis(TEST_REDIS_URL);
    const prefix = `hk-rate-test-${process.pid}-${Date.now()}`;
    afterAll(async () => {
      const keys = await a.keys(`${prefix}*`);
      if (keys.length) await a.del(...keys);
      a.disconnect();
      b.disconnect();
    });

    it('holds the limit across processes: two limiters on two connections count together', async () => {
      // Each stands for one exchange process; with counts in memory each would allow 3.
      const one = new SharedRateLimiter(a, `${prefix}:login`, 3, 60_000, Date.now);
      const two = new SharedRateLimiter(b, `${prefix}:login`, 3, 60_000, Date.now);
      const seen = [await one.take('10.0.0.1'), await two.take('10.0.0.1'), await one.take('10.0.0.1'), await two.take('10.0.0.1'), await one.take('10.0.0.1')];
      expect(seen.map((d) => d.allowed)).toEqual([true, true, true, false, false]);
      expect(seen.map((d) => d.firstRefusal)).toEqual([false, false, false, true, false]);
      expect(seen[3]!.retryAfterSeconds).toBeGreaterThanOrEqual(59);
      expect(seen[3]!.retryAfterSeconds).toBeLessThanOrEqual(60);
      // Another address, and another limiter name, have their own windows.
      expect((await two.take('10.0.0.2')).allowed).toBe(true);
      expect((await new SharedRateLimiter(a, `${prefix}:token`, 3, 60_000, Date.now).take('10.0.0.1')).allowed).toBe(true);
    });

    it('ends a window when it expires', async () => {
      const l = new SharedRateLimiter(a, `${prefix}:short`, 1, 300, Date.now);
      expect((await l.take('x')).allowed).toBe(true);
      expect((await l.take('x')).allowed).toBe(false);
      await new Promise((r) => setTimeout(r, 400));
      expect((await l.take('x')).allowed).toBe(true);
    });

    it('counts in this process when Redis cannot be reached', async () => {
      const down = new Redis('redis://127.0.0.1:1', { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
      down.on('error', () => {});
      const l = new SharedRateLimiter(down, `${prefix}:down`, 2, 60_000, Date.now);
      expect((await l.take('y')).allowed).toBe(true);
      expect((await l.take('y')).allowed).toBe(true);
      expect((await l.take('y')).allowed).toBe(false);
      down.disconnect();
    });
  });
});
