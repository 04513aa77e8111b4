import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sql } from 'kysely';
import { createExchange, type Exchange } from '../viewer-api/exchange.js';
import { testConfig } from '../viewer-api/config.js';
import { verifyAuditChain } from '../viewer-api/audit/audit.service.js';
import { appendAuditBatch, readAuditHead, type AuditCompanion } from '../viewer-api/audit/audit.repository.js';
import { entryBody } from '../viewer-api/audit/audit.entry.js';
import { createTestDatabase, type TestDatabase } from './support/postgres.js';
import { tempDir } from './support/tmp.js';

/** The audit trail's group commit: many entries per statement, each caller told about its own. */
describe('audit entries appended in batches on PostgreSQL', () => {
  const tmp = tempDir();
  let pg: TestDatabase;
  let ex: Exchange;
  beforeAll(async () => {
    pg = await createTestDatabase('hkauditb');
    ex = await createExchange(testConfig(tmp.dir, { databaseUrl: pg.url }));
  }, 240_000);
  afterAll(async () => {
    await ex?.stop();
    await pg?.drop();
    tmp.remove();
  });

  it('keeps the order of recording in the chain, and an entry that cannot be stored fails alone', async () => {
    const before = (await ex.db.selectFrom('audit_head').select('count').executeTakeFirstOrThrow()).count;
    const results = await Promise.allSettled(
      Array.from({ length: 300 }, (_, i) =>
        ex.viewer.audit.record({ action: 'test.batch', outcome: 'success', patient: `R${i}`, detail: i === 7 ? { bad: Number.NaN } : { i } }),
      ),
    );
    expect(results.filter((r) => r.status === 'rejected').length).toBe(1);
    expect(results[7]!.status).toBe('rejected');
    const rows = await ex.db.selectFrom('audit_event').select(['seq', 'patient']).where('seq', '>', before).orderBy('seq').execute();
    expect(rows.map((r) => r.patient)).toEqual(Array.from({ length: 300 }, (_, i) => `R${i}`).filter((p) => p !== 'R7'));
    expect((await verifyAuditChain(ex.db)).ok).toBe(true);
  });

  it('refuses to append, without retrying for ever, when the head row is gone; appends again once it is back', async () => {
    const head = await ex.db.selectFrom('audit_head').selectAll().executeTakeFirstOrThrow();
    await sql`delete from audit_head`.execute(ex.db);
    await expect(ex.viewer.audit.record({ action: 'test.nohead', outcome: 'success' })).rejects.toThrow(/audit head/);
    await ex.db.insertInto('audit_head').values(head).execute();
    await ex.viewer.audit.record({ action: 'test.headback', outcome: 'success' });
    expect((await verifyAuditChain(ex.db)).ok).toBe(true);
  });

  it('answers the head it found under its lock when another writer moved it, and writes nothing', async () => {
    const real = await readAuditHead(ex.db);
    const stale = { count: real.count - 1, lastHash: 'f'.repeat(64) };
    const body = entryBody({ action: 'test.stale', outcome: 'success' }, new Date());
    const r = await appendAuditBatch(ex.db, stale, [body]);
    expect(r).toEqual({ moved: real });
    expect(await readAuditHead(ex.db)).toEqual(real);
    // Chained after the head it was told, the same batch goes in.
    const ok = await appendAuditBatch(ex.db, real, [body]);
    expect('entries' in ok && ok.head.count).toBe(real.count + 1);
    expect((await verifyAuditChain(ex.db)).ok).toBe(true);
  });

  it('writes a companion only with its entries: not when the head moved, and both once it matches', async () => {
    await sql`create table hkauditb_note (k text primary key)`.execute(ex.db);
    const note: AuditCompanion<string> = { name: 'test-note', sql: (p, guard) => `insert into hkauditb_note select k from unnest(${p(1)}::text[]) as k where ${guard}`, params: (ks) => [ks] };
    const notes = async () => (await sql<{ k: string }>`select k from hkauditb_note order by k`.execute(ex.db)).rows.map((r) => r.k);
    const real = await readAuditHead(ex.db);
    const body = entryBody({ action: 'test.note', outcome: 'success' }, new Date());
    expect(await appendAuditBatch(ex.db, { count: real.count, lastHash: 'e'.repeat(64) }, [body], [{ companion: note, items: ['n1', 'n2'] }])).toEqual({ moved: real });
    expect(await notes()).toEqual([]);
    const ok = await appendAuditBatch(ex.db, real, [body, body], [{ companion: note, items: ['n1', 'n2'] }]);
    expect('entries' in ok && ok.head.count).toBe(real.count + 2);
    expect(await notes()).toEqual(['n1', 'n2']);
    // A companion's write without an entry to go with it is refused before anything is sent.
    await expect(appendAuditBatch(ex.db, await readAuditHead(ex.db), [], [{ companion: note, items: ['n3'] }])).rejects.toThrow(/needs an audit entry/);
    // Through the log: a refused companion write (a repeated key) fails its own entry only.
    const got = await Promise.allSettled(['n4', 'n1', 'n5'].map((k) => ex.viewer.audit.recordWith({ action: 'test.note', outcome: 'success', detail: { k } }, note, k)));
    expect(got.map((g) => g.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect(await notes()).toEqual(['n1', 'n2', 'n4', 'n5']);
    expect((await verifyAuditChain(ex.db)).ok).toBe(true);
  });
});
