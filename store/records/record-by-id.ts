import { sql } from 'kysely';
import type { Db } from '../db.js';
import { withContent, type IndexedRecord } from './records.repository.js';
import type { Category } from '../../ingest/records/types.js';

/**
 * One record of the index by its id, as readers see it: in its facility's published state
 * (added by a published run, not removed by one), never a flagged file. Superseded (_2) and
 * cancelled (_0) versions are found too: the condition flag says which it is.
 */
export async function findVisibleRecord(db: Db, id: number): Promise<IndexedRecord | undefined> {
  const row = await db
    .selectFrom('record as r')
    .innerJoin('record_index_state as s', 's.facility_id', 'r.facility_id')
    .select([
      'r.id', 'r.facility_id', 'r.patient_id', 'r.data_type', 'r.category', sql<string | null>`r.care_date::text`.as('care_date'), 'r.order_no',
      'r.message_ts', 'r.department', 'r.condition_flag', 'r.sha256', 'r.path', sql<string | null>`r.content::text`.as('content'),
    ])
    .where('r.id', '=', id)
    .where('r.status', '=', 'ok')
    .where((eb) => eb('r.added_seq', '<=', eb.ref('s.published_seq')))
    .where((eb) => eb.or([eb('r.removed_seq', 'is', null), eb('r.removed_seq', '>', eb.ref('s.published_seq'))]))
    .executeTakeFirst();
  if (!row || row.patient_id === null || row.category === null || row.content === null) return undefined;
  return withContent({
    id: Number(row.id),
    facilityId: row.facility_id,
    patientId: row.patient_id,
    dataType: row.data_type ?? '',
    category: row.category as Category,
    careDate: row.care_date,
    orderNo: row.order_no ?? '',
    timestamp: row.message_ts ?? '',
    department: row.department,
    condition: row.condition_flag ?? '1',
    sha256: row.sha256,
    path: row.path,
  }, row.content);
}
