import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createExchange, type Exchange } from '../viewer-api/exchange.js';
import { testConfig } from '../viewer-api/config.js';
import { tempDir } from './support/tmp.js';
import { createTestDatabase, type TestDatabase } from './support/postgres.js';
import { generateFixtures } from '../fixtures/generate.js';
import { evolveFacility, type ChangeLog } from '../fixtures/evolve.js';
import * as records from '../store/records/records.repository.js';
import { indexSnapshot } from '../jobs/index-snapshot.js';
import { backupSource } from '../jobs/jobs.js';
import { backupTree, scanTree } from './index.support.js';

/**
 * Generated storage over several evolved nights: after each night's backup is indexed, the
 * index's view of the facility is exactly what the generator's change log says the tree is.
 */
describe('indexing generated trees over evolved nights (PostgreSQL)', () => {
  const tmp = tempDir();
  let pgdb: TestDatabase;
  let ex: Exchange;
  const root = () => path.join(tmp.dir, 'gen', 'F001');
  /** The facility's tree as the change logs make it: path -> condition flag. */
  const model = new Map<string, string>();
  const snapshots: string[] = [];
  const logs: ChangeLog[] = [];

  const flagOf = (p: string) => p.slice(p.lastIndexOf('_') + 1);
  const backupNight = async () => {
    const id = await backupTree(ex.backup, 'F001', scanTree(root()));
    snapshots.push(id);
    await ex.jobs.runner.idle();
    return id;
  };
  const expectIndexMatchesModel = async () => {
    const published = await records.publishedFiles(ex.db, 'F001');
    expect(published.map((f) => [f.path, f.condition])).toEqual(
      [...model.entries()].map(([p, c]) => [`standard/${p}`, c]).sort((a, b) => Buffer.compare(Buffer.from(a[0]!), Buffer.from(b[0]!))),
    );
    // Generated messages are well formed: every one is served.
    expect(published.filter((f) => f.status !== 'ok')).toEqual([]);
  };
  const patientsOf = () => [...new Set([...model.keys()].map((p) => p.split('/')[2]!))].map((patientId) => ({ facilityId: 'F001', patientId }));

  beforeAll(async () => {
    pgdb = await createTestDatabase('hk_evo');
    ex = await createExchange(testConfig(path.join(tmp.dir, 'data'), { databaseUrl: pgdb.url }), { jobs: { retry: { attempts: 2, backoffMs: 50 }, index: { pageSize: 50 } } });
    await ex.backup.addFacility({ id: 'F001', name: '総合病院', kind: 'hospital' });
    await ex.jobs.runner.startWorkers();
    await generateFixtures({ out: path.join(tmp.dir, 'gen'), facilities: 1, patients: 12, days: 20, seed: 'index-evolve' });
    for (const f of scanTree(root(), '')) model.set(f.path, flagOf(f.path));
  });
  afterAll(async () => {
    await ex?.stop();
    await pgdb?.drop();
    tmp.remove();
  });

  it('night 0: the generated tree is indexed whole', async () => {
    expect(model.size).toBeGreaterThan(50);
    await backupNight();
    await expectIndexMatchesModel();
  });

  it('nights 1-3: updates (_1 -> _2 + new _1), cancellations (_1 -> _0) and new messages follow the change log', async () => {
    for (let day = 1; day <= 3; day++) {
      const log = await evolveFacility({ root: root(), day, seed: 'index-evolve' });
      logs.push(log);
      for (const a of log.actions) {
        if (a.tree !== 'standard') continue;
        if (a.op === 'rename') {
          expect(model.delete(a.from!)).toBe(true);
          model.set(a.to!, flagOf(a.to!));
        } else if (a.op === 'write') model.set(a.path!, flagOf(a.path!));
      }
      await backupNight();
      await expectIndexMatchesModel();
      const run = await records.findRun(ex.db, snapshots.at(-1)!);
      const renames = log.actions.filter((a) => a.op === 'rename').length;
      const writes = log.actions.filter((a) => a.op === 'write' && a.tree === 'standard').length;
      expect(run).toMatchObject({ state: 'done', filesNew: renames + writes, filesRemoved: renames });
    }
    const total = logs.reduce((n, l) => ({ updates: n.updates + l.counts.updates, cancels: n.cancels + l.counts.cancellations }), { updates: 0, cancels: 0 });
    expect(total.updates).toBeGreaterThan(0);
    expect(total.cancels).toBeGreaterThan(0);
  });

  it('the view of "now" never shows a cancelled or superseded record; history keeps them', async () => {
    const now = await records.queryPatientRecords(ex.db, { patients: patientsOf(), currentOnly: true, limit: 10_000 });
    const history = await records.queryPatientRecords(ex.db, { patients: patientsOf(), currentOnly: false, limit: 10_000 });
    const current = [...model.entries()].filter(([, c]) => c === '1').map(([p]) => `standard/${p}`).sort();
    expect(now.records.map((r) => r.path).sort()).toEqual(current);
    expect(now.records.every((r) => r.condition === '1')).toBe(true);
    expect(history.records.map((r) => r.path).sort()).toEqual([...model.keys()].map((p) => `standard/${p}`).sort());
    for (const log of logs) {
      for (const a of log.actions.filter((x) => x.op === 'rename')) {
        const gone = now.records.find((r) => r.path === `standard/${a.to}`);
        expect(gone, `${a.reason} ${a.to}`).toBeUndefined();
        const kept = history.records.find((r) => r.path === `standard/${a.to}`);
        expect(kept?.condition).toBe(a.reason === 'cancel' ? '0' : '2');
      }
    }
  });

  it('re-indexing every night again changes nothing', async () => {
    const before = await ex.db.selectFrom('record').selectAll().orderBy('id').execute();
    for (const id of snapshots) {
      const r = await indexSnapshot({ db: ex.db, source: backupSource(ex.backup), log: ex.log }, id, { progress: async () => {} });
      expect(r.outcome).toBe('already-indexed');
    }
    expect(await ex.db.selectFrom('record').selectAll().orderBy('id').execute()).toEqual(before);
  });

  it('an older night indexed after a newer one does not roll the view back', async () => {
    // Night 0 is re-queued as if its job had been lost and run late.
    await ex.db.deleteFrom('record_index_run').where('snapshot_id', '=', snapshots[0]!).execute();
    const r = await indexSnapshot({ db: ex.db, source: backupSource(ex.backup), log: ex.log }, snapshots[0]!, { progress: async () => {} });
    expect(r.outcome).toBe('newer-snapshot-indexed');
    await expectIndexMatchesModel();
  });

  it('the generator wrote real clinical content: a served prescription has its drug code and dose', async () => {
    const rx = await records.queryPatientRecords(ex.db, { patients: patientsOf(), categories: ['prescription'], currentOnly: true, limit: 5 });
    expect(rx.records.length).toBeGreaterThan(0);
    const c = rx.records[0]!.record.content;
    expect(c.kind === 'medication-order' || c.kind === 'medication-administration').toBe(true);
    if (c.kind === 'medication-order') expect(c.items[0]!.medication.code).toMatch(/^\d{9}$/);
    expect(fs.existsSync(root())).toBe(true);
  });
});
