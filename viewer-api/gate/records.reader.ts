import type { Db } from '../../store/db.js';
import { queryPatientRecords } from '../../store/records/records.repository.js';
import type { Category as IndexCategory } from '../../ingest/records/types.js';
import type { Category } from '../../consent/categories.js';
import type { GateRecord, RecordReader } from './gate.js';

/**
 * The index files records under the reader's finer categories (ingest/records/data-types.ts:
 * lab, radiology, endoscopy, ...); consent and the role matrix speak the exchange's categories
 * (consent/categories.ts). This is the one translation between them, in both directions; a record
 * whose index category has no exchange category is never returned.
 */
export const INDEX_CATEGORIES: Record<Category, IndexCategory[]> = {
  demographics: ['patient'],
  encounters: ['encounter'],
  diagnoses: ['diagnosis'],
  allergies: ['allergy'],
  prescriptions: ['prescription'],
  injections: ['injection'],
  labs: ['lab'],
  imaging: ['radiology', 'endoscopy', 'physiology'],
  diet: ['diet'],
  documents: ['document'],
};

export const EXCHANGE_CATEGORY = new Map<string, Category>(
  Object.entries(INDEX_CATEGORIES).flatMap(([c, list]) => list.map((i) => [i, c as Category] as const)),
);

/** The gate's reader over the record index (store/records): the only way the viewer reads records. */
export function indexRecordReader(db: Db): RecordReader {
  return {
    async query(q) {
      const r = await queryPatientRecords(db, { ...q, categories: q.categories.flatMap((c) => INDEX_CATEGORIES[c]) });
      const records: GateRecord[] = [];
      for (const rec of r.records) {
        const category = EXCHANGE_CATEGORY.get(rec.category);
        if (!category || !q.categories.includes(category)) continue;
        // Built field by field: spreading `rec` would read (and so parse) its content.
        records.push({
          id: rec.id,
          facilityId: rec.facilityId,
          patientId: rec.patientId,
          dataType: rec.dataType,
          category,
          careDate: rec.careDate,
          orderNo: rec.orderNo,
          timestamp: rec.timestamp,
          department: rec.department,
          condition: rec.condition,
          sha256: rec.sha256,
          path: rec.path,
          contentJson: rec.contentJson,
          get record() {
            return rec.record;
          },
        });
      }
      return { records, next: r.next };
    },
  };
}
