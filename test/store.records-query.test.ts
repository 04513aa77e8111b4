import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase, type DatabaseHandle } from '../store/db.js';
import { migrateToLatest } from '../store/migrate.js';
import { queryPatientRecordByteRows, queryPatientRecords, type RecordCursor, type RecordQuery } from '../store/records/records.repository.js';
import { tempDir } from './support/tmp.js';
import { createTestDatabase, type TestDatabase } from './support/postgres.js';

// The timeline's query (store/records/records.repository.ts, recordRows): which versions a
// person's page shows, in which order, page by page. The viewer's tests read indexed samples;
// this sets the index's columns directly, to cover every case of the published-run visibility.
for (const kind of ['embedded', 'postgres'] as const) {
  describe(`patient records query (${kind})`, () => {
    let tmp: ReturnType<typeof tempDir>;
    let pg: TestDatabase | undefined;
    let handle: DatabaseHandle;

    let n = 0;
    const rec = async (r: { facility: string; patient: string; added: number; removed?: number; status?: 'ok' | 'flagged'; condition?: '0' | '1' | '2'; category?: string; care: string | null }) => {
      n++;
      const content = JSON.stringify({ n, note: `処方 ${n} 日本語テキスト 😀 é` });
      const row = await handle.db
        .insertInto('record')
        .values({
          facility_id: r.facility, path: `p/${n}`, sha256: n.toString(16).padStart(64, '0'), added_seq: r.added, removed_seq: r.removed ?? null, snapshot_id: 's',
          patient_id: r.patient, data_type: 'OMP-01', category: r.category ?? 'prescription', care_date: r.care, order_no: `${n}`, message_ts: '20200101000000',
          department: '01', condition_flag: r.condition ?? '1', status: r.status ?? 'ok', content,
        })
        .returning('id')
        .executeTakeFirstOrThrow();
      return { id: row.id, content };
    };
    const ids: Record<string, number> = {};
    const contents = new Map<number, string>();
    const add = async (name: string, r: Parameters<typeof rec>[0]) => {
      const { id, content } = await rec(r);
      ids[name] = id;
      contents.set(id, content);
    };

    beforeAll(async () => {
      tmp = tempDir('hakobune-records-query-');
      if (kind === 'postgres') pg = await createTestDatabase('rq');
      handle = await openDatabase({ dataDir: tmp.dir, databaseUrl: pg?.url });
      await migrateToLatest(handle.db);
      // F1 published up to run 2, F2 up to run 1, F3 never.
      await handle.db.insertInto('record_index_state').values([
        { facility_id: 'F1', published_seq: 2, published_snapshot_id: 's2', published_at: new Date() },
        { facility_id: 'F2', published_seq: 1, published_snapshot_id: 's1', published_at: new Date() },
      ]).execute();
      await add('run1', { facility: 'F1', patient: 'A', added: 1, care: '2020-01-05' });
      await add('run2', { facility: 'F1', patient: 'A', added: 2, care: '2020-01-03' });
      await add('unpublished', { facility: 'F1', patient: 'A', added: 3, care: '2020-01-09' });
      await add('removedBefore', { facility: 'F1', patient: 'A', added: 1, removed: 2, care: '2020-01-08' });
      await add('removedAfter', { facility: 'F1', patient: 'A', added: 1, removed: 3, care: '2020-01-03' });
      await add('flagged', { facility: 'F1', patient: 'A', added: 1, status: 'flagged', care: '2020-01-07' });
      await add('cancelled', { facility: 'F1', patient: 'A', added: 1, condition: '0', care: '2020-01-06' });
      await add('undated', { facility: 'F1', patient: 'A', added: 1, care: null });
      await add('lab', { facility: 'F1', patient: 'A', added: 1, category: 'lab', care: '2020-01-04' });
      await add('otherPatient', { facility: 'F1', patient: 'Z', added: 1, care: '2020-01-05' });
      await add('f2', { facility: 'F2', patient: 'B', added: 1, care: '2020-01-04' });
      await add('f2Unpublished', { facility: 'F2', patient: 'B', added: 2, care: '2020-01-04' });
      await add('f2Undated', { facility: 'F2', patient: 'B', added: 1, care: null });
      await add('f3', { facility: 'F3', patient: 'C', added: 0, care: '2020-01-04' });
    }, 60_000);
    afterAll(async () => {
      await handle?.close();
      await pg?.drop();
      tmp?.remove();
    });

    // Twice the same local ID: its records still come once.
    const patients = [
      { facilityId: 'F1', patientId: 'A' },
      { facilityId: 'F2', patientId: 'B' },
      { facilityId: 'F3', patientId: 'C' },
      { facilityId: 'F1', patientId: 'A' },
    ];
    const all = async (q: Omit<RecordQuery, 'after' | 'limit'>, limit: number) => {
      const out: number[] = [];
      let after: RecordCursor | undefined;
      for (let pages = 0; pages < 20; pages++) {
        const page = await queryPatientRecords(handle.db, { ...q, limit, after });
        out.push(...page.records.map((r) => r.id));
        if (!page.next) return out;
        expect(page.records).toHaveLength(limit);
        after = page.next;
      }
      throw new Error('no last page');
    };

    it('shows the versions of the published runs only, newest care date first, undated last, once each', async () => {
      // 2020-01-05 run1, 01-04 lab and f2 (id desc), 01-03 removedAfter and run2 (id desc), undated by id desc.
      const current = [ids.run1, ids.f2, ids.lab, ids.removedAfter, ids.run2, ids.f2Undated, ids.undated];
      const { records, next } = await queryPatientRecords(handle.db, { patients, currentOnly: true, limit: 100 });
      expect(records.map((r) => r.id)).toEqual(current);
      expect(next).toBeUndefined();
      // History: the cancelled version too.
      const history = await queryPatientRecords(handle.db, { patients, currentOnly: false, limit: 100 });
      expect(history.records.map((r) => r.id)).toEqual([ids.cancelled, ...current]);
      // No local ID at all, or only the never published facility's: nothing.
      expect((await queryPatientRecords(handle.db, { patients: [], currentOnly: true, limit: 10 })).records).toEqual([]);
      expect((await queryPatientRecords(handle.db, { patients: [{ facilityId: 'F3', patientId: 'C' }], currentOnly: false, limit: 10 })).records).toEqual([]);
    });

    it('pages with the cursor through dated and undated records to the same list', async () => {
      const whole = await all({ patients, currentOnly: false }, 100);
      for (const limit of [1, 2, 3, 5]) expect(await all({ patients, currentOnly: false }, limit)).toEqual(whole);
    });

    it('filters by category and care dates', async () => {
      const labs = await queryPatientRecords(handle.db, { patients, categories: ['lab'], currentOnly: true, limit: 10 });
      expect(labs.records.map((r) => r.id)).toEqual([ids.lab]);
      const both = await queryPatientRecords(handle.db, { patients, categories: ['lab', 'prescription'], from: '2020-01-04', to: '2020-01-05', currentOnly: true, limit: 10 });
      expect(both.records.map((r) => r.id)).toEqual([ids.run1, ids.f2, ids.lab]);
    });

    it('gives the content as its exact UTF-8 bytes to the gate, and as text otherwise', async () => {
      const text = await queryPatientRecords(handle.db, { patients, currentOnly: false, limit: 100 });
      const bytes = await queryPatientRecordByteRows(handle.db, { patients, currentOnly: false, limit: 100 });
      expect(bytes.rows.map((r) => r[0])).toEqual(text.records.map((r) => r.id));
      for (const r of bytes.rows) expect(r[12].equals(Buffer.from(contents.get(r[0])!, 'utf8'))).toBe(true);
      for (const r of text.records) expect(r.contentJson).toBe(contents.get(r.id));
    });
  });
}
