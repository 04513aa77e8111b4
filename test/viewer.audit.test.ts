import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createExchange, type Exchange } from '../viewer-api/exchange.js';
import { testConfig } from '../viewer-api/config.js';
import { verifyAuditChain } from '../viewer-api/audit/audit.service.js';
import { createTestDatabase, type TestDatabase } from './support/postgres.js';
import { tempDir } from './support/tmp.js';

describe('the audit chain under concurrent writers on PostgreSQL', () => {
  const tmp = tempDir();
  let pg: TestDatabase;
  let a: Exchange;
  let b: Exchange;
  beforeAll(async () => {
    pg = await createTestDatabase('hkaudit');
    // Two exchanges on one database: two processes' worth of connection pools appending at once.
    a = await createExchange(testConfig(tmp.dir, { databaseUrl: pg.url }));
    b = await createExchange(testConfig(tmp.dir, { databaseUrl: pg.url }), { migrate: false });
  }, 240_000);
  afterAll(async () => {
    await a?.stop();
    await b?.stop();
    await pg?.drop();
    tmp.remove();
  });

  it('never forks: 200 concurrent appends from two pools give one verifiable chain', async () => {
    const writes = Array.from({ length: 200 }, (_, i) =>
      (i % 2 ? a : b).viewer.audit.record({ action: 'record.read', outcome: 'success', patient: `R${i}`, detail: { i } }),
    );
    await Promise.all(writes);
    const report = await verifyAuditChain(a.db);
    expect(report).toMatchObject({ ok: true, entries: 200, head: { count: 200 } });
    const patients = await a.db.selectFrom('audit_event').select('patient').execute();
    expect(new Set(patients.map((p) => p.patient)).size).toBe(200);
  });
});
