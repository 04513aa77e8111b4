import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createExchange, type Exchange } from '../viewer-api/exchange.js';
import { readConfig, testConfig, ConfigError } from '../viewer-api/config.js';
import { createTestDatabase, type TestDatabase } from './support/postgres.js';
import { tempDir } from './support/tmp.js';

describe('the exchange on the embedded default', () => {
  const tmp = tempDir();
  let exchange: Exchange;
  let url: string;
  beforeAll(async () => {
    exchange = await createExchange(testConfig(tmp.dir));
    url = await exchange.listen();
  });
  afterAll(async () => {
    await exchange.stop();
    tmp.remove();
  });

  it('answers /health with the database checked', async () => {
    const res = await fetch(`${url}/health`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: 'ok', checks: { database: 'ok' } });
  });

  it('answers an unknown path with a problem document and a request id', async () => {
    const res = await fetch(`${url}/no/such/thing`);
    expect(res.status).toBe(404);
    expect(res.headers.get('content-type')).toContain('application/problem+json');
    const body = await res.json();
    expect(body).toMatchObject({ status: 404, title: 'not-found' });
    expect(body.requestId).toBe(res.headers.get('x-request-id'));
  });

  it('refuses a second process-level opener of the same embedded database', async () => {
    // The lock names the live owner (this process) and the URL it serves.
    await expect(createExchange(testConfig(tmp.dir))).rejects.toThrow(/in use by process \d+ and serves http/);
    // ... and says what to do: stop it, or go through it (its HTTP API, the uploader).
    await expect(createExchange(testConfig(tmp.dir))).rejects.toThrow(/stop that exchange first \(Ctrl\+C, or kill \d+\).*HTTP API \(http:\/\/[^)]+\/api\/openapi\.json\) and `hakobune upload` work through it/);
  });

  it('stops twice without error', async () => {
    const other = tempDir();
    const ex = await createExchange(testConfig(other.dir));
    await ex.listen();
    await ex.stop();
    await ex.stop();
    other.remove();
  });
});

describe('the exchange on PostgreSQL', () => {
  let pg: TestDatabase;
  let exchange: Exchange;
  const tmp = tempDir();
  beforeAll(async () => {
    pg = await createTestDatabase();
    exchange = await createExchange(testConfig(tmp.dir, { databaseUrl: pg.url }));
  });
  afterAll(async () => {
    await exchange.stop();
    await pg.drop();
    tmp.remove();
  });

  it('answers /health', async () => {
    const url = await exchange.listen();
    const res = await fetch(`${url}/health`);
    expect(res.status).toBe(200);
    expect(exchange.databaseKind).toBe('postgres');
  });
});

describe('configuration', () => {
  it('reads defaults', () => {
    const c = readConfig({});
    expect(c.port).toBe(8080);
    expect(c.databaseUrl).toBeUndefined();
    expect(c.dataDir).toMatch(/\/data$/);
  });

  it('names every bad variable', () => {
    const attempt = () => readConfig({ PORT: 'eighty', DATABASE_URL: 'mysql://x', REDIS_URL: 'nope' });
    expect(attempt).toThrow(ConfigError);
    expect(attempt).toThrow(/PORT/);
    expect(attempt).toThrow(/DATABASE_URL/);
    expect(attempt).toThrow(/REDIS_URL/);
  });

  it('reads the PostgreSQL pool size, and refuses one that is not a positive whole number', () => {
    expect(readConfig({ DATABASE_POOL_SIZE: '32' }).databasePoolSize).toBe(32);
    expect(readConfig({}).databasePoolSize).toBeUndefined();
    for (const bad of ['0', '-3', '2.5', 'many']) expect(() => readConfig({ DATABASE_POOL_SIZE: bad }), bad).toThrow(/DATABASE_POOL_SIZE/);
  });

  it('treats empty variables as unset', () => {
    expect(readConfig({ DATABASE_URL: '', REDIS_URL: '' }).databaseUrl).toBeUndefined();
  });
});
