import type { Db } from '../../store/db.js';
import { queryPatientRecordByteRows, type IndexedRecordRow } from '../../store/records/records.repository.js';
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

/**
 * A record of the index as the gate reads it. A class, so that the content's lazy parse is one
 * getter on the prototype rather than a closure and an accessor defined on every record of every
 * page (an object literal with a getter is built by the runtime, not by the fast path).
 *
 * The content is kept as its UTF-8 bytes (the reader asks for them: see preparedRows' bytesColumn), not as
 * the string the driver decoded: that string (4 KB of JSON, two bytes per character once it holds
 * any Japanese) then dies at once, where a page's strings used to stay on the young heap until the
 * answer was written, after the audit append; every scavenge meanwhile copied them, and promoted
 * them to the old heap. The timeline copies the bytes into its answer, which it had to encode
 * anyway; FHIR and the record views decode them again when they read `record`.
 */
class IndexGateRecord implements GateRecord {
  id: number;
  facilityId: string;
  patientId: string;
  dataType: string;
  category: Category;
  careDate: string | null;
  orderNo: string;
  timestamp: string;
  department: string | null;
  condition: '0' | '1' | '2';
  sha256: string;
  path: string;
  contentJson: Buffer;
  #parsed: unknown;

  constructor(r: IndexedRecordRow<Buffer>, category: Category) {
    this.id = r[0];
    this.facilityId = r[1];
    this.patientId = r[2];
    this.dataType = r[3];
    this.category = category;
    this.careDate = r[5];
    this.orderNo = r[6];
    this.timestamp = r[7];
    this.department = r[8];
    this.condition = r[9];
    this.sha256 = r[10];
    this.path = r[11];
    this.contentJson = r[12];
  }

  get record(): unknown {
    return (this.#parsed ??= JSON.parse(this.contentJson.toString('utf8')));
  }
}

/** The gate's reader over the record index (store/records): the only way the viewer reads records. */
export function indexRecordReader(db: Db): RecordReader {
  return {
    async query(q) {
      const r = await queryPatientRecordByteRows(db, { ...q, categories: q.categories.flatMap((c) => INDEX_CATEGORIES[c]) });
      const records: GateRecord[] = [];
      for (const row of r.rows) {
        const category = EXCHANGE_CATEGORY.get(row[4]);
        if (!category || !q.categories.includes(category)) continue;
        records.push(new IndexGateRecord(row, category));
      }
      return { records, next: r.next };
    },
  };
}
