import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createExchange, type Exchange } from '../viewer-api/exchange.js';
import { testConfig } from '../viewer-api/config.js';
import { SAMPLES_ROOT, tempDir } from './support/tmp.js';
import { createTestDatabase, type TestDatabase } from './support/postgres.js';
import * as records from '../store/records/records.repository.js';
import { toFhir } from '../ingest/fhir/to-fhir.js';
import { indexSnapshot } from '../jobs/index-snapshot.js';
import { backupSource } from '../jobs/jobs.js';
import { backupTree, scanTree } from './index.support.js';

/**
 * The real samples backed up and indexed end to end: what the viewer and the quality report
 * see of them, on PostgreSQL and on the embedded PGlite.
 */
for (const kind of ['postgres', 'embedded'] as const) {
  describe(`indexing the SS-MIX2 samples (${kind}, in-process jobs)`, () => {
    const tmp = tempDir();
    let pgdb: TestDatabase | undefined;
    let ex: Exchange;
    let snapshotId: string;

    beforeAll(async () => {
      pgdb = kind === 'postgres' ? await createTestDatabase('hk_idx') : undefined;
      // PostgreSQL reads the files on worker threads (as large snapshots do), PGlite on the
      // indexing thread: both must give the same index.
      const index = kind === 'postgres' ? { mapWorkers: 2, minPooledFiles: 1 } : { mapWorkers: 0 };
      ex = await createExchange(testConfig(tmp.dir, { databaseUrl: pgdb?.url }), { jobs: { retry: { attempts: 2, backoffMs: 50 }, index } });
      await ex.backup.addFacility({ id: 'F001', name: '登呂病院', kind: 'hospital' });
      await ex.jobs.runner.startWorkers();
      snapshotId = await backupTree(ex.backup, 'F001', scanTree(SAMPLES_ROOT));
      await ex.jobs.runner.idle();
      // PGlite (WASM) start-up and migrations take long on a busy shared machine.
    }, 180_000);
    afterAll(async () => {
      await ex?.stop();
      await pgdb?.drop();
      tmp.remove();
    });

    it('committing the snapshot queued and finished its indexing', async () => {
      const run = await records.findRun(ex.db, snapshotId);
      // 19 guideline messages + 3 broken files; served: the 9 whose PID-3 is the storage's patient.
      expect(run).toMatchObject({ state: 'done', filesSeen: 22, filesNew: 22, filesRemoved: 0, recordsOk: 9, recordsFlagged: 13 });
      expect(await records.publishedState(ex.db, 'F001')).toMatchObject({ published_seq: 1, published_snapshot_id: snapshotId });
    });

    it('the timeline of patient 9999013: served records only, newest first, with keyset paging', async () => {
      const all = await records.queryPatientRecords(ex.db, { patients: [{ facilityId: 'F001', patientId: '9999013' }], currentOnly: true, limit: 100 });
      expect(all.records.map((r) => r.dataType)).toEqual(['OML-01', 'ADT-52', 'ADT-42', 'ADT-22', 'OMP-12', 'OMP-02', 'OMP-01', 'OMP-11', 'ADT-00']);
      expect(all.next).toBeUndefined();
      const rx = all.records.find((r) => r.dataType === 'OMP-01')!;
      expect(rx).toMatchObject({ careDate: '2011-07-01', orderNo: '000000011000185', department: '01', condition: '1', category: 'prescription' });
      expect(rx.record.content).toMatchObject({ kind: 'medication-order', items: [{ medication: { code: '108665201' } }, {}, {}] });
      expect(rx.path).toMatch(/^standard\/999\/901\/9999013\/20110701\/OMP-01\//);

      const pages: string[][] = [];
      let after: records.RecordCursor | undefined;
      do {
        const p = await records.queryPatientRecords(ex.db, { patients: [{ facilityId: 'F001', patientId: '9999013' }], currentOnly: true, limit: 4, after });
        pages.push(p.records.map((r) => r.dataType));
        after = p.next;
      } while (after);
      expect(pages).toEqual([['OML-01', 'ADT-52', 'ADT-42', 'ADT-22'], ['OMP-12', 'OMP-02', 'OMP-01', 'OMP-11'], ['ADT-00']]);

      const labs = await records.queryPatientRecords(ex.db, { patients: [{ facilityId: 'F001', patientId: '9999013' }], categories: ['prescription', 'injection'], from: '2011-07-01', to: '2011-07-01', currentOnly: true, limit: 10 });
      expect(labs.records.map((r) => r.dataType)).toEqual(['OMP-12', 'OMP-02', 'OMP-01']);
      // The broken folder's patient has nothing to show: every file there is flagged.
      const broken = await records.queryPatientRecords(ex.db, { patients: [{ facilityId: 'F001', patientId: '0000001' }], currentOnly: false, limit: 10 });
      expect(broken.records).toEqual([]);
    });

    it('an indexed record gives valid-looking FHIR with the facility identifier system', async () => {
      const { records: rs } = await records.queryPatientRecords(ex.db, { patients: [{ facilityId: 'F001', patientId: '9999013' }], categories: ['patient'], currentOnly: true, limit: 1 });
      const [patient] = toFhir(rs[0]!.record) as Record<string, any>[];
      expect(patient).toMatchObject({ resourceType: 'Patient', identifier: [{ system: 'urn:hakobune:facility:F001:patient-id', value: '9999013' }] });
      expect(patient!.name[0]).toMatchObject({ family: '患者', given: ['太郎'] });
    });

    it('the quality report names the broken samples with their reasons', async () => {
      const q = await records.qualityReport(ex.db, 'F001', snapshotId);
      expect(q).toMatchObject({ facilityId: 'F001', snapshotId, files: 22, flagged: 13 });
      const count = (code: string) => q.counts.filter((c) => c.code === code).reduce((n, c) => n + c.count, 0);
      expect(count('decode-failed')).toBe(1);
      expect(count('path-disagreement')).toBe(3);
      expect(count('patient-id-mismatch')).toBe(12);
      expect(count('order-number-mismatch')).toBe(1);
      expect(count('multiple-messages')).toBe(3);
      const decode = q.findings.find((f) => f.code === 'decode-failed')!;
      expect(decode).toMatchObject({ path: 'standard/000/000/0000001/20000401/ADT-31/9999013_20110630_OMP-11_123456789012345_20110701113813225_01_1', byteOffset: 0 });
      expect(await records.qualityReport(ex.db, 'F001', undefined)).toMatchObject({ scope: 'published', files: 22, flagged: 13 });
    });

    it('re-indexing the same snapshot changes nothing', async () => {
      const before = await records.publishedFiles(ex.db, 'F001');
      const countRows = async () => (await ex.db.selectFrom('record').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow()).n;
      const rowsBefore = Number(await countRows());
      await ex.jobs.enqueueIndexing(snapshotId);
      await ex.jobs.runner.idle();
      const again = await indexSnapshot({ db: ex.db, source: backupSource(ex.backup), log: ex.log }, snapshotId, { progress: async () => {} });
      expect(again.outcome).toBe('already-indexed');
      expect(Number(await countRows())).toBe(rowsBefore);
      expect(await records.publishedFiles(ex.db, 'F001')).toEqual(before);
    });
  });
}
