import { describe, expect, it } from 'vitest';
import { resolveWorkers } from './cluster.js';

describe('serve --workers', () => {
  const shared = { databaseUrl: 'postgres://x/y', redisUrl: 'redis://x' };
  it('defaults to one process; auto is one per core with PostgreSQL and Redis, else one', () => {
    expect(resolveWorkers(undefined, shared, 4)).toBe(1);
    expect(resolveWorkers('auto', shared, 4)).toBe(4);
    expect(resolveWorkers('auto', shared, 2)).toBe(2);
    expect(resolveWorkers(undefined, { databaseUrl: undefined, redisUrl: undefined }, 4)).toBe(1);
    expect(resolveWorkers(undefined, { databaseUrl: 'postgres://x/y', redisUrl: undefined }, 4)).toBe(1);
    expect(resolveWorkers('auto', { databaseUrl: undefined, redisUrl: 'redis://x' }, 4)).toBe(1);
  });

  it('takes a count, and refuses what cannot work with a clear message', () => {
    expect(resolveWorkers('3', shared, 2)).toBe(3);
    expect(resolveWorkers('1', { databaseUrl: undefined, redisUrl: undefined })).toBe(1);
    expect(() => resolveWorkers('2', { databaseUrl: undefined, redisUrl: 'redis://x' })).toThrow(/PostgreSQL \(DATABASE_URL\).*one process/);
    expect(() => resolveWorkers('2', { databaseUrl: 'postgres://x/y', redisUrl: undefined })).toThrow(/Redis \(REDIS_URL\)/);
    for (const bad of ['0', '-1', 'two', '1.5', '', '999']) expect(() => resolveWorkers(bad, shared)).toThrow(/--workers must be/);
  });
});
