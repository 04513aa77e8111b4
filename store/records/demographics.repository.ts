import type { Db } from '../db.js';
import type { ClinicalRecord, PatientRecord } from '../../ingest/records/types.js';

export interface CurrentDemographics {
  id: number;
  facilityId: string;
  patientId: string;
  record: PatientRecord;
}

/**
 * A facility's current patient descriptions (ADT-00 with condition flag 1, as of the facility's
 * published index run, never a flagged message), in record id order, one page at a time.
 */
export async function pageCurrentDemographics(
  db: Db,
  facilityId: string,
  afterId: number,
  limit: number,
  /** Only the versions that the index run with this sequence number added. */
  addedSeq?: number,
): Promise<{ items: CurrentDemographics[]; lastId: number; done: boolean }> {
  let query = db
    .selectFrom('record as r')
    .innerJoin('record_index_state as s', 's.facility_id', 'r.facility_id')
    .select(['r.id', 'r.facility_id', 'r.patient_id', 'r.content'])
    .where('r.facility_id', '=', facilityId)
    .where('r.data_type', '=', 'ADT-00')
    .where('r.status', '=', 'ok')
    .where('r.condition_flag', '=', '1')
    .where('r.patient_id', 'is not', null)
    .where((eb) => eb('r.added_seq', '<=', eb.ref('s.published_seq')))
    .where((eb) => eb.or([eb('r.removed_seq', 'is', null), eb('r.removed_seq', '>', eb.ref('s.published_seq'))]))
    .where('r.id', '>', afterId);
  if (addedSeq !== undefined) query = query.where('r.added_seq', '=', addedSeq);
  const rows = await query.orderBy('r.id').limit(limit).execute();
  const out: CurrentDemographics[] = [];
  for (const r of rows) {
    const stored = (typeof r.content === 'string' ? JSON.parse(r.content) : r.content) as ClinicalRecord | null;
    const content = stored?.content;
    if (content?.kind !== 'patient') continue;
    out.push({ id: r.id, facilityId: r.facility_id, patientId: r.patient_id!, record: content });
  }
  return { items: out, lastId: rows.length ? rows[rows.length - 1]!.id : afterId, done: rows.length < limit };
}
