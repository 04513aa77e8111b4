import type { Db } from '../../store/db.js';
import { findVisibleRecord } from '../../store/records/record-by-id.js';
import { EXCHANGE_CATEGORY } from './records.reader.js';
import type { RecordLookup } from './record-gate.js';

/** The record gate's lookup over the index: a record whose index category has no exchange category is never found. */
export function indexRecordLookup(db: Db): RecordLookup {
  return {
    async byId(id) {
      const r = await findVisibleRecord(db, id);
      const category = r && EXCHANGE_CATEGORY.get(r.category);
      return r && category ? { ...r, category } : undefined;
    },
  };
}
